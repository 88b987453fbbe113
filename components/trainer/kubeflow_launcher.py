"""Launcher backend for Kubernetes: one Kubeflow Training Operator ``TFJob`` (kubeflow.org/v1) per attempt.

The TFJob has a ``Chief`` replica and ``workers - 1`` ``Worker`` replicas, each a container named ``tensorflow``
running the same image and command as local workers (``python -m components.trainer.worker --job <uri>``); the
operator injects TF_CONFIG. The job description and the BackupAndRestore scratch live under the Trainer's
``model_run`` URI (gs:// on a cluster), where every pod can read them. Manifests are built with the
kubeflow-training SDK models and sent with the official kubernetes client.

Where the TFJob goes, its name, how it is watched and that it is always deleted (SIGTERM and Ctrl-C included) are
shared with the Job backend: ``kubernetes_pods.KubernetesLauncher``.

Restarts (``restart_policy``, default ``OnFailure``): the Training Operator's TFJob guide recommends OnFailure
for chief and workers. Under MultiWorkerMirroredStrategy a worker that dies makes its peers fail too (their
collectives raise, the process exits with code 1); OnFailure lets the kubelet restart each failed container in
place (same pod, same TF_CONFIG address) and Keras BackupAndRestore resumes from the last epoch. ExitCode would
treat those peers' code 1 as permanent and fail the job on any real crash, restarting only 128+ (signals); Never
fails the TFJob on the first failure and this launcher then starts a new TFJob (whole-cluster restart) up to
``max_restarts`` times. With OnFailure/ExitCode one TFJob carries the restarts: ``runPolicy.backoffLimit`` is
``max_restarts * workers + 1`` (one crash can restart every replica once; the operator fails the job when the
restart count reaches the limit, so the ``+ 1``), and this launcher also stops the job after more than
``max_restarts * workers`` observed replica crashes (the operator does not bound ExitCode retries:
kubeflow/training-operator#2045). With ``max_restarts`` 0 the replicas use Never whatever the option says:
nothing may restart, and Never keeps the failed pod (exit code, log) where a restart policy would have the
operator delete every pod at the first restart.

Watching: the TFJob's conditions are read with their ``status`` ("True" only); a Failed condition whose message
says "active longer than specified deadline" is ``timeout_s`` (the TFJob's ``activeDeadlineSeconds``).
"""
from __future__ import annotations

import logging
import math
from typing import Any, Mapping, Sequence

from components.trainer.config import TrainingJob
from components.trainer.kubernetes_pods import (PART_OF, JobStatus, JobTimeoutError, JobVanishedError,
                                                KubernetesLauncher, backoff_limit, job_name)

logger = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "kubeflow.org", "v1", "tfjobs"
JOB_NAME_LABEL = "training.kubeflow.org/job-name"
REPLICA_TYPE_LABEL = "training.kubeflow.org/replica-type"
REPLICA_INDEX_LABEL = "training.kubeflow.org/replica-index"
DEADLINE_MESSAGE = "active longer than specified deadline"   # the operator's ReconcileJobs failure message
_STATES = ("Created", "Running", "Restarting", "Succeeded", "Failed")

TFJobTimeoutError = JobTimeoutError     # the TFJob ran past timeout_s
TFJobError = JobVanishedError           # the TFJob vanished while it was watched
tfjob_name = job_name


def job_state(conditions: Sequence[Mapping[str, Any]] | None) -> tuple[str, Mapping[str, Any] | None]:
    """The TFJob's state from its conditions, counting only those with status "True": Failed or Succeeded
    when one is, else the latest of Restarting/Running/Created (conditions are appended as they change);
    "Pending" when none is True yet."""
    true = [c for c in conditions or [] if c.get("status") == "True" and c.get("type") in _STATES]
    for terminal in ("Failed", "Succeeded"):
        for c in true:
            if c["type"] == terminal:
                return terminal, c
    return (true[-1]["type"], true[-1]) if true else ("Pending", None)


