"""The Vertex AI CustomJob launcher against the Vertex AI API stand-in (tests/standins/vertex_api.py).

The launcher's real ``aiplatform_v1.JobServiceClient`` (REST transport, http, anonymous credentials) talks to the
stand-in, which parses every body with aiplatform's own types and runs every replica as a real local process with
Vertex's TF_CONFIG and CLUSTER_SPEC. Most tests use a tiny Python replica (REPLICA below: records its run and
TF_CONFIG, follows a per-replica plan, exits with a code); one runs the real training worker as the chief pool and
the worker pool.
"""
import dataclasses
import datetime
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from google.api_core import exceptions as gexc
from google.auth.credentials import AnonymousCredentials
from google.cloud import aiplatform_v1
from google.cloud.aiplatform_v1.services.job_service.transports.rest import JobServiceRestTransport

from components.trainer.launcher import WorkerFailedError, make_launcher
from components.trainer.vertex_launcher import (VertexCustomJobLauncher, VertexJobTimeoutError, display_name,
                                                failed_replica, split_endpoint)
from launcher_test_tools import alive, eventually, replica_runs, start_launcher, tiny_job, with_config
from standins.vertex_api import VertexApiServer, validate_custom_job

ROOT = Path(__file__).resolve().parents[2]
PROJECT, NUMBER, REGION = "bresnet-test", "123456789012", "europe-west4"
IMAGE = "europe-west4-docker.pkg.dev/bresnet-test/bresnet/bresnet-tfx:1"
SERVICE_ACCOUNT = "trainer@bresnet-test.iam.gserviceaccount.com"

# A replica: what it does per replica ("workerpool0-0", "workerpool1-0", ...) comes from PLAN, per run of that replica
# (1, 2, ... over the whole test) with "runs" overrides; every run is appended to $STATE_DIR/runs.jsonl.
REPLICA = r"""
import json, os, signal, subprocess, sys, time
spec = json.loads(os.environ["CLUSTER_SPEC"])
task = "%s-%d" % (spec["task"]["type"], spec["task"]["index"])
plan = json.loads(os.environ.get("PLAN", "{}")).get(task, {})
state = os.environ["STATE_DIR"]
with open(os.path.join(state, "runs.jsonl"), "a") as f:
    f.write(json.dumps({"task": task, "pid": os.getpid(), "attempt": os.environ.get("TRAINER_ATTEMPT"),
                        "job": sys.argv[1], "tf_config": json.loads(os.environ["TF_CONFIG"])}) + "\n")
runs = sum(1 for line in open(os.path.join(state, "runs.jsonl")) if json.loads(line)["task"] == task)
step = {**plan, **plan.get("runs", {}).get(str(runs), {})}
if step.get("ignore_term"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)   # inherited by the child: only SIGKILL ends them
if step.get("child"):
    child = subprocess.Popen(["sleep", "120"])
    open(os.path.join(state, task + ".child"), "w").write(str(child.pid))
print("replica %s run %d" % (task, runs), flush=True)
time.sleep(step.get("sleep", 0))
sys.exit(step.get("exit", 0))
"""
COMMAND = ["python", "-c", REPLICA, "{job}"]


@pytest.fixture
def vertex(tmp_path):
    with VertexApiServer(str(tmp_path / "vertex"), termination_grace_s=1.0) as server:
        yield server


@pytest.fixture
def job(tmp_path):
    return tiny_job(tmp_path)


def _options(vertex, tmp_path, plan=None, **overrides):
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    options = {"project": PROJECT, "region": REGION, "image": IMAGE, "api_endpoint": vertex.endpoint, "poll_s": 0.1,
               "cancel_wait_s": 15.0, "command": COMMAND,
               "env": {"PLAN": json.dumps(plan or {}), "STATE_DIR": str(state)}}
    options.update(overrides)
    return options


def _launcher(vertex, tmp_path, plan=None, **overrides):
    return VertexCustomJobLauncher(**_options(vertex, tmp_path, plan, **overrides))


def _no_replicas(vertex, tmp_path, extra_pids=()):
    pids = [r["pid"] for r in replica_runs(tmp_path)] + list(extra_pids)
    eventually(lambda: not vertex.replica_pids() and not any(alive(p) for p in pids), timeout=10,
                what="every replica process gone")


def _client(vertex):
    transport = JobServiceRestTransport(host=vertex.endpoint.split("://", 1)[1], credentials=AnonymousCredentials(),
                                        url_scheme="http")
    return aiplatform_v1.JobServiceClient(transport=transport)


