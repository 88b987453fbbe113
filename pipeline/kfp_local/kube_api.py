"""A stand-in for the Kubernetes API server, the Kubeflow Training Operator and one kubelet, on this machine.

``KubeApiServer`` serves, over plain HTTP on 127.0.0.1, exactly the endpoints the Trainer's Kubeflow launcher
uses, with the JSON shapes a real API server returns, so the official ``kubernetes`` Python client talks to it
through an ordinary kubeconfig and deserializes what it gets into ``V1Pod``, ``CoreV1Event`` and friends::

    POST   /apis/kubeflow.org/v1/namespaces/{ns}/tfjobs              create (409 AlreadyExists, webhook checks)
    GET    /apis/kubeflow.org/v1/namespaces/{ns}/tfjobs              list (labelSelector)
    GET    /apis/kubeflow.org/v1/namespaces/{ns}/tfjobs/{name}       get   (404 NotFound)
    GET    /apis/kubeflow.org/v1/namespaces/{ns}/tfjobs/{name}/status     the status subresource
    DELETE /apis/kubeflow.org/v1/namespaces/{ns}/tfjobs/{name}       propagationPolicy Foreground/Background/Orphan
    GET    /api/v1/namespaces/{ns}/pods                              list (labelSelector, fieldSelector)
    GET    /api/v1/namespaces/{ns}/pods/{name}                       get
    GET    /api/v1/namespaces/{ns}/pods/{name}/log                   container, tailLines, previous, limitBytes
    GET    /api/v1/namespaces/{ns}/events                            list (fieldSelector, e.g. involvedObject.name)
    GET    /version

plus batch/v1 Jobs and headless Services, run as the Job controller does (``batch_jobs.py``, its pods in network
namespaces of their own: ``pod_network.py``).

A created TFJob is reconciled like the Training Operator v1 does it, and its replicas are REAL local processes:
each pod's containers run their ``command`` + ``args`` with their ``env`` (the image is not pulled: this
machine's Python stands in for it, a leading ``python``/``python3`` becomes the configured interpreter), in a
process group of their own (``start_new_session``), stdout+stderr into a log file under ``workdir``.

What is mirrored, and from where (kubeflow/training-operator at branch release-1.9, the last with the v1
controllers, commit 078ec30; kubernetes/kubernetes for the kubelet and the API machinery):

- pkg/webhooks/tensorflow/tfjob_webhook.go ``validateTFJob``: name a DNS-1035 label, ``tfReplicaSpecs`` required,
  containers and images required, a container named ``tensorflow`` per replica type, at most one Chief/Master;
  denials come back as controller-runtime's ``admission.Denied`` does through the API server (403 Forbidden,
  ``admission webhook "validator.tfjob.training-operator.kubeflow.org" denied the request: ...``).
- pkg/apis/kubeflow.org/v1/tensorflow_defaults.go ``SetDefaults_TFJob``: cleanPodPolicy None, successPolicy "",
  replicas 1, restartPolicy Never, replica-type keys camel-cased, port ``tfjob-port`` 2222 added to the
  ``tensorflow`` container (in the controller's copy only: the stored spec stays as created, as upstream).
- pkg/controller.v1/tensorflow/tensorflow.go ``genTFConfigJSONStr``/``genClusterSpec``/``isDistributed``:
  TF_CONFIG ``{"cluster":{<rtype>:[...]},"task":{"type":<rtype>,"index":i},"environment":"cloud"}`` (the sparse
  form with ``enableDynamicWorker``), appended to the ``tensorflow`` container's env, none for a one-replica job;
  pkg/controller.v1/tensorflow/util.go ``GetPortFromTFJob`` (the ``tfjob-port`` container port, default 2222).
- pkg/controller.v1/common/util.go ``GenGeneralName`` (pods ``<job>-<replicatype>-<index>``),
  pkg/controller.v1/common/job_controller.go ``GenLabels`` and pkg/controller.v1/common/pod.go ``createNewPod``
  (labels ``training.kubeflow.org/{operator-name,job-name,replica-type,replica-index,job-role}``), pkg/core/pod.go
  ``SetRestartPolicy`` (ExitCode becomes pod restartPolicy Never).
- pkg/controller.v1/common/job.go ``ReconcileJobs`` (finished jobs: cleanPodPolicy, Active folded into Succeeded;
  ``exceedsBackoffLimit``/``PastBackoffLimit`` then ``PastActiveDeadline``: all pods deleted, Failed;
  ttlSecondsAfterFinished), pkg/core/job.go ``PastBackoffLimit``/``PastActiveDeadline``,
  pkg/controller.v1/common/pod.go ``ReconcilePods`` (a Failed pod under ExitCode with a retryable code, or
  OnFailure/Always, is deleted and recreated: Restarting; ExitCode 1-127: Failed), pkg/util/train/train_util.go
  ``IsRetryableExitCode`` (>= 128), pkg/core/status.go ``UpdateJobReplicaStatuses``.
- pkg/controller.v1/tensorflow/tfjob_controller.go ``UpdateJobStatus`` (Chief/Master decides Running/Succeeded,
  else Worker 0 or all workers per ``successPolicy``; failed replicas: Restarting kept or Failed),
  ``IsWorker0Completed``, ``onOwnerCreateFunc`` (Created); pkg/util/status.go ``UpdateJobConditions``/``setCondition``/
  ``filterOutCondition`` (nothing changes once Failed; Running and Restarting replace each other; Running turns
  "False" when Succeeded or Failed is added; lastTransitionTime kept while status is unchanged), reasons
  ``TFJobCreated``/``TFJobRunning``/``TFJobRestarting``/``TFJobSucceeded``/``TFJobFailed``.
- kubernetes pkg/kubelet/kubelet_pods.go ``getPhase`` (Pending/Running/Succeeded/Failed from container states and
  restartPolicy) and ``validateContainerLogStatus`` (which container instance ``log`` and ``previous`` read, and
  the "is waiting to start" errors); pkg/kubelet/kubelet.go crash-loop back-off (first restart at once, then 10 s
  doubling to 300 s, ``CrashLoopBackOff``); restartCount; ``ErrImagePull``/``ImagePullBackOff`` and
  ``CreateContainerConfigError`` waiting reasons; graceful deletion (SIGTERM to the container, SIGKILL after
  ``terminationGracePeriodSeconds``, default 30); when a container's main process exits the rest of its process
  group is killed, as a container's PID namespace would be.
- k8s.io/apimachinery pkg/api/errors/errors.go: ``Status`` bodies of 404 NotFound, 409 AlreadyExists, 422 Invalid
  (CR names must be DNS-1123 subdomains), 400 BadRequest; the garbage collector's propagation policies (Foreground
  keeps the TFJob, with ``deletionTimestamp`` and the ``foregroundDeletion`` finalizer, until its pods are gone).
- the scheduler's ``PodScheduled=False/Unschedulable`` condition and ``FailedScheduling`` event when the pod's
  requests do not fit (only with ``node_allocatable``); events are aggregated by (object, reason, message) with
  ``count`` as client-go's event correlator does.

Deviations (on purpose, because everything runs on one machine):

- TF_CONFIG addresses: upstream gives ``<job>-<rtype>-<i>.<ns>.svc:<port>`` (a headless Service per replica);
  here each replica gets ``127.0.0.1:<free port>``, fixed per replica for the TFJob's life (so a recreated or
  restarted replica keeps its address, as the Service name would). TFJob pods share this machine's network; only
  the pods of batch/v1 Jobs get a network namespace and DNS names (``pod_network.py``).
- The operator's ``exceedsBackoffLimit`` uses the work queue's requeue count; it is taken as 0 here, so it only
  fires with ``backoffLimit: 0`` (with ExitCode and a retryable code, upstream too restarts without bound:
  kubeflow/training-operator#2045).
- Unknown replica types are refused at create time (upstream accepts and then ignores them in status).
- The deadline failure carries upstream's reason ``TFJobFailed`` and message "... active longer than specified
  deadline"; a launcher should match the message (or elapsed time), not a ``DeadlineExceeded`` reason.
- The replica environment starts from this process's environment (standing in for the image's ``ENV``), minus
  ``TF_CONFIG``/``KUBECONFIG``, plus ``env`` given to the server; then what the kubelet adds (``HOSTNAME`` = pod
  name, ``KUBERNETES_SERVICE_HOST``/``PORT`` = this server), then the container's env (``value`` with ``$(VAR)``
  expansion, ``valueFrom.fieldRef`` for metadata.name/namespace/uid/labels/annotations, spec.nodeName,
  spec.serviceAccountName, status.podIP/hostIP). Secrets, ConfigMaps and resourceFieldRef do not exist here:
  a non-optional reference leaves the container waiting in ``CreateContainerConfigError``.
  ``workingDir`` is used when it exists on this machine, else the server's working directory.
- A container without ``command`` runs its ``args`` (there is no image ENTRYPOINT to prepend).

Not emulated: real scheduling (one node; resources only matter with ``node_allocatable``), resource limits,
image pulls (with ``images`` given, any other image fails to pull), Services other than headless ones and
kube-proxy, volumes and mounts (pods see this machine's files, as through a shared volume),
RBAC enforcement and authentication (the token in the kubeconfig is accepted, every request is logged with its
RBAC verb and resource for tests: ``requests()``), admission other than the TFJob webhook, watches
(``watch=true`` is refused with 400), PUT/PATCH, other resources, init containers, probes, OOM kills,
``suspend``, gang scheduling, other workload kinds (Deployments, JobSets, ...), multiple nodes.

Run it alone with ``python -m pipeline.kfp_local.kube_api --workdir DIR``: it prints the kubeconfig path and
serves until SIGTERM or Ctrl-C, then kills every replica process group it started.
"""
from __future__ import annotations