class KubeflowTFJobLauncher(KubernetesLauncher):
    name = "kubeflow"
    kind = "TFJob"

    def build_tfjob(self, name: str, job_uri: str, workers: int, attempt: int, *, namespace: str | None = None,
                    max_restarts: int = 0):
        """The TFJob as kubeflow-training SDK model objects (validated by their constructors)."""
        from kubeflow.training import (KubeflowOrgV1ReplicaSpec, KubeflowOrgV1RunPolicy, KubeflowOrgV1TFJob,
                                       KubeflowOrgV1TFJobSpec)
        from kubernetes.client import V1ObjectMeta

        pod = self.replica_template(self.replica_container(job_uri, attempt))   # the operator sets TF_CONFIG
        policy = self.replica_restart_policy(max_restarts)

        def replicas(n):
            return KubeflowOrgV1ReplicaSpec(replicas=n, restart_policy=policy, template=pod)

        specs = {"Chief": replicas(1)}
        if workers > 1:
            specs["Worker"] = replicas(workers - 1)
        return KubeflowOrgV1TFJob(
            api_version=f"{GROUP}/{VERSION}", kind="TFJob",
            metadata=V1ObjectMeta(name=name, namespace=namespace or self.namespace, labels=dict(PART_OF)),
            spec=KubeflowOrgV1TFJobSpec(
                run_policy=KubeflowOrgV1RunPolicy(
                    # Pods stay (for logs and exit codes) until this launcher deletes the TFJob, which it always does.
                    clean_pod_policy="None",
                    backoff_limit=backoff_limit(policy, max_restarts, workers),
                    active_deadline_seconds=None if self.timeout_s is None else int(math.ceil(self.timeout_s))),
                tf_replica_specs=specs))

    # ---- the cluster ------------------------------------------------------------------------------------

    def _create(self, api_client, namespace: str, name: str, job_uri: str, job: TrainingJob, attempt: int,
                created: list[str]) -> None:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        body = api_client.sanitize_for_serialization(self.build_tfjob(
            name, job_uri, job.config.workers, attempt, namespace=namespace, max_restarts=job.config.max_restarts))
        created.append("tfjob")
        try:
            client.CustomObjectsApi(api_client).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                                                body)
        except ApiException:
            created.remove("tfjob")  # refused by the API server: nothing to delete
            raise

    def _delete(self, api_client, namespace: str, name: str, created: list[str]) -> None:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        by_hand = f"kubectl delete tfjob -n {namespace} {name}"
        try:
            client.CustomObjectsApi(api_client).delete_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, propagation_policy="Foreground")
            logger.info("deleted TFJob %s/%s", namespace, name)
        except ApiException as exc:
            if exc.status != 404:
                self._log_delete_error(f"TFJob {namespace}/{name}", f"HTTP {exc.status} {exc.reason}", by_hand)
        except Exception as exc:  # never mask the error that got us here
            self._log_delete_error(f"TFJob {namespace}/{name}", repr(exc), by_hand)

    def _status(self, api_client, namespace: str, name: str) -> JobStatus:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        try:
            obj = self._call(client.CustomObjectsApi(api_client).get_namespaced_custom_object, GROUP, VERSION,
                             namespace, PLURAL, name)
        except ApiException as exc:
            if exc.status == 404:
                raise TFJobError(f"TFJob {namespace}/{name} was deleted while running (by someone else)") from None
            raise
        state, condition = job_state((obj.get("status") or {}).get("conditions"))
        message = (condition or {}).get("message", "")
        deadline = state == "Failed" and (DEADLINE_MESSAGE in message
                                          or (condition or {}).get("reason") == "DeadlineExceeded")
        return JobStatus(state, message, deadline)

    def _pod_selector(self, name: str) -> str:
        return f"{JOB_NAME_LABEL}={name}"

    def _no_pods_hint(self, namespace: str) -> str:
        return f"is the Kubeflow Training Operator running, and allowed to create pods in {namespace!r}?"

    def _worker_index(self, pod) -> int:
        labels = pod.metadata.labels or {}
        index = int(labels.get(REPLICA_INDEX_LABEL, 0))
        return index + 1 if labels.get(REPLICA_TYPE_LABEL, "").lower() == "worker" else index  # chief is 0
