"""Launcher backend for Kubernetes: one Kubeflow Training Operator ``TFJob`` (kubeflow.org/v1) per attempt.

The TFJob has a ``Chief`` replica and ``workers - 1`` ``Worker`` replicas, each a container named ``tensorflow``
running the same image and command as local workers (``python -m components.trainer.worker --job <uri>``); the
operator injects TF_CONFIG. The job description and the BackupAndRestore scratch live under the Trainer's
``model_run`` URI (gs:// on a cluster), where every pod can read them. The launcher waits for the TFJob, logs
each condition change, and on failure raises with the failed pod's exit code and log tail; it always deletes
the TFJob at the end. Manifests are built with the kubeflow-training SDK models and sent with the official
kubernetes client.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import time
from typing import Any

from components.trainer.config import TrainingJob
from components.trainer.launcher import LOG_TAIL_LINES, WORKER_MODULE, AttemptFailed, Launcher, WorkerFailure

logger = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "kubeflow.org", "v1", "tfjobs"
CONTAINER_NAME = "tensorflow"           # the Training Operator requires this name
JOB_NAME_LABEL = "training.kubeflow.org/job-name"
REPLICA_TYPE_LABEL = "training.kubeflow.org/replica-type"
REPLICA_INDEX_LABEL = "training.kubeflow.org/replica-index"


class TFJobTimeoutError(TimeoutError):
    pass


class KubeflowTFJobLauncher(Launcher):
    name = "kubeflow"

    def __init__(self, *, image: str, namespace: str = "kubeflow", worker_cpu: str = "4",
                 worker_memory: str = "16Gi", service_account: str = "", poll_s: float = 10.0,
                 timeout_s: float | None = None, custom_api: Any = None, core_api: Any = None):
        if not isinstance(image, str) or not image:
            raise ValueError(f"image must be a non-empty image reference, got {image!r}")
        if not isinstance(namespace, str) or not namespace:
            raise ValueError(f"namespace must be a non-empty string, got {namespace!r}")
        if poll_s <= 0:
            raise ValueError(f"poll_s must be > 0, got {poll_s!r}")
        self.image, self.namespace = image, namespace
        self.worker_cpu, self.worker_memory, self.service_account = worker_cpu, worker_memory, service_account
        self.poll_s, self.timeout_s = poll_s, timeout_s
        self._custom_api, self._core_api = custom_api, core_api  # injected by tests; else from kube config

    # ---- the manifest -----------------------------------------------------------------------------------

    def build_tfjob(self, name: str, job_uri: str, workers: int, attempt: int):
        """The TFJob as kubeflow-training SDK model objects (validated by their constructors)."""
        from kubeflow.training import (KubeflowOrgV1ReplicaSpec, KubeflowOrgV1RunPolicy, KubeflowOrgV1TFJob,
                                       KubeflowOrgV1TFJobSpec)
        from kubernetes.client import (V1Container, V1EnvVar, V1ObjectMeta, V1PodSpec, V1PodTemplateSpec,
                                       V1ResourceRequirements)
        from components.trainer.worker import ATTEMPT_ENV

        container = V1Container(
            name=CONTAINER_NAME, image=self.image,
            command=["python", "-m", WORKER_MODULE, "--job", job_uri],
            env=[V1EnvVar(name="TF_USE_LEGACY_KERAS", value="1"), V1EnvVar(name=ATTEMPT_ENV, value=str(attempt)),
                 V1EnvVar(name="PYTHONUNBUFFERED", value="1")],
            resources=V1ResourceRequirements(requests={"cpu": self.worker_cpu, "memory": self.worker_memory}))
        pod = V1PodTemplateSpec(spec=V1PodSpec(containers=[container],
                                               service_account_name=self.service_account or None))

        def replicas(n):
            # Never: a failed pod fails the attempt; the launcher restarts the whole cluster from its backup.
            return KubeflowOrgV1ReplicaSpec(replicas=n, restart_policy="Never", template=pod)

        specs = {"Chief": replicas(1)}
        if workers > 1:
            specs["Worker"] = replicas(workers - 1)
        return KubeflowOrgV1TFJob(
            api_version=f"{GROUP}/{VERSION}", kind="TFJob",
            metadata=V1ObjectMeta(name=name, namespace=self.namespace,
                                  labels={"app.kubernetes.io/part-of": "bresnet-tfx"}),
            spec=KubeflowOrgV1TFJobSpec(
                run_policy=KubeflowOrgV1RunPolicy(clean_pod_policy="None", backoff_limit=0),
                tf_replica_specs=specs))

    # ---- running it -------------------------------------------------------------------------------------

    def _apis(self):
        if self._custom_api is None or self._core_api is None:
            from kubernetes import client, config
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            self._custom_api = self._custom_api or client.CustomObjectsApi()
            self._core_api = self._core_api or client.CoreV1Api()
        return self._custom_api, self._core_api

    def launch(self, job: TrainingJob):
        # Pods cannot see this container's disk: job description, backups and history go under the run URI.
        return super().launch(dataclasses.replace(job, scratch_dir=job.run_dir.rstrip("/") + "/scratch"))

    def _run_cluster(self, job: TrainingJob, attempt: int) -> list[str]:
        import tensorflow as tf
        from kubernetes.client import ApiClient

        custom, core = self._apis()
        job_uri = job.scratch_dir + "/job.json"
        tf.io.gfile.makedirs(job.scratch_dir)
        with tf.io.gfile.GFile(job_uri, "w") as f:
            f.write(job.to_json())
        name = f"bresnet-train-{int(time.time())}-a{attempt}"
        body = ApiClient().sanitize_for_serialization(self.build_tfjob(name, job_uri, job.config.workers, attempt))
        custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)
        logger.info("attempt %d: created TFJob %s/%s (%d replicas, image %s)", attempt, self.namespace, name,
                    job.config.workers, self.image)
        try:
            self._wait(custom, core, name, attempt)
            return self._save_logs(core, name)
        finally:
            custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name,
                                                   propagation_policy="Foreground")
            logger.info("deleted TFJob %s", name)

    def _wait(self, custom, core, name: str, attempt: int) -> None:
        deadline = None if self.timeout_s is None else time.monotonic() + self.timeout_s
        last = None
        while True:
            status = custom.get_namespaced_custom_object_status(GROUP, VERSION, self.namespace, PLURAL, name)
            conditions = (status.get("status") or {}).get("conditions") or []
            current = conditions[-1]["type"] if conditions else "Pending"
            if current != last:
                logger.info("TFJob %s: %s%s", name, current,
                            f" ({conditions[-1].get('message', '')})" if conditions else "")
                last = current
            if current == "Succeeded":
                return
            if current == "Failed":
                raise AttemptFailed(self._failure(core, name, attempt, conditions[-1].get("message", "")))
            if deadline is not None and time.monotonic() > deadline:
                raise TFJobTimeoutError(f"TFJob {name} not finished after {self.timeout_s}s (last state {current})")
            time.sleep(self.poll_s)

    def _pods(self, core, name: str):
        return core.list_namespaced_pod(self.namespace, label_selector=f"{JOB_NAME_LABEL}={name}").items

    def _failure(self, core, name: str, attempt: int, message: str) -> WorkerFailure:
        """The first pod that terminated with a non-zero exit code, with its log tail."""
        for pod in self._pods(core, name):
            for status in pod.status.container_statuses or []:
                terminated = status.state.terminated if status.state else None
                if status.name == CONTAINER_NAME and terminated is not None and terminated.exit_code != 0:
                    labels = pod.metadata.labels or {}
                    index = int(labels.get(REPLICA_INDEX_LABEL, 0))
                    if labels.get(REPLICA_TYPE_LABEL, "").lower() == "worker":
                        index += 1  # the chief is worker 0 in our numbering
                    log = core.read_namespaced_pod_log(pod.metadata.name, self.namespace, container=CONTAINER_NAME,
                                                       tail_lines=LOG_TAIL_LINES)
                    return WorkerFailure(attempt=attempt, worker_index=index, exit_code=terminated.exit_code,
                                         log_path=f"pod/{pod.metadata.name}", log_tail=log)
        return WorkerFailure(attempt=attempt, worker_index=-1, exit_code=-1, log_path=f"tfjob/{name}",
                             log_tail=f"TFJob failed without a failed pod: {message}")

    def _save_logs(self, core, name: str) -> list[str]:
        """Pod logs into local files, so the Trainer keeps them with the run like local workers' logs."""
        directory = tempfile.mkdtemp(prefix=f"{name}-logs-")
        paths = []
        for pod in self._pods(core, name):
            path = os.path.join(directory, f"{pod.metadata.name}.log")
            with open(path, "w") as f:
                f.write(core.read_namespaced_pod_log(pod.metadata.name, self.namespace, container=CONTAINER_NAME))
            paths.append(path)
        return paths