def _tiny_job(command, **pool0):
    pool = aiplatform_v1.WorkerPoolSpec(
        machine_spec=aiplatform_v1.MachineSpec(machine_type="n1-standard-4"), replica_count=1,
        container_spec=aiplatform_v1.ContainerSpec(image_uri=IMAGE, command=command))
    for key, value in pool0.items():
        setattr(pool, key, value)
    return aiplatform_v1.CustomJob(display_name="tiny", job_spec=aiplatform_v1.CustomJobSpec(worker_pool_specs=[pool]))


# ---- the CustomJob ---------------------------------------------------------------------------------------------

def test_custom_job_sent_is_what_aiplatform_types_parse(vertex, tmp_path, job):
    """Pools, replica counts, machine, accelerators, image, command, env and service account, as the stand-in parsed
    them with aiplatform's types; the replicas' TF_CONFIG in Vertex's form."""
    launcher = _launcher(vertex, tmp_path, {"workerpool0-0": {"sleep": 1.0}}, machine_type="n1-standard-16",
                         accelerator_type="NVIDIA_TESLA_T4", accelerator_count=2, service_account=SERVICE_ACCOUNT,
                         timeout_s=3600)
    result = launcher.launch(with_config(job, workers=3))
    assert result.attempts == 1 and result.failures == ()
    (create,) = [r for r in vertex.requests() if r["method"] == "POST"]
    assert create["path"] == f"/v1/projects/{PROJECT}/locations/{REGION}/customJobs" and create["code"] == 200
    sent = aiplatform_v1.CustomJob.from_json(json.dumps(create["body"]))   # aiplatform's types, unknown fields fail
    assert re.fullmatch(r"bresnet-[0-9a-f]{6}-[0-9a-f]{6}-a0", sent.display_name)
    spec = sent.job_spec
    assert [p.replica_count for p in spec.worker_pool_specs] == [1, 2]
    assert spec.service_account == SERVICE_ACCOUNT
    assert spec.scheduling.timeout == datetime.timedelta(hours=1)
    job_uri = job.run_dir + "/scratch/job.json"      # where every replica can read it
    for pool in spec.worker_pool_specs:
        assert pool.machine_spec.machine_type == "n1-standard-16"
        assert pool.machine_spec.accelerator_type == aiplatform_v1.AcceleratorType.NVIDIA_TESLA_T4
        assert pool.machine_spec.accelerator_count == 2
        assert pool.container_spec.image_uri == IMAGE
        assert list(pool.container_spec.command) == ["python", "-c", REPLICA, job_uri]
        env = {e.name: e.value for e in pool.container_spec.env}
        assert env["TF_USE_LEGACY_KERAS"] == "1" and env["TRAINER_ATTEMPT"] == "0"
        assert env["PYTHONUNBUFFERED"] == "1" and set(env) == {"TF_USE_LEGACY_KERAS", "TRAINER_ATTEMPT",
                                                               "PYTHONUNBUFFERED", "PLAN", "STATE_DIR"}
    # The job's name carries the project NUMBER, as Vertex answers; the launcher never rebuilt it.
    (served,) = vertex.jobs()
    assert re.fullmatch(rf"projects/{NUMBER}/locations/{REGION}/customJobs/\d+", served["name"])
    assert vertex.states(served["name"]) == ["JOB_STATE_QUEUED", "JOB_STATE_PENDING", "JOB_STATE_RUNNING",
                                             "JOB_STATE_SUCCEEDED"]
    assert served["startTime"] and served["endTime"] and "error" not in served
    (record_path,) = result.worker_logs
    record = json.loads(Path(record_path).read_text())
    assert record["name"] == served["name"] and record["state"] == "JOB_STATE_SUCCEEDED"
    assert f'resource.labels.job_id="{served["name"].rsplit("/", 1)[1]}"' in record["logs"]
    # Vertex's TF_CONFIG: chief = pool 0, worker = pool 1, plus the documented extra keys.
    runs = {r["task"]: r for r in replica_runs(tmp_path)}
    assert sorted(runs) == ["workerpool0-0", "workerpool1-0", "workerpool1-1"]
    assert {r["job"] for r in runs.values()} == {job_uri}
    addresses = {r["name"]: r["address"] for r in vertex.replicas(served["name"])}
    tf_config = runs["workerpool1-1"]["tf_config"]
    assert tf_config["cluster"] == {"chief": [addresses["workerpool0-0"]],
                                    "worker": [addresses["workerpool1-0"], addresses["workerpool1-1"]]}
    assert tf_config["task"] == {"type": "worker", "index": 1} and tf_config["environment"] == "cloud"
    assert json.loads(tf_config["job"])["worker_pool_specs"][1]["replica_count"] == "2"
    assert runs["workerpool0-0"]["tf_config"]["task"] == {"type": "chief", "index": 0}
    _no_replicas(vertex, tmp_path)


