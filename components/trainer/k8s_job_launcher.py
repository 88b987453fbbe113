"""Launcher backend for any Kubernetes cluster, no operator needed: a batch/v1 Indexed Job and a headless Service.

Kubeflow's Trainer v2 has dropped TFJob, and Kueue is deprecating its Training Operator v1 integration; the Job
controller is part of Kubernetes itself. Per attempt this backend creates:

- a headless Service (``clusterIP: None``) named like the Job, selecting the Job's pods by the
  ``batch.kubernetes.io/job-name`` label the Job controller gives them, with ``publishNotReadyAddresses`` so a
  replica's DNS name exists as soon as its pod has an address (the replicas have no readiness probe to wait for);
- an Indexed Job (``completionMode: Indexed``, ``completions = parallelism = workers``) whose pod template sets
  ``subdomain`` to the Service: the Job controller names each pod's host ``<job>-<index>`` and sets
  ``JOB_COMPLETION_INDEX``, so replica i is reachable at ``<job>-<i>.<job>.<namespace>.svc`` for the Job's life,
  also after a restart (Kubernetes docs, "Indexed Job for Parallel Processing with Static Work Assignment" and
  "DNS for Services and Pods"; kubernetes pkg/controller/job/indexed_job_utils.go sets the hostname and the env).

No one injects TF_CONFIG: each replica derives it (``cluster.indexed_job_tf_config``) from ``JOB_COMPLETION_INDEX``
and ``TRAINER_PEER_PATTERN`` = ``<job>-{index}.<job>.<namespace>.svc:<port>``: a cluster of ``worker`` tasks,
index 0 the chief.

Success and failure come from the Job's conditions: ``Complete`` (or ``SuccessCriteriaMet``, which Kubernetes
1.31+ sets first) when every index has succeeded; ``Failed`` (or the earlier ``FailureTarget``) with reason
``BackoffLimitExceeded`` or ``DeadlineExceeded`` (``timeout_s``, the Job's ``activeDeadlineSeconds``). Restarts:
``OnFailure`` restarts a crashed replica in place (same pod, same name) and the Job counts container restarts
toward ``backoffLimit`` = ``max_restarts * workers + 1`` (pkg/controller/job: pastBackoffLimitOnFailure);
``Never`` (and ``max_restarts`` 0) sets ``backoffLimit`` 0 and each attempt is a new Job. ``ExitCode`` is a
Training Operator policy with no Job equivalent and is refused. Both objects are deleted after every attempt
(the Job in the foreground: a Job deleted through the API without a propagation policy would orphan its pods)
and on SIGTERM/Ctrl-C. The RBAC this needs is the ``bresnet-trainer-jobs`` Role in deploy/rbac.yaml.
"""
from __future__ import annotations

import logging
import math

from components.trainer.cluster import PEER_PATTERN_ENV, REPLICAS_ENV
from components.trainer.config import TrainingJob
from components.trainer.kubernetes_pods import PART_OF, JobStatus, JobVanishedError, KubernetesLauncher, backoff_limit

logger = logging.getLogger(__name__)

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
COMPLETION_INDEX_KEY = "batch.kubernetes.io/job-completion-index"   # a pod annotation, and a label since 1.28
DEFAULT_PORT = 2222


