"""A stand-in for the Vertex AI JobService REST API (v1) and its training clusters, on this machine.

``VertexApiServer`` serves, over plain HTTP on 127.0.0.1, the CustomJob methods the Trainer's Vertex launcher uses,
with the URLs, JSON casing and error bodies of the real API, so ``aiplatform_v1.JobServiceClient`` over its REST
transport (``url_scheme="http"``, anonymous credentials) talks to it unchanged::

    POST /v1/projects/{project}/locations/{location}/customJobs              create  -> CustomJob
    GET  /v1/projects/{project}/locations/{location}/customJobs/{id}         get     -> CustomJob
    POST /v1/projects/{project}/locations/{location}/customJobs/{id}:cancel  cancel  -> {} (google.protobuf.Empty)

Every request body is parsed with aiplatform's own protobuf types (``json_format.Parse``, unknown fields refused),
and every request is recorded (method, path, query, parsed body, status code: ``requests()``). A created job's
replicas are REAL local processes: for each worker pool and replica, the container's ``command`` + ``args`` run
with its ``env`` (a leading ``python``/``python3`` becomes this interpreter; the image is not pulled), in a process
group of their own, stdout+stderr appended to ``<workdir>/<job id>/workerpool<p>-<i>.log``.

What is mirrored, and from where:

- URLs, verbs and bodies: google-cloud-aiplatform's generated REST transport,
  google/cloud/aiplatform_v1/services/job_service/transports/rest_base.py (``_BaseCreateCustomJob`` posts the
  CustomJob itself to ``/v1/{parent=projects/*/locations/*}/customJobs``, ``_BaseGetCustomJob`` gets
  ``/v1/{name=projects/*/locations/*/customJobs/*}``, ``_BaseCancelCustomJob`` posts ``{}`` to ``...:cancel``; each
  asks ``$alt=json;enum-encoding=int``, so enums are answered as integers then, as names otherwise) and the REST
  reference https://cloud.google.com/vertex-ai/docs/reference/rest/v1/projects.locations.customJobs
  (CustomJob, CustomJobSpec, WorkerPoolSpec, Scheduling: aiplatform_v1/types/custom_job.py).
- Output-only fields in a create body are ignored; the server sets ``name`` (with the project NUMBER, as Vertex
  answers however the project was named in the request), ``state``, ``create_time``/``update_time``, then
  ``start_time`` (first RUNNING), ``end_time`` (SUCCEEDED/FAILED/CANCELLED) and ``error``.
- JobState (https://cloud.google.com/vertex-ai/docs/reference/rest/v1/JobState, aiplatform_v1/types/job_state.py)
  and the lifecycle of https://cloud.google.com/vertex-ai/docs/training/understanding-training-service: QUEUED,
  PENDING while the machines come up, RUNNING once all replicas are up (here they all come up at once, after
  ``provision_s``, and start together; upstream each starts as soon as its machine is up); the job SUCCEEDS when the
  primary replica (workerpool0-0) exits 0, and the other replicas are then shut down; a replica exiting non-zero
  fails the whole job ("common error": permanent) with ``error.message`` "The replica workerpool1-0 exited with a
  non-zero status of 17. Termination reason: Error." -- except the exit codes that page calls potentially
  transient (SIGABRT 6/134, SIGSEGV 11/139), on which the whole job is restarted, up to three times.
- cancel (JobService.CancelCustomJob, aiplatform_v1 client docstring): asynchronous; the job goes CANCELLING, its
  replicas get SIGTERM then SIGKILL after ``termination_grace_s``, then CANCELLED with ``error.code`` 1
  (google.rpc.Code.CANCELLED); cancelling a finished job is refused (400 FAILED_PRECONDITION), cancelling again
  while CANCELLING is accepted, and a replica exit while CANCELLING changes nothing (the cancel wins).
- Errors are Google's JSON error bodies (https://cloud.google.com/apis/design/errors#http_mapping):
  ``{"error": {"code": <HTTP status>, "message": ..., "status": "INVALID_ARGUMENT", "details": [...]}}``, which
  google-api-core turns into ``BadRequest``, ``NotFound``, ``Forbidden``... (by HTTP status); field errors in the
  "List of found errors:\\t1.Field: ...; Message: ...\\t" form of Vertex's, with a ``google.rpc.BadRequest``
  detail.
- The replica environment (https://cloud.google.com/vertex-ai/docs/training/distributed-training#cluster-spec-format
  and, for the fields, https://cloud.google.com/ai-platform/training/docs/distributed-training-details):
  ``CLUSTER_SPEC`` = ``{"cluster": {"workerpool0": [...], "workerpool1": [...], ...}, "task": {"type":
  "workerpool<p>", "index": i}, "environment": "cloud", "job": ...}`` and ``TF_CONFIG`` = the same with the
  TensorFlow names: cluster ``chief`` (pool 0), ``worker`` (pool 1), ``ps`` (pool 2) -- an evaluator (pool 3) is not
  part of the cluster, its task type is ``evaluator`` -- and ``task.type`` chief/worker/ps/evaluator. ``trial`` is
  only set for hyperparameter tuning, so never here. Replica names are ``workerpool<p>-<i>`` (CustomJob's
  ``web_access_uris`` docs). Container ``env`` values expand ``$(VAR)`` from the variables defined before them and
  the service's (``$$`` escapes), as EnvVar's docs say; names must be C identifiers, at most 100 of them.

Deviations (on purpose, everything runs on one machine):

- Addresses: replicas are ``127.0.0.1:<free port>`` instead of ``cmle-training-workerpool<p>-<id>-<i>:2222``
  hostnames; they stay the same when the job is restarted (so would the hostnames).
- ``job`` in TF_CONFIG/CLUSTER_SPEC is the CustomJobSpec as a JSON string with proto field names, the form other
  projects' parsers of real CLUSTER_SPECs expect (the docs only say "the job spec").
- Machine types and accelerators are validated in form but not provisioned: every replica runs here, on the CPU.
- The replica environment starts from this process's environment (standing in for the image's ``ENV``), minus
  TF_CONFIG/CLUSTER_SPEC, plus ``env`` given to the server; then TF_CONFIG/CLUSTER_SPEC; then the container env.
- Vertex sets ``error`` "about one minute after a job ends"; here ``error_delay_s`` after it (default 0).
- Not documented, chosen here: a failed replica's ``error.code`` is 3 (INVALID_ARGUMENT); a job past its
  ``scheduling.timeout`` is FAILED with ``error.code`` 4 (DEADLINE_EXCEEDED); the grace between SIGTERM and SIGKILL
  is ``termination_grace_s``; the wording of validation messages.
- One project (``project`` id and ``project_number``; any other is 403 PERMISSION_DENIED as IAM answers for a
  project one cannot see) and any location; QUEUED lasts ``queue_s``, PENDING ``provision_s``.

Not emulated: list/delete and the other JobService methods, long-running operations, hyperparameter tuning,
``python_package_spec`` (refused), persistent resources, spot/DWS scheduling, per-worker restarts after VM
maintenance or internal errors (``restart_job_on_worker_restart``), quotas, IAM and authentication (no token is
checked), Cloud Logging (the replica logs are the files above).

Run it alone with ``python tests/standins/vertex_api.py --workdir DIR``: it prints its endpoint and serves until
SIGTERM or Ctrl-C, then kills every replica process group it started.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import logging
import os
import random
import re
import signal
import subprocess
import sys
import time
import urllib.parse
from typing import Any, Mapping

from google.cloud import aiplatform_v1
from google.protobuf import json_format

from pipeline.kfp_local.loopback import (LoopbackApiServer, exited, expand, free_port, killpg,
                                        serve_until_signalled)

logger = logging.getLogger(__name__)

S = aiplatform_v1.JobState
TERMINAL = (S.JOB_STATE_SUCCEEDED, S.JOB_STATE_FAILED, S.JOB_STATE_CANCELLED, S.JOB_STATE_EXPIRED)
TF_TASK_TYPES = ("chief", "worker", "ps", "evaluator")      # by worker pool position
TF_CLUSTER_POOLS = (0, 1, 2)                                 # the evaluator is not part of the TF cluster
MAX_POOLS = 4
MAX_ENV = 100
TRANSIENT_EXIT_CODES = (6, 134, 11, 139)                     # SIGABRT, SIGSEGV (custom containers: 128 + signal)
MAX_JOB_RETRIES = 3
CANCELLED, INVALID_ARGUMENT, DEADLINE_EXCEEDED = 1, 3, 4     # google.rpc.Code
HTTP_STATUS = {"INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "PERMISSION_DENIED": 403, "NOT_FOUND": 404,
               "INTERNAL": 500}
_PYTHON = re.compile(r"^python(3(\.\d+)?)?$")
_C_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_COLLECTION = re.compile(r"^/v1/projects/([^/]+)/locations/([^/]+)/customJobs$")
_RESOURCE = re.compile(r"^/v1/projects/([^/]+)/locations/([^/]+)/customJobs/([^/:]+)(:cancel)?$")


class ApiError(Exception):
    """An error the API answers with Google's JSON error body."""

    def __init__(self, status: str, message: str, details: list | None = None):
        super().__init__(message)
        self.code = HTTP_STATUS[status]
        self.body = {"error": {"code": self.code, "message": message, "status": status, "details": details or []}}