import argparse
import collections
import copy
import dataclasses
import itertools
import json
import logging
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.parse
import uuid
from typing import Any, Collection, Mapping

from pipeline.kfp_local.batch_jobs import BatchJobs
from pipeline.kfp_local.kube_objects import (DEFAULT_GRACE_S, DNS1035, DNS1123_LABEL, DNS1123_SUBDOMAIN, NODE_NAME,
                                             PYTHON_COMMAND, ApiError, Container, Instance, Pod, matches, not_found,
                                             parse_bool, parse_field_selector, parse_label_selector, parse_quantity,
                                             pod_requests, status_body, timestamp)
from pipeline.kfp_local.loopback import (LoopbackApiServer, exited, expand, free_port, killpg,
                                        serve_until_signalled)

logger = logging.getLogger(__name__)

GROUP, VERSION, PLURAL, KIND = "kubeflow.org", "v1", "tfjobs", "TFJob"
CONTAINER_NAME = "tensorflow"
PORT_NAME, DEFAULT_PORT = "tfjob-port", 2222
OPERATOR_NAME = "tfjob-controller"
JOB_NAME_LABEL = "training.kubeflow.org/job-name"
REPLICA_TYPE_LABEL = "training.kubeflow.org/replica-type"
REPLICA_INDEX_LABEL = "training.kubeflow.org/replica-index"
OPERATOR_NAME_LABEL = "training.kubeflow.org/operator-name"
JOB_ROLE_LABEL = "training.kubeflow.org/job-role"
WEBHOOK_NAME = "validator.tfjob.training-operator.kubeflow.org"
# UpdateJobStatus's iteration order (tfjob_controller.go); "Evaluator" is TFJobReplicaTypeEval.
REPLICA_TYPES = ("Chief", "Evaluator", "Master", "PS", "Worker")
RESTART_POLICIES = ("Always", "OnFailure", "Never", "ExitCode")
CLEAN_POD_POLICIES = ("All", "Running", "None")
MAX_CRASH_LOOP_BACKOFF_S = 300.0

@dataclasses.dataclass
class _TFJob:
    obj: dict                                   # what the API serves
    spec: dict                                  # the controller's defaulted copy of obj["spec"]
    addresses: dict[tuple[str, int], int]       # (rtype lower, index) -> loopback port
    start_mono: float | None = None             # status.startTime, monotonic
    completion_mono: float | None = None
    deleting: str | None = None                 # propagation policy once DELETE arrived
    exits_reported: set = dataclasses.field(default_factory=set)

    @property
    def key(self) -> tuple[str, str]:
        return self.obj["metadata"]["namespace"], self.obj["metadata"]["name"]


# ---- the server ---------------------------------------------------------------------------------------

