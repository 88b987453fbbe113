"""The Kubernetes API stand-in's batch/v1 Jobs and v1 Services: the API objects and the Job controller.

``BatchJobs`` is a part of ``kube_api.KubeApiServer`` (a mixin: it uses the server's pods, kubelet, events and
lock). It serves::

    POST   /apis/batch/v1/namespaces/{ns}/jobs                 create (422 Invalid, 409 AlreadyExists)
    GET    /apis/batch/v1/namespaces/{ns}/jobs[/{name}[/status]]
    DELETE /apis/batch/v1/namespaces/{ns}/jobs/{name}          propagationPolicy; the default is Orphan
    POST   /api/v1/namespaces/{ns}/services                    create (422 Invalid, 409 AlreadyExists)
    GET    /api/v1/namespaces/{ns}/services[/{name}]
    DELETE /api/v1/namespaces/{ns}/services/{name}

What is mirrored, and from where (kubernetes/kubernetes v1.31):

- pkg/apis/batch/v1/defaults.go ``SetDefaults_Job``: completions and parallelism 1 when neither is set, else
  parallelism 1; backoffLimit 6; completionMode NonIndexed; podReplacementPolicy TerminatingOrFailed.
- pkg/apis/batch/validation/validation.go ``ValidateJob``: template restartPolicy OnFailure or Never, Indexed
  needs completions, non-negative counts, containers required; errors as 422 ``Job.batch "<name>" is invalid``.
- pkg/registry/batch/job/strategy.go: the generated selector and the labels ``batch.kubernetes.io/controller-uid``,
  ``batch.kubernetes.io/job-name`` (and the legacy ``controller-uid``, ``job-name``) on the pod template;
  ``DefaultGarbageCollectionPolicy`` is OrphanDependents for batch/v1 (a DELETE without a policy leaves the pods).
- pkg/controller/job/job_controller.go ``syncJob`` and indexed_job_utils.go: one pod per missing index, named
  ``<job>-<index>-<5 random>``, with the ``batch.kubernetes.io/job-completion-index`` annotation and label, hostname
  ``<job>-<index>`` and env ``JOB_COMPLETION_INDEX`` (a fieldRef to the annotation) in every container; a failed
  index gets a new pod after the pod-failure back-off (10 s doubling to 10 min; ``pod_backoff_s`` here);
  ``exceedsBackoffLimit`` (failed pods > backoffLimit) and ``pastBackoffLimitOnFailure`` (container restarts of
  Running/Pending pods >= backoffLimit, > 0 when it is 0); ``pastActiveDeadline``; on failure the active pods are
  deleted; the status counts (active, ready, succeeded, failed, terminating, completedIndexes).
  With JobPodReplacementPolicy (beta, on in 1.31) the terminal condition waits for the pods: ``FailureTarget`` then
  ``Failed`` once no pod is left running (reasons BackoffLimitExceeded / DeadlineExceeded), ``SuccessCriteriaMet``
  then ``Complete`` (reason CompletionsReached) with completionTime.
- Services: only what a headless Service needs (name a DNS-1035 label, ``clusterIP: None``, ``selector``,
  ``publishNotReadyAddresses``). Its pods' DNS names ("DNS for Services and Pods") are served by the pod network
  (``pod_network.py``): pods of Jobs run in network namespaces of their own.

Not emulated: suspend, podFailurePolicy, backoffLimitPerIndex, successPolicy, ttlSecondsAfterFinished,
managedBy, the job-tracking finalizer, Endpoints/EndpointSlices, ClusterIP Services (no kube-proxy), NodePorts.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import secrets
import time
import uuid

from pipeline.kfp_local.kube_objects import (DEFAULT_GRACE_S, DNS1035, DNS1123_SUBDOMAIN, ApiError, Container, Pod,
                                             matches, not_found, parse_field_selector, parse_label_selector,
                                             pod_requests, timestamp)

BATCH = "batch"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
CONTROLLER_UID_LABEL = "batch.kubernetes.io/controller-uid"
LEGACY_LABELS = {"job-name": JOB_NAME_LABEL, "controller-uid": CONTROLLER_UID_LABEL}
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
COMPLETION_INDEX_ENV = "JOB_COMPLETION_INDEX"
JOB_CONTROLLER = "job-controller"
DEFAULT_BACKOFF_LIMIT = 6
MAX_POD_BACKOFF_S = 600.0
_NAME_SUFFIX = "bcdfghjklmnpqrstvwxz2456789"   # k8s.io/apimachinery/pkg/util/rand: generateName's alphabet


@dataclasses.dataclass
class BatchJob:
    obj: dict
    start_mono: float | None = None
    failed_uids: set = dataclasses.field(default_factory=set)
    succeeded: dict = dataclasses.field(default_factory=dict)     # pod uid -> completion index
    next_create: float = 0.0                                       # pod-failure back-off, monotonic
    deleting: str | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return "jobs.batch", self.obj["metadata"]["namespace"], self.obj["metadata"]["name"]


def _invalid(kind: str, group: str, name: str, errors: list[str]) -> ApiError:
    qualified = f"{kind}.{group}" if group else kind
    message = errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"
    return ApiError(422, "Invalid", f'{qualified} "{name}" is invalid: {message}',
                    {"name": name, **({"group": group} if group else {}), "kind": kind})


def _compress(indexes) -> str:
    """completedIndexes: "0-2,5" (indexed_job_utils.go)."""
    ranges, items = [], sorted(set(indexes))
    for i in items:
        if ranges and ranges[-1][1] == i - 1:
            ranges[-1][1] = i
        else:
            ranges.append([i, i])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


def _pod_index(pod: Pod) -> int | None:
    value = (pod.obj["metadata"].get("annotations") or {}).get(COMPLETION_INDEX)
    return int(value) if value is not None and value.isdigit() else None


def _read_body(body: bytes, kind: str, api_version: str, namespace: str) -> tuple[dict, dict, str, dict]:
    """A created object's (object, metadata, name, spec), refused as the API server does when it is no ``kind`` or
    names another namespace than the request's."""
    try:
        obj = json.loads(body or b"{}")
    except ValueError as exc:
        raise ApiError(400, "BadRequest", f"the body of the request was in an unknown format: {exc}") from None
    if not isinstance(obj, dict) or obj.get("kind", kind) != kind or obj.get("apiVersion", api_version) != api_version:
        raise ApiError(400, "BadRequest", f"the body must be a {api_version} {kind}")
    meta = obj.setdefault("metadata", {})
    if meta.get("namespace") not in (None, "", namespace):
        raise ApiError(400, "BadRequest", "the namespace of the provided object does not match the namespace "
                                          "sent on the request")
    return obj, meta, meta.get("name") or "", obj.setdefault("spec", {})


