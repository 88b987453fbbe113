"""Side-by-side timing: every figure of the benchmark is a ratio of two timings taken in the same rounds.

The machine is shared (other processes come and go), so alternatives are interleaved A/B/A/B and each one's
median is taken: a load spike then hits both sides of a ratio instead of one. What must not share a process
(process-wide settings, levers that slow each other, peak memory) runs in a child through ``json_child``.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from typing import Callable, Mapping


def interleaved(fns: Mapping[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds of one call of each function, calling them in turn ``repeats`` times after warm-up."""
    return {name: statistics.median(ts) for name, ts in interleaved_rounds(fns, repeats, warmup).items()}


def paired_ratios(rounds: Mapping[str, list[float]], numerator: str, denominator: str) -> list[float]:
    """Per-round ``numerator seconds / denominator seconds`` of two functions timed in the same rounds: a speed-up
    of ``denominator`` over ``numerator`` measured side by side, round by round (take the median of these)."""
    return [a / b for a, b in zip(rounds[numerator], rounds[denominator], strict=True)]


def interleaved_rounds(fns: Mapping[str, Callable[[], object]], repeats: int,
                       warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of each call of each function, round by round: every round calls each function once, in turn."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats!r}, warmup={warmup!r}")
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def child_env(env_changes: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment for a benchmark child: Keras mode set, TF's logs quiet, ``env_changes`` added."""
    return dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2", **(env_changes or {}))


def json_child(module: str, args: list[str], what: str, env_changes: Mapping[str, str] | None = None) -> dict:
    """Runs ``python -m module args...`` in a fresh process (Keras mode set, ``env_changes`` added) and returns
    the JSON object printed on its last stdout line; raises naming ``what`` with the stderr tail on failure."""
    done = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          env=child_env(env_changes), check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}): {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
