"""Multi-worker overhead: step time of 2 MultiWorkerMirroredStrategy workers / 1 worker at equal global batch.

Both clusters are started by the Trainer's own LocalProcessLauncher on this machine, on the same clips and
Transform graph; the step time of each is the median over its epochs after the first (the first holds tracing
and start-up) of the slowest worker's training seconds per step, from the workers' progress files. On one
2-core machine the 2 workers share the cores, so the ratio includes contention, not only the all-reduce.
"""
from __future__ import annotations

import glob
import os
import shutil
import statistics

from components.trainer import history
from components.trainer.config import TrainingConfig, TrainingJob
from components.trainer.launcher import LocalProcessLauncher


def step_seconds(config: TrainingConfig, scratch: str) -> float:
    per_epoch = {}
    for worker in range(config.workers):
        for record in history.load_progress(scratch, worker)["epochs"]:
            per_epoch[record["epoch"]] = max(per_epoch.get(record["epoch"], 0.0), record["train_seconds"])
    steady = [s for epoch, s in sorted(per_epoch.items()) if epoch > 1]
    if not steady:
        raise ValueError(f"no epoch after the first in {scratch}: need epochs >= 2")
    return statistics.median(steady) / config.steps_per_epoch


def max_threads(config: TrainingConfig, scratch: str) -> int | None:
    """The most threads any worker held at an epoch's end (ProgressLogger records them): flat under MWMS since the
    stall watchdog replaced TF's per-collective timeout threads (components/trainer/stall_watchdog.py)."""
    counts = [record["threads"] for worker in range(config.workers)
              for record in history.load_progress(scratch, worker)["epochs"] if record.get("threads") is not None]
    return max(counts) if counts else None


def run_cluster(workers: int, global_batch: int, clips_dir: str, eval_dir: str, graph: str, labels, clip_shape,
                work: str, epochs: int, steps: int, timeout_s: float) -> tuple[float, int | None]:
    if global_batch % workers:
        raise ValueError(f"global batch {global_batch} is not divisible by {workers} workers")
    config = TrainingConfig(labels=tuple(labels), clip_shape=tuple(clip_shape), epochs=epochs,
                            steps_per_epoch=steps, eval_steps=0, batch_size_per_worker=global_batch // workers,
                            workers=workers, warmup_cosine=False, collective_timeout_s=120.0)
    root = os.path.join(work, f"mwms_{workers}")
    shutil.rmtree(root, ignore_errors=True)
    job = TrainingJob(config=config, train_uri=clips_dir, eval_uri=eval_dir, transform_graph_uri=graph,
                      serving_model_dir=os.path.join(root, "model"), run_dir=os.path.join(root, "run"),
                      scratch_dir=os.path.join(root, "scratch"))
    LocalProcessLauncher(timeout_s=timeout_s).launch(job)
    return step_seconds(config, job.scratch_dir), max_threads(config, job.scratch_dir)


def bench_multiworker(clips_dir: str, eval_dir: str, graph: str, labels, clip_shape, work: str, global_batch: int,
                      epochs: int, steps: int, repeats: int, timeout_s: float = 600.0) -> dict:
    if not glob.glob(os.path.join(clips_dir, "*.gz")):
        raise FileNotFoundError(f"no clip records in {clips_dir}")
    times = {1: [], 2: []}
    threads = {1: [], 2: []}
    for _ in range(repeats):   # 1, 2, 1, 2, ...
        for workers in (1, 2):
            seconds, most = run_cluster(workers, global_batch, clips_dir, eval_dir, graph, labels, clip_shape, work,
                                        epochs, steps, timeout_s)
            times[workers].append(seconds)
            threads[workers].append(most)
    one, two = statistics.median(times[1]), statistics.median(times[2])
    return {"global_batch": global_batch, "clip": "x".join(map(str, clip_shape[:3])), "steps_per_epoch": steps,
            "epochs": epochs, "step_s_1_worker": one, "step_s_2_workers": two, "overhead_ratio": two / one,
            "max_threads_1_worker": max(threads[1], default=None, key=lambda n: n or 0),
            "max_threads_2_workers": max(threads[2], default=None, key=lambda n: n or 0)}
