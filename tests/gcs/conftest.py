"""A real GCS HTTP API on loopback (gcp-storage-emulator), started once for these tests."""
import os
import socket
import subprocess
import sys
import time

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def gcs_emulator():
    port = _free_port()
    exe = os.path.join(os.path.dirname(sys.executable), "gcp-storage-emulator")
    proc = subprocess.Popen([exe, "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory", "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("gcp-storage-emulator did not start")
    old = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
    try:
        yield os.environ["STORAGE_EMULATOR_HOST"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if old is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = old


@pytest.fixture
def bucket(gcs_emulator, request):
    from components import gcs
    name = "test-" + request.node.name.lower().replace("_", "-")[:40].strip("-")
    return gcs.client().create_bucket(name)


@pytest.fixture(scope="session")
def gcs_netns(tmp_path_factory):
    """fake-gcs-server in a network namespace of its own, where https://storage.googleapis.com and
    https://www.googleapis.com are the fake: TensorFlow's gs:// filesystem reaches it too, unlike the emulator
    above. Run code against it with ``gcs_netns.run([...])`` (tests/standins/gcs_netns.py). Bucket
    "bresnet-test" exists. Skipped where the stand-in cannot run (not root, no fake-gcs-server: run
    scripts/install_standins.sh), except under CI=true, where that is a failure."""
    from standins import gcs_netns as standin
    reason = standin.available()
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"GCS stand-in unavailable under CI: {reason}")
        pytest.skip(reason)
    with standin.GcsNetns(tmp_path_factory.mktemp("gcs_netns"), buckets=["bresnet-test"]) as gcs:
        yield gcs
