"""What the API stand-ins share: the Kubernetes API's (``kube_api.py``) and Vertex AI's (tests/standins/vertex_api.py).

``LoopbackApiServer`` serves HTTP on 127.0.0.1 and hands every request to the stand-in's ``handle``; a controller
thread calls the stand-in's ``tick`` every ``tick_s`` under the stand-in's lock (an exception there is logged and
the loop goes on); every request is recorded (``record``/``requests``) and logged to ``<workdir>/api-requests.log``;
and ``stop`` kills the process group of every replica the stand-in still runs (``live_processes``), then stops
serving. The process helpers below are what both controllers do with replica processes.
"""
from __future__ import annotations

import http.server
import json
import logging
import os
import re
import signal
import socket
import subprocess
import threading
from typing import Any, Mapping

logger = logging.getLogger(__name__)

_VAR_REF = re.compile(r"\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")


class LoopbackApiServer:
    """Base of the API stand-ins; subclasses define ``handle``, ``tick`` and ``live_processes``."""

    server_name = "api-stand-in"      # the HTTP Server header and the threads' names

    def __init__(self, workdir: str, tick_s: float = 0.05):
        self.workdir = os.path.abspath(workdir)
        self.tick_s = float(tick_s)
        self.url: str | None = None
        self.port: int | None = None
        self._lock = threading.RLock()
        self._requests: list[dict] = []
        self._stopping = threading.Event()
        self._httpd: http.server.ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._request_log = None

    # ---- what a stand-in defines ---------------------------------------------------------------------------

    def handle(self, method: str, raw_path: str, body: bytes) -> tuple[int, str, bytes]:
        """One request -> (status code, content type, body); called on the HTTP server's threads."""
        raise NotImplementedError

    def tick(self) -> None:
        """One pass of the stand-in's controllers; called with ``_lock`` held."""
        raise NotImplementedError

    def live_processes(self) -> list[subprocess.Popen]:
        """The replica processes (process-group leaders) still running; called with ``_lock`` held."""
        raise NotImplementedError

    def response_headers(self) -> dict[str, str]:
        """Extra headers of every response."""
        return {}

    # ---- lifecycle -------------------------------------------------------------------------------------------

    def start(self):
        os.makedirs(self.workdir, exist_ok=True)
        self._request_log = open(os.path.join(self.workdir, "api-requests.log"), "a", buffering=1)
        handler = type("_BoundHandler", (_Handler,), {"api": self, "server_version": self.server_name})
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._threads = [threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                          name=f"{self.server_name}-http", daemon=True),
                         threading.Thread(target=self._control_loop, name=f"{self.server_name}-controllers",
                                          daemon=True)]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        """Kills every replica process group at once, then stops serving."""
        self._stopping.set()
        for t in self._threads[1:]:
            t.join(timeout=10)
        with self._lock:
            procs = self.live_processes()
        for proc in procs:
            killpg(proc.pid, signal.SIGKILL)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                logger.error("replica process %d did not die after SIGKILL", proc.pid)
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._threads:
            self._threads[0].join(timeout=10)
        with self._lock:
            if self._request_log is not None:
                self._request_log.close()
                self._request_log = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- requests and the controller loop ----------------------------------------------------------------------

    def record(self, request: dict) -> None:
        """Keeps one handled request (for ``requests``) and logs it."""
        with self._lock:
            self._requests.append(request)
            if self._request_log is not None:
                self._request_log.write(json.dumps(request) + "\n")

    def requests(self) -> list[dict]:
        """Every request so far, as recorded."""
        with self._lock:
            return [dict(r) for r in self._requests]

    def _control_loop(self) -> None:
        while not self._stopping.wait(self.tick_s):
            try:
                with self._lock:
                    self.tick()
            except Exception:  # keep serving; the failure is in the log
                logger.exception("%s: controller tick failed", self.server_name)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    api: LoopbackApiServer

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        code, content_type, payload = self.api.handle(self.command, self.path, body)
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in self.api.response_headers().items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _serve

    def log_message(self, format: str, *args: Any) -> None:  # requests are recorded by the stand-in's handle
        pass


# ---- replica processes -----------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def exited(proc: subprocess.Popen) -> bool:
    """Whether the process has exited, without reaping it (so its process group id stays reserved)."""
    if proc.returncode is not None:
        return True
    try:
        info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return proc.poll() is not None
    return info is not None and info.si_pid == proc.pid


def killpg(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def expand(text: str, defined: Mapping[str, str]) -> str:
    """Kubernetes' (and Vertex's) ``$(VAR)`` expansion in env values and arguments: defined names are replaced,
    ``$$`` escapes, unresolved references stay as written."""
    def repl(m: re.Match) -> str:
        return "$" if m.group(0) == "$$" else defined.get(m.group(1), m.group(0))
    return _VAR_REF.sub(repl, text)


def serve_until_signalled(server: LoopbackApiServer, *lines: str) -> int:
    """A stand-in's command line: starts ``server``, prints ``lines`` (each formatted with ``server``'s attributes,
    e.g. "{url}"), serves until SIGTERM or Ctrl-C, then stops it (its replicas killed)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    try:
        for line in lines:
            print(line.format(**vars(server)), flush=True)
        while not stop.wait(1.0):
            pass
    finally:
        server.stop()
    return 0
