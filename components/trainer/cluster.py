"""Reads the cluster layout a launcher gave a worker (TF_CONFIG) without needing TensorFlow.

Layout convention of this trainer: a cluster of ``worker`` tasks only, worker 0 is the chief
(MultiWorkerMirroredStrategy's default when there is no ``chief`` task). A ``chief`` task is accepted
too and counted as worker 0.

A replica of a Kubernetes Indexed Job (the ``k8s-job`` launcher) gets no TF_CONFIG from anyone: it derives its own
(``indexed_job_tf_config``) from the Job controller's ``JOB_COMPLETION_INDEX`` and the stable DNS names the Job's
headless Service gives its pods, ``<job>-<index>.<service>.<namespace>.svc``, which the launcher passes as a
pattern.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Mapping, MutableMapping


COMPLETION_INDEX_ENV = "JOB_COMPLETION_INDEX"       # set by the Job controller in Indexed completion mode
PEER_PATTERN_ENV = "TRAINER_PEER_PATTERN"          # every replica's host:port, with {index}
REPLICAS_ENV = "TRAINER_REPLICAS"


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


def indexed_job_tf_config(env: Mapping[str, str]) -> str | None:
    """TF_CONFIG for a replica of an Indexed Job, from ``TRAINER_PEER_PATTERN`` (e.g.
    ``bresnet-1-{index}.bresnet-1.team.svc:2222``), ``TRAINER_REPLICAS`` and ``JOB_COMPLETION_INDEX``: a cluster of
    ``worker`` tasks, this pod's index its task, index 0 the chief. None where the pattern is not set (another
    launcher) or there is one replica (MWMS needs no cluster then)."""
    pattern = env.get(PEER_PATTERN_ENV, "")
    if not pattern:
        return None
    try:
        replicas = int(env.get(REPLICAS_ENV, ""))
        index = int(env.get(COMPLETION_INDEX_ENV, ""))
    except ValueError:
        raise ValueError(f"{PEER_PATTERN_ENV} is set, so {REPLICAS_ENV} and {COMPLETION_INDEX_ENV} (the Job "
                         f"controller's, Indexed completion mode) must be integers, got "
                         f"{env.get(REPLICAS_ENV)!r} and {env.get(COMPLETION_INDEX_ENV)!r}") from None
    if "{index}" not in pattern or not 0 <= index < replicas:
        raise ValueError(f"{PEER_PATTERN_ENV} {pattern!r} must contain {{index}}, and {COMPLETION_INDEX_ENV} "
                         f"{index} must be in 0..{replicas - 1}")
    if replicas == 1:
        return None
    peers = [pattern.replace("{index}", str(i)) for i in range(replicas)]
    return json.dumps({"cluster": {"worker": peers}, "task": {"type": "worker", "index": index}})


def derive_tf_config(environ: MutableMapping[str, str] | None = None) -> str | None:
    """Sets TF_CONFIG in ``environ`` (os.environ) from the Indexed Job variables when no launcher gave one; returns
    what it set, or None."""
    environ = os.environ if environ is None else environ
    if environ.get("TF_CONFIG"):
        return None
    tf_config = indexed_job_tf_config(environ)
    if tf_config is not None:
        environ["TF_CONFIG"] = tf_config
    return tf_config
