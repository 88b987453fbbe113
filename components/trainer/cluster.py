"""Reads the cluster layout a launcher gave a worker (TF_CONFIG) without needing TensorFlow.

Layout convention of this trainer: a cluster of ``worker`` tasks only, worker 0 is the chief
(MultiWorkerMirroredStrategy's default when there is no ``chief`` task). A ``chief`` task is accepted
too and counted as worker 0.
"""
from __future__ import annotations

import dataclasses
import json
import os


@dataclasses.dataclass(frozen=True)
class ClusterInfo:
    task_type: str
    task_index: int
    num_workers: int
    has_chief_task: bool = False

    @property
    def is_chief(self) -> bool:
        if self.has_chief_task:
            return self.task_type == "chief"
        return self.task_type == "worker" and self.task_index == 0

    @property
    def worker_index(self) -> int:
        """A cluster-wide index: the chief is 0, then the workers (with or without a chief task)."""
        if self.task_type == "chief":
            return 0
        return self.task_index + (1 if self.has_chief_task else 0)


def cluster_info(tf_config: str | None = None) -> ClusterInfo:
    """Parses TF_CONFIG (the environment's when not given); no TF_CONFIG means a one-worker cluster."""
    text = os.environ.get("TF_CONFIG", "") if tf_config is None else tf_config
    if not text:
        return ClusterInfo("worker", 0, 1)
    try:
        cfg = json.loads(text)
        cluster, task = cfg["cluster"], cfg["task"]
        task_type, task_index = task["type"], int(task["index"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"TF_CONFIG is not a valid cluster description ({exc!r}): {text[:300]!r}") from None
    if task_type not in ("chief", "worker"):
        raise ValueError(f"TF_CONFIG task type must be 'chief' or 'worker' for this trainer, got {task_type!r}")
    num_workers = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
    return ClusterInfo(task_type, task_index, num_workers, has_chief_task=bool(cluster.get("chief")))
