"""What a process needs to run Beam steps on Flink with the arguments ``pipeline/config.py`` builds, and the
runner they name (``SharedJobServerFlinkRunner``: one Flink job server per process, below).

Two things Beam does not check itself, and that otherwise surface as a job that hangs or a Java stack trace:

- Loopback process workers (``--environment_type=LOOPBACK`` with ``--experiments=use_loopback_process_worker``):
  Beam's worker pool starts each SDK worker as ``python -c ...``, the ``python`` found on PATH, not this
  interpreter (apache_beam/runners/worker/worker_pool_main.py, ``BeamFnExternalWorkerPoolServicer``). A
  ``python`` without Beam dies at import and the Flink job waits for its worker forever. This interpreter's
  directory goes first on PATH, so the workers run the same Python and packages as the step.
- ``--flink_job_server_jar``: the jar scripts/install_standins.sh assembles, started with ``java -jar``.

And one option Beam's Python SDK does not know: ``--flink_conf_dir``, the Flink configuration (deploy/flink/: the
restart strategy of batch jobs, which Beam's own ``--number_of_execution_retries`` sets only for streaming ones:
FlinkExecutionEnvironments in beam-runners-flink). The FlinkRunner forwards to the job server only the options
some ``PipelineOptions`` class declares (unknown ones only with ``--flink_submit_uber_jar``:
apache_beam/runners/portability/flink_runner.py), so ``FlinkConfOptions`` declares it; the job server maps
``flink_conf_dir`` to the Java FlinkPipelineOptions' ``flinkConfDir`` (PipelineOptionsTranslation).
"""
from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Sequence

from apache_beam.options.pipeline_options import FlinkRunnerOptions, PipelineOptions
from apache_beam.runners.portability.flink_runner import FlinkRunner
from apache_beam.runners.portability.job_server import ExternalJobServer


class FlinkConfOptions(PipelineOptions):
    """The Java FlinkPipelineOptions' flinkConfDir, which Beam's Python SDK does not declare."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--flink_conf_dir", default=None,
                            help="folder of Flink's configuration file (flink-conf.yaml) for the job's cluster")


logger = logging.getLogger(__name__)
JOB_SERVER_START_TIMEOUT_S = 120.0
SHARED_JOB_SERVER_RUNNER = f"{__name__}.SharedJobServerFlinkRunner"   # the --runner naming it (pipeline/config.py)


def arg_value(args: Sequence[str], name: str) -> str | None:
    """The value of ``--name=value`` among Beam arguments, None when absent."""
    for arg in args:
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
    return None


def uses_process_workers(args: Sequence[str]) -> bool:
    experiments = [a.split("=", 1)[1] for a in args if a.startswith("--experiments=")]
    return (arg_value(args, "--environment_type") == "LOOPBACK"
            and any("use_loopback_process_worker" in e.split(",") for e in experiments))


def prepare(args: Sequence[str]) -> None:
    """Checks and sets up this process for Beam pipelines with ``args``; a no-op for other runners."""
    jar = arg_value(args, "--flink_job_server_jar")
    if jar is not None:
        if not os.path.isfile(jar):
            raise FileNotFoundError(f"--flink_job_server_jar {jar!r} does not exist: run `make standins` "
                                    f"(scripts/install_standins.sh) to assemble Beam's Flink job server")
        if shutil.which("java") is None:
            raise FileNotFoundError("the Flink job server needs `java` (>= 11) on PATH; none found")
    if uses_process_workers(args):
        put_interpreter_first_on_path()


def put_interpreter_first_on_path() -> None:
    """This interpreter's directory first on PATH, for loopback process workers (above)."""
    bindir = os.path.dirname(sys.executable)
    path = os.environ.get("PATH", "").split(os.pathsep)
    if path[:1] != [bindir]:
        os.environ["PATH"] = os.pathsep.join([bindir, *[p for p in path if p and p != bindir]])


def describe(args: Sequence[str]) -> str:
    """One line on where the Beam steps run, for the run's log."""
    runner = arg_value(args, "--runner") or "DirectRunner"
    if runner not in ("FlinkRunner", "PortableRunner", SHARED_JOB_SERVER_RUNNER):
        mode = arg_value(args, "--direct_running_mode")
        return f"{runner}" + (f" ({mode}, {arg_value(args, '--direct_num_workers') or 1} workers)" if mode else "")
    where = (f"job server {arg_value(args, '--job_endpoint')}" if runner == "PortableRunner"
             else "an embedded Flink cluster" if arg_value(args, "--flink_master") == "[local]"
             else f"Flink at {arg_value(args, '--flink_master')}")
    env = arg_value(args, "--environment_type") or "DOCKER"
    workers = ("SDK worker processes of this step" if uses_process_workers(args)
               else f"{env.lower()} SDK workers" + (f" ({arg_value(args, '--environment_config')})"
                                                    if arg_value(args, "--environment_config") else ""))
    return f"Flink ({where}, parallelism {arg_value(args, '--parallelism') or 'default'}; {workers})"


