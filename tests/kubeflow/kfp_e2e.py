"""Runs of the compiled pipeline through kfp-local, everything of them inside one GcsNetns (tests/standins).

``KfpGcs`` compiles the pipeline and runs ``python -m pipeline kfp-local`` in the namespace, where gs:// is
fake-gcs-server for TensorFlow, google-cloud-storage and Beam alike; it reads what a run left (run.json, the
kfp-local sqlite, the Kubernetes API stand-in's replica logs under ``<workdir>/runs/<run id>/kube``) and lists the
processes of the namespace (it shares the machine's PID space, so ``pgrep`` would also see other test sessions'
trainers: only the namespace's own processes are looked at here).
"""
from __future__ import annotations

import dataclasses
import glob
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

BUCKET = "bresnet-e2e"
IMAGE = "bresnet-tfx:test"
MODEL = "bresnet"
DATA = f"gs://{BUCKET}/videos"
ROOT = f"gs://{BUCKET}/root"
SERVING = f"gs://{BUCKET}/serving"
WORKER_MODULE = "components.trainer.worker"
# Processes of a run, by a piece of their command line (the fake GCS server and its TLS front are not).
RUN_PROCESS_MARKERS = (WORKER_MODULE, "pipeline kfp-local", "pipeline.kfp_entrypoint", "kfp_local.kube_api")
ENV = {"TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1", "PYTHONWARNINGS": "ignore"}


def tail(path, chars: int = 6000) -> str:
    try:
        return Path(path).read_text(errors="replace")[-chars:]
    except OSError as exc:
        return f"<{path} unreadable: {exc}>"


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def environ(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            items = f.read().split(b"\0")
    except OSError:
        return {}
    return dict(item.decode(errors="replace").split("=", 1) for item in items if b"=" in item)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


@dataclasses.dataclass
class Run:
    run_id: str
    returncode: int
    seconds: float
    log: str                      # kfp-local's output (a file)
    info: dict                    # run.json ({} when kfp-local wrote none)

    @property
    def states(self) -> dict[str, str]:
        return {name: task["state"] for name, task in self.info.get("tasks", {}).items()}

    def why(self) -> str:
        return f"kfp-local {self.run_id} exited {self.returncode}; states {self.states}; output tail:\n{tail(self.log)}"


class ReplicaWatch:
    """Polls the namespace for training replica processes while a run goes on: records each one's stand-in
    environment (TF_CONFIG, HOSTNAME = pod name or its hostname, KUBERNETES_SERVICE_HOST, an Indexed Job's
    variables) and parent chain; ``action(watch)``,
    called every poll, can act on them (kill one, cancel the run)."""

    def __init__(self, kfp: "KfpGcs", action: Callable[["ReplicaWatch"], None] | None = None, poll_s: float = 0.25):
        self.kfp, self.action, self.poll_s = kfp, action, poll_s
        self.seen: dict[int, dict] = {}
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="replica-watch", daemon=True)

    def __enter__(self) -> "ReplicaWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def running(self) -> dict[int, dict]:
        """Replica processes alive now: pid -> what was recorded of it."""
        return {pid: self.seen[pid] for pid in self.kfp.processes(WORKER_MODULE) if pid in self.seen}

    def _loop(self):
        while not self._stop.is_set():
            try:
                for pid in self.kfp.processes(WORKER_MODULE):
                    if pid not in self.seen:
                        env = environ(pid)
                        if not env:
                            continue
                        chain, p = [], ppid(pid)
                        while p and p > 1 and len(chain) < 6:
                            chain.append((p, cmdline(p)))
                            p = ppid(p)
                        self.seen[pid] = {"pid": pid, "seen_at": time.monotonic(), "parents": chain,
                                          **{k: env.get(k) for k in ("TF_CONFIG", "HOSTNAME", "KUBERNETES_SERVICE_HOST",
                                                                     "KUBERNETES_SERVICE_PORT", "TRAINER_ATTEMPT",
                                                                     "TRAINER_PEER_PATTERN", "JOB_COMPLETION_INDEX")}}
                if self.action is not None:
                    self.action(self)
            except BaseException as exc:  # reported by the test
                self.error = exc
                return
            self._stop.wait(self.poll_s)


