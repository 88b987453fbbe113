"""How training workers start: the launcher interface and its local-process backend.

A launcher knows only how to start N workers with their TF_CONFIG and how to notice that they ended;
the training itself lives in ``components.trainer.worker`` and knows only TF_CONFIG. The Kubeflow TFJob
backend (``kubeflow_launcher``) is one more ``Launcher`` subclass; ``registry`` finds backends by name
(``make_launcher``, re-exported here) and imports them lazily, so no backend imports another.

Fault tolerance of the local backend is whole-cluster: if any worker fails, every worker is stopped and the
cluster is started again (new ports, ``TRAINER_ATTEMPT`` + 1) up to ``config.max_restarts`` times; Keras
BackupAndRestore in the shared scratch directory makes the new cluster resume from the last finished epoch.

Stopping: SIGTERM (a pipeline run cancelled, the pod evicted) and Ctrl-C to the launching process stop every
worker at once. While workers run, ``termination_guard`` turns SIGTERM into ``TerminationRequested`` in the
main thread so the launcher's cleanup runs, then re-delivers the signal with the previous handler; workers
also die with their launcher on their own (``worker.exit_with_parent``).
"""
from __future__ import annotations

import abc
import collections
import contextlib
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
from typing import ClassVar, Iterator, Mapping

from components.trainer.config import TrainingJob
from components.trainer.precision import ReplicaDevices
from components.trainer.registry import LAUNCHERS, launcher_options, make_launcher  # noqa: F401 (re-exported)

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


class TerminationRequested(BaseException):
    """SIGTERM arrived while workers ran; raised in the main thread so ``finally`` blocks stop them.

    A BaseException like KeyboardInterrupt: nothing on the way up may mistake it for a worker failure."""

    def __init__(self, signum: int):
        super().__init__(f"received {signal.Signals(signum).name}")
        self.signum = signum


@contextlib.contextmanager
def termination_guard() -> Iterator[None]:
    """While active, SIGTERM raises TerminationRequested (main thread only; elsewhere a no-op).

    On the way out the previous handler is restored; if SIGTERM arrived, it is then handled as it would have
    been without the guard: the default action ends the process (after the cleanup below the raise point has
    run), a Python handler is called. A SIGTERM that was being ignored stays ignored (no guard installed)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous == signal.SIG_IGN:
        yield
        return

    def on_sigterm(signum, frame):
        raise TerminationRequested(signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    except TerminationRequested as exc:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
        logger.warning("%s: workers stopped, exiting", exc)
        if previous in (None, signal.SIG_DFL):
            for handler in logging.getLogger().handlers:
                handler.flush()
            os.kill(os.getpid(), signal.SIGTERM)  # the default action: the process ends here
            time.sleep(5)                         # (delivery is asynchronous)
        elif callable(previous):
            previous(exc.signum, None)
        raise
    finally:
        if signal.getsignal(signal.SIGTERM) is on_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


@contextlib.contextmanager
def termination_signals_blocked() -> Iterator[None]:
    """SIGTERM and SIGINT wait (are delivered afterwards) while cleanup that must finish runs."""
    signals = {signal.SIGTERM, signal.SIGINT}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class Launcher(abc.ABC):
    """Runs a TrainingJob on a cluster of ``job.config.workers`` workers, restarting on failure."""

    name: ClassVar[str]

    def replica_devices(self) -> ReplicaDevices | None:
        """The accelerators of each replica as this backend will request them, for ``precision: auto``; None: the
        replicas run on this machine (the local backend), whose devices are then looked at."""
        return None

    def max_attempts(self, job: TrainingJob) -> int:
        """How many clusters ``launch`` may start: whole-cluster restarts are this class's fault tolerance.

        A backend whose clusters restart failed workers themselves returns 1."""
        return job.config.max_restarts + 1

    def launch(self, job: TrainingJob) -> LaunchResult:
        if not isinstance(job, TrainingJob):
            raise TypeError(f"job must be a TrainingJob, got {type(job).__name__}")
        started = time.perf_counter()
        failures: list[WorkerFailure] = []
        max_attempts = self.max_attempts(job)
        for attempt in range(max_attempts):
            try:
                logs = self._run_cluster(job, attempt)
                break
            except AttemptFailed as exc:
                failures.append(exc.failure)
                if attempt + 1 == max_attempts:
                    raise WorkerFailedError(failures) from None
                logger.warning("%s; restarting the cluster from its last backup (restart %d of %d)",
                               exc.failure.describe(), attempt + 1, max_attempts - 1)
        from components.trainer import history  # imports TensorFlow: only once training has finished

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


def write_text(uri: str, text: str) -> None:
    """Writes ``text`` to a local path or any tf.io.gfile URI (gs://...), making its folder: a cluster backend's
    job description, where every replica can read it."""
    if "://" in uri:
        import tensorflow as tf

        tf.io.gfile.makedirs(uri.rsplit("/", 1)[0])
        with tf.io.gfile.GFile(uri, "w") as f:
            f.write(text)
    else:
        os.makedirs(os.path.dirname(uri) or ".", exist_ok=True)
        with open(uri, "w") as f:
            f.write(text)


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
        # SIGTERM while workers run: the finally below stops every worker, then the process ends (Ctrl-C:
        # KeyboardInterrupt through the same finally).
        with termination_guard():
            try:
                for i in range(n):
                    tf_config = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": i}}
                    proc = subprocess.Popen(
                        [self.python, "-m", WORKER_MODULE, "--job", job_path],
                        env=self._worker_env(tf_config, attempt), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL, start_new_session=True)  # own process group: see _stop
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
                with termination_signals_blocked():
                    self._stop(procs)  # whatever happened (timeout, Ctrl-C, SIGTERM), no worker outlives the launch

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