class _SharedJobServer:
    """A Flink job server process (``java -jar``, its own process group) and its endpoint, for every pipeline of
    this process that names the same jar, Flink master and configuration."""

    def __init__(self, jar: str, flink_master: str, conf_dir: str | None):
        self.command = ["java", "-jar", jar, "--flink-master", flink_master, "--artifact-port", "0",
                        "--expansion-port", "0"] + (["--flink-conf-dir", conf_dir] if conf_dir else [])
        self.process: subprocess.Popen | None = None
        self.endpoint = ""
        self._lock = threading.Lock()

    def start(self):
        """Beam's JobServer.start (apache_beam/runners/portability/job_server.py): a stub of the job service."""
        return ExternalJobServer(self._ensure_running(), timeout=JOB_SERVER_START_TIMEOUT_S).start()

    def _ensure_running(self) -> str:
        with self._lock:
            if self.process is not None and self.process.poll() is None:
                return self.endpoint
            port = _free_port()
            started = time.monotonic()
            self.process = subprocess.Popen(self.command + ["--job-port", str(port)], stdout=subprocess.PIPE,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True, preexec_fn=_die_with_parent)
            threading.Thread(target=_relay, args=(self.process.stdout,), daemon=True,
                             name="flink-job-server-log").start()
            _wait_for_port(port, self.process, JOB_SERVER_START_TIMEOUT_S)
            self.endpoint = f"localhost:{port}"
            logger.info("Flink job server (pid %d, %s) listening on %s after %.1f s", self.process.pid,
                        " ".join(self.command[3:5]), self.endpoint, time.monotonic() - started)
            return self.endpoint

    def stop(self, grace_s: float = 10.0) -> None:
        with self._lock:
            process, self.process = self.process, None
            if process is None or process.poll() is not None:
                return
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            logger.info("Flink job server (pid %d) stopped", process.pid)


_JOB_SERVERS: dict[tuple, _SharedJobServer] = {}
_JOB_SERVERS_LOCK = threading.Lock()


def stop_job_servers() -> None:
    """Stops every job server this process started (also at exit, and in run-local's cleanup on SIGTERM)."""
    with _JOB_SERVERS_LOCK:
        servers = list(_JOB_SERVERS.values())
        _JOB_SERVERS.clear()
    for server in servers:
        server.stop()


atexit.register(stop_job_servers)


class SharedJobServerFlinkRunner(FlinkRunner):
    """Beam's FlinkRunner, with one job server per process instead of one per pipeline.

    Beam's FlinkRunner starts a job server JVM (with its Flink cluster, ~0.5-0.9 GB) for every pipeline and stops
    them only when the process exits (``StopOnExitJobServer``: atexit and SIGINT, not SIGTERM). A run-local of
    five Beam steps kept five, and SIGTERM left them all running. Here the first pipeline starts one, the later
    ones reuse it (no second JVM start-up), and ``stop_job_servers`` ends it: at exit, and in run-local's cleanup,
    which SIGTERM and Ctrl-C reach. The arguments stay the same from run to run, so TFX's cache keys (which hash
    the Beam arguments) do not change."""

    def default_job_server(self, options):
        flink = options.view_as(FlinkRunnerOptions)
        if not flink.flink_job_server_jar:
            raise ValueError(f"{type(self).__name__} needs --flink_job_server_jar (make standins builds it)")
        master = self.add_http_scheme(flink.flink_master)
        conf_dir = options.view_as(FlinkConfOptions).flink_conf_dir
        key = (flink.flink_job_server_jar, master, conf_dir)
        with _JOB_SERVERS_LOCK:
            if key not in _JOB_SERVERS:
                _JOB_SERVERS[key] = _SharedJobServer(*key)
            return _JOB_SERVERS[key]


def _die_with_parent() -> None:
    """In the job server's child before exec: Linux sends it SIGKILL when this process dies, even by SIGKILL (an
    OOM kill, a pod's hard stop), so no JVM outlives the run (prctl PR_SET_PDEATHSIG)."""
    if sys.platform.startswith("linux"):
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)   # 1 = PR_SET_PDEATHSIG


def _relay(stream) -> None:
    """The job server's output lines into this process's log (warnings and errors: simplelogger.properties)."""
    for line in iter(stream.readline, b""):
        logger.info("flink-job-server: %s", line.decode(errors="replace").rstrip())
    stream.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the Flink job server ({' '.join(process.args[:3])}) exited with code "
                               f"{process.returncode} before it listened on port {port}")
        with socket.socket() as sock:
            if sock.connect_ex(("localhost", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"the Flink job server did not listen on port {port} within {timeout_s:.0f} s")
