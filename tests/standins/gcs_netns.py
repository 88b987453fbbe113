"""One local GCS that every client reaches, TensorFlow's own gs:// filesystem included.

TensorFlow's GCS filesystem (tf.io.gfile on gs://: the trainer's reads, SavedModel export, BackupAndRestore)
has no endpoint override: its libcurl client always talks TLS to https://www.googleapis.com (JSON and upload
APIs) and https://storage.googleapis.com (media reads). google-cloud-storage and Beam's gcsio honour
``STORAGE_EMULATOR_HOST`` instead. So the stand-in gives a run a network namespace of its own, whose hosts file
sends those names to the namespace's own loopback, where a TLS front (below) serves HTTPS on port 443 with a
certificate signed by a CA made for this run, in front of fake-gcs-server (plain HTTP on UPSTREAM_PORT). Every
process of the run (the fake too) runs in the namespace (``GcsNetns.command``/``GcsNetns.run``) with
``GcsNetns.env``; nothing leaves the machine, and the machine's own loopback and network are untouched.

    with GcsNetns(tmp_path, buckets=["data"]) as gcs:
        gcs.upload_dir("demo_data", "gs://data/demo")
        gcs.run([sys.executable, "-m", "pipeline", ...], check=True)   # sees gs://data through every client
        gcs.read_object("data", "serving/m/1/saved_model.pb")          # from outside the namespace

Needs root (``ip netns add``), iproute2 and the fake-gcs-server binary that ``scripts/install_standins.sh``
installs; ``available()`` says why not, when it cannot run here.

Backends. "memory" (the default) is the faithful one: it keeps directory-marker objects ("dir/"), which
tf.io.gfile.makedirs writes and isdir/exists/rmtree of an empty directory rely on. "filesystem" keeps objects
on disk, readable from outside: object NAME of bucket B is the file ``<workdir>/gcs/B/NAME`` (NAME's "/" are
directories; the file holds exactly the object's bytes; metadata in the extended attribute ``user.metadata``,
or in a ``NAME.metadata`` side file where xattrs are unsupported; bucket attributes in
``<workdir>/gcs/B.bucketMetadata``) -- but it silently drops directory markers (an empty ``makedirs``
directory does not exist afterwards) and cannot hold both ``a`` and ``a/b``. ``read_object``, ``list_objects``
and ``upload_dir`` work with either backend: they talk to the fake from a thread that has entered the
namespace (setns), not through the disk.
"""
from __future__ import annotations

import asyncio
import atexit
import ctypes
import datetime
import http.client
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import textwrap
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Mapping, Sequence