def test_default_command_runs_the_worker_module_and_validates():
    launcher = VertexCustomJobLauncher(project=PROJECT, region=REGION, image=IMAGE)
    custom_job = launcher.build_custom_job("n", "gs://b/run/scratch/job.json", workers=1, attempt=2)
    (pool,) = custom_job.job_spec.worker_pool_specs        # one worker: the chief pool only
    assert list(pool.container_spec.command) == ["python", "-m", "components.trainer.worker", "--job",
                                                 "gs://b/run/scratch/job.json"]
    assert {e.name: e.value for e in pool.container_spec.env} == {
        "TF_USE_LEGACY_KERAS": "1", "TRAINER_ATTEMPT": "2", "PYTHONUNBUFFERED": "1"}
    assert pool.machine_spec.machine_type == "n1-standard-8" and pool.machine_spec.accelerator_count == 0
    assert custom_job.job_spec.scheduling.timeout == datetime.timedelta(hours=6)
    assert validate_custom_job(aiplatform_v1.CustomJob.pb(custom_job)) == []
    assert (launcher.url_scheme, launcher.api_host) == ("https", f"{REGION}-aiplatform.googleapis.com")


# ---- the stand-in speaks Vertex ----------------------------------------------------------------------------------

def test_stand_in_answers_like_the_rest_api(vertex):
    client = _client(vertex)
    parent = f"projects/{PROJECT}/locations/{REGION}"
    url = f"{vertex.endpoint}/v1/{parent}/customJobs"
    # Unknown fields are refused, in Google's JSON error shape.
    body = json.loads(aiplatform_v1.CustomJob.to_json(_tiny_job(["true"])))
    response = requests.post(url, json={**body, "bogus": 1}, timeout=10)
    error = response.json()["error"]
    assert response.status_code == 400 and error["status"] == "INVALID_ARGUMENT" and error["code"] == 400
    assert "bogus" in error["message"]
    # Field errors: the client raises BadRequest with Vertex's "List of found errors" message.
    with pytest.raises(gexc.BadRequest, match=r"worker_pool_specs\[0\]\.container_spec\.image_uri"):
        client.create_custom_job(parent=parent, custom_job=_tiny_job([], container_spec=aiplatform_v1.ContainerSpec(
            command=["true"])))
    with pytest.raises(gexc.BadRequest, match="exactly one replica"):
        client.create_custom_job(parent=parent, custom_job=_tiny_job(["true"], replica_count=2))
    with pytest.raises(gexc.Forbidden):   # 403 PERMISSION_DENIED
        client.create_custom_job(parent=f"projects/elsewhere/locations/{REGION}", custom_job=_tiny_job(["true"]))
    with pytest.raises(gexc.NotFound):
        client.get_custom_job(name=f"{parent}/customJobs/1")
    # A job that succeeds: named with the project number, readable by the project id too.
    created = client.create_custom_job(parent=parent, custom_job=_tiny_job(["python", "-c", "pass"]))
    assert created.name.startswith(f"projects/{NUMBER}/") and created.state.name == "JOB_STATE_QUEUED"
    by_id = f"{parent}/customJobs/{created.name.rsplit('/', 1)[1]}"
    done = eventually(lambda: (lambda j: j.state.name == "JOB_STATE_SUCCEEDED" and j)(client.get_custom_job(
        name=by_id)), what="SUCCEEDED")
    assert done.start_time and done.end_time >= done.start_time
    # The transport asks for integer enums; without that, names.
    assert requests.get(f"{vertex.endpoint}/v1/{by_id}?$alt=json;enum-encoding=int", timeout=10).json()["state"] == 4
    assert requests.get(f"{vertex.endpoint}/v1/{by_id}", timeout=10).json()["state"] == "JOB_STATE_SUCCEEDED"
    # Cancelling a finished job is a failed precondition.
    with pytest.raises(gexc.BadRequest) as info:
        client.cancel_custom_job(name=by_id)
    assert info.value.response.json()["error"]["status"] == "FAILED_PRECONDITION"
    methods = [(r["method"], r["path"].rsplit("/", 1)[-1], r["code"]) for r in vertex.requests()]
    assert methods[0] == ("POST", "customJobs", 400) and methods[-1][1:] == (f"{created.name.rsplit('/', 1)[1]}"
                                                                             ":cancel", 400)
    # Stopping the server kills what it started.
    client.create_custom_job(parent=parent, custom_job=_tiny_job(["python", "-c", "import time; time.sleep(60)"]))
    pids = eventually(lambda: list(vertex.replica_pids().values()), what="a running replica")
    vertex.stop()
    assert not any(alive(p) for p in pids)