class KfpGcs:
    def __init__(self, gcs, tmp: Path):
        self.gcs, self.tmp = gcs, Path(tmp)
        self.workdir = self.tmp / "kfp-local"
        self.logs = self.tmp / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    # ---- inside the namespace ----------------------------------------------------------------------------
    def python(self, code: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return self.gcs.run([sys.executable, "-c", code, *args], env=ENV, capture_output=True, text=True,
                            timeout=timeout, cwd=_repo())

    def start_python(self, code: str, *args: str) -> tuple[subprocess.Popen, str]:
        """``python -c code args`` in the namespace, in the background; (process, its output file)."""
        out = str(self.logs / f"python-{time.monotonic_ns()}.log")
        with open(out, "wb") as f:
            proc = subprocess.Popen(self.gcs.command([sys.executable, "-c", code, *args]), env=self.gcs.full_env(ENV),
                                    cwd=_repo(), stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT)
        return proc, out

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return self.gcs.run([sys.executable, "-m", "pipeline", *args], env=ENV, capture_output=True, text=True,
                            timeout=timeout, cwd=_repo())

    def compile(self, name: str, *sets: str, workers: int = 2) -> str:
        package = str(self.tmp / f"{name}.yaml")
        args = ["compile", "--config", "smoke", "--allow-local-beam", "--image", IMAGE, "--out", package, "--data-dir", DATA,
                "--pipeline-root", ROOT, "--serving-dir", SERVING, "--workers", str(workers)]
        for s in sets:
            args += ["--set", s]
        result = self.cli(*args)
        if result.returncode:
            raise AssertionError(f"compile failed ({result.returncode}):\n{result.stderr[-4000:]}")
        return package

    def start(self, package: str, run_id: str, *extra: str) -> tuple[subprocess.Popen, str]:
        log = str(self.logs / f"{run_id}.log")
        argv = [sys.executable, "-m", "pipeline", "kfp-local", "--package", package, "--workdir", str(self.workdir),
                "--run-id", run_id, *extra]
        with open(log, "wb") as out:
            proc = subprocess.Popen(self.gcs.command(argv), env=self.gcs.full_env(ENV), cwd=_repo(),
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        return proc, log

    def finish(self, proc: subprocess.Popen, run_id: str, log: str, started: float, timeout: float) -> Run:
        try:
            proc.wait(timeout=max(1.0, started + timeout - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"kfp-local {run_id} still running after {timeout:.0f}s:\n{tail(log)}")
        return Run(run_id, proc.returncode, time.monotonic() - started, log, self.run_json(run_id))

    def run(self, package: str, run_id: str, *extra: str, timeout: float = 900,
            action: Callable[[ReplicaWatch], None] | None = None) -> tuple[Run, ReplicaWatch]:
        started = time.monotonic()
        proc, log = self.start(package, run_id, *extra)
        try:
            with ReplicaWatch(self, action) as watch:
                run = self.finish(proc, run_id, log, started, timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        return run, watch

    # ---- what a run left ------------------------------------------------------------------------------
    def run_dir(self, run_id: str) -> Path:
        return self.workdir / "runs" / run_id

    def run_json(self, run_id: str) -> dict:
        try:
            return json.loads((self.run_dir(run_id) / "run.json").read_text())
        except (OSError, ValueError):
            return {}

    def sql(self, query: str, *params):
        db = sqlite3.connect(self.workdir / "kfp-local.sqlite")
        try:
            return db.execute(query, params).fetchall()
        finally:
            db.close()

    def replica_log_paths(self, run_id: str) -> dict[str, dict[int, str]]:
        """Pod name -> {container instance (0, then 1 after a restart, ...): its log file}, from the stand-in."""
        pods: dict[str, dict[int, str]] = {}
        for path in sorted(glob.glob(str(self.run_dir(run_id) / "kube" / "pods" / "*" / "*" / "tensorflow-*.log"))):
            pod = os.path.basename(os.path.dirname(path)).rsplit("-", 1)[0]   # <pod name>-<uid[:8]>
            instance = int(os.path.basename(path)[len("tensorflow-"):-len(".log")])
            pods.setdefault(pod, {})[instance] = path
        return pods

    def replica_logs(self, run_id: str) -> dict[str, dict[int, str]]:
        """Pod name -> {container instance: its log}."""
        return {pod: {i: tail(path, 10 ** 8) for i, path in instances.items()}
                for pod, instances in self.replica_log_paths(run_id).items()}

    def api_requests(self, run_id: str) -> list[dict]:
        path = self.run_dir(run_id) / "kube" / "api-requests.log"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def task_log(self, run: Run, task: str) -> str:
        log = run.info.get("tasks", {}).get(task, {}).get("log")
        return tail(log, 10 ** 7) if log else ""

    def versions(self) -> list[str]:
        """Serving versions with a saved_model.pb under gs://<bucket>/serving/<model>/."""
        prefix = f"serving/{MODEL}/"
        return sorted({name[len(prefix):].split("/")[0] for name in self.gcs.list_objects(BUCKET, prefix)
                       if name.endswith("/saved_model.pb") and name.count("/") == 3})

    def processes(self, *markers: str) -> list[int]:
        """Pids of the namespace's processes and their descendants (pods of Jobs run in network namespaces of their
        own) whose command line contains one of ``markers`` (all: none given)."""
        out = subprocess.run(["ip", "netns", "pids", self.gcs.name], capture_output=True, text=True, timeout=30)
        inside = {int(word) for word in out.stdout.split()}
        parents = {int(d): ppid(int(d)) for d in os.listdir("/proc") if d.isdigit()}
        for pid in sorted(parents):
            chain, p = [], pid
            while p and p not in inside and p in parents and len(chain) < 64:
                chain.append(p)
                p = parents[p]
            if p in inside:
                inside.update(chain)
        pids = []
        for pid in sorted(inside):
            line = cmdline(pid)
            if alive(pid) and line and (not markers or any(m in line for m in markers)):
                pids.append(pid)
        return pids

    def survivors(self, wait_s: float = 5.0) -> dict[int, str]:
        """The run's processes still alive after up to ``wait_s`` (reaping can lag a moment)."""
        deadline = time.monotonic() + wait_s
        while True:
            left = {pid: cmdline(pid) for pid in self.processes(*RUN_PROCESS_MARKERS)}
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.2)

    def kill_run_processes(self) -> None:
        """Last resort between runs: SIGKILL whatever of a run survived (the namespace's teardown does the rest)."""
        for pid in self.processes(*RUN_PROCESS_MARKERS):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _repo() -> str:
    return str(Path(__file__).resolve().parents[2])