def _field_errors(violations: list[tuple[str, str]]) -> ApiError:
    listed = "".join(f"{i}.Field: {field}; Message: {msg}\t" for i, (field, msg) in enumerate(violations, 1))
    return ApiError("INVALID_ARGUMENT", f"List of found errors:\t{listed}", [{
        "@type": "type.googleapis.com/google.rpc.BadRequest",
        "fieldViolations": [{"field": field, "description": msg} for field, msg in violations]}])


def _parse(body: bytes, message_type) -> Any:
    """A request body as the aiplatform protobuf type; unknown fields and bad JSON are INVALID_ARGUMENT."""
    message = message_type.pb()()
    try:
        json_format.Parse(body or b"{}", message, ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        raise ApiError("INVALID_ARGUMENT", f"Invalid JSON payload received. {exc}", [{
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{"description": f"Invalid JSON payload received. {exc}"}]}]) from None
    return message


# ---- validation ------------------------------------------------------------------------------------------

def _is_empty(pool) -> bool:
    return pool.ByteSize() == 0


def validate_custom_job(job) -> list[tuple[str, str]]:
    """(field, message) for what the API refuses in a CustomJob (required fields, pool 0, accelerators)."""
    errors: list[tuple[str, str]] = []
    if not job.display_name:
        errors.append(("display_name", "Required field is not set."))
    elif len(job.display_name) > 128:
        errors.append(("display_name", "The display name can be up to 128 characters long."))
    pools = job.job_spec.worker_pool_specs
    if not pools or _is_empty(pools[0]):
        errors.append(("job_spec.worker_pool_specs[0]", "Required field is not set."))
    if len(pools) > MAX_POOLS:
        errors.append(("job_spec.worker_pool_specs", f"At most {MAX_POOLS} worker pools are supported."))
    for p, pool in enumerate(pools):
        if not _is_empty(pool):
            errors.extend(_validate_pool(p, pool))
    timeout = job.job_spec.scheduling.timeout
    if timeout.seconds < 0 or timeout.nanos < 0:
        errors.append(("job_spec.scheduling.timeout", "The timeout must not be negative."))
    return errors