REPO = Path(__file__).resolve().parents[2]
FAKE_GCS_SERVER_VERSION = "v1.56.1"  # keep in step with scripts/install_standins.sh
BINARY = Path(os.environ.get("FAKE_GCS_SERVER") or REPO / ".cache" / "bin" / "fake-gcs-server")
NAME_PREFIX = "bresnet-test-"
HOSTS = ("storage.googleapis.com", "www.googleapis.com", "oauth2.googleapis.com", "metadata.google.internal")
TOKEN = "bresnet-test-token"
PROJECT = "bresnet-test"
UPSTREAM_PORT = 8080  # the fake's plain HTTP, on the namespace's own loopback (no clash with the machine's)
_PROXY_VARIABLES = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
_NAME_RE = re.compile(re.escape(NAME_PREFIX) + r"(\d+)-[0-9a-f]+$")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def _namespaces() -> list[str]:
    out = _ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _pid_alive(pid: int) -> bool:
    """Whether pid is a running process (a zombie, killed but not yet reaped by its parent, is not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def _teardown(name: str) -> None:
    """Kills every process in namespace ``name`` (TERM, then KILL), deletes it and its /etc/netns entry."""
    if name in _namespaces():
        for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
            pids = [int(p) for p in _ip("netns", "pids", name, check=False).stdout.split()]
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.time() + grace
            while time.time() < deadline and any(_pid_alive(p) for p in pids):
                time.sleep(0.05)
        _ip("netns", "del", name, check=False)
    shutil.rmtree(f"/etc/netns/{name}", ignore_errors=True)


def sweep_stale() -> list[str]:
    """Removes the ``bresnet-test-<pid>-*`` namespaces whose creating process is gone (a killed earlier run)."""
    swept = []
    candidates = set(_namespaces())
    if os.path.isdir("/etc/netns"):
        candidates |= set(os.listdir("/etc/netns"))
    for name in sorted(candidates):
        m = _NAME_RE.match(name)
        if m and not _pid_alive(int(m.group(1))):
            _teardown(name)
            swept.append(name)
    return swept


_available: list[str | None] = []


def available() -> str | None:
    """None when the stand-in can run here, else the reason it cannot (cached for the process)."""
    if not _available:
        _available.append(_why_unavailable())
    return _available[0]


def _why_unavailable() -> str | None:
    if not sys.platform.startswith("linux"):
        return f"network namespaces need Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "the GCS stand-in needs root (ip netns add, port 443 in its namespace)"
    if not shutil.which("ip"):
        return "iproute2's `ip` is missing: run scripts/install_standins.sh"
    if not os.access(BINARY, os.X_OK):
        return f"fake-gcs-server is missing at {BINARY}: run scripts/install_standins.sh"
    try:
        import cryptography  # noqa: F401
    except ImportError:
        return "the `cryptography` package is missing (needed for the test CA)"
    name = f"{NAME_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
    try:
        made = _ip("netns", "add", name, check=False)
        if made.returncode:
            return f"`ip netns add` refused: {made.stderr.strip()}"
        entered = _ip("netns", "exec", name, "true", check=False)
        if entered.returncode:
            return f"`ip netns exec` refused: {entered.stderr.strip()}"
    finally:
        _teardown(name)
    return None


def _write_certs(directory: Path) -> tuple[Path, Path, Path]:
    """A CA made for this run, and a server certificate it signs for HOSTS; returns (ca, cert, key) paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"bresnet test CA {secrets.token_hex(4)}")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    sans = [x509.DNSName(h) for h in (*HOSTS, "localhost")] + [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOSTS[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    os.chmod(paths[2], 0o600)
    return paths


# Run inside the namespace: waits for the fake's HTTPS (trusting only the run's CA), then creates the buckets.
_READY_AND_BUCKETS = textwrap.dedent("""
    import json, ssl, sys, time, urllib.error, urllib.request
    project, buckets, deadline = sys.argv[1], sys.argv[2:], time.time() + 30
    ctx = ssl.create_default_context()  # honours SSL_CERT_FILE: only the run's CA
    base = "https://www.googleapis.com/storage/v1/b"
    while True:
        try:
            urllib.request.urlopen(f"{base}?project={project}", context=ctx, timeout=2).read()
            break
        except (urllib.error.URLError, ConnectionError) as e:
            if time.time() > deadline or isinstance(getattr(e, "reason", None), ssl.SSLError):
                raise
            time.sleep(0.05)
    for bucket in buckets:
        req = urllib.request.Request(f"{base}?project={project}", data=json.dumps({"name": bucket}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        try:
            urllib.request.urlopen(req, context=ctx, timeout=10).read()
        except urllib.error.HTTPError as e:
            if e.code != 409:  # 409: exists already
                sys.exit(f"creating bucket {bucket!r}: HTTP {e.code}: {e.read()[:500]!r}")
""")

# -- the TLS front ----------------------------------------------------------------------------------------------
# TLS ends in this small front (asyncio, stdlib only), which forwards each request to the fake over plain HTTP,
# passing bodies through by their Content-Length or chunked framing and responses byte for byte, and mends
# three places where the clients and fake-gcs-server do not meet:
# 1. TF's libcurl client sends "Transfer-Encoding: identity" (with Content-Length: 0) on every empty-body POST
#    and PUT (tsl/platform/cloud/curl_http_request.cc: SetPostEmptyBody, SetPutEmptyBody): starting resumable
#    uploads, rewriteTo (rename, copy), upload status queries. Go's net/http server, so the fake, answers any
#    Transfer-Encoding but "chunked" with 501 "Unsupported transfer encoding" (nginx does the same). The front
#    drops that header, and adds X-Forwarded-Proto: https so the fake's resumable-upload URLs say https.
# 2. google-cloud-storage's batch requests (Beam's gcsio batches every copy, rename and delete) carry no
#    Content-ID on their parts; the fake skips such parts and answers an empty multipart ("Bad response: not
#    multi-part"). The front numbers the parts.
# 3. Beam's gcsio asks google.auth.default() for credentials and retries its failure with backoff (about 25 s
#    per process). GcsNetns.env points GOOGLE_APPLICATION_CREDENTIALS at an authorized_user file, whose
#    refresh goes to https://oauth2.googleapis.com/token: the front answers that host itself, with TOKEN.

def _header_value(headers: list[bytes], key: bytes) -> bytes | None:
    for line in headers:
        name, _, value = line.partition(b":")
        if name.strip().lower() == key:
            return value.strip()
    return None


def _number_batch_parts(body: bytes, content_type: bytes) -> bytes:
    """Gives each part of a multipart/mixed batch body a Content-ID header when it has none."""
    m = re.search(rb'boundary="?([^";]+)"?', content_type)
    if not m:
        return body
    delimiter = b"--" + m.group(1)
    pieces = body.split(delimiter)
    for i in range(1, len(pieces)):
        piece = pieces[i]
        if piece.startswith(b"--"):  # the closing delimiter
            continue
        newline = b"\r\n" if piece.startswith(b"\r\n") else b"\n"
        head = piece[len(newline):].split(newline + newline, 1)[0]
        if b"content-id:" not in head.lower():
            pieces[i] = newline + b"Content-ID: <bresnet-part-%d>" % i + piece
    return delimiter.join(pieces)


async def _copy_exactly(reader, writer, n: int) -> None:
    while n > 0:
        data = await reader.read(min(n, 1 << 16))
        if not data:
            raise ConnectionError("client closed mid-body")
        writer.write(data)
        await writer.drain()
        n -= len(data)


async def _pipe(reader, writer) -> None:
    try:
        while True:
            data = await reader.read(1 << 16)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            writer.close()
        except (ConnectionError, OSError):
            pass


async def _read_head(client) -> tuple[bytes, list[bytes]] | None:
    try:
        head = await client.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head[:-4].split(b"\r\n")
    return lines[0], [line for line in lines[1:] if line]


async def _answer_tokens(first, client, writer) -> None:
    """Plays https://oauth2.googleapis.com/token: every request gets a bearer token good for an hour."""
    body = json.dumps({"access_token": TOKEN, "expires_in": 3600, "token_type": "Bearer"}).encode()
    while first is not None:
        _, headers = first
        await client.readexactly(int(_header_value(headers, b"content-length") or 0))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
                     + body)
        await writer.drain()
        first = await _read_head(client)


async def _forward_requests(first, client, upstream) -> None:
    while first is not None:
        request_line, lines = first
        headers, length, chunked = [], 0, False
        for line in lines:
            name, _, value = line.partition(b":")
            key, value = name.strip().lower(), value.strip().lower()
            if key == b"transfer-encoding":
                if value == b"identity":
                    continue
                chunked = value.endswith(b"chunked")
            elif key == b"content-length":
                length = int(value)
            elif key == b"x-forwarded-proto":
                continue
            headers.append(line)
        headers.append(b"X-Forwarded-Proto: https")
        if request_line.startswith(b"POST /batch/") and not chunked:
            body = _number_batch_parts(await client.readexactly(length),
                                       _header_value(headers, b"content-type") or b"")
            headers = [h for h in headers if not h.lower().startswith(b"content-length:")]
            headers.append(b"Content-Length: %d" % len(body))
            upstream.write(b"\r\n".join([request_line, *headers]) + b"\r\n\r\n" + body)
        else:
            upstream.write(b"\r\n".join([request_line, *headers]) + b"\r\n\r\n")
            if chunked:
                while True:
                    size_line = await client.readuntil(b"\r\n")
                    upstream.write(size_line)
                    size = int(size_line.split(b";")[0].strip(), 16)
                    if size == 0:
                        while True:  # trailers, then the empty line
                            trailer = await client.readuntil(b"\r\n")
                            upstream.write(trailer)
                            if trailer == b"\r\n":
                                break
                        break
                    await _copy_exactly(client, upstream, size + 2)
            else:
                await _copy_exactly(client, upstream, length)
        await upstream.drain()
        first = await _read_head(client)


def _serve_tls_front(listen_port: int, upstream_port: int, cert: str, key: str) -> None:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["http/1.1"])
    errors = (ConnectionError, OSError, ValueError, asyncio.LimitOverrunError, asyncio.IncompleteReadError)

    async def handle(client, client_writer):
        try:
            first = await _read_head(client)
            if first is None:
                return
            host = (_header_value(first[1], b"host") or b"").split(b":")[0].lower()
            if host == b"oauth2.googleapis.com":
                await _answer_tokens(first, client, client_writer)
                return
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
        except errors:
            client_writer.close()
            return
        responses = asyncio.ensure_future(_pipe(up_reader, client_writer))
        try:
            await _forward_requests(first, client, up_writer)
        except errors:
            pass
        finally:
            try:
                up_writer.write_eof()
            except (ConnectionError, OSError, RuntimeError):
                pass
        await responses

    async def main():
        # Every address of the namespace (only its own loopback, unless the Kubernetes stand-in's pod network
        # bridges pods in: they reach storage.googleapis.com at the node's address, see pod_network.py).
        server = await asyncio.start_server(handle, "0.0.0.0", listen_port, ssl=ctx, limit=1 << 20)
        async with server:
            await server.serve_forever()

    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    asyncio.run(main())


