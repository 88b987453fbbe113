"""How training workers start: the launcher interface, its local-process backend, and a registry.

A launcher knows only how to start N workers with their TF_CONFIG and how to notice that they ended;
the training itself lives in ``components.trainer.worker`` and knows only TF_CONFIG. A Kubeflow TFJob
backend is one more ``Launcher`` subclass (submit a TFJob whose pods run the same worker command, watch
its status) registered under its own name.

Fault tolerance is whole-cluster: if any worker fails, every worker is stopped and the cluster is started
again (new ports, ``TRAINER_ATTEMPT`` + 1) up to ``config.max_restarts`` times; Keras BackupAndRestore
in the shared scratch directory makes the new cluster resume from the last finished epoch.
"""
from __future__ import annotations

import abc
import collections
import dataclasses
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, ClassVar, Mapping

from components.trainer import history
from components.trainer.config import TrainingJob

logger = logging.getLogger(__name__)

LOG_TAIL_LINES = 40
WORKER_MODULE = "components.trainer.worker"
_PROJECT_ROOT = str(Path(__file__).resolve().parents[2])


@dataclasses.dataclass(frozen=True)
class WorkerFailure:
    attempt: int
    worker_index: int
    exit_code: int
    log_path: str
    log_tail: str

    def describe(self) -> str:
        return (f"training worker {self.worker_index} exited with code {self.exit_code} in attempt "
                f"{self.attempt}; last lines of {self.log_path}:\n{self.log_tail}")


class WorkerFailedError(RuntimeError):
    """A worker died and no restarts were left. ``failures`` lists every attempt's failure, last last."""

    def __init__(self, failures: list[WorkerFailure]):
        self.failures = tuple(failures)
        last = self.failures[-1]
        self.worker_index, self.exit_code, self.log_tail = last.worker_index, last.exit_code, last.log_tail
        super().__init__(f"{last.describe()}\n(gave up after {len(self.failures)} attempt(s))")


class LaunchTimeoutError(TimeoutError):
    """The whole cluster ran longer than the launcher's ``timeout_s`` (its workers have been stopped)."""


@dataclasses.dataclass(frozen=True)
class LaunchResult:
    attempts: int                               # clusters started (1 = no restart)
    failures: tuple[WorkerFailure, ...]         # one per failed attempt
    history: dict                               # history.merge_history of the run
    worker_logs: tuple[str, ...]
    seconds: float


class AttemptFailed(Exception):
    """Raised by a backend's ``_run_cluster`` when a worker failed; ``launch`` decides whether to restart."""

    def __init__(self, failure: WorkerFailure):
        super().__init__(failure.describe())
        self.failure = failure


class Launcher(abc.ABC):
    """Runs a TrainingJob on a cluster of ``job.config.workers`` workers, restarting on failure."""

    name: ClassVar[str]

    def launch(self, job: TrainingJob) -> LaunchResult:
        if not isinstance(job, TrainingJob):
            raise TypeError(f"job must be a TrainingJob, got {type(job).__name__}")
        started = time.perf_counter()
        failures: list[WorkerFailure] = []
        max_attempts = job.config.max_restarts + 1
        for attempt in range(max_attempts):
            try:
                logs = self._run_cluster(job, attempt)
                break
            except AttemptFailed as exc:
                failures.append(exc.failure)
                if attempt + 1 == max_attempts:
                    raise WorkerFailedError(failures) from None
                logger.warning("%s; restarting the cluster from its last backup (restart %d of %d)",
                               exc.failure.describe(), attempt + 1, job.config.max_restarts)
        seconds = time.perf_counter() - started
        run_history = history.merge_history(job.scratch_dir, job.config.workers)
        logger.info("training finished after %d attempt(s) in %.1fs", attempt + 1, seconds)
        return LaunchResult(attempts=attempt + 1, failures=tuple(failures), history=run_history,
                            worker_logs=tuple(logs), seconds=seconds)

    @abc.abstractmethod
    def _run_cluster(self, job: TrainingJob, attempt: int) -> list[str]:
        """Starts every worker for ``attempt`` and waits for all to succeed.

        Returns the worker log paths; raises AttemptFailed (after stopping the other workers) as soon
        as one worker fails."""


def worker_log_path(scratch_dir: str, worker_index: int) -> str:
    return os.path.join(scratch_dir, f"worker-{worker_index}.log")


def tail_lines(path: str, n: int = LOG_TAIL_LINES) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(collections.deque(f, maxlen=n))
    except OSError as exc:
        return f"<log {path} unreadable: {exc}>"