def _validate_pool(p: int, pool) -> list[tuple[str, str]]:
    path = f"job_spec.worker_pool_specs[{p}]"
    errors = []
    if pool.replica_count < 1:
        errors.append((f"{path}.replica_count", "The replica count must be positive."))
    elif p == 0 and pool.replica_count != 1:
        errors.append((f"{path}.replica_count", "The primary worker pool must have exactly one replica."))
    machine = pool.machine_spec
    if not machine.machine_type:
        errors.append((f"{path}.machine_spec.machine_type", "Required field is not set."))
    if machine.accelerator_count > 0 and machine.accelerator_type == 0:
        errors.append((f"{path}.machine_spec.accelerator_type", "Required when accelerator_count is set."))
    if machine.accelerator_type != 0 and machine.accelerator_count < 1:
        errors.append((f"{path}.machine_spec.accelerator_count", "Must be positive when accelerator_type is set."))
    task = pool.WhichOneof("task")
    if task == "python_package_spec":
        errors.append((f"{path}.python_package_spec", "Not emulated by the stand-in: use container_spec."))
    elif task is None:
        errors.append((f"{path}.container_spec", "Required field is not set."))
    else:
        container = pool.container_spec
        if not container.image_uri:
            errors.append((f"{path}.container_spec.image_uri", "Required field is not set."))
        if len(container.env) > MAX_ENV:
            errors.append((f"{path}.container_spec.env", f"At most {MAX_ENV} environment variables are allowed."))
        for i, var in enumerate(container.env):
            if not _C_IDENTIFIER.match(var.name):
                errors.append((f"{path}.container_spec.env[{i}].name", "Must be a valid C identifier."))
    return errors