def _q(part: str) -> str:
    return urllib.parse.quote(part, safe="")


_CLONE_NEWNET = 0x40000000


def _in_netns(name: str, fn):
    """fn() on a new thread that has entered network namespace ``name`` (setns affects that thread only)."""
    outcome: dict = {}

    def target():
        try:
            fd = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
            try:
                if ctypes.CDLL(None, use_errno=True).setns(fd, _CLONE_NEWNET) != 0:
                    errno = ctypes.get_errno()
                    raise OSError(errno, f"setns into {name}: {os.strerror(errno)}")
            finally:
                os.close(fd)
            outcome["value"] = fn()
        except BaseException as e:  # re-raised on the caller's thread
            outcome["error"] = e

    thread = threading.Thread(target=target, name=f"in-{name}", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


_live: dict[str, "GcsNetns"] = {}


@atexit.register
def _stop_all() -> None:
    for gcs in list(_live.values()):
        gcs.stop()


class GcsNetns:
    """A network namespace where https://storage.googleapis.com and https://www.googleapis.com are a GCS fake.

    ``with GcsNetns(workdir, buckets=["b"]) as gcs: gcs.run([sys.executable, "-c", code])``: the code sees
    gs://b through tf.io.gfile, google-cloud-storage and Beam alike. ``workdir`` holds the run's CA and
    certificate, credentials file, server log and (filesystem backend) the objects.
    """

    def __init__(self, workdir: str | os.PathLike, buckets: Sequence[str] = (), name: str | None = None,
                 backend: str = "memory"):
        if backend not in ("filesystem", "memory"):
            raise ValueError(f"backend must be 'filesystem' or 'memory', not {backend!r}")
        self.workdir = Path(workdir).resolve()
        self.buckets = list(buckets)
        self.name = name or f"{NAME_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        self.backend = backend
        self.root = self.workdir / "gcs"  # the filesystem backend's root: <root>/<bucket>/<object name>
        self.log_path = self.workdir / "gcs-server.log"
        self.ca_path = self.workdir / "tls" / "ca.pem"
        self._procs: list[subprocess.Popen] = []
        self._log = None

    def _server_argv(self) -> list[str]:
        """The GCS fake, serving plain HTTP on UPSTREAM_PORT of the namespace's loopback."""
        argv = [str(BINARY), "-scheme", "http", "-host", "127.0.0.1", "-port", str(UPSTREAM_PORT),
                "-backend", self.backend, "-public-host", "storage.googleapis.com",
                "-external-url", "https://storage.googleapis.com", "-log-level", "warn"]
        return argv + (["-filesystem-root", str(self.root)] if self.backend == "filesystem" else [])

    # -- life cycle -------------------------------------------------------------------------------------
    def start(self) -> "GcsNetns":
        reason = available()
        if reason:
            raise RuntimeError(f"GCS stand-in unavailable: {reason}")
        sweep_stale()
        (self.workdir / "gcloud").mkdir(parents=True, exist_ok=True)
        if self.backend == "filesystem":
            self.root.mkdir(parents=True, exist_ok=True)
        (self.workdir / "gcloud" / "adc.json").write_text(json.dumps({
            "type": "authorized_user", "client_id": "bresnet-test", "client_secret": "bresnet-test",
            "refresh_token": "bresnet-test"}))
        self.ca_path, cert, key = _write_certs(self.workdir / "tls")
        _live[self.name] = self
        try:
            _ip("netns", "add", self.name)
            _ip("-n", self.name, "link", "set", "lo", "up")
            etc = Path("/etc/netns") / self.name
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "hosts").write_text("127.0.0.1 localhost\n::1 localhost\n"
                                       + "".join(f"127.0.0.1 {h}\n" for h in HOSTS))
            self._log = open(self.log_path, "ab")
            for argv in (self._server_argv(),
                         [sys.executable, __file__, "--tls-front", "443", str(UPSTREAM_PORT), str(cert), str(key)]):
                self._procs.append(subprocess.Popen(
                    self.command(argv), stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                    start_new_session=True, env=self.full_env()))
            ready = self.run([sys.executable, "-c", _READY_AND_BUCKETS, PROJECT, *self.buckets],
                             capture_output=True, text=True, timeout=60)
            if ready.returncode or any(p.poll() is not None for p in self._procs):
                raise RuntimeError(f"the GCS fake did not come up in {self.name}: {ready.stderr[-2000:]}\n"
                                   f"server log: {self.log_tail()}")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stops the fake and its TLS front, kills whatever else still runs in the namespace, deletes it."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self._procs = []
        _teardown(self.name)
        if self._log is not None:
            self._log.close()
            self._log = None
        _live.pop(self.name, None)

    def __enter__(self) -> "GcsNetns":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    # -- running things inside ----------------------------------------------------------------------------
    @property
    def env(self) -> dict[str, str]:
        """The variables every process in the namespace needs (``run`` merges them over os.environ)."""
        ca = str(self.ca_path)
        return {
            "CURL_CA_BUNDLE": ca,          # TF's libcurl GCS client: trust the run's CA
            "SSL_CERT_FILE": ca,           # Python's ssl default context (urllib, google-auth's transports)
            "REQUESTS_CA_BUNDLE": ca,      # requests (google-cloud-storage, Beam's gcsio through it)
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": TOKEN,  # TF: bearer token without OAuth or the metadata server
            "NO_GCE_CHECK": "true",        # TF and google-auth: never probe the GCE metadata server
            # google-cloud-storage (components.gcs, Beam's gcsio): the endpoint, and anonymous credentials when the
            # caller passes none (components.gcs.client() passes AnonymousCredentials itself).
            "STORAGE_EMULATOR_HOST": "https://storage.googleapis.com",
            "GOOGLE_CLOUD_PROJECT": PROJECT,  # components.gcs.client() and bucket creation need a project
            "CLOUDSDK_CONFIG": str(self.workdir / "gcloud"),  # no user ADC file from ~/.config/gcloud
            # Application Default Credentials that need no Google: an authorized_user whose refresh the TLS front
            # answers. Beam's gcsio insists on ADC (else it retries google.auth.default() for ~25 s per process).
            "GOOGLE_APPLICATION_CREDENTIALS": str(self.workdir / "gcloud" / "adc.json"),
            # A failing call fails in seconds rather than after TF's default 10 retries with up to 32 s delays.
            "GCS_RETRY_CONFIG_INIT_DELAY_TIME_US": "100000",
            "GCS_RETRY_CONFIG_MAX_DELAY_TIME_US": "2000000",
            "GCS_RETRY_CONFIG_MAX_RETRIES": "5",
        }

    def command(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *map(str, argv)]

    def full_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        # No proxy: nothing in the namespace can reach one, and every request must go to the fake.
        env = {k: v for k, v in os.environ.items() if k.lower() not in _PROXY_VARIABLES}
        env.update(self.env)
        env.update(extra or {})
        return env

    def run(self, argv: Sequence[str], **kw) -> subprocess.CompletedProcess:
        """``subprocess.run`` of argv inside the namespace, with ``env`` merged over os.environ (and kw's env)."""
        kw["env"] = self.full_env(kw.get("env"))
        return subprocess.run(self.command(argv), **kw)

    # -- objects, from outside the namespace ----------------------------------------------------------------
    def _fake(self, method: str, path: str, body=None,
              headers: Mapping[str, str] | None = None) -> tuple[int, bytes]:
        """One request to the fake's plain HTTP port, made from a thread inside the namespace."""
        def request():
            conn = http.client.HTTPConnection("127.0.0.1", UPSTREAM_PORT, timeout=60)
            try:
                conn.request(method, path, body=body, headers=dict(headers or {}))
                response = conn.getresponse()
                return response.status, response.read()
            finally:
                conn.close()
        return _in_netns(self.name, request)

    def read_object(self, bucket: str, name: str) -> bytes:
        status, data = self._fake("GET", f"/download/storage/v1/b/{_q(bucket)}/o/{_q(name)}?alt=media")
        if status == 404:
            raise FileNotFoundError(f"gs://{bucket}/{name}")
        if status != 200:
            raise RuntimeError(f"reading gs://{bucket}/{name}: HTTP {status}: {data[:300]!r}")
        return data

    def list_objects(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object name in bucket under prefix (directory markers "dir/" included), sorted."""
        names, token = [], ""
        while True:
            query = urllib.parse.urlencode({"prefix": prefix, "pageToken": token, "maxResults": 1000})
            status, data = self._fake("GET", f"/storage/v1/b/{_q(bucket)}/o?{query}")
            if status == 404:
                raise FileNotFoundError(f"no bucket {bucket!r}")
            if status != 200:
                raise RuntimeError(f"listing gs://{bucket}/{prefix}: HTTP {status}: {data[:300]!r}")
            page = json.loads(data)
            names += [item["name"] for item in page.get("items", [])]
            token = page.get("nextPageToken", "")
            if not token:
                return sorted(names)

    def write_object(self, bucket: str, name: str, data: bytes) -> None:
        query = urllib.parse.urlencode({"uploadType": "media", "name": name})
        status, answer = self._fake("POST", f"/upload/storage/v1/b/{_q(bucket)}/o?{query}", body=data,
                                    headers={"Content-Type": "application/octet-stream"})
        if status != 200:
            raise RuntimeError(f"writing gs://{bucket}/{name}: HTTP {status}: {answer[:300]!r}")

    def upload_dir(self, local_dir: str | os.PathLike, gs_uri: str) -> list[str]:
        """Uploads every file under local_dir to gs_uri (gs://bucket/prefix); returns the object names."""
        if not gs_uri.startswith("gs://"):
            raise ValueError(f"not a gs:// URI: {gs_uri!r}")
        bucket, _, prefix = gs_uri[len("gs://"):].partition("/")
        prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        local_dir, names = Path(local_dir), []
        if not local_dir.is_dir():
            raise NotADirectoryError(str(local_dir))
        for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
            name = prefix + path.relative_to(local_dir).as_posix()
            self.write_object(bucket, name, path.read_bytes())
            names.append(name)
        return names


if __name__ == "__main__":  # the TLS front, run by GcsNetns.start inside the namespace
    import argparse
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tls-front", nargs=4, required=True,
                        metavar=("LISTEN_PORT", "UPSTREAM_PORT", "CERT", "KEY"))
    a = parser.parse_args().tls_front
    _serve_tls_front(int(a[0]), int(a[1]), a[2], a[3])
