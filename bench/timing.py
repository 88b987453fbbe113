"""Side-by-side timing: every figure of the benchmark is a ratio of two timings taken in the same rounds.

The machine is shared (other processes come and go), so alternatives are interleaved A/B/A/B and each one's
median is taken: a load spike then hits both sides of a ratio instead of one.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable, Mapping


def interleaved(fns: Mapping[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds of one call of each function, calling them in turn ``repeats`` times after warm-up."""
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
    return {name: statistics.median(ts) for name, ts in times.items()}
