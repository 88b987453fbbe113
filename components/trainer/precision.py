"""Which precision a run computes in: ``precision: auto`` resolved for a machine, and the serving export's.

Light on purpose (no TensorFlow at import): the Trainer executor resolves ``auto`` once, on its own machine, and
hands the result to every worker, so the replicas of one run never disagree.
"""
from __future__ import annotations

import dataclasses
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


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as /proc/cpuinfo lists them (Linux; empty elsewhere). They are cpuid's, whatever
    ONEDNN_MAX_CPU_ISA caps."""
    try:
        with open("/proc/cpuinfo") as f:
            return frozenset(next((line for line in f if line.startswith("flags")), "").split())
    except OSError:
        return frozenset()


def cpu_has_bfloat16() -> bool:
    """AVX512-BF16 or AMX on this (Linux) CPU, and oneDNN not capped below them: bfloat16 convolutions then run
    at about twice the float32 rate."""
    if onednn_capped_below_bfloat16():
        return False
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


@dataclasses.dataclass(frozen=True)
class ReplicaDevices:
    """The accelerators of each training replica, as far as whoever decides the precision knows them."""
    gpus: int = 0
    # (major, minor) of the GPUs; None with GPUs: not known (a Kubernetes nvidia.com/gpu limit names no model).
    compute_capability: tuple[int, int] | None = None

    def describe(self) -> str:
        if not self.gpus:
            return "no GPU"
        cc = "unknown compute capability" if self.compute_capability is None else \
            f"compute capability {self.compute_capability[0]}.{self.compute_capability[1]}"
        return f"{self.gpus} GPU(s) per replica, {cc}"


# Tensor cores came with Volta (compute capability 7.0, CUDA C Programming Guide "Compute Capabilities"); below it
# float16 arithmetic gains little or nothing, so mixed_float16 only costs the casts and the loss scaling.
TENSOR_CORE_CAPABILITY = (7, 0)


def this_machine_devices() -> ReplicaDevices:
    """The GPUs TensorFlow sees here, with the lowest compute capability among them."""
    import tensorflow as tf
    gpus = tf.config.list_physical_devices("GPU")
    capabilities = [tf.config.experimental.get_device_details(g).get("compute_capability") for g in gpus]
    known = [tuple(c) for c in capabilities if c]
    return ReplicaDevices(len(gpus), min(known) if known and len(known) == len(gpus) else None)


def compute_precision(config: TrainingConfig, devices: ReplicaDevices | None = None) -> str:
    """``config.precision`` with "auto" resolved for replicas with ``devices`` (None: this machine's).

    GPUs: mixed_float16 where they have tensor cores, or where their model is not known (every GPU the clusters'
    GPU node pools offer since 2018 has them; set precision float32 for older ones), else float32. CPUs: bfloat16
    with AVX512-BF16 or AMX, else float32 (bench/README.md)."""
    if config.precision != "auto":
        return config.precision
    devices = this_machine_devices() if devices is None else devices
    if devices.gpus:
        cc = devices.compute_capability
        return "mixed_float16" if cc is None or tuple(cc) >= TENSOR_CORE_CAPABILITY else "float32"
    return "bfloat16" if cpu_has_bfloat16() else "float32"


def serving_precision(config: TrainingConfig) -> str:
    """What the exported serving model computes in (``config.export_precision``, "training" resolved)."""
    return compute_precision(config) if config.export_precision == "training" else config.export_precision