# ---- the launcher -------------------------------------------------------------------------------------------

def test_failed_replica_fails_the_job_with_the_pools_message(tmp_path, job):
    # Vertex sets a failed job's error after its state: the launcher waits for the message.
    with VertexApiServer(str(tmp_path / "vertex"), termination_grace_s=1.0, error_delay_s=0.5) as vertex:
        plan = {"workerpool1-0": {"exit": 3}, "workerpool0-0": {"sleep": 30}}
        with pytest.raises(WorkerFailedError) as info:
            _launcher(vertex, tmp_path, plan).launch(job)
        error = info.value
        assert (error.worker_index, error.exit_code) == (1, 3)     # workerpool1-0 is our worker 1 (chief is 0)
        assert "JOB_STATE_FAILED: The replica workerpool1-0 exited with a non-zero status of 3" in error.log_tail
        assert "resource.type=\"ml_job\"" in str(error)
        (served,) = vertex.jobs()
        assert served["state"] == "JOB_STATE_FAILED" and served["error"]["code"] == 3
        assert not [r for r in vertex.requests() if r["path"].endswith(":cancel")]   # it had ended: nothing to cancel
        _no_replicas(vertex, tmp_path)


def test_a_restart_is_a_new_custom_job_with_the_next_attempt(vertex, tmp_path, job):
    plan = {"workerpool1-0": {"runs": {"1": {"exit": 3}}, "sleep": 0.2},
            "workerpool0-0": {"runs": {"1": {"sleep": 30}}, "sleep": 1.0}}
    result = _launcher(vertex, tmp_path, plan).launch(with_config(job, max_restarts=1))
    assert result.attempts == 2 and (result.failures[0].worker_index, result.failures[0].exit_code) == (1, 3)
    assert [j["state"] for j in vertex.jobs()] == ["JOB_STATE_FAILED", "JOB_STATE_SUCCEEDED"]
    assert [j["displayName"][-3:] for j in vertex.jobs()] == ["-a0", "-a1"]
    assert sorted((r["task"], r["attempt"]) for r in replica_runs(tmp_path)) == [
        ("workerpool0-0", "0"), ("workerpool0-0", "1"), ("workerpool1-0", "0"), ("workerpool1-0", "1")]
    _no_replicas(vertex, tmp_path)


def test_transient_exit_codes_are_retried_by_vertex_itself(vertex, tmp_path, job):
    """SIGABRT/SIGSEGV exits: Vertex restarts the whole job (same addresses), not this launcher."""
    plan = {"workerpool1-0": {"runs": {"1": {"exit": 134}}, "sleep": 0.2}, "workerpool0-0": {"sleep": 1.5}}
    result = _launcher(vertex, tmp_path, plan).launch(with_config(job, max_restarts=0))
    assert result.attempts == 1
    (served,) = vertex.jobs()
    replicas = vertex.replicas(served["name"])
    assert [[run["exit_code"] for run in r["runs"]] for r in replicas] == [[137, 0], [134, 0]]
    assert [r["attempt"] for r in replica_runs(tmp_path)] == ["0"] * 4
    _no_replicas(vertex, tmp_path)


