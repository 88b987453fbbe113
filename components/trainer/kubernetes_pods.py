"""What the two Kubernetes launcher backends share: replica pods built from one template, and watching them.

``KubernetesLauncher`` is the base of ``kubeflow_launcher.KubeflowTFJobLauncher`` (a Training Operator TFJob) and
``k8s_job_launcher.IndexedJobLauncher`` (a batch/v1 Indexed Job and a headless Service, no operator). A subclass
says how its job object is created, read and deleted, which pods are its replicas and which worker each is; this
class does the rest, the same way for both:

- options: image, namespace, requests, ``nvidia.com/gpu`` limits, node selector, tolerations, service account,
  restart policy, time limits, kubeconfig/context, the replica command and extra env, each validated up front;
- where: ``namespace`` None is the step pod's own namespace (its service account's namespace file in-cluster),
  else the kubeconfig context's, else ``default``; names ``<prefix>-<6 hex of the run>-<6 random hex>-a<n>``
  (a DNS-1035 label: unique per run and attempt);
- one attempt: the job description goes under the run URI (gs:// on a cluster, where every pod reads it), the job
  is created inside ``termination_guard`` and deleted (foreground: pods first) whatever happens, SIGTERM and
  Ctrl-C included;
- watching: the job's state each ``poll_s``; every replica crash is logged with its exit code and log tail as it
  is seen (pods may be gone once the job gives up); pods Pending past ``pending_timeout_s`` fail the step with the
  scheduler's or kubelet's reason and the pod's events; ``timeout_s`` is the job's ``activeDeadlineSeconds`` and
  this launcher's own limit; after success the other replicas get ``finish_grace_s`` before their logs are saved.

Restarts: ``restart_policy`` OnFailure (default) lets the kubelet restart a crashed replica in place (same pod,
same address) and Keras BackupAndRestore resumes from the last epoch; Never makes each attempt a new job
(whole-cluster restart, up to ``max_restarts`` times). With ``max_restarts`` 0 the replicas use Never whatever
the option says, which keeps the failed pod, its exit code and its log.
"""
from __future__ import annotations

import abc
import dataclasses
import hashlib
import logging
import math
import os
import re
import secrets
import tempfile
import time
from typing import Any, Mapping, Sequence

from components.trainer.config import TrainingJob
from components.trainer.launcher import (LOG_TAIL_LINES, WORKER_MODULE, AttemptFailed, Launcher, LaunchTimeoutError,
                                         WorkerFailure, termination_guard, termination_signals_blocked, write_text)
from components.trainer.precision import ReplicaDevices

logger = logging.getLogger(__name__)

CONTAINER_NAME = "tensorflow"           # the Training Operator requires this name; the Job backend uses it too
SERVICE_ACCOUNT_NAMESPACE_PATH = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
RESTART_POLICIES = ("OnFailure", "ExitCode", "Never")
DEFAULT_TIMEOUT_S = 6 * 3600.0
DEFAULT_PENDING_TIMEOUT_S = 15 * 60.0
JOB_PLACEHOLDER = "{job}"
PART_OF = {"app.kubernetes.io/part-of": "bresnet-tfx"}
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_TOLERATION_KEYS = {"key", "operator", "value", "effect", "tolerationSeconds"}


class ReplicaPendingError(RuntimeError):
    """A replica pod stayed Pending past ``pending_timeout_s`` (unschedulable, image not pullable, ...)."""


class JobTimeoutError(LaunchTimeoutError):
    """The job ran past ``timeout_s`` (its activeDeadlineSeconds, or this launcher's own clock)."""


class JobVanishedError(RuntimeError):
    """The job vanished or the API kept failing while it was watched."""


# ---- pure helpers ------------------------------------------------------------------------------------