class KubeApiServer(BatchJobs, LoopbackApiServer):
    """Kubernetes API + Training Operator + kubelet stand-in; see the module docstring.

    ``workdir`` receives the kubeconfig, the request log and the replica logs. ``namespace`` is the kubeconfig
    context's namespace (it and ``default`` exist; creating in any other namespace is a 404 as on a cluster).
    ``python`` replaces a leading ``python``/``python3`` of replica commands; ``env`` is added to every replica's
    environment. Keyword-only knobs for tests: ``node_allocatable`` (e.g. ``{"cpu": "2", "memory": "4Gi"}``: pods
    whose requests do not fit stay Pending/Unschedulable; None: everything fits), ``images`` (the images that
    "exist"; others fail with ErrImagePull/ImagePullBackOff; None: every image exists), ``crash_loop_backoff_s``
    (the kubelet's initial restart back-off, 10 s upstream) and ``tick_s`` (controller loop period).
    """
    server_name = "kube-api-stand-in"

    def __init__(self, workdir: str, namespace: str = "kubeflow-user", python: str = sys.executable,
                 env: Mapping[str, str] | None = None, *, node_allocatable: Mapping[str, str] | None = None,
                 images: Collection[str] | None = None, crash_loop_backoff_s: float = 10.0, tick_s: float = 0.05,
                 pod_backoff_s: float = 10.0):
        if not re.fullmatch(DNS1123_LABEL, namespace or "") or len(namespace) > 63:
            raise ValueError(f"namespace must be a DNS-1123 label, got {namespace!r}")
        super().__init__(workdir, tick_s)
        self.namespace = namespace
        self.python = python
        self.env = dict(env or {})
        self.node_allocatable = ({k: parse_quantity(v) for k, v in node_allocatable.items()}
                                 if node_allocatable is not None else None)
        self.images = None if images is None else set(images)
        self.crash_loop_backoff_s = float(crash_loop_backoff_s)
        self.kubeconfig: str | None = None
        self._namespaces = {namespace, "default"}
        self._rv = itertools.count(1)
        self._jobs: dict[tuple[str, str], _TFJob] = {}
        self._pods: dict[tuple[str, str], Pod] = {}
        self._events: dict[tuple[str, str], dict] = {}
        self._event_keys: dict[tuple, tuple[str, str]] = {}
        self._all_pods_seen: list[Pod] = []
        self.pod_backoff_s = float(pod_backoff_s)
        self.network = None   # pod_network.PodNetwork, made at the first pod that needs one
        self._init_batch()

    # ---- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> "KubeApiServer":
        super().start()
        self.kubeconfig = os.path.join(self.workdir, "kubeconfig")
        self._write_kubeconfig(self.kubeconfig)
        logger.info("Kubernetes API stand-in at %s (kubeconfig %s, namespace %s)", self.url, self.kubeconfig,
                    self.namespace)
        return self

    def stop(self) -> None:
        super().stop()
        with self._lock:
            if self.network is not None:
                self.network.stop()

    def live_processes(self) -> list[subprocess.Popen]:
        return [c.proc for pod in self._all_pods_seen for c in pod.containers if c.proc is not None]

    def response_headers(self) -> dict[str, str]:
        return {"Audit-Id": str(uuid.uuid4())}

    def _write_kubeconfig(self, path: str) -> None:
        import yaml

        config = {
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "kube-api-stand-in", "cluster": {"server": self.url}}],
            "users": [{"name": "kube-api-stand-in", "user": {"token": "kube-api-stand-in"}}],
            "contexts": [{"name": "kube-api-stand-in", "context": {
                "cluster": "kube-api-stand-in", "user": "kube-api-stand-in", "namespace": self.namespace}}],
            "current-context": "kube-api-stand-in",
        }
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            yaml.safe_dump(config, f, sort_keys=False)
        os.replace(tmp, path)

    # ---- test accessors ----------------------------------------------------------------------------------

    def tfjobs(self) -> list[dict]:
        with self._lock:
            return [copy.deepcopy(job.obj) for job in self._jobs.values()]

    def pods(self) -> list[dict]:
        with self._lock:
            return [copy.deepcopy(pod.obj) for pod in self._pods.values()]

    def replica_pids(self) -> dict[str, int]:
        """Pod name -> pid of its running ``tensorflow`` container process (the first container otherwise)."""
        out = {}
        with self._lock:
            for pod in self._pods.values():
                named = [c for c in pod.containers if c.name == CONTAINER_NAME] or pod.containers[:1]
                proc = named[0].proc if named else None
                if proc is not None:
                    out[pod.name] = proc.pid
        return out

    # ---- HTTP dispatch -----------------------------------------------------------------------------------

    _ROUTES = [
        (re.compile(r"^/apis/kubeflow\.org/v1/namespaces/([^/]+)/tfjobs$"), "tfjobs", False, None),
        (re.compile(r"^/apis/kubeflow\.org/v1/namespaces/([^/]+)/tfjobs/([^/]+)$"), "tfjobs", True, None),
        (re.compile(r"^/apis/kubeflow\.org/v1/namespaces/([^/]+)/tfjobs/([^/]+)/status$"), "tfjobs", True, "status"),
        (re.compile(r"^/api/v1/namespaces/([^/]+)/pods$"), "pods", False, None),
        (re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)$"), "pods", True, None),
        (re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)/log$"), "pods", True, "log"),
        (re.compile(r"^/api/v1/namespaces/([^/]+)/events$"), "events", False, None),
        (re.compile(r"^/apis/batch/v1/namespaces/([^/]+)/jobs$"), "jobs", False, None),
        (re.compile(r"^/apis/batch/v1/namespaces/([^/]+)/jobs/([^/]+)$"), "jobs", True, None),
        (re.compile(r"^/apis/batch/v1/namespaces/([^/]+)/jobs/([^/]+)/status$"), "jobs", True, "status"),
        (re.compile(r"^/api/v1/namespaces/([^/]+)/services$"), "services", False, None),
        (re.compile(r"^/api/v1/namespaces/([^/]+)/services/([^/]+)$"), "services", True, None),
    ]
    _GROUPS = {"tfjobs": GROUP, "jobs": "batch"}

    def handle(self, method: str, raw_path: str, body: bytes) -> tuple[int, str, bytes]:
        parsed = urllib.parse.urlsplit(raw_path)
        path = parsed.path.rstrip("/") or "/"
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(parsed.query, keep_blank_values=True).items()}
        record = {"method": method, "path": path, "query": parsed.query, "verb": None, "apiGroup": None,
                  "resource": None, "subresource": None, "namespace": None, "name": None, "code": None}
        try:
            code, content_type, payload = self._route(method, path, query, body, record)
        except ApiError as exc:
            code, content_type, payload = exc.code, "application/json", json.dumps(exc.body).encode()
        except Exception as exc:  # a bug here must not hang the client
            logger.exception("stand-in failed on %s %s", method, raw_path)
            code, content_type = 500, "application/json"
            payload = json.dumps(status_body(500, "InternalError", f"stand-in error: {exc!r}")).encode()
        record["code"] = code
        self.record(record)
        return code, content_type, payload

    def _route(self, method: str, path: str, query: dict, body: bytes, record: dict) -> tuple[int, str, bytes]:
        if path == "/version" and method == "GET":
            return 200, "application/json", json.dumps({
                "major": "1", "minor": "31", "gitVersion": "v1.31.0-kube-api-stand-in", "platform": sys.platform,
            }).encode()
        for pattern, resource, named, sub in self._ROUTES:
            m = pattern.match(path)
            if not m:
                continue
            namespace = urllib.parse.unquote(m.group(1))
            name = urllib.parse.unquote(m.group(2)) if named else None
            group = self._GROUPS.get(resource, "")
            if method == "GET":
                verb = "get" if named else ("watch" if parse_bool(query.get("watch")) else "list")
            else:
                verb = {"POST": "create", "DELETE": "delete" if named else "deletecollection", "PUT": "update",
                        "PATCH": "patch"}.get(method, method.lower())
            record.update(verb=verb, apiGroup=group, resource=resource, subresource=sub, namespace=namespace,
                          name=name)
            if verb == "watch":
                raise ApiError(400, "BadRequest", "watch is not supported by the Kubernetes API stand-in")
            handler = getattr(self, f"_{verb}_{resource}{'_' + sub if sub else ''}", None)
            if handler is None:
                raise ApiError(405, "MethodNotAllowed",
                               "the server does not allow this method on the requested resource")
            return handler(namespace, name, query, body) if named else handler(namespace, query, body)
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    @staticmethod
    def _json(obj: Any, code: int = 200) -> tuple[int, str, bytes]:
        return code, "application/json", json.dumps(obj).encode()

    def _list(self, kind: str, items: list[dict]) -> tuple[int, str, bytes]:
        with self._lock:
            rv = str(next(self._rv))
        api_version = {"TFJobList": f"{GROUP}/{VERSION}", "JobList": "batch/v1"}.get(kind, "v1")
        return self._json({"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": rv},
                           "items": items})

    # ---- TFJobs ------------------------------------------------------------------------------------------

    def _create_tfjobs(self, namespace: str, query: dict, body: bytes):
        try:
            obj = json.loads(body or b"{}")
        except ValueError as exc:
            raise ApiError(400, "BadRequest", f"the body of the request was in an unknown format: {exc}") from None
        if not isinstance(obj, dict) or obj.get("kind") != KIND or obj.get("apiVersion") != f"{GROUP}/{VERSION}":
            raise ApiError(400, "BadRequest", f"the API version in the data ({obj.get('apiVersion')}) does not match "
                                              f"the expected API version ({GROUP}/{VERSION})"
                           if isinstance(obj, dict) else "the body must be a TFJob object")
        meta = obj.setdefault("metadata", {})
        if meta.get("namespace") not in (None, "", namespace):
            raise ApiError(400, "BadRequest", "the namespace of the provided object does not match the namespace "
                                              "sent on the request")
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        name = meta.get("name") or ""
        with self._lock:
            if namespace not in self._namespaces:
                raise not_found("namespaces", namespace)
            if not name:
                raise ApiError(422, "Invalid", f'{KIND}.{GROUP} "" is invalid: metadata.name: Required value: name '
                                               f"or generateName is required",
                               {"group": GROUP, "kind": KIND})
            if not DNS1123_SUBDOMAIN.match(name) or len(name) > 253:
                raise ApiError(422, "Invalid", f'{KIND}.{GROUP} "{name}" is invalid: metadata.name: Invalid value: '
                                               f'"{name}": a lowercase RFC 1123 subdomain must consist of lower case '
                                               f"alphanumeric characters, '-' or '.', and must start and end with an "
                                               f"alphanumeric character", {"name": name, "group": GROUP, "kind": KIND})
            if not isinstance(obj.get("spec"), dict) or not obj["spec"].get("tfReplicaSpecs"):
                # The CRD's OpenAPI schema (manifests/base/crds/kubeflow.org_tfjobs.yaml) requires it.
                raise ApiError(422, "Invalid", f'{KIND}.{GROUP} "{name}" is invalid: spec.tfReplicaSpecs: Required '
                                               f"value", {"name": name, "group": GROUP, "kind": KIND})
            errors = _validate_tfjob(obj)
            if errors:
                message = errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"
                raise ApiError(403, "Forbidden",
                               f'admission webhook "{WEBHOOK_NAME}" denied the request: {message}')
            if (namespace, name) in self._jobs:
                raise ApiError(409, "AlreadyExists", f'{PLURAL}.{GROUP} "{name}" already exists',
                               {"name": name, "group": GROUP, "kind": PLURAL})
            obj.pop("status", None)  # the status subresource: status is not writable through the main resource
            meta.update(namespace=namespace, uid=str(uuid.uuid4()), resourceVersion=str(next(self._rv)),
                        generation=1, creationTimestamp=timestamp())
            spec = _default_tfjob_spec(obj["spec"])
            addresses = {(rtype.lower(), i): free_port()
                         for rtype, rspec in spec["tfReplicaSpecs"].items() for i in range(rspec["replicas"])}
            job = _TFJob(obj=obj, spec=spec, addresses=addresses)
            self._jobs[(namespace, name)] = job
            # onOwnerCreateFunc: the Created condition, persisted with the first status update.
            self._set_condition(job.obj.setdefault("status", {}), "Created", "True", "TFJobCreated",
                                f"TFJob {name} is created.")
            served = copy.deepcopy(obj)
            served.pop("status", None)
        return self._json(served, 201)

    def _list_tfjobs(self, namespace: str, query: dict, body: bytes):
        labels = parse_label_selector(query.get("labelSelector", ""))
        fields = parse_field_selector(query.get("fieldSelector", ""))
        with self._lock:
            items = [copy.deepcopy(j.obj) for (ns, _), j in sorted(self._jobs.items()) if ns == namespace
                     and matches(j.obj, labels, fields)]
        return self._list("TFJobList", items)

    def _get_tfjobs(self, namespace: str, name: str, query: dict, body: bytes):
        with self._lock:
            job = self._jobs.get((namespace, name))
            if job is None:
                raise not_found(PLURAL, name, GROUP)
            return self._json(copy.deepcopy(job.obj))

    _get_tfjobs_status = _get_tfjobs

    @staticmethod
    def _propagation_policy(query: dict, body: bytes) -> str | None:
        """DeleteOptions' propagationPolicy (query or body; orphanDependents: Orphan), None when not given."""
        policy = query.get("propagationPolicy")
        if body:
            try:
                options = json.loads(body)
            except ValueError:
                options = {}
            if isinstance(options, dict):
                policy = options.get("propagationPolicy") or policy
                if options.get("orphanDependents") is True and policy is None:
                    policy = "Orphan"
        if policy not in (None, "Foreground", "Background", "Orphan"):
            raise ApiError(422, "Invalid", f'DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: Unsupported '
                                           f'value: "{policy}": supported values: "Foreground", "Background", "Orphan"')
        return policy

    def _delete_tfjobs(self, namespace: str, name: str, query: dict, body: bytes):
        policy = self._propagation_policy(query, body) or "Background"  # the default for custom resources
        with self._lock:
            job = self._jobs.get((namespace, name))
            if job is None:
                raise not_found(PLURAL, name, GROUP)
            return self._delete_owner(job, self._jobs, policy, GROUP, PLURAL)

    def _delete_owner(self, job, owners: dict, policy: str, group: str, plural: str):
        """DELETE of a TFJob or Job with its pods, as the garbage collector treats dependents: Orphan keeps them
        (ownerReferences removed), Background deletes them after the owner, Foreground before it (the owner stays
        with a deletionTimestamp and the foregroundDeletion finalizer until they are gone)."""
        meta = job.obj["metadata"]
        if job.deleting is None:
            job.deleting = policy
            meta["deletionTimestamp"] = timestamp()
            meta["deletionGracePeriodSeconds"] = 0
            if policy == "Foreground":
                meta["finalizers"] = [*meta.get("finalizers", []), "foregroundDeletion"]
            meta["resourceVersion"] = str(next(self._rv))
        for pod in [p for p in self._pods.values() if p.owner == job.key]:
            if policy == "Orphan":
                pod.owner = None
                pod.obj["metadata"].pop("ownerReferences", None)
            else:
                self._delete_pod(pod)
        if policy != "Foreground" or not any(p.owner == job.key for p in self._pods.values()):
            del owners[job.key]
            return self._json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                               "details": {"name": meta["name"], "group": group, "kind": plural, "uid": meta["uid"]}})
        return self._json(copy.deepcopy(job.obj))

    # ---- pods, logs, events ------------------------------------------------------------------------------

    def _list_pods(self, namespace: str, query: dict, body: bytes):
        labels = parse_label_selector(query.get("labelSelector", ""))
        fields = parse_field_selector(query.get("fieldSelector", ""))
        with self._lock:
            items = [copy.deepcopy(p.obj) for (ns, _), p in sorted(self._pods.items()) if ns == namespace
                     and matches(p.obj, labels, fields)]
        return self._list("PodList", items)

    def _get_pods(self, namespace: str, name: str, query: dict, body: bytes):
        with self._lock:
            pod = self._pods.get((namespace, name))
            if pod is None:
                raise not_found("pods", name)
            return self._json(copy.deepcopy(pod.obj))

    def _get_pods_log(self, namespace: str, name: str, query: dict, body: bytes):
        with self._lock:
            pod = self._pods.get((namespace, name))
            if pod is None:
                raise not_found("pods", name)
            names = [c.name for c in pod.containers]
            wanted = query.get("container")
            if not wanted:
                if len(names) != 1:
                    raise ApiError(400, "BadRequest", f"a container name must be specified for pod {name}, choose "
                                                      f"one of: [{' '.join(names)}]")
                wanted = names[0]
            container = next((c for c in pod.containers if c.name == wanted), None)
            if container is None:
                raise ApiError(400, "BadRequest", f"container {wanted} is not valid for pod {name}")
            instance = self._log_instance(pod, container, parse_bool(query.get("previous")))
            path = instance.log_path
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            data = b""
        tail = query.get("tailLines")
        if tail not in (None, ""):
            n = int(tail)
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-n:]) if n > 0 else b""
        limit = query.get("limitBytes")
        if limit not in (None, ""):
            data = data[:int(limit)]
        return 200, "text/plain", data

    @staticmethod
    def _log_instance(pod: Pod, container: Container, previous: bool) -> Instance:
        """kubelet's validateContainerLogStatus: which container instance a log request reads."""
        last = container.last_state()
        if previous:
            if last is None:
                raise ApiError(400, "BadRequest", f'previous terminated container "{container.name}" in pod '
                                                  f'"{pod.name}" not found')
            return last
        current = container.current
        if current is not None and container.waiting is None:
            return current           # running, or terminated
        if last is not None:
            return last              # waiting to restart: the last terminated instance
        reason = (container.waiting or {}).get("reason", "ContainerCreating")
        detail = {"ErrImagePull": "image can't be pulled",
                  "ImagePullBackOff": "trying and failing to pull image"}.get(reason, reason)
        raise ApiError(400, "BadRequest", f'container "{container.name}" in pod "{pod.name}" is waiting to start: '
                                          f"{detail}")

    def _list_events(self, namespace: str, query: dict, body: bytes):
        labels = parse_label_selector(query.get("labelSelector", ""))
        fields = parse_field_selector(query.get("fieldSelector", ""))
        with self._lock:
            items = [copy.deepcopy(e) for (ns, _), e in self._events.items() if ns == namespace
                     and matches(e, labels, fields)]
        return self._list("EventList", items)

    def _record_event(self, involved: dict, kind: str, event_type: str, reason: str, message: str,
                      component: str) -> None:
        meta = involved["metadata"]
        key = (meta["uid"], reason, message)
        now = timestamp()
        existing = self._event_keys.get(key)
        if existing and existing in self._events:
            event = self._events[existing]
            event["count"] += 1
            event["lastTimestamp"] = now
            event["metadata"]["resourceVersion"] = str(next(self._rv))
            return
        name = f"{meta['name']}.{secrets.token_hex(8)}"
        api_version = f"{GROUP}/{VERSION}" if kind == KIND else "v1"
        self._events[(meta["namespace"], name)] = {
            "metadata": {"name": name, "namespace": meta["namespace"], "uid": str(uuid.uuid4()),
                         "resourceVersion": str(next(self._rv)), "creationTimestamp": now},
            "involvedObject": {"kind": kind, "namespace": meta["namespace"], "name": meta["name"],
                               "uid": meta["uid"], "apiVersion": api_version,
                               "resourceVersion": meta.get("resourceVersion", "")},
            "reason": reason, "message": message,
            "source": {"component": component, **({"host": NODE_NAME} if component == "kubelet" else {})},
            "firstTimestamp": now, "lastTimestamp": now, "count": 1, "type": event_type,
            "eventTime": None, "reportingComponent": component, "reportingInstance": "",
        }
        self._event_keys[key] = (meta["namespace"], name)

    # ---- the control loop: operator, scheduler, kubelet, garbage collector -------------------------------

    def tick(self) -> None:
        for pod in list(self._pods.values()):
            self._kubelet(pod)
        for job in list(self._jobs.values()):
            if job.deleting:
                if not any(p.owner == job.key for p in self._pods.values()):
                    del self._jobs[job.key]     # foreground deletion done: the finalizer is removed
                continue
            self._reconcile(job)
        self._reconcile_batch_jobs()
        for pod in list(self._pods.values()):  # garbage collector: owner gone
            owners = self._batch_jobs if pod.owner and pod.owner[0] == "jobs.batch" else self._jobs
            if pod.owner is not None and pod.owner not in owners and pod.delete_requested is None:
                self._delete_pod(pod)
        if self.network is not None:
            self.network.set_records(self.dns_records())

    # -- the operator

    def _set_condition(self, status: dict, ctype: str, cstatus: str, reason: str, message: str) -> None:
        """pkg/util/status.go setCondition + filterOutCondition."""
        conditions = status.get("conditions") or []
        if any(c["type"] == "Failed" and c["status"] == "True" for c in conditions):
            return
        current = next((c for c in conditions if c["type"] == ctype), None)
        if current is not None and current["status"] == cstatus and current.get("reason") == reason:
            return
        now = timestamp()
        condition = {"type": ctype, "status": cstatus, "reason": reason, "message": message,
                     "lastUpdateTime": now, "lastTransitionTime": now}
        if current is not None and current["status"] == cstatus:
            condition["lastTransitionTime"] = current["lastTransitionTime"]
        kept = []
        for c in conditions:
            if (ctype == "Restarting" and c["type"] == "Running") or (ctype == "Running" and c["type"] == "Restarting"):
                continue
            if c["type"] == ctype:
                continue
            if ctype in ("Failed", "Succeeded") and c["type"] == "Running":
                c = {**c, "status": "False"}
            kept.append(c)
        status["conditions"] = kept + [condition]

    @staticmethod
    def _is(status: dict, ctype: str) -> bool:
        return any(c["type"] == ctype and c["status"] == "True" for c in status.get("conditions") or [])

    def _reconcile(self, job: _TFJob) -> None:
        """pkg/controller.v1/common/job.go ReconcileJobs for one TFJob."""
        before = copy.deepcopy(job.obj.get("status") or {})
        status = copy.deepcopy(before)
        ns, name = job.key
        spec, run_policy = job.spec, job.spec["runPolicy"]
        replicas = spec["tfReplicaSpecs"]
        pods = [p for p in self._pods.values() if p.owner == job.key]
        if self._is(status, "Succeeded") or self._is(status, "Failed"):
            self._clean_up(job, pods, status)
            if self._is(status, "Succeeded"):
                for rs in (status.get("replicaStatuses") or {}).values():
                    if rs.get("active"):
                        rs["succeeded"] = rs.get("succeeded", 0) + rs.pop("active")
            ttl = run_policy.get("ttlSecondsAfterFinished")
            if ttl is not None and job.completion_mono is not None and time.monotonic() >= job.completion_mono + ttl:
                job.deleting = "Background"
                job.obj["metadata"]["deletionTimestamp"] = timestamp()
                for pod in pods:
                    self._delete_pod(pod)
            self._save_status(job, before, status)
            return

        active = [p for p in pods if p.phase not in ("Succeeded", "Failed") and p.delete_requested is None]
        failed = sum(1 for p in pods if p.phase == "Failed")
        total = sum(r["replicas"] for r in replicas.values())
        prev_failed = sum(rs.get("failed", 0) for rs in (status.get("replicaStatuses") or {}).values())
        failure = None
        backoff_limit = run_policy.get("backoffLimit")
        if backoff_limit is not None:
            # previousRetry (the work queue's requeue count) is taken as 0: see the module docstring.
            exceeds = failed > prev_failed and len(active) != total and 0 + 1 > backoff_limit
            if exceeds or self._past_backoff_limit(replicas, pods, backoff_limit):
                failure = f"Job {name} has failed because it has reached the specified backoff limit"
        deadline = run_policy.get("activeDeadlineSeconds")
        if failure is None and deadline is not None and job.start_mono is not None \
                and time.monotonic() - job.start_mono >= deadline:
            failure = f"Job {name} has failed because it was active longer than specified deadline"
        if failure is not None:
            if status.get("completionTime") is None:
                status["completionTime"] = timestamp()
                job.completion_mono = time.monotonic()
            for pod in pods:  # DeletePodsAndServices on a job that is not finished yet: every pod
                self._delete_pod(pod, event_owner=job)
            self._record_event(job.obj, KIND, "Normal", "TFJobFailed", failure, OPERATOR_NAME)
            self._set_condition(status, "Failed", "True", "TFJobFailed", failure)
            self._save_status(job, before, status)
            return

        status["replicaStatuses"] = {}
        for rtype in REPLICA_TYPES:
            if rtype in replicas:
                self._reconcile_pods(job, status, pods, rtype, replicas[rtype])
        self._update_job_status(job, status, replicas)
        self._save_status(job, before, status)

    @staticmethod
    def _past_backoff_limit(replicas: dict, pods: list[Pod], limit: int) -> bool:
        restarts = 0
        for rtype, rspec in replicas.items():
            if rspec["restartPolicy"] not in ("OnFailure", "Always", "ExitCode"):
                continue
            for pod in pods:
                if pod.obj["metadata"]["labels"].get(REPLICA_TYPE_LABEL) == rtype.lower() and pod.phase == "Running":
                    restarts += sum(c.restart_count for c in pod.containers)
        return restarts > 0 if limit == 0 else restarts >= limit

    def _clean_up(self, job: _TFJob, pods: list[Pod], status: dict) -> None:
        policy = job.spec["runPolicy"]["cleanPodPolicy"]
        if policy == "None":
            return
        for pod in pods:
            if policy == "Running" and pod.phase not in ("Running", "Pending"):
                continue
            self._delete_pod(pod, event_owner=job)

    def _reconcile_pods(self, job: _TFJob, status: dict, pods: list[Pod], rtype: str, rspec: dict) -> None:
        """pkg/controller.v1/common/pod.go ReconcilePods for one replica type."""
        rt = rtype.lower()
        counts = status["replicaStatuses"].setdefault(rtype, {})
        mine = [p for p in pods if p.obj["metadata"]["labels"].get(REPLICA_TYPE_LABEL) == rt]
        by_index: dict[int, list[Pod]] = collections.defaultdict(list)
        for pod in mine:
            by_index[int(pod.obj["metadata"]["labels"][REPLICA_INDEX_LABEL])].append(pod)
        size = max([rspec["replicas"], *(i + 1 for i in by_index)])
        name = job.key[1]
        for index in range(size):
            slot = by_index.get(index, [])
            if not slot:
                if index < rspec["replicas"]:
                    self._create_pod(job, rtype, index, rspec)
                continue
            pod = slot[0]
            if index >= rspec["replicas"]:
                self._delete_pod(pod, event_owner=job)
            exit_code = 0xbeef
            for c in pod.containers:
                current = c.current
                if c.name == CONTAINER_NAME and current is not None and current.terminated is not None \
                        and c.waiting is None:
                    exit_code = current.terminated["exitCode"]
                    if current.container_id not in job.exits_reported:
                        job.exits_reported.add(current.container_id)
                        self._record_event(job.obj, KIND, "Normal", "ExitedWithCode",
                                           f"Pod: {pod.namespace}.{pod.name} exited with code {exit_code}",
                                           OPERATOR_NAME)
            if pod.phase == "Failed":
                policy = rspec["restartPolicy"]
                if (policy == "ExitCode" and exit_code >= 128) or policy in ("OnFailure", "Always"):
                    self._delete_pod(pod, event_owner=job)
                    msg = f"job {name} is restarting because {rtype} replica(s) failed."
                    self._record_event(job.obj, KIND, "Warning", "TFJobRestarting", msg, OPERATOR_NAME)
                    self._set_condition(status, "Restarting", "True", "TFJobRestarting", msg)
                elif policy == "ExitCode":
                    msg = f'job "{name}" is failing because "{rtype}" replica(s) failed.'
                    self._record_event(job.obj, KIND, "Warning", "TFJobFailed", msg, OPERATOR_NAME)
                    self._set_condition(status, "Failed", "True", "TFJobFailed", msg)
            # pkg/core/status.go UpdateJobReplicaStatuses
            if pod.phase == "Running":
                key = "failed" if pod.obj["metadata"].get("deletionTimestamp") else "active"
                counts[key] = counts.get(key, 0) + 1
            elif pod.phase == "Succeeded":
                counts["succeeded"] = counts.get("succeeded", 0) + 1
            elif pod.phase == "Failed":
                counts["failed"] = counts.get("failed", 0) + 1

    def _update_job_status(self, job: _TFJob, status: dict, replicas: dict) -> None:
        """pkg/controller.v1/tensorflow/tfjob_controller.go UpdateJobStatus."""
        ns, name = job.key
        worker0_completed = "Worker" not in replicas
        for pod in self._pods.values():
            labels = pod.obj["metadata"]["labels"]
            if pod.owner == job.key and labels.get(REPLICA_TYPE_LABEL) == "worker" \
                    and labels.get(REPLICA_INDEX_LABEL) == "0" and pod.phase == "Succeeded":
                tf = next((c for c in pod.containers if c.name == CONTAINER_NAME), None)
                if tf is not None and tf.current is not None and (tf.current.terminated or {}).get("exitCode") == 0:
                    worker0_completed = True
        if status.get("startTime") is None:
            status["startTime"] = timestamp()
            job.start_mono = time.monotonic()
        restarting = next((c for c in status.get("conditions") or [] if c["type"] == "Restarting"), None)
        has_chief = "Chief" in replicas or "Master" in replicas
        for rtype in REPLICA_TYPES:
            if rtype not in replicas:
                continue
            counts = status["replicaStatuses"].get(rtype, {})
            expected = replicas[rtype]["replicas"] - counts.get("succeeded", 0)
            running, failed = counts.get("active", 0), counts.get("failed", 0)
            succeeded_msg = f"TFJob {ns}/{name} successfully completed."
            if has_chief:
                if rtype in ("Chief", "Master"):
                    if running > 0:
                        self._set_condition(status, "Running", "True", "TFJobRunning", f"TFJob {ns}/{name} is running.")
                    if expected == 0:
                        self._succeed(job, status, succeeded_msg)
            elif rtype == "Worker":
                if expected == 0 or (worker0_completed and job.spec.get("successPolicy") != "AllWorkers"):
                    self._succeed(job, status, succeeded_msg)
                elif running > 0:
                    self._set_condition(status, "Running", "True", "TFJobRunning", f"TFJob {ns}/{name} is running.")
            if failed > 0:
                if restarting is not None:
                    self._set_condition(status, "Restarting", "True", restarting["reason"], restarting["message"])
                elif job.spec.get("enableDynamicWorker") and rtype == "Worker":
                    continue
                else:
                    msg = f"TFJob {ns}/{name} has failed because {failed} {rtype} replica(s) failed."
                    self._record_event(job.obj, KIND, "Normal", "TFJobFailed", msg, OPERATOR_NAME)
                    if status.get("completionTime") is None:
                        status["completionTime"] = timestamp()
                        job.completion_mono = time.monotonic()
                    self._set_condition(status, "Failed", "True", "TFJobFailed", msg)

    def _succeed(self, job: _TFJob, status: dict, msg: str) -> None:
        self._record_event(job.obj, KIND, "Normal", "TFJobSucceeded", msg, OPERATOR_NAME)
        if status.get("completionTime") is None:
            status["completionTime"] = timestamp()
            job.completion_mono = time.monotonic()
        self._set_condition(status, "Succeeded", "True", "TFJobSucceeded", msg)

    def _save_status(self, job: _TFJob, before: dict, status: dict) -> None:
        for rs in (status.get("replicaStatuses") or {}).values():
            for key in [k for k, v in rs.items() if v == 0]:
                del rs[key]  # omitempty
        if status != before:
            job.obj["status"] = status
            job.obj["metadata"]["resourceVersion"] = str(next(self._rv))

    def _tf_config(self, job: _TFJob, rtype: str, index: int) -> str | None:
        """tensorflow.go genTFConfigJSONStr, with loopback addresses (see the module docstring)."""
        replicas = job.spec["tfReplicaSpecs"]
        if sum(r["replicas"] for r in replicas.values()) == 1:
            return None  # isDistributed: no TF_CONFIG for a single replica
        cluster = {rt.lower(): [f"127.0.0.1:{job.addresses[(rt.lower(), i)]}" for i in range(r["replicas"])]
                   for rt, r in replicas.items()}
        rt = rtype.lower()
        if job.spec.get("enableDynamicWorker"):
            sparse: dict[str, Any] = {"worker": {}, "ps": []}
            if rt == "ps":
                sparse["ps"] = [cluster["ps"][index]]
            elif rt == "worker":
                sparse["ps"] = cluster.get("ps", [])
                sparse["worker"] = {str(index): cluster["worker"][index]}
            config = {"cluster": sparse, "task": {"type": rt, "index": index}}
        else:
            config = {"cluster": dict(sorted(cluster.items())), "task": {"type": rt, "index": index},
                      "environment": "cloud"}
        return json.dumps(config, separators=(",", ":"))

    def _create_pod(self, job: _TFJob, rtype: str, index: int, rspec: dict) -> None:
        """common/pod.go createNewPod: labels, TF_CONFIG, restart policy; the API server's defaults."""
        ns, job_name = job.key
        rt = rtype.lower()
        name = f"{job_name}-{rt}-{index}".replace("/", "-")
        template = copy.deepcopy(rspec.get("template") or {})
        tmeta, pspec = template.get("metadata") or {}, template.get("spec") or {}
        labels = {**(tmeta.get("labels") or {}), OPERATOR_NAME_LABEL: OPERATOR_NAME, JOB_NAME_LABEL: job_name,
                  REPLICA_TYPE_LABEL: rt, REPLICA_INDEX_LABEL: str(index)}
        replicas = job.spec["tfReplicaSpecs"]
        if ("Chief" in replicas or "Master" in replicas) and rtype in ("Chief", "Master") \
                or ("Chief" not in replicas and "Master" not in replicas and rtype == "Worker" and index == 0):
            labels[JOB_ROLE_LABEL] = "master"
        tf_config = self._tf_config(job, rtype, index)
        for container in pspec.get("containers") or []:
            if container.get("name") == CONTAINER_NAME and tf_config is not None:
                container["env"] = [*(container.get("env") or []), {"name": "TF_CONFIG", "value": tf_config}]
                break
        if pspec.get("restartPolicy"):
            self._record_event(job.obj, KIND, "Warning", "SettedPodTemplateRestartPolicy",
                               "Restart policy in pod template will be overwritten by restart policy in replica spec",
                               OPERATOR_NAME)
        pspec["restartPolicy"] = "Never" if rspec["restartPolicy"] == "ExitCode" else rspec["restartPolicy"]
        if pspec["restartPolicy"] not in ("Always", "OnFailure", "Never"):
            self._record_event(job.obj, KIND, "Warning", "FailedCreatePod",
                               f'Error creating: Pod "{name}" is invalid: spec.restartPolicy: Unsupported value: '
                               f'"{pspec["restartPolicy"]}": supported values: "Always", "OnFailure", "Never"',
                               OPERATOR_NAME)
            return
        pspec.setdefault("serviceAccountName", "default")
        pspec.setdefault("serviceAccount", pspec["serviceAccountName"])
        pspec.setdefault("terminationGracePeriodSeconds", 30)
        pspec.setdefault("dnsPolicy", "ClusterFirst")
        pspec.setdefault("schedulerName", "default-scheduler")
        meta = {"name": name, "namespace": ns, "uid": str(uuid.uuid4()), "resourceVersion": str(next(self._rv)),
                "creationTimestamp": timestamp(), "labels": labels,
                "ownerReferences": [{"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "name": job_name,
                                     "uid": job.obj["metadata"]["uid"], "controller": True,
                                     "blockOwnerDeletion": True}]}
        if tmeta.get("annotations"):
            meta["annotations"] = dict(tmeta["annotations"])
        obj = {"kind": "Pod", "apiVersion": "v1", "metadata": meta, "spec": pspec,
               "status": {"phase": "Pending", "qosClass": "BestEffort"}}
        pod = Pod(obj=obj, containers=[Container(spec=c) for c in pspec.get("containers") or []], owner=job.key,
                  requests=pod_requests(pspec), log_dir=self._pod_log_dir(ns, name, meta["uid"]),
                  grace_s=float(pspec.get("terminationGracePeriodSeconds", DEFAULT_GRACE_S)))
        self._add_pod(pod)
        self._record_event(job.obj, KIND, "Normal", "SuccessfulCreatePod", f"Created pod: {name}", OPERATOR_NAME)

    def _pod_log_dir(self, namespace: str, name: str, uid: str) -> str:
        return os.path.join(self.workdir, "pods", namespace, f"{name}-{uid[:8]}")

    def _add_pod(self, pod: Pod) -> None:
        self._pods[(pod.namespace, pod.name)] = pod
        self._all_pods_seen.append(pod)
        self._pod_status(pod)

    # -- the kubelet (and the scheduler)

    def _delete_pod(self, pod: Pod, event_owner: _TFJob | None = None) -> None:
        if pod.delete_requested is not None:
            return
        pod.delete_requested = time.monotonic()
        pod.obj["metadata"]["deletionTimestamp"] = timestamp()
        pod.obj["metadata"]["deletionGracePeriodSeconds"] = int(pod.grace_s)
        pod.obj["metadata"]["resourceVersion"] = str(next(self._rv))
        if event_owner is not None:
            self._record_event(event_owner.obj, KIND, "Normal", "SuccessfulDeletePod", f"Deleted pod: {pod.name}",
                               OPERATOR_NAME)
        for c in pod.containers:
            if c.proc is not None:
                self._record_event(pod.obj, "Pod", "Normal", "Killing", f"Stopping container {c.name}", "kubelet")
                killpg(c.proc.pid, signal.SIGTERM)
        self._kubelet(pod)

    def _kubelet(self, pod: Pod) -> None:
        now = time.monotonic()
        if pod.delete_requested is not None:
            if not pod.sigkill_sent and now - pod.delete_requested >= pod.grace_s:
                for c in pod.containers:
                    if c.proc is not None:
                        killpg(c.proc.pid, signal.SIGKILL)
                pod.sigkill_sent = True
            self._reap(pod)
            if not pod.alive():
                self._pods.pop((pod.namespace, pod.name), None)
                if pod.ip is not None:
                    self.network.remove_pod(pod.obj["metadata"]["uid"])
            else:
                self._pod_status(pod)
            return
        if not pod.scheduled and not self._schedule(pod, now):
            self._pod_status(pod)
            return
        if pod.own_network and pod.ip is None and not self._sandbox(pod, now):
            self._pod_status(pod)
            return
        self._reap(pod)
        for c in pod.containers:
            if c.proc is None and not c.final and c.waiting is not None and now >= c.next_start:
                self._start_container(pod, c, now)
        self._pod_status(pod)

    def _sandbox(self, pod: Pod, now: float) -> bool:
        """The pod's network namespace (its sandbox); False (FailedCreatePodSandBox, retried every 10 s) if it
        cannot be made here."""
        from pipeline.kfp_local import pod_network

        if now < pod.sandbox_retry_at:
            return False
        why = pod_network.available()
        if why is None:
            try:
                if self.network is None:
                    self.network = pod_network.PodNetwork()
                _, pod.ip = self.network.add_pod(pod.obj["metadata"]["uid"],
                                                 pod.obj["spec"].get("hostname") or pod.name, pod.namespace)
                return True
            except RuntimeError as exc:
                why = str(exc)
        pod.sandbox_retry_at = now + 10.0
        self._record_event(pod.obj, "Pod", "Warning", "FailedCreatePodSandBox",
                           f"Failed to create pod sandbox: the kube API stand-in gives pods of Jobs a network "
                           f"namespace of their own: {why}", "kubelet")
        return False

    def _schedule(self, pod: Pod, now: float) -> bool:
        if self.node_allocatable is not None:
            used: dict[str, float] = collections.defaultdict(float)
            for other in self._pods.values():
                if other is not pod and other.scheduled and (other.phase not in ("Succeeded", "Failed")
                                                             or other.alive()):
                    for k, v in other.requests.items():
                        used[k] += v
            short = sorted(k for k, v in pod.requests.items()
                           if k in self.node_allocatable and used[k] + v > self.node_allocatable[k] + 1e-9)
            if short:
                message = ("0/1 nodes are available: " + ", ".join(f"1 Insufficient {k}" for k in short)
                           + ". preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.")
                condition = {"type": "PodScheduled", "status": "False", "lastProbeTime": None,
                             "lastTransitionTime": timestamp(), "reason": "Unschedulable", "message": message}
                old = pod.obj["status"].get("conditions") or []
                if not old or old[0].get("message") != message:
                    pod.obj["status"]["conditions"] = [condition]
                if now - pod.scheduling_failed_at >= 10.0:  # the scheduler retries; the event count grows
                    pod.scheduling_failed_at = now
                    self._record_event(pod.obj, "Pod", "Warning", "FailedScheduling", message, "default-scheduler")
                return False
        pod.scheduled = True
        pod.obj["spec"]["nodeName"] = NODE_NAME
        pod.obj["status"]["startTime"] = timestamp()
        self._record_event(pod.obj, "Pod", "Normal", "Scheduled",
                           f"Successfully assigned {pod.namespace}/{pod.name} to {NODE_NAME}", "default-scheduler")
        return True

    def _container_env(self, pod: Pod, spec: dict) -> tuple[dict[str, str], dict[str, str], str | None]:
        """(the process environment, what $(VAR) in command/args may refer to, the CreateContainerConfigError
        message or None)."""
        env = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "KUBECONFIG")}
        env.update(self.env)
        meta = pod.obj["metadata"]
        kubelet = {"HOSTNAME": pod.obj["spec"].get("hostname") or pod.name, "KUBERNETES_SERVICE_HOST": "127.0.0.1",
                   "KUBERNETES_SERVICE_PORT": str(self.port)}
        env.update(kubelet)
        defined: dict[str, str] = dict(kubelet)
        for source in spec.get("envFrom") or []:
            ref = source.get("configMapRef") or source.get("secretRef")
            kind = "configmap" if "configMapRef" in source else "secret"
            if ref and not ref.get("optional"):
                return env, defined, f'{kind} "{ref.get("name")}" not found'
        for var in spec.get("env") or []:
            name = var.get("name")
            if "valueFrom" not in var:
                defined[name] = expand(var.get("value", ""), defined)
                continue
            vf = var["valueFrom"] or {}
            if "fieldRef" in vf:
                path = (vf["fieldRef"] or {}).get("fieldPath", "")
                m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
                values = {"metadata.name": meta["name"], "metadata.namespace": meta["namespace"],
                          "metadata.uid": meta["uid"], "spec.nodeName": NODE_NAME,
                          "spec.serviceAccountName": pod.obj["spec"].get("serviceAccountName", "default"),
                          "status.podIP": pod.ip or "127.0.0.1", "status.hostIP": "127.0.0.1",
                          "status.podIPs": pod.ip or "127.0.0.1",
                          "status.hostIPs": "127.0.0.1"}
                if m:
                    defined[name] = (meta.get(m.group(1)) or {}).get(m.group(2), "")
                elif path in values:
                    defined[name] = values[path]
                else:
                    return env, defined, f'unsupported fieldPath "{path}" for env var {name}'
                continue
            for key, kind in (("secretKeyRef", "secret"), ("configMapKeyRef", "configmap")):
                if key in vf:
                    if not (vf[key] or {}).get("optional"):
                        return env, defined, f'{kind} "{(vf[key] or {}).get("name")}" not found'
                    break
            else:
                return env, defined, f"valueFrom {sorted(vf)} of env var {name} is not emulated by the stand-in"
        env.update(defined)
        return env, defined, None

    def _argv(self, spec: dict, env: Mapping[str, str]) -> list[str]:
        argv = [expand(str(a), env) for a in [*(spec.get("command") or []), *(spec.get("args") or [])]]
        if argv and PYTHON_COMMAND.match(os.path.basename(argv[0])):
            argv[0] = self.python
        return argv

    def _start_container(self, pod: Pod, c: Container, now: float) -> None:
        image = c.spec.get("image", "")
        if self.images is not None and image not in self.images:
            c.pull_failures += 1
            delay = min(self.crash_loop_backoff_s * 2 ** (c.pull_failures - 1), MAX_CRASH_LOOP_BACKOFF_S)
            error = (f'rpc error: code = NotFound desc = failed to pull and unpack image "{image}": failed to resolve '
                     f'reference "{image}": {image}: not found')
            if c.pull_failures == 1:
                self._record_event(pod.obj, "Pod", "Normal", "Pulling", f'Pulling image "{image}"', "kubelet")
                self._record_event(pod.obj, "Pod", "Warning", "Failed", f'Failed to pull image "{image}": {error}',
                                   "kubelet")
                self._record_event(pod.obj, "Pod", "Warning", "Failed", "Error: ErrImagePull", "kubelet")
                c.waiting = {"reason": "ErrImagePull", "message": error}
            else:
                self._record_event(pod.obj, "Pod", "Normal", "BackOff", f'Back-off pulling image "{image}"', "kubelet")
                self._record_event(pod.obj, "Pod", "Warning", "Failed", "Error: ImagePullBackOff", "kubelet")
                c.waiting = {"reason": "ImagePullBackOff", "message": f'Back-off pulling image "{image}"'}
            c.next_start = now + delay
            return
        env, defined, config_error = self._container_env(pod, c.spec)
        if config_error is not None:
            if (c.waiting or {}).get("message") != config_error:
                self._record_event(pod.obj, "Pod", "Warning", "Failed", f"Error: {config_error}", "kubelet")
            c.waiting = {"reason": "CreateContainerConfigError", "message": config_error}
            c.next_start = now + 10.0
            return
        restarting = bool(c.instances)
        if not restarting:
            self._record_event(pod.obj, "Pod", "Normal", "Pulled",
                               f'Container image "{image}" already present on machine', "kubelet")
        os.makedirs(pod.log_dir, exist_ok=True)
        instance = Instance(container_id=f"containerd://{secrets.token_hex(32)}",
                             log_path=os.path.join(pod.log_dir, f"{c.name}-{len(c.instances)}.log"), started_at=timestamp())
        argv = self._argv(c.spec, defined)
        if pod.ip is not None and argv:
            argv = self.network.command(pod.obj["metadata"]["uid"], argv)   # into the pod's network namespace
        workdir = c.spec.get("workingDir")
        cwd = workdir if workdir and os.path.isdir(workdir) else None
        if restarting:
            c.restart_count += 1
        c.instances.append(instance)
        c.waiting = None
        try:
            if not argv:
                raise FileNotFoundError("no command and no args (the image's ENTRYPOINT is not emulated)")
            with open(instance.log_path, "ab") as log:
                instance.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                                 stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            message = (f"failed to create containerd task: failed to create shim task: OCI runtime create failed: "
                       f"exec: {argv[0] if argv else ''!r}: {exc}")
            instance.terminated = {"exitCode": 128, "reason": "StartError", "message": message,
                                   "startedAt": instance.started_at, "finishedAt": timestamp(),
                                   "containerID": instance.container_id}
            self._record_event(pod.obj, "Pod", "Warning", "Failed", f"Error: {message}", "kubelet")
            self._after_exit(pod, c, now)
            return
        self._record_event(pod.obj, "Pod", "Normal", "Created", f"Created container {c.name}", "kubelet")
        self._record_event(pod.obj, "Pod", "Normal", "Started", f"Started container {c.name}", "kubelet")

    def _reap(self, pod: Pod) -> None:
        now = time.monotonic()
        for c in pod.containers:
            inst = c.current
            if inst is None or inst.proc is None or inst.terminated is not None:
                continue
            if not exited(inst.proc):
                continue
            # The container's other processes go with its main process; the group id is still reserved here
            # because the main process is not reaped yet.
            killpg(inst.proc.pid, signal.SIGKILL)
            code = inst.proc.wait()
            exit_code = 128 - code if code < 0 else code
            inst.terminated = {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error",
                               "startedAt": inst.started_at, "finishedAt": timestamp(), "containerID": inst.container_id}
            if pod.delete_requested is None:
                self._after_exit(pod, c, now)
            else:
                c.final = True

    def _after_exit(self, pod: Pod, c: Container, now: float) -> None:
        """The kubelet's restart decision (pod restartPolicy) and crash-loop back-off."""
        policy = pod.obj["spec"]["restartPolicy"]
        code = c.current.terminated["exitCode"]
        if policy == "Always" or (policy == "OnFailure" and code != 0):
            delay = c.backoff_s
            c.backoff_s = min(self.crash_loop_backoff_s if c.backoff_s == 0 else c.backoff_s * 2,
                              MAX_CRASH_LOOP_BACKOFF_S)
            c.next_start = now + delay
            if delay > 0:
                c.waiting = {"reason": "CrashLoopBackOff",
                             "message": f"back-off {delay:g}s restarting failed container={c.name} "
                                        f"pod={pod.name}_{pod.namespace}({pod.obj['metadata']['uid']})"}
                self._record_event(pod.obj, "Pod", "Warning", "BackOff",
                                   f"Back-off restarting failed container {c.name} in pod "
                                   f"{pod.name}_{pod.namespace}({pod.obj['metadata']['uid']})", "kubelet")
            else:
                c.waiting = {"reason": "ContainerCreating"}
                self._start_container(pod, c, now)
        else:
            c.final = True

    def _pod_status(self, pod: Pod) -> None:
        """The API status of a pod (kubelet_pods.go getPhase and the kubelet's conditions)."""
        st = pod.obj["status"]
        before = copy.deepcopy(st)
        if not pod.scheduled:
            st["phase"] = "Pending"
            self._bump_if_changed(pod, before)
            return
        statuses = []
        running = waiting = stopped = succeeded = 0
        for c in pod.containers:
            inst, last = c.current, c.last_state()
            cs = {"name": c.name, "image": c.spec.get("image", ""), "imageID": "", "ready": False,
                  "restartCount": c.restart_count, "started": False, "state": {}, "lastState": {}}
            if last is not None:
                cs["lastState"] = {"terminated": dict(last.terminated)}
            if c.waiting is not None:
                cs["state"] = {"waiting": dict(c.waiting)}
                if last is not None:
                    cs["containerID"] = last.container_id
                    stopped += 1
                else:
                    waiting += 1
            elif inst is not None and inst.terminated is None:
                cs.update(state={"running": {"startedAt": inst.started_at}}, ready=True, started=True,
                          containerID=inst.container_id)
                running += 1
            elif inst is not None:
                cs.update(state={"terminated": dict(inst.terminated)}, containerID=inst.container_id)
                stopped += 1
                succeeded += inst.terminated["exitCode"] == 0
            statuses.append(cs)
        policy = pod.obj["spec"]["restartPolicy"]
        if waiting > 0:
            phase = "Pending"       # a container has not been started yet
        elif running > 0:
            phase = "Running"
        elif stopped > 0:
            if policy == "Always" or (stopped != succeeded and policy != "Never"):
                phase = "Running"   # restarting
            else:
                phase = "Succeeded" if stopped == succeeded else "Failed"
        else:
            phase = "Pending"
        if before.get("phase") in ("Succeeded", "Failed"):
            phase = before["phase"]  # no transitions out of a terminal phase
        ready = bool(statuses) and all(cs["ready"] for cs in statuses)
        old = {c["type"]: c for c in before.get("conditions") or []}

        def cond(ctype, ok, reason=None, message=None):
            status = "True" if ok else "False"
            prev = old.get(ctype)
            c = {"type": ctype, "status": status, "lastProbeTime": None,
                 "lastTransitionTime": prev["lastTransitionTime"] if prev and prev["status"] == status else timestamp()}
            if not ok and reason:
                c.update(reason=reason, message=message)
            return c

        not_ready = [cs["name"] for cs in statuses if not cs["ready"]]
        msg = f"containers with unready status: [{' '.join(not_ready)}]"
        terminal = phase in ("Succeeded", "Failed")
        ip = pod.ip or "127.0.0.1"
        st.update(phase=phase, hostIP="127.0.0.1", podIP=ip, podIPs=[{"ip": ip}],
                  containerStatuses=statuses, conditions=[
                      cond("Initialized", True),
                      cond("Ready", ready, "PodCompleted" if terminal else "ContainersNotReady", msg),
                      cond("ContainersReady", ready, "PodCompleted" if terminal else "ContainersNotReady", msg),
                      cond("PodScheduled", True)])
        self._bump_if_changed(pod, before)

    def _bump_if_changed(self, pod: Pod, before: dict) -> None:
        if pod.obj["status"] != before:
            pod.obj["metadata"]["resourceVersion"] = str(next(self._rv))