# ---- runtime state ---------------------------------------------------------------------------------------

@dataclasses.dataclass
class _Run:
    """One start of a replica: its process and how it ended."""
    proc: subprocess.Popen | None
    started: float
    exit_code: int | None = None
    ended: float | None = None


@dataclasses.dataclass
class _Replica:
    pool: int
    index: int
    address: str
    argv: list[str]
    env: dict[str, str]                 # the full process environment
    service_env: dict[str, str]         # what Vertex adds: TF_CONFIG, CLUSTER_SPEC
    log_path: str
    runs: list[_Run] = dataclasses.field(default_factory=list)
    judged: int = 0                     # runs whose end the job has already acted on

    @property
    def name(self) -> str:
        return f"workerpool{self.pool}-{self.index}"

    @property
    def current(self) -> _Run | None:
        return self.runs[-1] if self.runs else None

    @property
    def alive(self) -> bool:
        run = self.current
        return run is not None and run.proc is not None and run.exit_code is None


@dataclasses.dataclass
class _Job:
    msg: Any                            # the aiplatform_v1 CustomJob protobuf the API serves
    created: float                      # monotonic
    states: list[str] = dataclasses.field(default_factory=list)
    replicas: list[_Replica] = dataclasses.field(default_factory=list)
    pending_since: float | None = None
    running_since: float | None = None
    retries: int = 0
    stop_sent: float | None = None      # SIGTERM to the replicas (monotonic)
    sigkill_sent: bool = False
    pending_error: tuple[float, int, str] | None = None   # (due, code, message)

    @property
    def state(self) -> int:
        return self.msg.state

    @property
    def id(self) -> str:
        return self.msg.name.rsplit("/", 1)[-1]


# ---- the server ------------------------------------------------------------------------------------------