def test_scheduling_timeout_is_not_restarted(vertex, tmp_path, job):
    plan = {"workerpool0-0": {"sleep": 60}, "workerpool1-0": {"sleep": 60}}
    with pytest.raises(VertexJobTimeoutError, match="scheduling.timeout"):
        _launcher(vertex, tmp_path, plan, timeout_s=1).launch(with_config(job, max_restarts=2))
    assert len(vertex.jobs()) == 1 and vertex.jobs()[0]["error"]["code"] == 4
    _no_replicas(vertex, tmp_path)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_termination_signal_cancels_the_job_and_leaves_no_replica(vertex, tmp_path, job, sig):
    # The chief ignores SIGTERM (and so does its child): the cancel ends them with SIGKILL after the grace period.
    plan = {"workerpool0-0": {"sleep": 120, "ignore_term": True, "child": True}, "workerpool1-0": {"sleep": 120}}
    proc = start_launcher("vertex", job, _options(vertex, tmp_path, plan), tmp_path, cwd=ROOT)
    child_file = tmp_path / "state" / "workerpool0-0.child"
    try:
        eventually(lambda: len(vertex.replica_pids()) == 2 and child_file.exists() and child_file.read_text(),
                    timeout=60, what="2 running replicas")
        child = int(child_file.read_text())
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "cancelled CustomJob" in out, out
    assert proc.returncode == -sig, out    # as the signal's default action would, after the cleanup
    (served,) = vertex.jobs()
    assert served["state"] == "JOB_STATE_CANCELLED" and served["error"]["code"] == 1
    assert vertex.states(served["name"])[-2:] == ["JOB_STATE_CANCELLING", "JOB_STATE_CANCELLED"]
    cancels = [r for r in vertex.requests() if r["path"].endswith(":cancel")]
    assert [(r["method"], r["path"], r["code"]) for r in cancels] == [
        ("POST", f"/v1/{served['name']}:cancel", 200)]
    _no_replicas(vertex, tmp_path, extra_pids=[child])


# ---- options -----------------------------------------------------------------------------------------------

BASE = {"project": PROJECT, "region": REGION, "image": IMAGE}


@pytest.mark.parametrize("change, option", [
    ({"project": ""}, "project"), ({"project": "Has Spaces"}, "project"), ({"region": "europe"}, "region"),
    ({"image": ""}, "image"), ({"machine_type": ""}, "machine_type"),
    ({"accelerator_type": "NVIDIA_TESLA_X1"}, "accelerator_type"), ({"accelerator_count": -1}, "accelerator_count"),
    ({"accelerator_count": 1}, "accelerator_type"), ({"accelerator_type": "NVIDIA_L4"}, "accelerator_type"),
    ({"service_account": "trainer"}, "service_account"), ({"timeout_s": 0}, "timeout_s"), ({"poll_s": -1}, "poll_s"),
    ({"cancel_wait_s": "10"}, "cancel_wait_s"), ({"api_endpoint": "ftp://x/y"}, "api_endpoint"),
    ({"display_name_prefix": ""}, "display_name_prefix"), ({"command": "python -m x"}, "command"),
    ({"env": {"A": 1}}, "env"), ({"env": {"TF_CONFIG": "{}"}}, "env"), ({"zone": "a"}, "zone"),
])
def test_bad_options_are_refused_naming_the_option(change, option):
    with pytest.raises(ValueError, match=option):
        make_launcher("vertex", {**BASE, **change})