def _validate_tfjob(obj: dict) -> list[str]:
    """tfjob_webhook.go validateTFJob (plus: unknown replica types are refused)."""
    errors = []
    name = obj["metadata"].get("name", "")
    if not DNS1035.match(name) or len(name) > 63:
        detail = ("must be no more than 63 characters" if len(name) > 63 else
                  "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
                  "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', "
                  "regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')")
        errors.append(f'metadata.name: Invalid value: "{name}": should match: {detail}')
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return errors + ["spec.tfReplicaSpecs: Required value: must be required"]
    run_policy = spec.get("runPolicy") or {}
    if run_policy.get("managedBy") not in (None, "kubeflow.org/training-operator", "kueue.x-k8s.io/multikueue"):
        errors.append(f'spec.runPolicy.managedBy: Unsupported value: "{run_policy["managedBy"]}": supported values: '
                      f'"kubeflow.org/training-operator", "kueue.x-k8s.io/multikueue"')
    if run_policy.get("cleanPodPolicy") not in (None, *CLEAN_POD_POLICIES):
        errors.append(f'spec.runPolicy.cleanPodPolicy: Unsupported value: "{run_policy["cleanPodPolicy"]}"')
    rspecs = spec.get("tfReplicaSpecs")
    if not rspecs:
        return errors + ["spec.tfReplicaSpecs: Required value: must be required"]
    if not isinstance(rspecs, dict) or not all(isinstance(r, dict) for r in rspecs.values()):
        return errors + ["spec.tfReplicaSpecs: Invalid value: must map replica types to replica specs"]
    chiefs = 0
    for rtype, rspec in rspecs.items():
        path = f"spec.tfReplicaSpecs[{rtype}]"
        canonical = next((t for t in REPLICA_TYPES if t.lower() == str(rtype).lower()), None)
        if canonical is None:
            errors.append(f'{path}: Unsupported value: "{rtype}": supported values: '
                          + ", ".join(f'"{t}"' for t in REPLICA_TYPES))
            continue
        containers = (((rspec or {}).get("template") or {}).get("spec") or {}).get("containers") or []
        cpath = f"{path}.template.spec.containers"
        if not containers:
            errors.append(f"{cpath}: Required value: must be specified")
        if canonical in ("Chief", "Master"):
            chiefs += 1
        for i, container in enumerate(containers):
            if not container.get("image"):
                errors.append(f"{cpath}[{i}].image: Required value: must be required")
        if not any(c.get("name") == CONTAINER_NAME for c in containers):
            errors.append(f"{cpath}: Required value: must have at least one container with name {CONTAINER_NAME}")
        if (rspec or {}).get("replicas") is not None and int(rspec["replicas"]) < 0:
            errors.append(f"{path}.replicas: Invalid value: {rspec['replicas']}: must be greater than or equal to 0")
    if chiefs > 1:
        errors.append("spec.tfReplicaSpecs: Forbidden: must not have more than 1 Chief or Master role")
    return errors


