"""Per-worker progress records and the merged training history a run leaves behind.

Each worker owns one JSON file ``<scratch>/progress/worker-<i>.json``: the attempts it started (with the
epoch it resumed from) and one record per finished epoch. Files are rewritten whole (not appended) so
this works on object stores too, and they survive a cluster restart, so the merged history covers every
attempt. ``merge_history`` turns them into the ``training_history.json`` the component publishes.
"""
from __future__ import annotations

import json
import os
from typing import Any

import tensorflow as tf

HISTORY_FILENAME = "training_history.json"


def progress_path(scratch_dir: str, worker_index: int) -> str:
    return os.path.join(scratch_dir, "progress", f"worker-{worker_index}.json")


def load_progress(scratch_dir: str, worker_index: int) -> dict[str, Any]:
    path = progress_path(scratch_dir, worker_index)
    if not tf.io.gfile.exists(path):
        return {"worker": worker_index, "starts": [], "epochs": []}
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def save_progress(scratch_dir: str, progress: dict[str, Any]) -> None:
    path = progress_path(scratch_dir, progress["worker"])
    tf.io.gfile.makedirs(os.path.dirname(path))
    tmp = path + ".tmp"
    with tf.io.gfile.GFile(tmp, "w") as f:
        json.dump(progress, f, indent=1)
    tf.io.gfile.rename(tmp, path, overwrite=True)  # readers never see half a file


def merge_history(scratch_dir: str, workers: int) -> dict[str, Any]:
    """All workers' progress -> one history: per epoch the chief's metrics plus every worker's clips/s.

    An epoch finished twice (a crash after its record but before the cluster moved on) keeps its last
    record. ``clips_per_s`` is the sum over workers: the cluster's training throughput.
    """
    per_worker = [load_progress(scratch_dir, i) for i in range(workers)]
    by_epoch: list[dict[int, dict]] = [{r["epoch"]: r for r in p["epochs"]} for p in per_worker]
    epochs = []
    for epoch in sorted(by_epoch[0]):
        chief = dict(by_epoch[0][epoch])
        rates = [w.get(epoch, {}).get("clips_per_s") for w in by_epoch]
        chief.pop("worker", None)
        chief["clips_per_s_per_worker"] = rates
        chief["clips_per_s"] = sum(r for r in rates if r is not None)
        epochs.append(chief)
    starts = per_worker[0]["starts"]
    return {
        "workers": workers,
        "attempts": len(starts),
        "resumed_from_epoch": [s["initial_epoch"] for s in starts],
        "epochs": epochs,
    }


def write_history(history: dict[str, Any], directory: str) -> str:
    tf.io.gfile.makedirs(directory)
    path = os.path.join(directory, HISTORY_FILENAME)
    with tf.io.gfile.GFile(path, "w") as f:
        json.dump(history, f, indent=1)
    return path