def test_options_are_json_and_the_backends_do_not_import_each_other():
    with pytest.raises(ValueError, match="project"):
        make_launcher("vertex", {"region": REGION, "image": IMAGE})
    options = {**BASE, "machine_type": "a2-highgpu-1g", "accelerator_type": "NVIDIA_TESLA_A100",
               "accelerator_count": 1, "service_account": SERVICE_ACCOUNT, "timeout_s": None, "poll_s": 30,
               "cancel_wait_s": 20, "api_endpoint": "http://127.0.0.1:8080", "display_name_prefix": "bres",
               "command": ["python", "-m", "x", "{job}"], "env": {"A": "1"}}
    launcher = make_launcher("vertex", json.dumps(options))
    assert isinstance(launcher, VertexCustomJobLauncher) and launcher.timeout_s is None
    assert (launcher.url_scheme, launcher.api_host) == ("http", "127.0.0.1:8080")
    assert split_endpoint(f"{REGION}-aiplatform.googleapis.com") == ("https", f"{REGION}-aiplatform.googleapis.com")
    assert failed_replica("The replica workerpool1-2 exited with a non-zero status of 17. Termination reason: "
                          "Error.") == (3, 17)
    assert failed_replica("The replica workerpool0-0 exited with a non-zero status of 1.") == (0, 1)
    assert failed_replica("Internal error occurred for the current attempt.") == (-1, -1)
    assert re.fullmatch(r"p-[0-9a-f]{6}-abcdef-a3", display_name("p", "gs://b/run", 3, token="abcdef"))
    probe = ("import sys, components.trainer.launcher, components.trainer.registry, "
             "components.trainer.kubeflow_launcher; assert 'components.trainer.vertex_launcher' not in sys.modules; "
             "import components.trainer.vertex_launcher as v; "
             "assert 'google.cloud.aiplatform_v1' not in sys.modules, 'aiplatform is imported only when used'; "
             "print(v.VertexCustomJobLauncher.name)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == "vertex", out.stderr


# ---- the real worker ----------------------------------------------------------------------------------------

def test_real_workers_train_as_the_chief_and_worker_pools(clip_data, tmp_path):
    """components.trainer.worker as workerpool0-0 and workerpool1-0: real MultiWorkerMirroredStrategy over Vertex's
    TF_CONFIG from the stand-in, 1 epoch of 2 steps, the chief's serving export. The network is
    tests/trainer/tiny_model.py (the image, i.e. the replicas' PYTHONPATH, has it): this is about the launch."""
    from trainer_test_data import training_config, training_job

    job = dataclasses.replace(
        training_job(clip_data, tmp_path, training_config(workers=2, epochs=1, steps_per_epoch=2, eval_steps=0,
                                                          batch_size_per_worker=2, warmup_epochs=0.0)),
        model_builder="tiny_model:build_tiny_classifier")
    pythonpath = [str(ROOT), str(Path(__file__).parent), os.environ.get("PYTHONPATH")]
    image_env = {"PYTHONPATH": os.pathsep.join(filter(None, pythonpath))}
    with VertexApiServer(str(tmp_path / "vertex"), env=image_env, cwd=str(ROOT)) as vertex:
        launcher = VertexCustomJobLauncher(project=PROJECT, region=REGION, image=IMAGE, api_endpoint=vertex.endpoint,
                                           poll_s=0.5, timeout_s=600)
        result = launcher.launch(job)
        (served,) = vertex.jobs()
        chief, worker = vertex.replicas(served["name"])
    assert served["state"] == "JOB_STATE_SUCCEEDED"
    assert result.attempts == 1 and [e["epoch"] for e in result.history["epochs"]] == [1]
    assert os.path.isfile(os.path.join(job.serving_model_dir, "saved_model.pb"))
    # The replicas ran with Vertex's TF_CONFIG (chief + worker) and CLUSTER_SPEC (workerpool0/1) ...
    for replica, task_type in ((chief, "chief"), (worker, "worker")):
        tf_config = json.loads(replica["env"]["TF_CONFIG"])
        assert tf_config["cluster"] == {"chief": [chief["address"]], "worker": [worker["address"]]}
        assert tf_config["task"] == {"type": task_type, "index": 0} and tf_config["environment"] == "cloud"
        cluster_spec = json.loads(replica["env"]["CLUSTER_SPEC"])
        assert cluster_spec["cluster"] == {"workerpool0": [chief["address"]], "workerpool1": [worker["address"]]}
        assert cluster_spec["task"] == {"type": replica["name"].split("-")[0], "index": 0}
        assert json.loads(tf_config["job"])["worker_pool_specs"][0]["container_spec"]["image_uri"] == IMAGE
    # ... and trained with it: the chief knew it was the chief, both were in sync.
    chief_log, worker_log = Path(chief["log_path"]).read_text(), Path(worker["log_path"]).read_text()
    assert "worker 0 of 2 (chief)" in chief_log and "2 replicas in sync" in chief_log, chief_log[-3000:]
    assert "worker 1 of 2 (non-chief)" in worker_log, worker_log[-3000:]


def test_replica_devices_name_the_gpus_compute_capability_and_tpus_are_refused():
    from components.trainer.precision import ReplicaDevices
    from components.trainer.vertex_launcher import GPU_COMPUTE_CAPABILITY
    base = {"project": "my-proj", "region": "us-central1", "image": "img"}
    assert make_launcher("vertex", base).replica_devices() == ReplicaDevices(gpus=0)
    t4 = make_launcher("vertex", {**base, "accelerator_type": "NVIDIA_TESLA_T4", "accelerator_count": 2})
    assert t4.replica_devices() == ReplicaDevices(gpus=2, compute_capability=(7, 5))
    from google.cloud import aiplatform_v1
    gpus = {a.name for a in aiplatform_v1.AcceleratorType if a.name.startswith("NVIDIA")}
    assert gpus == set(GPU_COMPUTE_CAPABILITY), gpus ^ set(GPU_COMPUTE_CAPABILITY)   # every GPU type has its entry
    with pytest.raises(ValueError, match="TPU"):
        make_launcher("vertex", {**base, "accelerator_type": "TPU_V3", "accelerator_count": 8})