def resolve_namespace(namespace: str | None, *, in_cluster: bool, kubeconfig: str | None = None,
                      context: str | None = None,
                      sa_namespace_path: str = SERVICE_ACCOUNT_NAMESPACE_PATH) -> tuple[str, str]:
    """(namespace, where it came from): explicit, else the pod's service account namespace in-cluster, else the
    kubeconfig context's namespace, else ``default``."""
    if namespace:
        return namespace, "configured"
    if in_cluster and os.path.isfile(sa_namespace_path):
        with open(sa_namespace_path) as f:
            value = f.read().strip()
        if value:
            return value, f"this pod's service account ({sa_namespace_path})"
    if not in_cluster:
        from kubernetes import config

        try:
            contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
        except (config.ConfigException, OSError, TypeError):
            contexts, active = [], None
        chosen = next((c for c in contexts if c.get("name") == context), None) if context else active
        value = ((chosen or {}).get("context") or {}).get("namespace")
        if value:
            return value, f"kubeconfig context {(chosen or {}).get('name')!r}"
    return "default", "default"


def job_name(prefix: str, run_key: str, attempt: int, token: str | None = None) -> str:
    """``<prefix>-<6 hex of the run>-<6 random hex>-a<attempt>``: a DNS-1035 label of at most 63 characters."""
    run = hashlib.sha256(run_key.encode()).hexdigest()[:6]
    token = token or secrets.token_hex(3)
    name = f"{prefix}-{run}-{token}-a{attempt}"
    if len(name) > 63 or not _DNS1035.match(name):
        raise ValueError(f"job name {name!r} is not a DNS-1035 label of at most 63 characters")
    return name


def backoff_limit(restart_policy: str, max_restarts: int, workers: int) -> int | None:
    """The job's backoffLimit for a replica restart policy (None: not set).

    Both the Training Operator and the Job controller fail a job whose replicas' container restarts reach the
    limit (``>=``; with 0: any restart), so one crash that restarts every replica once per allowed restart needs
    ``max_restarts * workers + 1``."""
    if restart_policy == "Never":
        # A TFJob's backoffLimit with Never makes the operator delete every pod at the first failure (its
        # exceedsBackoffLimit), which hides the failed pod's exit code and log: leave it unset.
        return None
    return 0 if max_restarts == 0 else max_restarts * workers + 1


def _transient_errors() -> tuple[type[BaseException], ...]:
    try:
        import urllib3

        return OSError, urllib3.exceptions.HTTPError
    except ImportError:
        return (OSError,)


TRANSIENT_ERRORS = _transient_errors()


def _when(timestamp: Any) -> str:
    """A sortable form of a client timestamp (datetime or RFC 3339 string); unknown sorts last."""
    if timestamp is None:
        return "~"
    return timestamp.isoformat() if hasattr(timestamp, "isoformat") else str(timestamp)