class VertexApiServer(LoopbackApiServer):
    """Vertex AI JobService + training cluster stand-in; see the module docstring.

    ``workdir`` receives the request log and the replica logs. ``project``/``project_number`` name the one project
    that exists. ``python`` replaces a leading ``python``/``python3`` of replica commands; ``env`` is added to every
    replica's environment (the image's ENV); ``cwd`` is the replicas' working directory (None: this process's).
    Knobs for tests: ``queue_s``/``provision_s`` (time in QUEUED, in PENDING), ``termination_grace_s``
    (SIGTERM to SIGKILL), ``error_delay_s`` (a FAILED job's ``error`` appears this much later), ``tick_s``.
    """
    server_name = "vertex-api-stand-in"

    def __init__(self, workdir: str, *, project: str = "bresnet-test", project_number: int = 123456789012,
                 python: str = sys.executable, env: Mapping[str, str] | None = None, cwd: str | None = None,
                 queue_s: float = 0.05, provision_s: float = 0.05, termination_grace_s: float = 5.0,
                 error_delay_s: float = 0.0, tick_s: float = 0.05):
        super().__init__(workdir, tick_s)
        self.project, self.project_number = project, str(project_number)
        self.python, self.env, self.cwd = python, dict(env or {}), cwd
        self.queue_s, self.provision_s = queue_s, provision_s
        self.termination_grace_s, self.error_delay_s = termination_grace_s, error_delay_s
        self._ids = itertools.count(random.randrange(10 ** 18, 9 * 10 ** 18))
        self._jobs: dict[str, _Job] = {}

    # ---- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> "VertexApiServer":
        super().start()
        logger.info("Vertex AI API stand-in at %s (project %s = %s)", self.url, self.project, self.project_number)
        return self

    @property
    def endpoint(self) -> str | None:
        """The ``api_endpoint`` a launcher is given: http://127.0.0.1:<port>."""
        return self.url

    def live_processes(self) -> list[subprocess.Popen]:
        return [r.current.proc for job in self._jobs.values() for r in job.replicas if r.alive]

    # ---- test accessors ------------------------------------------------------------------------------------

    def jobs(self) -> list[dict]:
        """Every CustomJob as the API serves it (enum names), in creation order."""
        with self._lock:
            return [json_format.MessageToDict(job.msg) for job in self._jobs.values()]

    def job(self, name_or_id: str) -> dict:
        with self._lock:
            return json_format.MessageToDict(self._jobs[name_or_id.rsplit("/", 1)[-1]].msg)

    def states(self, name_or_id: str) -> list[str]:
        """The states the job went through, in order."""
        with self._lock:
            return list(self._jobs[name_or_id.rsplit("/", 1)[-1]].states)

    def replicas(self, name_or_id: str) -> list[dict]:
        """The job's replicas: name, pool, index, address, argv, Vertex's env (TF_CONFIG, CLUSTER_SPEC), log path
        and every run's pid and exit code."""
        with self._lock:
            job = self._jobs[name_or_id.rsplit("/", 1)[-1]]
            return [{"name": r.name, "pool": r.pool, "index": r.index, "address": r.address, "argv": list(r.argv),
                     "env": dict(r.service_env), "log_path": r.log_path,
                     "runs": [{"pid": run.proc.pid if run.proc else None, "exit_code": run.exit_code}
                              for run in r.runs]} for r in job.replicas]

    def replica_pids(self) -> dict[str, int]:
        """``<job id>/<replica name>`` -> pid, for every replica process still running."""
        with self._lock:
            return {f"{job.id}/{r.name}": r.current.proc.pid for job in self._jobs.values() for r in job.replicas
                    if r.alive}

    # ---- HTTP dispatch ------------------------------------------------------------------------------------

    def handle(self, method: str, raw_path: str, body: bytes) -> tuple[int, str, bytes]:
        """Recorded (``requests()``): method, path, query, body (parsed, as JSON with camelCase names) and code."""
        parsed = urllib.parse.urlsplit(raw_path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(parsed.query, keep_blank_values=True).items()}
        ints = "enum-encoding=int" in query.get("$alt", "")
        record = {"method": method, "path": parsed.path, "query": parsed.query, "body": None, "code": None}
        try:
            code, payload = 200, self._route(method, urllib.parse.unquote(parsed.path), body, record, ints)
        except ApiError as exc:
            code, payload = exc.code, json.dumps(exc.body).encode()
        except Exception as exc:  # a bug here must not hang the client
            logger.exception("stand-in failed on %s %s", method, raw_path)
            error = ApiError("INTERNAL", f"stand-in error: {exc!r}")
            code, payload = error.code, json.dumps(error.body).encode()
        record["code"] = code
        self.record(record)
        return code, "application/json; charset=UTF-8", payload

    def _route(self, method: str, path: str, body: bytes, record: dict, ints: bool) -> bytes:
        m = _COLLECTION.match(path)
        if m and method == "POST":
            return self._create(m.group(1), m.group(2), body, record, ints)
        m = _RESOURCE.match(path)
        if m and method == "GET" and not m.group(4):
            return self._get(m.group(1), m.group(2), m.group(3), ints)
        if m and method == "POST" and m.group(4):
            return self._cancel(m.group(1), m.group(2), m.group(3), body, record)
        raise ApiError("NOT_FOUND", f"Method not found: {method} {path}")

    def _check_project(self, project: str, location: str, permission: str) -> None:
        if project not in (self.project, self.project_number):
            raise ApiError("PERMISSION_DENIED", f"Permission 'aiplatform.customJobs.{permission}' denied on resource "
                                                f"'//aiplatform.googleapis.com/projects/{project}/locations/{location}'"
                                                " (or it may not exist).")

    @staticmethod
    def _json(msg, ints: bool) -> bytes:
        return json_format.MessageToJson(msg, use_integers_for_enums=ints).encode()

    # ---- the methods --------------------------------------------------------------------------------------

    def _create(self, project: str, location: str, body: bytes, record: dict, ints: bool) -> bytes:
        self._check_project(project, location, "create")
        msg = _parse(body, aiplatform_v1.CustomJob)
        record["body"] = json_format.MessageToDict(msg)
        errors = validate_custom_job(msg)
        if errors:
            raise _field_errors(errors)
        for output_only in ("name", "state", "create_time", "start_time", "end_time", "update_time", "error",
                            "web_access_uris", "satisfies_pzs", "satisfies_pzi"):
            msg.ClearField(output_only)
        with self._lock:
            msg.name = f"projects/{self.project_number}/locations/{location}/customJobs/{next(self._ids)}"
            msg.create_time.GetCurrentTime()
            job = _Job(msg=msg, created=time.monotonic())
            self._set_state(job, S.JOB_STATE_QUEUED)
            self._jobs[job.id] = job
            logger.info("CustomJob %s (%s) created", msg.name, msg.display_name)
            return self._json(msg, ints)

    def _find(self, project: str, location: str, job_id: str, permission: str) -> _Job:
        self._check_project(project, location, permission)
        job = self._jobs.get(job_id)
        name = f"projects/{project}/locations/{location}/customJobs/{job_id}"
        if job is None or job.msg.name.split("/")[3] != location:
            raise ApiError("NOT_FOUND", f"The CustomJob {name} does not exist.")
        return job

    def _get(self, project: str, location: str, job_id: str, ints: bool) -> bytes:
        with self._lock:
            return self._json(self._find(project, location, job_id, "get").msg, ints)

    def _cancel(self, project: str, location: str, job_id: str, body: bytes, record: dict) -> bytes:
        request = _parse(body, aiplatform_v1.CancelCustomJobRequest)
        record["body"] = json_format.MessageToDict(request)
        with self._lock:
            job = self._find(project, location, job_id, "cancel")
            if job.state == S.JOB_STATE_CANCELLING:
                return b"{}"
            if job.state in TERMINAL:
                raise ApiError("FAILED_PRECONDITION", f"Cannot cancel CustomJob {job.msg.name}: it is in state "
                                                      f"{S(job.state).name}.")
            self._set_state(job, S.JOB_STATE_CANCELLING)
            logger.info("CustomJob %s: cancel requested", job.msg.name)
        return b"{}"

    # ---- the training service -------------------------------------------------------------------------------

    def tick(self) -> None:
        now = time.monotonic()
        for job in list(self._jobs.values()):
            try:
                self._reconcile(job, now)
            except Exception:  # keep serving the other jobs
                logger.exception("stand-in failed reconciling CustomJob %s", job.msg.name)

    def _set_state(self, job: _Job, state: int) -> None:
        job.msg.state = state
        job.msg.update_time.GetCurrentTime()
        if state == S.JOB_STATE_RUNNING and not job.msg.HasField("start_time"):
            job.msg.start_time.GetCurrentTime()
        if state in (S.JOB_STATE_SUCCEEDED, S.JOB_STATE_FAILED, S.JOB_STATE_CANCELLED):
            job.msg.end_time.GetCurrentTime()
        job.states.append(S(state).name)
        if len(job.states) > 1:
            logger.info("CustomJob %s: %s", job.msg.name, job.states[-1])

    def _set_error(self, job: _Job, code: int, message: str, delay_s: float = 0.0) -> None:
        job.pending_error = (time.monotonic() + delay_s, code, message)
        self._publish_error(job, time.monotonic())

    @staticmethod
    def _publish_error(job: _Job, now: float) -> None:
        if job.pending_error is not None and now >= job.pending_error[0]:
            _, code, message = job.pending_error
            job.msg.error.code, job.msg.error.message = code, message
            job.msg.update_time.GetCurrentTime()
            job.pending_error = None

    def _reconcile(self, job: _Job, now: float) -> None:
        self._reap(job, now)
        self._publish_error(job, now)
        state = job.state
        if state == S.JOB_STATE_QUEUED and now - job.created >= self.queue_s:
            self._set_state(job, S.JOB_STATE_PENDING)
            job.pending_since = now
        elif state == S.JOB_STATE_PENDING and now - job.pending_since >= self.provision_s:
            # Every replica's machine is up at the same moment here: all start, and the job is RUNNING.
            self._start_replicas(job, now)
            job.running_since = now
            self._set_state(job, S.JOB_STATE_RUNNING)
        elif state == S.JOB_STATE_RUNNING:
            if not self._judge_exits(job, now):
                self._check_timeout(job, now)
        elif state == S.JOB_STATE_CANCELLING:
            self._stop_replicas(job, now)
            if not any(r.alive for r in job.replicas):
                self._set_state(job, S.JOB_STATE_CANCELLED)
                self._set_error(job, CANCELLED, "CANCELED")
        elif state in TERMINAL:
            self._stop_replicas(job, now)   # the rest of a finished job is shut down

    def _judge_exits(self, job: _Job, now: float) -> bool:
        """Acts on replica exits not yet acted on, earliest first; True when the job left PENDING/RUNNING."""
        ended = sorted(((r.current.ended, r) for r in job.replicas
                        if r.current is not None and r.current.exit_code is not None and r.judged < len(r.runs)),
                       key=lambda e: e[0])
        for _, replica in ended:
            replica.judged = len(replica.runs)
            code = replica.current.exit_code
            if code == 0:
                if replica.pool == 0:
                    logger.info("CustomJob %s: the primary replica finished", job.msg.name)
                    self._set_state(job, S.JOB_STATE_SUCCEEDED)
                    self._stop_replicas(job, now)
                    return True
                continue
            if code in TRANSIENT_EXIT_CODES and job.retries < MAX_JOB_RETRIES:
                job.retries += 1
                logger.warning("CustomJob %s: replica %s exited with %d (transient): restarting the job (retry %d "
                               "of %d)", job.msg.name, replica.name, code, job.retries, MAX_JOB_RETRIES)
                self._restart_replicas(job, now)
                return False
            message = (f"The replica {replica.name} exited with a non-zero status of {code}. "
                       f"Termination reason: Error.")
            logger.info("CustomJob %s: %s", job.msg.name, message)
            self._set_state(job, S.JOB_STATE_FAILED)
            self._set_error(job, INVALID_ARGUMENT, message, self.error_delay_s)
            self._stop_replicas(job, now)
            return True
        return False

    def _check_timeout(self, job: _Job, now: float) -> None:
        timeout = job.msg.job_spec.scheduling.timeout
        limit = timeout.seconds + timeout.nanos / 1e9
        if limit > 0 and job.running_since is not None and now - job.running_since >= limit:
            self._set_state(job, S.JOB_STATE_FAILED)
            self._set_error(job, DEADLINE_EXCEEDED, f"The job ran longer than its timeout of {limit:g}s.",
                            self.error_delay_s)
            self._stop_replicas(job, now)

    # ---- replicas -----------------------------------------------------------------------------------------

    def _start_replicas(self, job: _Job, now: float) -> None:
        pools = job.msg.job_spec.worker_pool_specs
        addresses = {p: [f"127.0.0.1:{free_port()}" for _ in range(pool.replica_count)]
                     for p, pool in enumerate(pools) if not _is_empty(pool)}
        spec_json = json_format.MessageToJson(job.msg.job_spec, preserving_proto_field_name=True, indent=None)
        cluster_spec = {f"workerpool{p}": a for p, a in addresses.items()}
        tf_cluster = {TF_TASK_TYPES[p]: a for p, a in addresses.items() if p in TF_CLUSTER_POOLS}
        log_dir = os.path.join(self.workdir, job.id)
        os.makedirs(log_dir, exist_ok=True)
        for p, pool_addresses in addresses.items():
            container = pools[p].container_spec
            for i, address in enumerate(pool_addresses):
                service = {
                    "TF_CONFIG": json.dumps({"cluster": tf_cluster, "task": {"type": TF_TASK_TYPES[p], "index": i},
                                             "environment": "cloud", "job": spec_json}),
                    "CLUSTER_SPEC": json.dumps({"cluster": cluster_spec,
                                                "task": {"type": f"workerpool{p}", "index": i},
                                                "environment": "cloud", "job": spec_json})}
                env = {k: v for k, v in os.environ.items() if k not in service}
                env.update(self.env)
                env.update(service)
                defined = dict(service)
                for var in container.env:
                    defined[var.name] = expand(var.value, defined)
                env.update({var.name: defined[var.name] for var in container.env})
                argv = [*container.command, *container.args]
                if argv and _PYTHON.match(os.path.basename(argv[0])):
                    argv[0] = self.python
                replica = _Replica(pool=p, index=i, address=address, argv=argv, env=env, service_env=service,
                                   log_path=os.path.join(log_dir, f"workerpool{p}-{i}.log"))
                job.replicas.append(replica)
                self._run(job, replica, now)

    def _run(self, job: _Job, replica: _Replica, now: float) -> None:
        """Starts the replica's container process (again); a command that cannot start exits 127."""
        with open(replica.log_path, "ab") as log:
            log.write(f"===== {job.msg.name} {replica.name} run {len(replica.runs) + 1} =====\n".encode())
            log.flush()
            try:
                if not replica.argv:
                    raise FileNotFoundError("no command and no args (the image's ENTRYPOINT is not emulated)")
                proc = subprocess.Popen(replica.argv, env=replica.env, cwd=self.cwd, stdout=log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            except OSError as exc:
                log.write(f"failed to start {replica.argv[:1]}: {exc}\n".encode())
                replica.runs.append(_Run(proc=None, started=now, exit_code=127, ended=now))
                return
        replica.runs.append(_Run(proc=proc, started=now))

    def _restart_replicas(self, job: _Job, now: float) -> None:
        """The whole job again: every replica killed, then started anew at the same address."""
        for replica in job.replicas:
            if replica.alive:
                killpg(replica.current.proc.pid, signal.SIGKILL)
        for replica in job.replicas:
            if replica.alive:
                replica.current.proc.wait()
                replica.current.exit_code, replica.current.ended = 137, now
            replica.judged = len(replica.runs)          # the old runs' ends need no verdict
        for replica in job.replicas:
            self._run(job, replica, now)

    def _stop_replicas(self, job: _Job, now: float) -> None:
        """SIGTERM to every running replica's process group, SIGKILL after ``termination_grace_s``."""
        alive = [r for r in job.replicas if r.alive]
        if not alive:
            return
        if job.stop_sent is None:
            job.stop_sent = now
            for r in alive:
                killpg(r.current.proc.pid, signal.SIGTERM)
        elif not job.sigkill_sent and now - job.stop_sent >= self.termination_grace_s:
            job.sigkill_sent = True
            for r in alive:
                killpg(r.current.proc.pid, signal.SIGKILL)

    @staticmethod
    def _reap(job: _Job, now: float) -> None:
        """Records replica exits; the rest of an exited replica's process group goes with it (a container)."""
        for replica in job.replicas:
            run = replica.current
            if run is None or run.proc is None or run.exit_code is not None or not exited(run.proc):
                continue
            killpg(run.proc.pid, signal.SIGKILL)   # its group id is still reserved: the leader is not reaped
            code = run.proc.wait()
            run.exit_code, run.ended = (128 - code if code < 0 else code), now


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve the Vertex AI API stand-in until SIGTERM or Ctrl-C.")
    parser.add_argument("--workdir", required=True, help="request log and replica logs go here")
    parser.add_argument("--project", default="bresnet-test")
    parser.add_argument("--python", default=sys.executable, help="interpreter standing in for the image's python")
    args = parser.parse_args(argv)
    return serve_until_signalled(VertexApiServer(args.workdir, project=args.project, python=args.python), "{url}")


if __name__ == "__main__":
    sys.exit(main())