class BatchJobs:
    """Jobs, Services and the Job controller; mixed into KubeApiServer (see the module docstring)."""

    pod_backoff_s: float = 10.0

    def _init_batch(self) -> None:
        self._batch_jobs: dict[tuple[str, str, str], BatchJob] = {}
        self._services: dict[tuple[str, str], dict] = {}

    # ---- test accessors ----------------------------------------------------------------------------------

    def jobs(self) -> list[dict]:
        with self._lock:
            return [copy.deepcopy(job.obj) for job in self._batch_jobs.values()]

    def services(self) -> list[dict]:
        with self._lock:
            return [copy.deepcopy(service) for service in self._services.values()]

    # ---- Jobs --------------------------------------------------------------------------------------------

    def _create_jobs(self, namespace: str, query: dict, body: bytes):
        obj, meta, name, spec = _read_body(body, "Job", "batch/v1", namespace)
        errors = []
        if not name:
            errors.append("metadata.name: Required value: name or generateName is required")
        elif not DNS1123_SUBDOMAIN.match(name) or len(name) > 63:
            errors.append(f'metadata.name: Invalid value: "{name}": a lowercase RFC 1123 subdomain of at most 63 '
                          f"characters")
        # SetDefaults_Job
        if spec.get("completions") is None and spec.get("parallelism") is None:
            spec["completions"] = spec["parallelism"] = 1
        spec.setdefault("parallelism", 1)
        spec.setdefault("backoffLimit", DEFAULT_BACKOFF_LIMIT)
        spec.setdefault("completionMode", "NonIndexed")
        spec.setdefault("suspend", False)
        spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
        template = spec.get("template") or {}
        pspec = template.get("spec") or {}
        policy = pspec.get("restartPolicy")
        if policy not in ("OnFailure", "Never"):
            errors.append(f'spec.template.spec.restartPolicy: Required value: valid values: "OnFailure", "Never"'
                          if not policy else f'spec.template.spec.restartPolicy: Unsupported value: "{policy}": '
                                             f'supported values: "OnFailure", "Never"')
        if not pspec.get("containers"):
            errors.append("spec.template.spec.containers: Required value")
        if spec["completionMode"] not in ("NonIndexed", "Indexed"):
            errors.append(f'spec.completionMode: Unsupported value: "{spec["completionMode"]}": supported values: '
                          f'"NonIndexed", "Indexed"')
        if spec["completionMode"] == "Indexed" and spec.get("completions") is None:
            errors.append("spec.completions: Required value: when completion mode is Indexed")
        for field in ("parallelism", "completions", "backoffLimit", "activeDeadlineSeconds"):
            value = spec.get(field)
            if value is not None and (not isinstance(value, int) or value < 0
                                      or (field == "activeDeadlineSeconds" and value == 0)):
                errors.append(f"spec.{field}: Invalid value: {value}: must be greater than or equal to "
                              f"{1 if field == 'activeDeadlineSeconds' else 0}")
        if spec.get("suspend"):
            errors.append("spec.suspend: Unsupported value: true: the stand-in does not emulate suspended Jobs")
        with self._lock:
            if namespace not in self._namespaces:
                raise not_found("namespaces", namespace)
            if errors:
                raise _invalid("Job", BATCH, name, errors)
            if ("jobs.batch", namespace, name) in self._batch_jobs:
                raise ApiError(409, "AlreadyExists", f'jobs.batch "{name}" already exists',
                               {"name": name, "group": BATCH, "kind": "jobs"})
            uid = str(uuid.uuid4())
            meta.update(namespace=namespace, uid=uid, resourceVersion=str(next(self._rv)), generation=1,
                        creationTimestamp=timestamp())
            # strategy.go generateSelector: the controller-uid selector and the template labels
            spec["selector"] = {"matchLabels": {CONTROLLER_UID_LABEL: uid}}
            tmeta = template.setdefault("metadata", {})
            tmeta["labels"] = {**(tmeta.get("labels") or {}), CONTROLLER_UID_LABEL: uid, JOB_NAME_LABEL: name,
                               "controller-uid": uid, "job-name": name}
            obj["status"] = {}
            job = BatchJob(obj=obj)
            self._batch_jobs[job.key] = job
            return self._json(copy.deepcopy(obj), 201)

    def _list_jobs(self, namespace: str, query: dict, body: bytes):
        labels = parse_label_selector(query.get("labelSelector", ""))
        fields = parse_field_selector(query.get("fieldSelector", ""))
        with self._lock:
            items = [copy.deepcopy(j.obj) for (_, ns, _), j in sorted(self._batch_jobs.items()) if ns == namespace
                     and matches(j.obj, labels, fields)]
        return self._list("JobList", items)

    def _get_jobs(self, namespace: str, name: str, query: dict, body: bytes):
        with self._lock:
            job = self._batch_jobs.get(("jobs.batch", namespace, name))
            if job is None:
                raise not_found("jobs", name, BATCH)
            return self._json(copy.deepcopy(job.obj))

    _get_jobs_status = _get_jobs

    def _delete_jobs(self, namespace: str, name: str, query: dict, body: bytes):
        policy = self._propagation_policy(query, body) or "Orphan"   # batch/v1's DefaultGarbageCollectionPolicy
        with self._lock:
            job = self._batch_jobs.get(("jobs.batch", namespace, name))
            if job is None:
                raise not_found("jobs", name, BATCH)
            return self._delete_owner(job, self._batch_jobs, policy, BATCH, "jobs")

    # ---- Services ----------------------------------------------------------------------------------------

    def _create_services(self, namespace: str, query: dict, body: bytes):
        obj, meta, name, spec = _read_body(body, "Service", "v1", namespace)
        errors = []
        if not DNS1035.match(name) or len(name) > 63:
            errors.append(f'metadata.name: Invalid value: "{name}": a DNS-1035 label must consist of lower case '
                          f"alphanumeric characters or '-', start with an alphabetic character, and end with an "
                          f"alphanumeric character")
        if spec.get("clusterIP") not in (None, "", "None"):
            errors.append(f'spec.clusterIP: Invalid value: "{spec["clusterIP"]}": the stand-in has no Service '
                          f"network: only headless Services (clusterIP None)")
        if spec.get("type", "ClusterIP") != "ClusterIP":
            errors.append(f'spec.type: Unsupported value: "{spec["type"]}": the stand-in serves ClusterIP (headless)')
        for i, port in enumerate(spec.get("ports") or []):
            if not isinstance(port.get("port"), int) or not 1 <= port["port"] <= 65535:
                errors.append(f"spec.ports[{i}].port: Invalid value: {port.get('port')}: must be between 1 and "
                              f"65535, inclusive")
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))
        with self._lock:
            if namespace not in self._namespaces:
                raise not_found("namespaces", namespace)
            if errors:
                raise _invalid("Service", "", name, errors)
            if (namespace, name) in self._services:
                raise ApiError(409, "AlreadyExists", f'services "{name}" already exists',
                               {"name": name, "kind": "services"})
            spec.update(clusterIP="None", clusterIPs=["None"], type="ClusterIP")
            spec.setdefault("sessionAffinity", "None")
            meta.update(namespace=namespace, uid=str(uuid.uuid4()), resourceVersion=str(next(self._rv)),
                        creationTimestamp=timestamp())
            obj["status"] = {"loadBalancer": {}}
            self._services[(namespace, name)] = obj
            return self._json(copy.deepcopy(obj), 201)

    def _list_services(self, namespace: str, query: dict, body: bytes):
        labels = parse_label_selector(query.get("labelSelector", ""))
        with self._lock:
            items = [copy.deepcopy(s) for (ns, _), s in sorted(self._services.items()) if ns == namespace
                     and matches(s, labels, [])]
        return self._list("ServiceList", items)

    def _get_services(self, namespace: str, name: str, query: dict, body: bytes):
        with self._lock:
            service = self._services.get((namespace, name))
            if service is None:
                raise not_found("services", name)
            return self._json(copy.deepcopy(service))

    def _delete_services(self, namespace: str, name: str, query: dict, body: bytes):
        with self._lock:
            service = self._services.pop((namespace, name), None)
            if service is None:
                raise not_found("services", name)
            return self._json(service)

    def dns_records(self) -> dict[str, str]:
        """Headless Services' pod records (name -> pod IP): pods with a hostname and that Service as subdomain,
        selected by it, not finished, with an address, and Ready unless the Service publishes not-ready ones."""
        from pipeline.kfp_local.pod_network import dns_names

        records = {}
        for pod in self._pods.values():
            spec, meta = pod.obj["spec"], pod.obj["metadata"]
            if not pod.ip or not spec.get("hostname") or not spec.get("subdomain") or pod.delete_requested is not None:
                continue
            if pod.phase in ("Succeeded", "Failed"):
                continue
            service = self._services.get((pod.namespace, spec["subdomain"]))
            if service is None:
                continue
            selector = (service.get("spec") or {}).get("selector") or {}
            labels = meta.get("labels") or {}
            if not selector or any(labels.get(k) != v for k, v in selector.items()):
                continue
            ready = any(c["type"] == "Ready" and c["status"] == "True" for c in pod.obj["status"].get("conditions")
                        or [])
            if ready or service["spec"].get("publishNotReadyAddresses"):
                for name in dns_names(spec["hostname"], spec["subdomain"], pod.namespace):
                    records[name] = pod.ip
        return records

    # ---- the Job controller ------------------------------------------------------------------------------

    def _reconcile_batch_jobs(self) -> None:
        for job in list(self._batch_jobs.values()):
            if job.deleting:
                if not any(p.owner == job.key for p in self._pods.values()):
                    del self._batch_jobs[job.key]    # foreground deletion done
                continue
            self._sync_job(job)

    @staticmethod
    def _condition(status: dict, ctype: str) -> dict | None:
        return next((c for c in status.get("conditions") or [] if c["type"] == ctype and c["status"] == "True"), None)

    def _add_condition(self, status: dict, ctype: str, reason: str, message: str) -> None:
        now = timestamp()
        status["conditions"] = [*(status.get("conditions") or []),
                                {"type": ctype, "status": "True", "reason": reason, "message": message,
                                 "lastProbeTime": now, "lastTransitionTime": now}]

    def _sync_job(self, job: BatchJob) -> None:
        """job_controller.go syncJob for one Job."""
        before = job.obj["status"]
        status = copy.deepcopy(before)
        ns, name = job.key[1], job.key[2]
        spec = job.obj["spec"]
        if self._condition(status, "Complete") or self._condition(status, "Failed"):
            return
        now = time.monotonic()
        if status.get("startTime") is None:
            status["startTime"] = timestamp()
            job.start_mono = now
        pods = [p for p in self._pods.values() if p.owner == job.key]
        for pod in pods:
            uid = pod.obj["metadata"]["uid"]
            if pod.phase == "Failed" and uid not in job.failed_uids:
                job.failed_uids.add(uid)
                delay = min(self.pod_backoff_s * 2 ** (len(job.failed_uids) - 1), MAX_POD_BACKOFF_S)
                job.next_create = now + delay
            elif pod.phase == "Succeeded" and uid not in job.succeeded:
                job.succeeded[uid] = _pod_index(pod)
        active = [p for p in pods if p.phase not in ("Succeeded", "Failed") and p.delete_requested is None]
        indexed = spec["completionMode"] == "Indexed"
        done = ({i for i in job.succeeded.values() if i is not None and i < spec["completions"]} if indexed
                else set(job.succeeded))

        failure_target = self._condition(status, "FailureTarget")
        success_target = self._condition(status, "SuccessCriteriaMet")
        if failure_target is None and success_target is None:
            failure = None
            limit = spec["backoffLimit"]
            deadline = spec.get("activeDeadlineSeconds")
            restarts = sum(c.restart_count for p in pods if p.phase in ("Running", "Pending") for c in p.containers)
            if deadline is not None and now - job.start_mono >= deadline:
                failure = ("DeadlineExceeded", "Job was active longer than specified deadline")
            elif len(job.failed_uids) > limit or (spec["template"]["spec"]["restartPolicy"] == "OnFailure"
                                                  and (restarts > 0 if limit == 0 else restarts >= limit)):
                failure = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
            if failure is not None:
                self._add_condition(status, "FailureTarget", *failure)
                self._record_event(job.obj, "Job", "Warning", failure[0], failure[1], JOB_CONTROLLER)
                for pod in active:
                    self._delete_job_pod(job, pod)
                active = []
            elif len(done) >= (spec["completions"] or 0) and spec.get("completions") is not None:
                self._add_condition(status, "SuccessCriteriaMet", "CompletionsReached",
                                    "Reached expected number of succeeded pods")
                for pod in active:
                    self._delete_job_pod(job, pod)
                active = []
            else:
                self._manage_pods(job, active, done, now)
        failure_target = self._condition(status, "FailureTarget")
        success_target = self._condition(status, "SuccessCriteriaMet")
        if not any(p.alive() for p in pods) and not active:
            if failure_target is not None:
                self._add_condition(status, "Failed", failure_target["reason"], failure_target["message"])
            elif success_target is not None:
                self._add_condition(status, "Complete", "CompletionsReached",
                                    "Reached expected number of succeeded pods")
                status["completionTime"] = timestamp()
                self._record_event(job.obj, "Job", "Normal", "Completed", "Job completed", JOB_CONTROLLER)
        pods = [p for p in self._pods.values() if p.owner == job.key]
        active = [p for p in pods if p.phase not in ("Succeeded", "Failed") and p.delete_requested is None]
        counts = {"active": len(active), "succeeded": len(job.succeeded), "failed": len(job.failed_uids)}
        for key, value in counts.items():
            if value:
                status[key] = value
            else:
                status.pop(key, None)   # omitempty
        status["ready"] = sum(1 for p in active if any(
            c["type"] == "Ready" and c["status"] == "True" for c in p.obj["status"].get("conditions") or []))
        status["terminating"] = sum(1 for p in pods if p.delete_requested is not None and p.alive())
        status["uncountedTerminatedPods"] = {}
        if indexed:
            if done:
                status["completedIndexes"] = _compress(done)
            else:
                status.pop("completedIndexes", None)
        if status != before:
            job.obj["status"] = status
            job.obj["metadata"]["resourceVersion"] = str(next(self._rv))

    def _manage_pods(self, job: BatchJob, active: list[Pod], done: set, now: float) -> None:
        """manageJob: a pod for every index that has neither succeeded nor an active pod (after the back-off)."""
        spec = job.obj["spec"]
        if spec["completionMode"] == "Indexed":
            running = {_pod_index(p) for p in active}
            missing = [i for i in range(spec["completions"]) if i not in done and i not in running]
            missing = missing[:max(0, spec["parallelism"] - len(active))]
        else:
            wanted = min(spec["parallelism"], (spec.get("completions") or spec["parallelism"]) - len(done))
            missing = [None] * max(0, wanted - len(active))
        if missing and now < job.next_create:
            return
        for index in missing:
            self._create_job_pod(job, index)

    def _delete_job_pod(self, job: BatchJob, pod: Pod) -> None:
        self._delete_pod(pod)
        self._record_event(job.obj, "Job", "Normal", "SuccessfulDelete", f"Deleted pod: {pod.name}", JOB_CONTROLLER)

    def _create_job_pod(self, job: BatchJob, index: int | None) -> None:
        _, ns, job_name = job.key
        template = copy.deepcopy(job.obj["spec"]["template"])
        tmeta, pspec = template.get("metadata") or {}, template.get("spec") or {}
        base = f"{job_name}-{index}-" if index is not None else f"{job_name}-"
        name = base + "".join(secrets.choice(_NAME_SUFFIX) for _ in range(5))
        labels = dict(tmeta.get("labels") or {})
        annotations = dict(tmeta.get("annotations") or {})
        if index is not None:
            labels[COMPLETION_INDEX] = annotations[COMPLETION_INDEX] = str(index)
            if not pspec.get("hostname"):
                pspec["hostname"] = f"{job_name}-{index}"
            for container in pspec.get("containers") or []:
                env = container.setdefault("env", [])
                if not any(e.get("name") == COMPLETION_INDEX_ENV for e in env):
                    env.append({"name": COMPLETION_INDEX_ENV, "valueFrom": {"fieldRef": {
                        "apiVersion": "v1", "fieldPath": f"metadata.annotations['{COMPLETION_INDEX}']"}}})
        pspec.setdefault("serviceAccountName", "default")
        pspec.setdefault("serviceAccount", pspec["serviceAccountName"])
        pspec.setdefault("terminationGracePeriodSeconds", int(DEFAULT_GRACE_S))
        pspec.setdefault("dnsPolicy", "ClusterFirst")
        pspec.setdefault("schedulerName", "default-scheduler")
        meta = {"name": name, "generateName": base, "namespace": ns, "uid": str(uuid.uuid4()),
                "resourceVersion": str(next(self._rv)), "creationTimestamp": timestamp(), "labels": labels,
                "annotations": annotations,
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job_name,
                                     "uid": job.obj["metadata"]["uid"], "controller": True,
                                     "blockOwnerDeletion": True}]}
        obj = {"kind": "Pod", "apiVersion": "v1", "metadata": meta, "spec": pspec,
               "status": {"phase": "Pending", "qosClass": "BestEffort"}}
        pod = Pod(obj=obj, containers=[Container(spec=c) for c in pspec.get("containers") or []], owner=job.key,
                  requests=pod_requests(pspec), log_dir=self._pod_log_dir(ns, name, meta["uid"]),
                  grace_s=float(pspec["terminationGracePeriodSeconds"]), own_network=True)
        self._add_pod(pod)
        self._record_event(job.obj, "Job", "Normal", "SuccessfulCreate", f"Created pod: {name}", JOB_CONTROLLER)