def require_number(name: str, value: Any, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or math.isinf(value):
        raise ValueError(f"{name} must be a positive number{' or None' if allow_none else ''}, got {value!r}")


@dataclasses.dataclass
class JobStatus:
    """What a subclass reads from its job object: ``state`` one of Pending, Created, Running, Restarting,
    Succeeded, Failed; the condition's message; ``deadline`` when the failure is the active deadline."""
    state: str
    message: str = ""
    deadline: bool = False


@dataclasses.dataclass
class _Watch:
    """What one attempt's polling has seen."""
    created: float
    pending_since: dict = dataclasses.field(default_factory=dict)      # pod uid -> monotonic
    crashes: list = dataclasses.field(default_factory=list)            # (finished at, WorkerFailure), as seen
    crash_keys: set = dataclasses.field(default_factory=set)
    state: str | None = None
    phases: dict = dataclasses.field(default_factory=dict)


# ---- the base launcher -------------------------------------------------------------------------------

class KubernetesLauncher(Launcher):
    """Replicas as pods of one Kubernetes job object per attempt; subclasses say which object (see above)."""

    kind: str = "job"   # in log lines and errors: "TFJob", "Job"

    def __init__(self, *, image: str, namespace: str | None = None, worker_cpu: str = "4",
                 worker_memory: str = "16Gi", worker_gpu: int = 0, node_selector: Mapping[str, str] | None = None,
                 tolerations: Sequence[Mapping[str, Any]] | None = None, service_account: str = "",
                 restart_policy: str = "OnFailure",
                 timeout_s: float | None = DEFAULT_TIMEOUT_S, pending_timeout_s: float = DEFAULT_PENDING_TIMEOUT_S,
                 poll_s: float = 5.0, finish_grace_s: float = 120.0, kubeconfig: str | None = None,
                 context: str | None = None, name_prefix: str = "bresnet", command: Sequence[str] | None = None,
                 env: Mapping[str, str] | None = None):
        if not isinstance(image, str) or not image:
            raise ValueError(f"image must be a non-empty image reference, got {image!r}")
        if namespace is not None and not isinstance(namespace, str):
            raise ValueError(f"namespace must be a string or None (the pod's own namespace), got {namespace!r}")
        if restart_policy not in RESTART_POLICIES:
            raise ValueError(f"restart_policy must be one of {RESTART_POLICIES} (Always would restart a replica "
                             f"that finished, so the job could never succeed), got {restart_policy!r}")
        require_number("timeout_s", timeout_s, allow_none=True)
        require_number("pending_timeout_s", pending_timeout_s)
        require_number("poll_s", poll_s)
        require_number("finish_grace_s", finish_grace_s)
        if not isinstance(name_prefix, str) or len(name_prefix) > 30 or not _DNS1035.match(name_prefix):
            raise ValueError(f"name_prefix must be a DNS-1035 label of at most 30 characters, got {name_prefix!r}")
        if command is not None and (isinstance(command, str) or not command
                                    or not all(isinstance(a, str) for a in command)):
            raise ValueError(f"command must be a non-empty list of strings or None, got {command!r}")
        if env is not None and (not isinstance(env, Mapping)
                                or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())):
            raise ValueError(f"env must map str to str, got {env!r}")
        for key, value in (("worker_cpu", worker_cpu), ("worker_memory", worker_memory),
                           ("service_account", service_account)):
            if not isinstance(value, str):
                raise ValueError(f"{key} must be a string, got {value!r}")
        if isinstance(worker_gpu, bool) or not isinstance(worker_gpu, int) or worker_gpu < 0:
            raise ValueError(f"worker_gpu must be an integer >= 0, got {worker_gpu!r}")
        if node_selector is not None and (not isinstance(node_selector, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in node_selector.items())):
            raise ValueError(f"node_selector must map label names to strings, got {node_selector!r}")
        if tolerations is not None and (isinstance(tolerations, (str, Mapping)) or not all(
                isinstance(t, Mapping) and set(t) <= _TOLERATION_KEYS for t in tolerations)):
            raise ValueError(f"tolerations must be a list of Kubernetes toleration objects (keys "
                             f"{sorted(_TOLERATION_KEYS)}), got {tolerations!r}")
        for key, value in (("kubeconfig", kubeconfig), ("context", context)):
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{key} must be a string or None, got {value!r}")
        self.image, self.namespace = image, namespace or None
        self.worker_cpu, self.worker_memory, self.service_account = worker_cpu, worker_memory, service_account
        self.worker_gpu = worker_gpu
        self.node_selector = dict(node_selector or {})
        self.tolerations = [dict(t) for t in tolerations or []]
        self.restart_policy = restart_policy
        self.timeout_s, self.pending_timeout_s = timeout_s, pending_timeout_s
        self.poll_s, self.finish_grace_s = poll_s, finish_grace_s
        self.kubeconfig, self.context, self.name_prefix = kubeconfig, context, name_prefix
        self.command = list(command) if command is not None else None
        self.env = dict(env or {})
        self._client: tuple[Any, str] | None = None

    # ---- what a subclass provides -----------------------------------------------------------------------

    @abc.abstractmethod
    def _create(self, api_client, namespace: str, name: str, job_uri: str, job: TrainingJob, attempt: int,
                created: list[str]) -> None:
        """Creates the attempt's objects, appending each one's description to ``created`` BEFORE asking for it (a
        create cut short by a signal may still have happened); ``_delete`` gets that list."""

    @abc.abstractmethod
    def _delete(self, api_client, namespace: str, name: str, created: list[str]) -> None:
        """Deletes what ``_create`` made (foreground: pods first), logging instead of raising."""

    @abc.abstractmethod
    def _status(self, api_client, namespace: str, name: str) -> JobStatus:
        """The job's state; JobVanishedError when it is gone."""

    @abc.abstractmethod
    def _pod_selector(self, name: str) -> str:
        """The label selector of the job's replica pods."""

    @abc.abstractmethod
    def _worker_index(self, pod) -> int:
        """The trainer's worker index of a replica pod (0: the chief)."""

    # ---- the replicas -----------------------------------------------------------------------------------

    def replica_devices(self) -> ReplicaDevices:
        """``worker_gpu`` nvidia.com/gpu per replica; the GPU model is the node pool's, unknown here."""
        return ReplicaDevices(gpus=self.worker_gpu)

    def replica_restart_policy(self, max_restarts: int) -> str:
        """The replicas' restartPolicy: ``restart_policy``, or Never when no restart is allowed anyway (the failed
        pod, its exit code and its log then stay, instead of being restarted once and deleted)."""
        return "Never" if max_restarts == 0 else self.restart_policy

    def max_attempts(self, job: TrainingJob) -> int:
        # Never: each attempt is a new job (whole-cluster restart). Otherwise one job restarts its replicas.
        return job.config.max_restarts + 1 if self.replica_restart_policy(job.config.max_restarts) == "Never" else 1

    def replica_container(self, job_uri: str, attempt: int, *, env: Mapping[str, str] | None = None,
                          ports: Sequence[Any] | None = None, env_vars: Sequence[Any] = ()):
        """The ``tensorflow`` container of every replica: the worker command on ``job_uri``, requests and GPU
        limits, ``env`` (then the launcher's own ``env`` option), then ``env_vars`` (V1EnvVar, e.g. fieldRefs)."""
        from kubernetes.client import V1Container, V1EnvVar, V1ResourceRequirements
        from components.trainer.worker import ATTEMPT_ENV

        command = ([a.replace(JOB_PLACEHOLDER, job_uri) for a in self.command] if self.command is not None
                   else ["python", "-m", WORKER_MODULE, "--job", job_uri])
        values = {"TF_USE_LEGACY_KERAS": "1", ATTEMPT_ENV: str(attempt), "PYTHONUNBUFFERED": "1", **(env or {}),
                  **self.env}
        return V1Container(
            name=CONTAINER_NAME, image=self.image, command=command, ports=list(ports) if ports else None,
            env=[*(V1EnvVar(name=k, value=v) for k, v in values.items()), *env_vars],
            resources=V1ResourceRequirements(
                requests={"cpu": self.worker_cpu, "memory": self.worker_memory},
                limits={"nvidia.com/gpu": str(self.worker_gpu)} if self.worker_gpu else None))

    def replica_template(self, container, *, restart_policy: str | None = None, hostname: str | None = None,
                         subdomain: str | None = None):
        """The pod template around ``container``: node selector, tolerations, service account."""
        from kubernetes.client import V1ObjectMeta, V1PodSpec, V1PodTemplateSpec, V1Toleration

        tolerations = [V1Toleration(key=t.get("key"), operator=t.get("operator"), value=t.get("value"),
                                    effect=t.get("effect"), toleration_seconds=t.get("tolerationSeconds"))
                       for t in self.tolerations]
        return V1PodTemplateSpec(
            # Kubeflow user namespaces inject Istio sidecars, which keep a finished replica's pod running and
            # break its gRPC: the Training Operator's TFJob guide says to turn injection off for training pods.
            metadata=V1ObjectMeta(annotations={"sidecar.istio.io/inject": "false"}, labels=dict(PART_OF)),
            spec=V1PodSpec(containers=[container], service_account_name=self.service_account or None,
                           node_selector=self.node_selector or None, tolerations=tolerations or None,
                           restart_policy=restart_policy, hostname=hostname, subdomain=subdomain))

    # ---- one attempt ------------------------------------------------------------------------------------

    def _api(self) -> tuple[Any, str]:
        """(ApiClient, namespace), from in-cluster credentials or a kubeconfig."""
        if self._client is None:
            from kubernetes import client, config

            in_cluster = False
            kubeconfig = self.kubeconfig or os.environ.get("KUBECONFIG") or None
            if self.kubeconfig is None:
                try:
                    configuration = client.Configuration()
                    config.load_incluster_config(client_configuration=configuration)
                    api_client, in_cluster = client.ApiClient(configuration), True
                except config.ConfigException:
                    pass
            if not in_cluster:
                api_client = config.new_client_from_config(config_file=kubeconfig, context=self.context)
            namespace, source = resolve_namespace(self.namespace, in_cluster=in_cluster, kubeconfig=kubeconfig,
                                                  context=self.context)
            logger.info("%ss go to namespace %r (%s), API server %s", self.kind, namespace, source,
                        api_client.configuration.host)
            self._client = (api_client, namespace)
        return self._client

    def _core(self, api_client):
        from kubernetes import client

        return client.CoreV1Api(api_client)

    def launch(self, job: TrainingJob):
        # Pods cannot see this container's disk: job description, backups and history go under the run URI.
        return super().launch(dataclasses.replace(job, scratch_dir=job.run_dir.rstrip("/") + "/scratch"))

    def _run_cluster(self, job: TrainingJob, attempt: int) -> list[str]:
        api_client, namespace = self._api()
        job_uri = job.scratch_dir + "/job.json"
        write_text(job_uri, job.to_json())
        name = job_name(self.name_prefix, job.run_dir, attempt)
        created: list[str] = []
        with termination_guard():  # SIGTERM from here on: the finally below deletes the job first
            try:
                self._create(api_client, namespace, name, job_uri, job, attempt, created)
                policy = self.replica_restart_policy(job.config.max_restarts)
                logger.info("attempt %d: created %s %s/%s (%d replicas, image %s, restartPolicy %s)", attempt,
                            self.kind, namespace, name, job.config.workers, self.image, policy)
                allowed_crashes = None if policy == "Never" else job.config.max_restarts * job.config.workers
                pods = self._wait(api_client, namespace, name, attempt, allowed_crashes)
                return self._save_logs(api_client, namespace, name, pods)
            finally:
                if created:
                    with termination_signals_blocked():
                        self._delete(api_client, namespace, name, created)

    def _call(self, fn, *args, **kwargs):
        """An API call, retried a few times on transient failures (connection errors, 429, 5xx)."""
        from kubernetes.client.exceptions import ApiException

        for attempt in range(6):
            try:
                return fn(*args, **kwargs)
            except ApiException as exc:
                if exc.status not in (0, 429, 500, 502, 503, 504) or attempt == 5:
                    raise
                error = exc
            except TRANSIENT_ERRORS as exc:  # connection refused/reset, timeouts
                if attempt == 5:
                    raise
                error = exc
            delay = min(0.5 * 2 ** attempt, 10.0)
            logger.warning("Kubernetes API call %s failed (%r); retrying in %.1fs", fn.__name__, error, delay)
            time.sleep(delay)

    def _log_delete_error(self, what: str, error: Any, command: str) -> None:
        logger.error("could not delete %s (%s); delete it by hand: %s", what, error, command)

    def _wait(self, api_client, namespace: str, name: str, attempt: int, allowed_crashes: int | None) -> list:
        """Polls the job and its pods until it succeeds; returns its pods then."""
        core = self._core(api_client)
        watch = _Watch(created=time.monotonic())
        grace = max(30.0, 3 * self.poll_s)  # the job's own deadline should fire first
        deadline = None if self.timeout_s is None else watch.created + self.timeout_s + grace
        while True:
            status = self._status(api_client, namespace, name)
            if status.state != watch.state:
                logger.info("%s %s/%s: %s%s", self.kind, namespace, name, status.state,
                            f" ({status.message})" if status.message else "")
                watch.state = status.state
            pods = self._pods(core, namespace, name)
            self._observe(core, namespace, pods, watch, attempt)
            if status.state == "Succeeded":
                return self._await_replicas(core, namespace, name, pods)
            if status.state == "Failed":
                if status.deadline:
                    raise JobTimeoutError(f"{self.kind} {namespace}/{name} ran past its activeDeadlineSeconds "
                                          f"(timeout_s {self.timeout_s}): {status.message}")
                raise AttemptFailed(self._failure(core, namespace, name, pods, watch, attempt, status.message))
            if allowed_crashes is not None and len(watch.crashes) > allowed_crashes:
                last = watch.crashes[-1][1]
                raise AttemptFailed(dataclasses.replace(last, log_tail=f"{last.log_tail}\n({len(watch.crashes)} "
                                                                       f"replica crashes, {allowed_crashes} allowed)"))
            self._check_pending(core, namespace, name, pods, watch)
            if deadline is not None and time.monotonic() > deadline:
                raise JobTimeoutError(f"{self.kind} {namespace}/{name} not finished after {self.timeout_s:g}s "
                                      f"(state {status.state})")
            time.sleep(self.poll_s)

    def _pods(self, core, namespace: str, name: str) -> list:
        pods = self._call(core.list_namespaced_pod, namespace, label_selector=self._pod_selector(name)).items
        return sorted(pods, key=lambda p: (self._worker_index(p), _when(p.metadata.creation_timestamp)))

    @staticmethod
    def _tf_status(pod):
        return next((s for s in pod.status.container_statuses or [] if s.name == CONTAINER_NAME), None)

    def _read_log(self, core, namespace: str, pod_name: str, **options) -> str:
        """A container's log as text (read raw: the client would json-decode a log that looks like JSON)."""
        from kubernetes.client.exceptions import ApiException

        try:
            response = self._call(core.read_namespaced_pod_log, pod_name, namespace, container=CONTAINER_NAME,
                                  _preload_content=False, **options)
            return response.data.decode("utf-8", "replace")
        except (ApiException, *TRANSIENT_ERRORS) as exc:
            return f"<log of pod {pod_name} unavailable: {getattr(exc, 'reason', exc)}>\n"

    def _log_tail(self, core, namespace: str, pod_name: str, previous: bool = False) -> str:
        return self._read_log(core, namespace, pod_name, tail_lines=LOG_TAIL_LINES, previous=previous)

    def _observe(self, core, namespace: str, pods: list, watch: _Watch, attempt: int) -> None:
        """Logs phase changes and records each replica crash (exit code + log tail) once, as it is seen."""
        for pod in pods:
            phase = pod.status.phase
            if watch.phases.get(pod.metadata.name) != phase:
                watch.phases[pod.metadata.name] = phase
                logger.info("pod %s (worker %d): %s", pod.metadata.name, self._worker_index(pod), phase)
            status = self._tf_status(pod)
            if status is None or pod.metadata.deletion_timestamp is not None:
                continue  # (a replica stopped because its pod is being deleted did not crash)
            for terminated, previous in ((status.state.terminated if status.state else None, False),
                                         (status.last_state.terminated if status.last_state else None, True)):
                if terminated is None or terminated.exit_code == 0:
                    continue
                key = (pod.metadata.uid, terminated.container_id, str(terminated.finished_at))
                if key in watch.crash_keys:
                    continue
                watch.crash_keys.add(key)
                failure = WorkerFailure(attempt=attempt, worker_index=self._worker_index(pod),
                                        exit_code=terminated.exit_code,
                                        log_path=f"pod/{pod.metadata.name} (restart {status.restart_count})",
                                        log_tail=self._log_tail(core, namespace, pod.metadata.name, previous))
                watch.crashes.append((_when(terminated.finished_at), failure))
                logger.warning("replica %s exited with code %d (restart count %d); last lines:\n%s",
                               pod.metadata.name, terminated.exit_code, status.restart_count, failure.log_tail)

    def _failure(self, core, namespace: str, name: str, pods: list, watch: _Watch, attempt: int,
                 message: str) -> WorkerFailure:
        """The first replica crash: the earliest non-zero exit among the pods and the crashes seen while polling
        (its peers fail after it; replicas killed because the job failed come last)."""
        candidates = []   # (killed by a deletion, finished at, order, failure)
        for order, (finished, failure) in enumerate(watch.crashes):
            candidates.append((False, finished, order, failure))
        for pod in pods:
            status = self._tf_status(pod)
            terminated = status.state.terminated if status and status.state else None
            if terminated is None or terminated.exit_code == 0:
                continue
            key = (pod.metadata.uid, terminated.container_id, str(terminated.finished_at))
            if key in watch.crash_keys:
                continue
            failure = WorkerFailure(attempt=attempt, worker_index=self._worker_index(pod),
                                    exit_code=terminated.exit_code, log_path=f"pod/{pod.metadata.name}",
                                    log_tail=self._log_tail(core, namespace, pod.metadata.name))
            candidates.append((pod.metadata.deletion_timestamp is not None, _when(terminated.finished_at),
                               len(candidates), failure))
        if candidates:
            failure = min(candidates, key=lambda c: c[:3])[3]
            return dataclasses.replace(failure, log_tail=f"{failure.log_tail}\n({self.kind} {name}: {message})")
        return WorkerFailure(attempt=attempt, worker_index=-1, exit_code=-1, log_path=f"{self.kind.lower()}/{name}",
                             log_tail=f"{self.kind} failed without a failed pod: {message}")

    def _no_pods_hint(self, namespace: str) -> str:
        return f"is the controller of {self.kind}s running, and allowed to create pods in {namespace!r}?"

    def _check_pending(self, core, namespace: str, name: str, pods: list, watch: _Watch) -> None:
        now = time.monotonic()
        if not pods:
            if now - watch.created > self.pending_timeout_s:
                raise ReplicaPendingError(f"{self.kind} {namespace}/{name} has no pods after "
                                          f"{self.pending_timeout_s:g}s: {self._no_pods_hint(namespace)}")
            return
        for pod in pods:
            uid = pod.metadata.uid
            if pod.status.phase != "Pending":
                watch.pending_since.pop(uid, None)
                continue
            since = watch.pending_since.setdefault(uid, now)
            if now - since <= self.pending_timeout_s:
                continue
            raise ReplicaPendingError(f"replica pod {namespace}/{pod.metadata.name} still Pending after "
                                      f"{self.pending_timeout_s:g}s: {self._pending_reason(pod)}\n"
                                      f"{self._events(core, namespace, pod.metadata.name)}")

    @staticmethod
    def _pending_reason(pod) -> str:
        reasons = []
        for condition in pod.status.conditions or []:
            if condition.type == "PodScheduled" and condition.status != "True":
                reasons.append(f"{condition.reason or 'NotScheduled'}: {condition.message or ''}".strip())
        for status in pod.status.container_statuses or []:
            waiting = status.state.waiting if status.state else None
            if waiting is not None:
                reasons.append(f"{waiting.reason}: {waiting.message or ''} (container {status.name})")
        return "; ".join(reasons) or "no reason reported"

    def _events(self, core, namespace: str, pod_name: str) -> str:
        from kubernetes.client.exceptions import ApiException

        try:
            events = self._call(core.list_namespaced_event, namespace,
                                field_selector=f"involvedObject.kind=Pod,involvedObject.name={pod_name}").items
        except (ApiException, *TRANSIENT_ERRORS) as exc:
            return f"events of pod {pod_name}: unavailable ({getattr(exc, 'reason', exc)})"
        lines = [f"  {e.type} {e.reason} (x{e.count or 1}, {e.source.component if e.source else '?'}): {e.message}"
                 for e in sorted(events, key=lambda e: str(e.last_timestamp or e.event_time or ""))]
        return f"events of pod {pod_name}:\n" + ("\n".join(lines) if lines else "  (none)")

    def _await_replicas(self, core, namespace: str, name: str, pods: list) -> list:
        """After success (the chief is done) the other replicas finish their part: give them a moment."""
        deadline = time.monotonic() + self.finish_grace_s
        while any(p.status.phase in ("Pending", "Running") for p in pods) and time.monotonic() < deadline:
            time.sleep(min(self.poll_s, 1.0))
            pods = self._pods(core, namespace, name)
        for pod in pods:
            if pod.status.phase in ("Pending", "Running"):
                logger.warning("replica %s still %s %.0fs after the %s succeeded; it is stopped with the %s",
                               pod.metadata.name, pod.status.phase, self.finish_grace_s, self.kind, self.kind)
            elif pod.status.phase == "Failed":
                logger.warning("replica %s failed after the %s succeeded", pod.metadata.name, self.kind)
        return pods

    def _save_logs(self, api_client, namespace: str, name: str, pods: list) -> list[str]:
        """Pod logs into local files, so the Trainer keeps them with the run like local workers' logs."""
        core = self._core(api_client)
        directory = tempfile.mkdtemp(prefix=f"{name}-logs-")
        paths = []
        for pod in pods:
            path = os.path.join(directory, f"{pod.metadata.name}.log")
            with open(path, "w") as f:
                f.write(self._read_log(core, namespace, pod.metadata.name))
            paths.append(path)
        return paths