class LocalProcessLauncher(Launcher):
    """N worker processes on this machine, cluster ``{"worker": [127.0.0.1:<free port>, ...]}``.

    Worker 0 is the chief. Each worker's stdout/stderr goes to ``<scratch>/worker-<i>.log`` (appended
    across attempts); its ``[trainer ...]`` lines are also logged here, prefixed with the worker index.
    """

    name = "local"

    def __init__(self, *, env: Mapping[str, str] | None = None, timeout_s: float | None = None,
                 python: str = sys.executable, host: str = "127.0.0.1"):
        if env is not None and (not isinstance(env, Mapping)
                                or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())):
            raise TypeError(f"env must map str to str, got {env!r}")
        if timeout_s is not None and (isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float))
                                      or timeout_s <= 0):
            raise ValueError(f"timeout_s must be a positive number or None, got {timeout_s!r}")
        self.env = dict(env or {})
        self.timeout_s = timeout_s
        self.python = python
        self.host = host

    def _worker_env(self, tf_config: dict, attempt: int) -> dict[str, str]:
        from components.trainer.worker import ATTEMPT_ENV, PARENT_PID_ENV

        env = dict(os.environ)
        env.update(self.env)
        env["TF_CONFIG"] = json.dumps(tf_config)
        env["TF_USE_LEGACY_KERAS"] = "1"
        env[ATTEMPT_ENV] = str(attempt)
        env[PARENT_PID_ENV] = str(os.getpid())  # workers exit if this launcher dies without stopping them
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PROJECT_ROOT, env.get("PYTHONPATH", "")) if p)
        return env

    def _run_cluster(self, job: TrainingJob, attempt: int) -> list[str]:
        import portpicker

        from components.trainer.worker import LOG_MARKER

        n = job.config.workers
        os.makedirs(job.scratch_dir, exist_ok=True)
        job_path = os.path.join(job.scratch_dir, "job.json")
        with open(job_path, "w") as f:
            f.write(job.to_json())
        addresses = [f"{self.host}:{portpicker.pick_unused_port()}" for _ in range(n)]
        logger.info("attempt %d: starting %d worker(s) at %s", attempt, n, ", ".join(addresses))

        exits: queue.Queue = queue.Queue()
        procs: list[subprocess.Popen] = []
        threads: list[threading.Thread] = []
        log_paths = [worker_log_path(job.scratch_dir, i) for i in range(n)]
        try:
            for i in range(n):
                tf_config = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": i}}
                proc = subprocess.Popen(
                    [self.python, "-m", WORKER_MODULE, "--job", job_path], env=self._worker_env(tf_config, attempt),
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True)  # own process group: stopping a worker stops its children
                procs.append(proc)
                t = threading.Thread(target=_pump, args=(i, proc, log_paths[i], attempt, LOG_MARKER, exits),
                                     name=f"worker-{i}-log", daemon=True)
                t.start()
                threads.append(t)

            deadline = None if self.timeout_s is None else time.monotonic() + self.timeout_s
            done = 0
            while done < n:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    index, code = exits.get(timeout=remaining)
                except queue.Empty:
                    raise LaunchTimeoutError(f"training did not finish within {self.timeout_s}s "
                                             f"(attempt {attempt}); worker logs: {log_paths}") from None
                if code != 0:
                    self._stop(procs)
                    for t in threads:
                        t.join(timeout=5)
                    raise AttemptFailed(WorkerFailure(attempt, index, code, log_paths[index],
                                                       tail_lines(log_paths[index])))
                logger.info("worker %d finished (attempt %d)", index, attempt)
                done += 1
            return log_paths
        finally:
            self._stop(procs)  # whatever happened (timeout, Ctrl-C), no worker outlives the launch

    @staticmethod
    def _stop(procs: list[subprocess.Popen]) -> None:
        # SIGKILL straight away: MWMS workers survive SIGTERM (TF registers it as a preemption notice),
        # and the peers of a failed worker have nothing left worth flushing.
        alive = [p for p in procs if p.poll() is None]
        for p in alive:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for p in alive:
            p.wait()
        if alive:
            logger.info("stopped %d remaining worker(s)", len(alive))


def _is_progress_line(line: str, marker: str) -> bool:
    """The trainer's own log lines, and warnings/errors from anything in the worker."""
    return marker in line and (" components." in line or " WARNING " in line or " ERROR " in line)


def _pump(index: int, proc: subprocess.Popen, log_path: str, attempt: int, marker: str,
          exits: queue.Queue) -> None:
    """Copies a worker's output to its log file, forwards trainer lines, then reports its exit code."""
    with open(log_path, "a", buffering=1, errors="replace") as log:
        log.write(f"===== attempt {attempt}, worker {index}, pid {proc.pid} =====\n")
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace")
            log.write(line)
            if _is_progress_line(line, marker):
                logger.info("worker %d | %s", index, line.rstrip())
    code = proc.wait()
    exits.put((index, code))


LAUNCHERS: dict[str, type[Launcher]] = {LocalProcessLauncher.name: LocalProcessLauncher}


def _register_cluster_backends() -> None:
    # Imported here: the cluster backend's module imports this one.
    from components.trainer.kubeflow_launcher import KubeflowTFJobLauncher
    LAUNCHERS.setdefault(KubeflowTFJobLauncher.name, KubeflowTFJobLauncher)


def launcher_options(options: Mapping[str, Any] | str | None) -> dict[str, Any]:
    """Launcher keyword options from a mapping, a JSON object string, or None/'' (no options)."""
    if options is None:
        return {}
    if isinstance(options, str):
        try:
            options = json.loads(options) if options.strip() else {}
        except json.JSONDecodeError as exc:
            raise ValueError(f"launcher options must be a JSON object, got {options!r} ({exc})") from None
    if not isinstance(options, Mapping):
        raise TypeError(f"launcher options must be a mapping or a JSON object, got {options!r}")
    return dict(options)


def make_launcher(name: str, options: Mapping[str, Any] | str | None = None) -> Launcher:
    """A launcher by registry name with its keyword options (a dict, or a JSON object string)."""
    _register_cluster_backends()
    if name not in LAUNCHERS:
        raise ValueError(f"unknown launcher {name!r}; known: {sorted(LAUNCHERS)}")
    options = launcher_options(options)
    try:
        return LAUNCHERS[name](**options)
    except TypeError as exc:
        raise ValueError(f"bad options for launcher {name!r}: {options!r} ({exc})") from None
