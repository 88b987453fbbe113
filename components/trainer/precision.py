"""Which precision a run computes in: ``precision: auto`` resolved for a machine, and the serving export's.

Light on purpose (no TensorFlow at import): the Trainer executor resolves ``auto`` once, on its own machine, and
hands the result to every worker, so the replicas of one run never disagree.
"""
from __future__ import annotations

import os

from components.trainer.config import TrainingConfig


# oneDNN's ISA names (ONEDNN_MAX_CPU_ISA, oneDNN docs "CPU Dispatcher Control") below which it has no native
# bfloat16 convolution: capping the ISA there makes oneDNN emulate bfloat16, several times slower than float32.
_ONEDNN_ISAS_WITHOUT_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI")


def onednn_capped_below_bfloat16() -> bool:
    """ONEDNN_MAX_CPU_ISA names an ISA without native bfloat16 (e.g. AVX2, to time a CPU class on another).

    On a CPU that does have AVX512-BF16 such a cap is not a faithful AVX2 machine for bfloat16 ops: TensorFlow
    still routes them to oneDNN (it checks the CPU, not the cap), and oneDNN's capped kernels abort them."""
    return os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper() in _ONEDNN_ISAS_WITHOUT_BF16


def cpu_has_bfloat16() -> bool:
    """AVX512-BF16 or AMX on this (Linux) CPU, and oneDNN not capped below them: bfloat16 convolutions then run
    at about twice the float32 rate."""
    if onednn_capped_below_bfloat16():
        return False
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def compute_precision(config: TrainingConfig) -> str:
    """``config.precision`` with "auto" resolved for this machine (GPUs: float32, bfloat16 is unmeasured there)."""
    if config.precision != "auto":
        return config.precision
    import tensorflow as tf
    if cpu_has_bfloat16() and not tf.config.list_physical_devices("GPU"):
        return "bfloat16"
    return "float32"


def serving_precision(config: TrainingConfig) -> str:
    """What the exported serving model computes in (``config.export_precision``, "training" resolved)."""
    return compute_precision(config) if config.export_precision == "training" else config.export_precision
