"""Launcher backend for Google Cloud Vertex AI: one ``CustomJob`` per attempt, through ``google-cloud-aiplatform``.

The CustomJob has worker pool 0 with the chief (replica count 1, as Vertex requires of the primary pool) and, for
more than one worker, worker pool 1 with the other ``workers - 1``; both run the same container
(``image``, command ``python -m components.trainer.worker --job <uri>``, env ``TF_USE_LEGACY_KERAS=1``,
``TRAINER_ATTEMPT``, ``PYTHONUNBUFFERED=1``) on ``machine_type`` with ``accelerator_count`` x ``accelerator_type``.
Vertex sets TF_CONFIG on every replica (``chief`` for pool 0, ``worker`` for pool 1), which is what the worker reads
(components/trainer/cluster.py). The job description, the BackupAndRestore scratch and the progress records live
under the Trainer's ``model_run`` URI (gs:// in production), the one place every replica can read and write.

What is relied on, and from where:

- the JobService v1 REST API (https://cloud.google.com/vertex-ai/docs/reference/rest/v1/projects.locations.customJobs):
  ``create`` returns the job with its server-chosen ``name`` (``projects/<project NUMBER>/locations/<region>/
  customJobs/<id>``: never rebuilt here from the project id), ``get`` reports ``state``/``error``, ``cancel`` is
  asynchronous (the job goes CANCELLING, then CANCELLED with ``error.code`` 1).
- https://cloud.google.com/vertex-ai/docs/training/understanding-training-service: the job succeeds when the
  primary replica exits 0 (the other replicas are then shut down); a replica exiting non-zero fails the whole job
  (``error.message`` "The replica workerpool1-0 exited with a non-zero status of 17. Termination reason: ...");
  Vertex itself restarts the whole job (up to three times) only for the exit codes it calls transient
  (SIGABRT/SIGSEGV) and for its internal errors. A worker it restarts in place (VM maintenance) comes back with the
  same hostname, which MultiWorkerMirroredStrategy peers do not survive: their exits then fail the job. The error
  is set "about one minute after a job ends", so a FAILED job without a message is polled a little longer
  (``ERROR_WAIT_S``).
- Restarts beyond that are this launcher's: a FAILED (or EXPIRED) job raises ``AttemptFailed`` (worker index and
  exit code read from the message: replica ``workerpool0-0`` is worker 0, ``workerpool1-<i>`` worker i + 1) and
  ``launch`` creates a new CustomJob (``TRAINER_ATTEMPT`` + 1) up to ``max_restarts`` times; Keras
  BackupAndRestore in the shared scratch resumes it from the last finished epoch. Not restarted: a job past its
  time (``VertexJobTimeoutError``) and one cancelled by someone else (``VertexJobError``).
- ``scheduling.timeout`` is ``timeout_s``; this launcher also gives up ``TIMEOUT_GRACE_S`` later by its own clock.

The client is ``aiplatform_v1.JobServiceClient`` over the generated REST transport (one code path, the same API
as gRPC). ``api_endpoint`` defaults to the regional endpoint ``<region>-aiplatform.googleapis.com``; an
``http://host:port`` endpoint (a local stand-in, tests/standins/vertex_api.py) is reached with the transport's
``url_scheme="http"`` and anonymous credentials, so no token ever travels in clear text. Otherwise the credentials
are Application Default Credentials (the KFP step's service account on GKE, ``gcloud auth application-default
login`` elsewhere).

Stopping: SIGTERM (a cancelled pipeline run, an evicted step pod) and Ctrl-C while a CustomJob runs cancel it and
wait up to ``cancel_wait_s`` for CANCELLED before the process ends; so do this launcher's own errors (timeout,
API failures). The create call itself runs with SIGTERM/SIGINT held back (``termination_signals_blocked``; this
launcher starts no thread that could take them instead), so a signal cannot leave behind a job whose name was never
received. Finished jobs are kept (Vertex keeps them as
history, with their logs in Cloud Logging); ``LaunchResult.worker_logs`` is one local JSON record per job with its
final state, console link and the Cloud Logging filter of its replicas' logs.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import secrets
import tempfile
import time
from typing import Any, Mapping, Sequence

from components.trainer.config import TrainingJob
from components.trainer.precision import ReplicaDevices
from components.trainer.launcher import (WORKER_MODULE, AttemptFailed, Launcher, LaunchTimeoutError, WorkerFailure,
                                         termination_guard, termination_signals_blocked, write_text)

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 6 * 3600.0
DEFAULT_MACHINE_TYPE = "n1-standard-8"
# Compute capability of Vertex's GPU accelerator types (aiplatform_v1.AcceleratorType; NVIDIA's table at
# developer.nvidia.com/cuda-gpus), for precision "auto" (components/trainer/precision.py). A type not listed (a newer
# one) counts as unknown, which "auto" treats as having tensor cores.
GPU_COMPUTE_CAPABILITY = {
    "NVIDIA_TESLA_K80": (3, 7), "NVIDIA_TESLA_P4": (6, 1), "NVIDIA_TESLA_P100": (6, 0), "NVIDIA_TESLA_V100": (7, 0),
    "NVIDIA_TESLA_T4": (7, 5), "NVIDIA_TESLA_A100": (8, 0), "NVIDIA_A100_80GB": (8, 0), "NVIDIA_L4": (8, 9),
    "NVIDIA_H100_80GB": (9, 0), "NVIDIA_H100_MEGA_80GB": (9, 0), "NVIDIA_H200_141GB": (9, 0), "NVIDIA_B200": (10, 0),
    "NVIDIA_GB200": (10, 0), "NVIDIA_RTX_PRO_6000": (12, 0),
}
JOB_PLACEHOLDER = "{job}"
TIMEOUT_GRACE_S = 120.0          # Vertex's own scheduling.timeout should end the job first
ERROR_WAIT_S = 90.0              # "About one minute after a job ends, Vertex AI sets the error code"
API_TIMEOUT_S = 60.0             # per HTTP request
VERTEX_SET_ENV = ("TF_CONFIG", "CLUSTER_SPEC")   # Vertex writes these into every replica
TERMINAL_STATES = ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED")
CANCELLED_CODE = 1               # google.rpc.Code.CANCELLED, what a cancelled CustomJob's error carries
DEADLINE_EXCEEDED_CODE = 4
_PROJECT = re.compile(r"^([a-z0-9.-]+:)?[a-z][-a-z0-9]{4,28}[a-z0-9]$|^\d+$")   # id (domain-scoped too) or number
_REGION = re.compile(r"^[a-z]+(-[a-z]+)+\d+$")
_MACHINE_TYPE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)+$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_REPLICA_FAILURE = re.compile(r"replica workerpool(\d+)-(\d+)\b.*?non-zero status of (-?\d+)", re.S)


class VertexJobTimeoutError(LaunchTimeoutError):
    """The CustomJob ran past ``timeout_s`` (its scheduling.timeout, or this launcher's own clock)."""


class VertexJobError(RuntimeError):
    """The CustomJob was cancelled by someone else, or the API kept failing while it was watched."""


# ---- pure helpers ------------------------------------------------------------------------------------

def display_name(prefix: str, run_key: str, attempt: int, token: str | None = None) -> str:
    """``<prefix>-<6 hex of the run>-<6 random hex>-a<attempt>``: findable in the console, unique per attempt."""
    run = hashlib.sha256(run_key.encode()).hexdigest()[:6]
    return f"{prefix}-{run}-{token or secrets.token_hex(3)}-a{attempt}"


def split_endpoint(endpoint: str) -> tuple[str, str]:
    """(url scheme, host[:port]) of an API endpoint given with or without ``http://``/``https://``."""
    match = re.fullmatch(r"(?:(https?)://)?([^/\s]+)/?", endpoint)
    if match is None:
        raise ValueError(f"api_endpoint must be host[:port], optionally with http:// or https://, got {endpoint!r}")
    return match.group(1) or "https", match.group(2)


def failed_replica(message: str) -> tuple[int, int]:
    """(worker index, exit code) named by a Vertex failure message; (-1, -1) when it names none.

    Pool 0 is the chief (worker 0), replica i of pool 1 is worker i + 1."""
    match = _REPLICA_FAILURE.search(message or "")
    if match is None:
        return -1, -1
    pool, index, code = (int(g) for g in match.groups())
    return (0 if pool == 0 else index + 1), code


def job_id(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def _require_number(name: str, value: Any, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or math.isinf(value):
        raise ValueError(f"{name} must be a positive number{' or None' if allow_none else ''}, got {value!r}")


def _require_match(name: str, value: Any, pattern: re.Pattern, what: str) -> None:
    if not isinstance(value, str) or not pattern.match(value):
        raise ValueError(f"{name} must be {what}, got {value!r}")


def _accelerator_types() -> tuple[str, ...]:
    from google.cloud.aiplatform_v1 import AcceleratorType

    return tuple(n for n in AcceleratorType.__members__ if n != "ACCELERATOR_TYPE_UNSPECIFIED")


@dataclasses.dataclass
class _Watch:
    """What one attempt has seen of its CustomJob."""
    name: str | None = None
    state: str | None = None
    started: float = dataclasses.field(default_factory=time.monotonic)

    @property
    def running(self) -> bool:
        return self.name is not None and self.state not in TERMINAL_STATES


# ---- the launcher ------------------------------------------------------------------------------------

class VertexCustomJobLauncher(Launcher):
    name = "vertex"

    def __init__(self, *, project: str, region: str, image: str, machine_type: str = DEFAULT_MACHINE_TYPE,
                 accelerator_type: str = "", accelerator_count: int = 0, service_account: str = "",
                 timeout_s: float | None = DEFAULT_TIMEOUT_S, poll_s: float = 10.0, cancel_wait_s: float = 25.0,
                 api_endpoint: str | None = None, display_name_prefix: str = "bresnet",
                 command: Sequence[str] | None = None, env: Mapping[str, str] | None = None):
        _require_match("project", project, _PROJECT, "a Google Cloud project id (or number)")
        _require_match("region", region, _REGION, "a Vertex AI region such as 'us-central1'")
        if not isinstance(image, str) or not image or any(c.isspace() for c in image):
            raise ValueError(f"image must be a non-empty container image URI, got {image!r}")
        _require_match("machine_type", machine_type, _MACHINE_TYPE, "a Compute Engine machine type such as "
                       f"{DEFAULT_MACHINE_TYPE!r}")
        self._check_accelerator(accelerator_type, accelerator_count)
        if not isinstance(service_account, str) or (service_account and "@" not in service_account):
            raise ValueError(f"service_account must be a service account email, or '' for Vertex's default "
                             f"(the project's Custom Code Service Agent), got {service_account!r}")
        _require_number("timeout_s", timeout_s, allow_none=True)
        _require_number("poll_s", poll_s)
        _require_number("cancel_wait_s", cancel_wait_s)
        if api_endpoint is not None and not isinstance(api_endpoint, str):
            raise ValueError(f"api_endpoint must be a string or None (<region>-aiplatform.googleapis.com), "
                             f"got {api_endpoint!r}")
        endpoint = api_endpoint or f"{region}-aiplatform.googleapis.com"
        self.url_scheme, self.api_host = split_endpoint(endpoint)
        if (not isinstance(display_name_prefix, str) or not 1 <= len(display_name_prefix) <= 100
                or not display_name_prefix.isprintable()):
            raise ValueError(f"display_name_prefix must be 1-100 printable characters, got {display_name_prefix!r}")
        if command is not None and (isinstance(command, str) or not command
                                    or not all(isinstance(a, str) for a in command)):
            raise ValueError(f"command must be a non-empty list of strings or None, got {command!r}")
        self._check_env(env)
        self.project, self.region, self.image, self.machine_type = project, region, image, machine_type
        self.accelerator_type, self.accelerator_count = accelerator_type, accelerator_count
        self.service_account = service_account
        self.timeout_s, self.poll_s, self.cancel_wait_s = timeout_s, poll_s, cancel_wait_s
        self.display_name_prefix = display_name_prefix
        self.command = list(command) if command is not None else None
        self.env = dict(env or {})
        self._client_: Any = None

    @staticmethod
    def _check_accelerator(accelerator_type: Any, accelerator_count: Any) -> None:
        if isinstance(accelerator_count, bool) or not isinstance(accelerator_count, int) or accelerator_count < 0:
            raise ValueError(f"accelerator_count must be an integer >= 0, got {accelerator_count!r}")
        if not isinstance(accelerator_type, str):
            raise ValueError(f"accelerator_type must be a string ('' for none), got {accelerator_type!r}")
        if accelerator_type and accelerator_type not in _accelerator_types():
            raise ValueError(f"accelerator_type must be '' or one of aiplatform_v1.AcceleratorType's names "
                             f"{list(_accelerator_types())}, got {accelerator_type!r}")
        if accelerator_type.startswith("TPU"):
            raise ValueError(f"accelerator_type {accelerator_type!r} is a TPU: the trainer runs "
                             "MultiWorkerMirroredStrategy on CPUs or GPUs, not TPUStrategy; use an NVIDIA GPU type")
        if bool(accelerator_type) != (accelerator_count > 0):
            raise ValueError(f"accelerator_type and accelerator_count go together (a type with a count >= 1, or '' "
                             f"with 0), got {accelerator_type!r} x {accelerator_count}")

    @staticmethod
    def _check_env(env: Any) -> None:
        if env is None:
            return
        if not isinstance(env, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            raise ValueError(f"env must map str to str, got {env!r}")
        bad = [k for k in env if not _ENV_NAME.match(k) or k in VERTEX_SET_ENV]
        if bad:
            raise ValueError(f"env names must be shell identifiers, and not {list(VERTEX_SET_ENV)} (Vertex sets "
                             f"those on every replica), got {bad}")

    # ---- the CustomJob -----------------------------------------------------------------------------------

    def replica_devices(self) -> ReplicaDevices:
        """``accelerator_count`` GPUs of ``accelerator_type`` per replica, with its compute capability."""
        return ReplicaDevices(gpus=self.accelerator_count,
                              compute_capability=GPU_COMPUTE_CAPABILITY.get(self.accelerator_type))

    def build_custom_job(self, name: str, job_uri: str, workers: int, attempt: int):
        """The CustomJob as ``aiplatform_v1`` types: pool 0 the chief, pool 1 the other workers."""
        from google.cloud import aiplatform_v1 as v1

        from components.trainer.worker import ATTEMPT_ENV

        command = ([a.replace(JOB_PLACEHOLDER, job_uri) for a in self.command] if self.command is not None
                   else ["python", "-m", WORKER_MODULE, "--job", job_uri])
        env = {"TF_USE_LEGACY_KERAS": "1", ATTEMPT_ENV: str(attempt), "PYTHONUNBUFFERED": "1", **self.env}
        machine = v1.MachineSpec(machine_type=self.machine_type)
        if self.accelerator_count:
            machine.accelerator_type = v1.AcceleratorType[self.accelerator_type]
            machine.accelerator_count = self.accelerator_count
        container = v1.ContainerSpec(image_uri=self.image, command=command,
                                     env=[v1.EnvVar(name=k, value=v) for k, v in env.items()])

        def pool(replicas: int):
            return v1.WorkerPoolSpec(machine_spec=machine, replica_count=replicas, container_spec=container)

        spec = v1.CustomJobSpec(worker_pool_specs=[pool(1)] + ([pool(workers - 1)] if workers > 1 else []),
                                service_account=self.service_account)
        if self.timeout_s is not None:
            spec.scheduling = v1.Scheduling(timeout={"seconds": int(math.ceil(self.timeout_s))})
        return v1.CustomJob(display_name=name, job_spec=spec,
                            labels={"app": "bresnet-tfx", "attempt": str(attempt)})

    def describe(self, workers: int) -> str:
        """Where the replicas run, for the log."""
        accel = f" + {self.accelerator_count} x {self.accelerator_type}" if self.accelerator_count else ""
        pools = f"pool 0: 1 chief on {self.machine_type}{accel}"
        if workers > 1:
            pools += f"; pool 1: {workers - 1} worker(s) on {self.machine_type}{accel}"
        return (f"{pools}; image {self.image}; service account "
                f"{self.service_account or 'the project default (Custom Code Service Agent)'}")

    # ---- the API -----------------------------------------------------------------------------------------

    def _client(self):
        """A JobServiceClient over REST: ADC credentials on https, anonymous ones on a plain-http stand-in."""
        if self._client_ is None:
            from google.auth.credentials import AnonymousCredentials
            from google.cloud import aiplatform_v1
            from google.cloud.aiplatform_v1.services.job_service.transports.rest import JobServiceRestTransport

            credentials = AnonymousCredentials() if self.url_scheme == "http" else None
            transport = JobServiceRestTransport(host=self.api_host, credentials=credentials,
                                                url_scheme=self.url_scheme)
            self._client_ = aiplatform_v1.JobServiceClient(transport=transport)
            logger.info("Vertex AI JobService at %s://%s (project %s, region %s)", self.url_scheme, self.api_host,
                        self.project, self.region)
        return self._client_

    def _call(self, fn, **kwargs):
        """A get/cancel call, retried a few times on transient failures (connection errors, 429, 5xx)."""
        import requests
        from google.api_core import exceptions as gexc

        transient = (gexc.TooManyRequests, gexc.ServerError, gexc.DeadlineExceeded,
                     requests.exceptions.ConnectionError, requests.exceptions.Timeout)
        for attempt in range(6):
            try:
                return fn(**kwargs, timeout=API_TIMEOUT_S)
            except transient as exc:
                if attempt == 5:
                    raise
                delay = min(0.5 * 2 ** attempt, 10.0)
                logger.warning("Vertex AI call %s failed (%r); retrying in %.1fs", fn.__name__, exc, delay)
                time.sleep(delay)

    def console_url(self, name: str) -> str:
        """The job's page in the Cloud console, composed as aiplatform's own ``_Job._dashboard_uri`` does."""
        return (f"https://console.cloud.google.com/agent-platform/locations/{self.region}/training/{job_id(name)}"
                f"?project={self.project}")

    @staticmethod
    def logs_filter(name: str) -> str:
        return f'resource.type="ml_job" resource.labels.job_id="{job_id(name)}"'

    # ---- the cluster -------------------------------------------------------------------------------------

    def launch(self, job: TrainingJob):
        # Replicas cannot see this machine's disk: job description, backups and progress go under the run URI.
        return super().launch(dataclasses.replace(job, scratch_dir=job.run_dir.rstrip("/") + "/scratch"))

    def _run_cluster(self, job: TrainingJob, attempt: int) -> list[str]:
        client = self._client()
        job_uri = job.scratch_dir + "/job.json"
        write_text(job_uri, job.to_json())
        workers = job.config.workers
        body = self.build_custom_job(display_name(self.display_name_prefix, job.run_dir, attempt), job_uri,
                                     workers, attempt)
        parent = f"projects/{self.project}/locations/{self.region}"
        watch = _Watch()
        with termination_guard():  # SIGTERM from here on: the finally below cancels the CustomJob first
            try:
                with termination_signals_blocked():  # the name must come back before a signal may stop us
                    created = client.create_custom_job(parent=parent, custom_job=body, timeout=API_TIMEOUT_S)
                watch.name, watch.state = created.name, created.state.name
                logger.info("attempt %d: created CustomJob %s (%s, %s): %s; console %s", attempt, created.name,
                            created.display_name, watch.state, self.describe(workers),
                            self.console_url(created.name))
                final = self._wait(client, watch)
                self._raise_unless_succeeded(client, final, attempt)
                return [self._save_record(final)]
            finally:
                if watch.running:
                    with termination_signals_blocked():
                        self._cancel(client, watch)

    def _wait(self, client, watch: _Watch):
        """Polls the CustomJob until it reaches a terminal state; logs every state change."""
        deadline = None if self.timeout_s is None else watch.started + self.timeout_s + TIMEOUT_GRACE_S
        while True:
            current = self._call(client.get_custom_job, name=watch.name)
            state = current.state.name
            if state != watch.state:
                logger.info("CustomJob %s: %s", watch.name, state)
                watch.state = state
            if state in TERMINAL_STATES:
                return current
            if deadline is not None and time.monotonic() > deadline:
                raise VertexJobTimeoutError(f"CustomJob {watch.name} not finished {self.timeout_s:g}s (timeout_s) + "
                                            f"{TIMEOUT_GRACE_S:g}s after it was created (state {state})")
            time.sleep(self.poll_s)

    def _raise_unless_succeeded(self, client, final, attempt: int) -> None:
        state, name = final.state.name, final.name
        if state == "JOB_STATE_SUCCEEDED":
            logger.info("CustomJob %s succeeded; replica logs: Cloud Logging %s", name, self.logs_filter(name))
            return
        if state == "JOB_STATE_FAILED" and not final.error.message:
            final = self._await_error(client, final)
        message = final.error.message or "(no error message)"
        if state == "JOB_STATE_CANCELLED":
            raise VertexJobError(f"CustomJob {name} was cancelled by someone else: {message}")
        if final.error.code == DEADLINE_EXCEEDED_CODE:
            raise VertexJobTimeoutError(f"CustomJob {name} ran past its scheduling.timeout (timeout_s "
                                        f"{self.timeout_s}): {message}")
        worker, code = failed_replica(message)
        raise AttemptFailed(WorkerFailure(
            attempt=attempt, worker_index=worker, exit_code=code,
            log_path=f"Cloud Logging {self.logs_filter(name)} ({self.console_url(name)})",
            log_tail=f"CustomJob {name} {state}: {message}"))

    def _await_error(self, client, final):
        """A FAILED job's error may come up to a minute after its state (understanding-training-service)."""
        deadline = time.monotonic() + ERROR_WAIT_S
        logger.info("CustomJob %s failed; waiting up to %.0fs for its error message", final.name, ERROR_WAIT_S)
        while not final.error.message and time.monotonic() < deadline:
            time.sleep(min(self.poll_s, 5.0))
            final = self._call(client.get_custom_job, name=final.name)
        return final

    def _cancel(self, client, watch: _Watch) -> None:
        """Requests cancellation and waits (at most ``cancel_wait_s``) for a terminal state; never raises."""
        from google.api_core import exceptions as gexc

        name = watch.name
        by_hand = (f"cancel it by hand: gcloud ai custom-jobs cancel {job_id(name)} --region {self.region} "
                   f"--project {self.project}")
        try:
            self._call(client.cancel_custom_job, name=name)
            logger.info("cancel requested for CustomJob %s", name)
        except gexc.GoogleAPICallError as exc:   # e.g. FAILED_PRECONDITION: it ended in the meantime
            logger.warning("cancel of CustomJob %s refused (%s); checking its state", name, exc.message)
        except Exception as exc:  # never mask the error that got us here
            logger.error("could not cancel CustomJob %s (%r); %s", name, exc, by_hand)
            return
        deadline = time.monotonic() + self.cancel_wait_s
        while True:
            try:
                state = self._call(client.get_custom_job, name=name).state.name
            except Exception as exc:
                logger.error("could not check CustomJob %s after cancelling (%r); %s", name, exc, by_hand)
                return
            watch.state = state
            if state in TERMINAL_STATES:
                logger.info("%s CustomJob %s (%s)", "cancelled" if state == "JOB_STATE_CANCELLED" else "stopped",
                            name, state)
                return
            if time.monotonic() > deadline:
                logger.warning("CustomJob %s still %s %.0fs after the cancel request; Vertex finishes cancelling "
                               "it on its own (or %s)", name, state, self.cancel_wait_s, by_hand)
                return
            time.sleep(min(self.poll_s, 1.0))

    def _save_record(self, final) -> str:
        """The finished CustomJob as a local JSON file, kept with the run like local workers' logs."""
        from google.cloud import aiplatform_v1
        from google.protobuf import json_format

        directory = tempfile.mkdtemp(prefix=f"vertex-{job_id(final.name)}-")
        path = os.path.join(directory, re.sub(r"[^\w.-]", "_", final.display_name) + ".customjob.json")
        record = {"name": final.name, "state": final.state.name, "console": self.console_url(final.name),
                  "logs": f"Cloud Logging: {self.logs_filter(final.name)}",
                  "custom_job": json_format.MessageToDict(aiplatform_v1.CustomJob.pb(final))}
        with open(path, "w") as f:
            json.dump(record, f, indent=1)
        return path
