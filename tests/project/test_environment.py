"""The set-up path, the lock file, the Docker image definition and the Keras decision agree with each other."""
import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _read(name):
    with open(os.path.join(ROOT, name)) as f:
        return f.read()


def test_lock_pins_every_package_exactly():
    lines = [l for l in _read("requirements.lock").splitlines() if l.strip() and not l.startswith("#")]
    assert len(lines) > 100
    loose = [l for l in lines if not re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[^=\s]+", l)]
    assert loose == []
    pins = dict(l.split("==") for l in lines)
    norm = {k.lower().replace("_", "-"): v for k, v in pins.items()}
    assert norm["tfx"] == "1.16.0"
    assert norm["tensorflow"] == "2.16.2"
    assert norm["tensorflow-transform"].startswith("1.16")
    assert norm["tensorflow-model-analysis"].startswith("0.47")
    assert norm["kfp"].startswith("2.")
    assert "dill" in norm and "apache-beam" in norm and "google-cloud-storage" in norm


def test_installed_versions_match_the_lock():
    from importlib import metadata
    lines = [l for l in _read("requirements.lock").splitlines() if "==" in l]
    mismatched = []
    for line in lines:
        name, version = line.split("==")
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            mismatched.append((name, version, None))
            continue
        if installed != version:
            mismatched.append((name, version, installed))
    assert mismatched == []


def test_dockerfile_installs_the_same_lock_and_project_as_setup():
    docker = _read("Dockerfile")
    setup = _read("scripts/setup.sh")
    assert re.search(r"^FROM python:3\.10[\w.\-]*", docker, re.M)
    assert "COPY requirements.lock" in docker
    assert re.search(r"pip install --no-deps -r requirements\.lock", docker)
    assert re.search(r"pip install .*--no-deps -r requirements\.lock", setup)
    # Same build tools (pip, setuptools, wheel) on both paths.
    tools = r"(?:pip|setuptools|wheel)==[\d.]+"
    assert re.findall(tools, docker) == re.findall(tools, setup) and len(re.findall(tools, setup)) == 3
    for package in ("bresnet", "components", "pipeline"):
        assert f"COPY {package} ./{package}" in docker
    assert "TF_USE_LEGACY_KERAS=1" in docker
    user = re.findall(r"^USER\s+(\S+)", docker, re.M)
    assert user and user[-1] not in ("root", "0")
    assert not re.search(r"(?i)(secret|password|token|credentials)\s*=", docker)


def test_dockerfile_carries_beams_boot_entrypoint_for_the_pinned_beam_and_python():
    """The same image serves Dataflow workers: Beam's boot from the SDK image of the locked Beam and our Python."""
    docker = _read("Dockerfile")
    beam = re.search(r"^FROM apache/beam_python(\d+\.\d+)_sdk:(\S+) AS (\S+)$", docker, re.M)
    assert beam, "no Beam SDK stage"
    python_minor, beam_version, stage = beam.groups()
    locked = re.search(r"^apache-beam==(\S+)$", _read("requirements.lock"), re.M).group(1)
    assert beam_version == locked
    base = re.findall(r"^FROM python:(\d+\.\d+)", docker, re.M)
    assert base == [python_minor]
    assert f"COPY --from={stage} /opt/apache/beam /opt/apache/beam" in docker
    assert re.findall(r"^ENTRYPOINT (.*)$", docker, re.M) == ['["/opt/apache/beam/boot"]']
    assert not re.search(r"^CMD ", docker, re.M)       # would become the boot's arguments


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or os.path.join(os.path.dirname(sys.executable), "hadolint")
    result = subprocess.run([hadolint, os.path.join(ROOT, "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_console_script_is_declared_and_installed():
    assert 'bresnet-pipeline = "pipeline.cli:main"' in _read("pyproject.toml")
    script = os.path.join(os.path.dirname(sys.executable), "bresnet-pipeline")
    assert os.path.exists(script)


def test_setup_fails_clearly_without_python310(tmp_path):
    # A copy of the repo's set-up script with no .venv and a PATH/pyenv that hold no Python 3.10.
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(os.path.join(ROOT, "scripts", "setup.sh"), repo / "scripts" / "setup.sh")
    (repo / "requirements.lock").write_text("")
    (repo / "pyproject.toml").write_text("")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run(["bash", str(repo / "scripts" / "setup.sh")], capture_output=True, text=True, env=env)
    if os.path.exists("/usr/bin/python3.10") or os.path.exists("/usr/local/bin/python3.10"):
        pytest.skip("this machine has a system Python 3.10")
    assert result.returncode == 1
    assert "Python 3.10 not found" in result.stderr


KERAS_PROBE = """
import os, sys
if sys.argv[1] == "tft-first":
    import tensorflow_transform  # flips TF_USE_LEGACY_KERAS when unset
import bresnet
from bresnet._keras import keras
import tensorflow as tf
print(keras.__name__, type(tf.keras.layers.Dense(1)).__module__.split('.')[0], os.environ["TF_USE_LEGACY_KERAS"])
"""


@pytest.mark.parametrize("order", ["tft-first", "model-first"])
def test_keras_mode_does_not_depend_on_import_order(order):
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    out = subprocess.run([sys.executable, "-c", KERAS_PROBE, order], capture_output=True, text=True, env=env,
                         cwd=ROOT, check=True).stdout.split()
    assert out == ["tf_keras", "tf_keras", "1"]
