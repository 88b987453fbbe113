"""What the cluster launcher tests share (test_kubeflow_launcher.py, test_k8s_job_launcher.py,
test_vertex_launcher.py): a tiny training job, the options of a scripted replica, the records those replicas append
to $STATE_DIR/runs.jsonl, and process and polling checks."""
import dataclasses
import json
import os
import subprocess
import sys
import time

from components.trainer.config import TrainingConfig, TrainingJob


def tiny_job(tmp_path) -> TrainingJob:
    """Two workers, one step of 4x8x8 clips; its paths under ``tmp_path``."""
    config = TrainingConfig(labels=("a", "b"), clip_shape=(4, 8, 8, 3), workers=2, epochs=1, steps_per_epoch=1,
                            warmup_epochs=0.0)
    return TrainingJob(config=config, train_uri=str(tmp_path / "train"), eval_uri=str(tmp_path / "eval"),
                       transform_graph_uri=str(tmp_path / "tg"), serving_model_dir=str(tmp_path / "model"),
                       run_dir=str(tmp_path / "run"), scratch_dir=str(tmp_path / "local-scratch"))


def scripted_options(kubeconfig: str, tmp_path, command: list[str], image: str, plan: dict | None = None,
                     **overrides) -> dict:
    """Options of a Kubernetes launcher whose replicas run ``command`` (a scripted replica): fast polling, and the
    replica's PLAN and STATE_DIR (where it appends its runs: ``replica_runs``) in its env."""
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    options = {"image": image, "kubeconfig": kubeconfig, "poll_s": 0.1, "finish_grace_s": 10.0, "command": command,
               "env": {"PLAN": json.dumps(plan or {}), "STATE_DIR": str(state)}}
    options.update(overrides)
    return options


def with_config(job: TrainingJob, **config_changes) -> TrainingJob:
    return dataclasses.replace(job, config=dataclasses.replace(job.config, **config_changes))


def replica_runs(tmp_path) -> list[dict]:
    """One record per replica run so far, in the order they started."""
    path = tmp_path / "state" / "runs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of this process counts as dead
        return not os.waitpid(pid, os.WNOHANG)[0]
    except ChildProcessError:
        return True


def eventually(check, timeout: float = 10.0, what: str = "condition"):
    """``check()``'s first truthy value, polled every 50 ms; AssertionError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# A launcher in a process of its own, for the signal tests: it runs until the test signals it.
LAUNCH_SCRIPT = """
import logging, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
logging.basicConfig(level=logging.INFO)
from components.trainer.config import TrainingJob
from components.trainer.launcher import make_launcher
job = TrainingJob.from_json(open(sys.argv[1]).read())
make_launcher(sys.argv[2], sys.argv[3]).launch(job)
"""


def start_launcher(name: str, job: TrainingJob, options: dict, tmp_path, **popen) -> subprocess.Popen:
    """Launcher ``name`` with ``options`` launching ``job`` in a child process (stdout and stderr together)."""
    job_path = tmp_path / "job.json"
    job_path.write_text(job.to_json())
    return subprocess.Popen([sys.executable, "-c", LAUNCH_SCRIPT, str(job_path), name, json.dumps(options)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)