def _default_tfjob_spec(spec: dict) -> dict:
    """tensorflow_defaults.go SetDefaults_TFJob, on a copy."""
    spec = copy.deepcopy(spec)
    run_policy = spec.setdefault("runPolicy", {})
    run_policy.setdefault("cleanPodPolicy", "None")
    spec.setdefault("successPolicy", "")
    renamed = {}
    for rtype, rspec in spec["tfReplicaSpecs"].items():
        canonical = next(t for t in REPLICA_TYPES if t.lower() == rtype.lower())
        rspec.setdefault("replicas", 1)
        if rspec["replicas"] is None:
            rspec["replicas"] = 1
        rspec.setdefault("restartPolicy", "Never")
        for container in rspec["template"]["spec"]["containers"]:
            if container.get("name") == CONTAINER_NAME:
                ports = container.setdefault("ports", [])
                if not any(p.get("name") == PORT_NAME for p in ports):
                    ports.append({"name": PORT_NAME, "containerPort": DEFAULT_PORT})
        renamed[canonical] = rspec
    spec["tfReplicaSpecs"] = renamed
    return spec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve the Kubernetes API stand-in until SIGTERM or Ctrl-C.")
    parser.add_argument("--workdir", required=True, help="kubeconfig, request log and replica logs go here")
    parser.add_argument("--namespace", default="kubeflow-user", help="the kubeconfig context's namespace")
    parser.add_argument("--python", default=sys.executable, help="interpreter standing in for the image's python")
    args = parser.parse_args(argv)
    return serve_until_signalled(KubeApiServer(args.workdir, namespace=args.namespace, python=args.python),
                                 "{kubeconfig}", "# export KUBECONFIG={kubeconfig}")


if __name__ == "__main__":
    sys.exit(main())