class IndexedJobLauncher(KubernetesLauncher):
    name = "k8s-job"
    kind = "Job"

    def __init__(self, *, port: int = DEFAULT_PORT, **options):
        if options.get("restart_policy") == "ExitCode":
            raise ValueError("restart_policy ExitCode is the Training Operator's (launcher kubeflow); a Job's replicas "
                             "restart OnFailure (in place) or Never (a new Job per attempt)")
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ValueError(f"port must be an integer in 1..65535, got {port!r}")
        super().__init__(**options)
        self.port = port

    # ---- the manifests ----------------------------------------------------------------------------------

    def peer_pattern(self, name: str, namespace: str) -> str:
        return f"{name}-{{index}}.{name}.{namespace}.svc:{self.port}"

    def build_service(self, name: str, namespace: str):
        from kubernetes.client import V1ObjectMeta, V1Service, V1ServicePort, V1ServiceSpec

        return V1Service(
            api_version="v1", kind="Service",
            metadata=V1ObjectMeta(name=name, namespace=namespace, labels=dict(PART_OF)),
            spec=V1ServiceSpec(cluster_ip="None", selector={JOB_NAME_LABEL: name}, publish_not_ready_addresses=True,
                               ports=[V1ServicePort(name="tf", port=self.port, target_port=self.port)]))

    def build_job(self, name: str, job_uri: str, workers: int, attempt: int, *, namespace: str,
                  max_restarts: int = 0):
        from kubernetes.client import V1ContainerPort, V1Job, V1JobSpec, V1ObjectMeta

        policy = self.replica_restart_policy(max_restarts)
        env = {PEER_PATTERN_ENV: self.peer_pattern(name, namespace), REPLICAS_ENV: str(workers)}
        container = self.replica_container(job_uri, attempt, env=env,
                                           ports=[V1ContainerPort(name="tf", container_port=self.port)])
        return V1Job(
            api_version="batch/v1", kind="Job",
            metadata=V1ObjectMeta(name=name, namespace=namespace, labels=dict(PART_OF)),
            spec=V1JobSpec(
                completion_mode="Indexed", completions=workers, parallelism=workers,
                # Never: no restart of any kind in this Job (0; the API's default would be 6 new pods).
                backoff_limit=0 if policy == "Never" else backoff_limit(policy, max_restarts, workers),
                active_deadline_seconds=None if self.timeout_s is None else int(math.ceil(self.timeout_s)),
                template=self.replica_template(container, restart_policy=policy, subdomain=name)))

    # ---- the cluster ------------------------------------------------------------------------------------

    def _create(self, api_client, namespace: str, name: str, job_uri: str, job: TrainingJob, attempt: int,
                created: list[str]) -> None:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        for what, create, body in (
                ("service", client.CoreV1Api(api_client).create_namespaced_service,
                 self.build_service(name, namespace)),   # first: the names resolve once the pods start
                ("job", client.BatchV1Api(api_client).create_namespaced_job,
                 self.build_job(name, job_uri, job.config.workers, attempt, namespace=namespace,
                                max_restarts=job.config.max_restarts))):
            created.append(what)
            try:
                create(namespace, api_client.sanitize_for_serialization(body))
            except ApiException:
                created.remove(what)  # refused by the API server: nothing to delete
                raise

    def _delete(self, api_client, namespace: str, name: str, created: list[str]) -> None:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        calls = {"job": (client.BatchV1Api(api_client).delete_namespaced_job, "job"),
                 "service": (client.CoreV1Api(api_client).delete_namespaced_service, "service")}
        for what in ("job", "service"):   # the Job (and its pods) first, then the names
            if what not in created:
                continue
            delete, kubectl = calls[what]
            by_hand = f"kubectl delete {kubectl} -n {namespace} {name}"
            try:
                delete(name, namespace, propagation_policy="Foreground")
                logger.info("deleted %s %s/%s", "Job" if what == "job" else "Service", namespace, name)
            except ApiException as exc:
                if exc.status != 404:
                    self._log_delete_error(f"{what} {namespace}/{name}", f"HTTP {exc.status} {exc.reason}", by_hand)
            except Exception as exc:  # never mask the error that got us here
                self._log_delete_error(f"{what} {namespace}/{name}", repr(exc), by_hand)

    def _status(self, api_client, namespace: str, name: str) -> JobStatus:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        try:
            job = self._call(client.BatchV1Api(api_client).read_namespaced_job, name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                raise JobVanishedError(f"Job {namespace}/{name} was deleted while running (by someone else)") from None
            raise
        return job_status(job.status)

    def _pod_selector(self, name: str) -> str:
        return f"{JOB_NAME_LABEL}={name}"

    def _no_pods_hint(self, namespace: str) -> str:
        return (f"is the Job controller allowed to create pods in {namespace!r} (a ResourceQuota, a LimitRange, an "
                f"admission webhook)? kubectl describe job shows why")

    def _worker_index(self, pod) -> int:
        meta = pod.metadata
        value = (meta.labels or {}).get(COMPLETION_INDEX_KEY) or (meta.annotations or {}).get(COMPLETION_INDEX_KEY)
        return int(value) if value is not None else -1


def job_status(status) -> JobStatus:
    """A batch/v1 JobStatus (client model) as the launcher's JobStatus, counting conditions with status "True"."""
    conditions = {c.type: c for c in (status.conditions if status else None) or [] if c.status == "True"}
    for kind, state in (("Failed", "Failed"), ("FailureTarget", "Failed"), ("Complete", "Succeeded"),
                        ("SuccessCriteriaMet", "Succeeded")):
        if kind in conditions:
            condition = conditions[kind]
            message = f"{condition.reason}: {condition.message}" if condition.reason else (condition.message or "")
            return JobStatus(state, message, deadline=state == "Failed" and condition.reason == "DeadlineExceeded")
    if status is not None and (status.active or 0) > 0:
        return JobStatus("Running", f"{status.active} active, {status.succeeded or 0} succeeded, "
                                    f"{status.failed or 0} failed")
    return JobStatus("Pending")
