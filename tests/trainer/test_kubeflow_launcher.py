"""The Kubeflow TFJob launcher against the Kubernetes API stand-in (pipeline/kfp_local/kube_api.py).

The launcher's real kubernetes client talks HTTP to the stand-in through an ordinary kubeconfig; the stand-in
reconciles TFJobs like the Training Operator and runs every replica as a real local process. Most tests use a
tiny Python replica (REPLICA below: prints its TF_CONFIG, follows a per-task plan, exits with a code); one runs
the real training worker as Chief + Worker. The manifest is also checked with the kubeflow-training SDK's models.
"""
import dataclasses
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config

from components.trainer.kubeflow_launcher import KubeflowTFJobLauncher, TFJobTimeoutError, job_state, tfjob_name
from components.trainer.kubernetes_pods import ReplicaPendingError, backoff_limit, resolve_namespace
from components.trainer.launcher import WorkerFailedError, make_launcher
from pipeline.kfp_local.kube_api import KubeApiServer
from launcher_test_tools import (alive, eventually, replica_runs, scripted_options, start_launcher, tiny_job,
                                 with_config)

ROOT = Path(__file__).resolve().parents[2]
NS = "kubeflow-user"
IMAGE = "registry.example/bresnet-tfx:1"

# A replica: what it does per task ("chief-0", "worker-0", ...) comes from PLAN, per run of that task (1, 2, ...)
# with "runs" overrides; every run is appended to $STATE_DIR/runs.jsonl.
REPLICA = r"""
import json, os, subprocess, sys, time
rtype, index = os.environ["HOSTNAME"].rsplit("-", 2)[1:]  # pod <job>-<type>-<index>; TF_CONFIG says the same
task = "%s-%s" % (rtype, index)
plan = json.loads(os.environ.get("PLAN", "{}")).get(task, {})
state = os.environ["STATE_DIR"]
with open(os.path.join(state, "runs.jsonl"), "a") as f:
    f.write(json.dumps({"task": task, "pid": os.getpid(), "pod": os.environ.get("HOSTNAME"),
                        "attempt": os.environ.get("TRAINER_ATTEMPT"), "job": sys.argv[1]}) + "\n")
runs = sum(1 for line in open(os.path.join(state, "runs.jsonl")) if json.loads(line)["task"] == task)
step = {**plan, **plan.get("runs", {}).get(str(runs), {})}
print("replica %s run %d TF_CONFIG=%s" % (task, runs, os.environ.get("TF_CONFIG")), flush=True)
if step.get("child"):
    child = subprocess.Popen(["sleep", "120"])
    open(os.path.join(state, task + ".child"), "w").write(str(child.pid))
time.sleep(step.get("sleep", 0))
print("replica %s exiting with %d" % (task, step.get("exit", 0)), flush=True)
sys.exit(step.get("exit", 0))
"""
COMMAND = ["python", "-c", REPLICA, "{job}"]


@pytest.fixture
def api(tmp_path):
    with KubeApiServer(str(tmp_path / "kube"), namespace=NS, crash_loop_backoff_s=0.3) as server:
        yield server


@pytest.fixture
def job(tmp_path):
    return tiny_job(tmp_path)


def _options(api, tmp_path, plan=None, **overrides):
    return scripted_options(api.kubeconfig, tmp_path, COMMAND, IMAGE, plan, **overrides)


def _launcher(api, tmp_path, plan=None, **overrides):
    return KubeflowTFJobLauncher(**_options(api, tmp_path, plan, **overrides))


def _no_tfjobs(api):
    """The launcher deletes its TFJob in the foreground: it is gone once its pods are (a moment later)."""
    eventually(lambda: api.tfjobs() == [], timeout=10, what="the TFJob to be gone")


def _apis(api):
    api_client = config.new_client_from_config(config_file=api.kubeconfig)
    return client.CustomObjectsApi(api_client), client.CoreV1Api(api_client)


def _tfjob(name, replicas, **spec):
    return {"apiVersion": "kubeflow.org/v1", "kind": "TFJob", "metadata": {"name": name},
            "spec": {"tfReplicaSpecs": replicas, "runPolicy": {"cleanPodPolicy": "None"}, **spec}}


def _replica(tmp_path, n=1, policy="Never", plan=None, **pod_spec):
    (tmp_path / "state").mkdir(exist_ok=True)
    env = [{"name": "PLAN", "value": json.dumps(plan or {})}, {"name": "STATE_DIR", "value": str(tmp_path / "state")}]
    return {"replicas": n, "restartPolicy": policy, "template": {"spec": {"containers": [
        {"name": "tensorflow", "image": IMAGE, "command": ["python", "-c", REPLICA, "x"], "env": env}], **pod_spec}}}


class _Response:
    def __init__(self, body):
        self.data = json.dumps(body)


# ---- the manifest -------------------------------------------------------------------------------------------

def test_manifest_validates_against_the_training_operator_models(job):
    from kubeflow.training.api_client import ApiClient

    launcher = KubeflowTFJobLauncher(image=IMAGE, namespace="ml", timeout_s=3600, node_selector={"pool": "train"},
                                     tolerations=[{"key": "ml", "operator": "Exists", "effect": "NoSchedule"}])
    body = ApiClient().sanitize_for_serialization(
        launcher.build_tfjob("t", "gs://b/job.json", workers=3, attempt=1, max_restarts=2))
    tfjob = ApiClient().deserialize(_Response(body), "KubeflowOrgV1TFJob")  # the SDK's own schema models
    assert tfjob.api_version == "kubeflow.org/v1" and tfjob.kind == "TFJob" and tfjob.metadata.namespace == "ml"
    specs = tfjob.spec.tf_replica_specs
    assert sorted(specs) == ["Chief", "Worker"]
    assert specs["Chief"].replicas == 1 and specs["Worker"].replicas == 2
    run_policy = tfjob.spec.run_policy
    assert (run_policy.backoff_limit, run_policy.active_deadline_seconds) == (7, 3600)  # 2 restarts x 3 workers + 1
    assert run_policy.clean_pod_policy == "None"
    for spec in specs.values():
        assert spec.restart_policy == "OnFailure"
        assert spec.template.metadata.annotations == {"sidecar.istio.io/inject": "false"}
        assert spec.template.spec.node_selector == {"pool": "train"}
        assert spec.template.spec.tolerations[0].key == "ml"
        (container,) = spec.template.spec.containers
        assert container.name == "tensorflow" and container.image == IMAGE
        assert container.command == ["python", "-m", "components.trainer.worker", "--job", "gs://b/job.json"]
        env = {e.name: e.value for e in container.env}
        assert env["TF_USE_LEGACY_KERAS"] == "1" and env["TRAINER_ATTEMPT"] == "1"
        assert container.resources.requests == {"cpu": "4", "memory": "16Gi"}
    # A single worker is just a Chief; no restarts allowed: Never, and no backoffLimit (see backoff_limit).
    single = ApiClient().sanitize_for_serialization(launcher.build_tfjob("t", "j", workers=1, attempt=0))
    assert sorted(single["spec"]["tfReplicaSpecs"]) == ["Chief"]
    assert single["spec"]["tfReplicaSpecs"]["Chief"]["restartPolicy"] == "Never"
    assert "backoffLimit" not in single["spec"]["runPolicy"]
    assert backoff_limit("ExitCode", 1, 4) == 5 and backoff_limit("OnFailure", 0, 4) == 0
    assert backoff_limit("Never", 3, 4) is None


def test_options_are_json_validated_and_the_backends_do_not_import_each_other():
    options = {"image": "img:1", "namespace": None, "worker_cpu": "2", "worker_memory": "8Gi", "worker_gpu": 1,
               "node_selector": {"a": "b"}, "tolerations": [{"key": "k", "operator": "Exists"}],
               "service_account": "sa", "restart_policy": "ExitCode", "timeout_s": 60, "pending_timeout_s": 30,
               "poll_s": 1, "finish_grace_s": 5, "kubeconfig": None, "context": None, "name_prefix": "bres",
               "command": ["python", "-m", "x", "{job}"], "env": {"A": "1"}}
    launcher = make_launcher("kubeflow", json.dumps(options))
    assert isinstance(launcher, KubeflowTFJobLauncher) and launcher.restart_policy == "ExitCode"
    for bad in ({"image": ""}, {"image": "i", "restart_policy": "Always"}, {"image": "i", "timeout_s": 0},
                {"image": "i", "name_prefix": "Bad_Prefix"}, {"image": "i", "tolerations": [{"nope": 1}]}):
        with pytest.raises(ValueError):
            make_launcher("kubeflow", bad)
    probe = ("import sys, components.trainer.launcher, components.trainer.registry; "
             "assert 'components.trainer.kubeflow_launcher' not in sys.modules; "
             "import components.trainer.kubeflow_launcher as k; print(k.KubeflowTFJobLauncher.name)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "kubeflow", out.stderr


def test_names_are_unique_dns1035_labels_and_states_count_true_conditions_only():
    names = {tfjob_name("bresnet", "gs://bucket/root/run-123/Trainer/model_run", 0) for _ in range(50)}
    assert len(names) == 50
    for name in names:
        assert re.fullmatch(r"bresnet-[0-9a-f]{6}-[0-9a-f]{6}-a0", name) and len(name) <= 63
    assert tfjob_name("p", "run", 12, token="abcdef") == f"p-{tfjob_name('p', 'run', 0, 'abcdef')[2:8]}-abcdef-a12"
    with pytest.raises(ValueError):
        tfjob_name("x" * 60, "run", 0)
    conditions = [{"type": "Created", "status": "True"}, {"type": "Running", "status": "False"},
                  {"type": "Restarting", "status": "True"}]
    assert job_state(conditions)[0] == "Restarting"
    assert job_state(conditions + [{"type": "Succeeded", "status": "True"}])[0] == "Succeeded"
    assert job_state([{"type": "Failed", "status": "False"}, {"type": "Running", "status": "True"}])[0] == "Running"
    assert job_state([])[0] == "Pending"


def test_namespace_is_the_pods_own_then_the_kubeconfig_context_then_default(tmp_path):
    sa = tmp_path / "sa-namespace"
    sa.write_text("team-a\n")
    assert resolve_namespace("explicit", in_cluster=True, sa_namespace_path=str(sa)) == ("explicit", "configured")
    assert resolve_namespace(None, in_cluster=True, sa_namespace_path=str(sa))[0] == "team-a"
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "a",
        "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {}}],
        "contexts": [{"name": "a", "context": {"cluster": "c", "user": "u", "namespace": "from-context"}},
                     {"name": "b", "context": {"cluster": "c", "user": "u"}}]}))
    assert resolve_namespace(None, in_cluster=False, kubeconfig=str(kubeconfig))[0] == "from-context"
    assert resolve_namespace(None, in_cluster=False, kubeconfig=str(kubeconfig), context="b")[0] == "default"
    assert resolve_namespace(None, in_cluster=False, kubeconfig=str(tmp_path / "missing"))[0] == "default"


# ---- the stand-in speaks Kubernetes -----------------------------------------------------------------------------

def test_stand_in_mirrors_the_operator_status_tf_config_and_api_errors(api, tmp_path):
    from kubeflow.training.api_client import ApiClient

    custom, core = _apis(api)
    plan = {"worker-0": {"exit": 0}, "worker-1": {"sleep": 30}}
    custom.create_namespaced_custom_object("kubeflow.org", "v1", NS, "tfjobs",
                                           _tfjob("workers", {"Worker": _replica(tmp_path, 2, plan=plan)}))
    # No chief: worker 0 finishing decides success (default successPolicy), worker 1 still runs.
    obj = eventually(lambda: (lambda o: job_state(o["status"].get("conditions"))[0] == "Succeeded" and o)(
        custom.get_namespaced_custom_object_status("kubeflow.org", "v1", NS, "tfjobs", "workers")), what="Succeeded")
    conditions = obj["status"]["conditions"]
    assert [(c["type"], c["status"], c["reason"]) for c in conditions] == [
        ("Created", "True", "TFJobCreated"), ("Running", "False", "TFJobRunning"),
        ("Succeeded", "True", "TFJobSucceeded")]
    assert all(set(c) == {"type", "status", "reason", "message", "lastUpdateTime", "lastTransitionTime"}
               for c in conditions)
    sdk = ApiClient().deserialize(_Response(obj), "KubeflowOrgV1TFJob")
    assert sdk.status.conditions[-1].type == "Succeeded" and sdk.status.start_time is not None
    pods = {p.metadata.name: p for p in core.list_namespaced_pod(
        NS, label_selector="training.kubeflow.org/job-name=workers,training.kubeflow.org/replica-type=worker").items}
    assert sorted(pods) == ["workers-worker-0", "workers-worker-1"]
    w0, w1 = pods["workers-worker-0"], pods["workers-worker-1"]
    assert w0.status.phase == "Succeeded" and w0.status.container_statuses[0].state.terminated.exit_code == 0
    assert w0.metadata.labels["training.kubeflow.org/job-role"] == "master"  # worker 0 without a chief
    assert w0.metadata.owner_references[0].kind == "TFJob" and w0.metadata.owner_references[0].controller
    tf_config = json.loads(next(e.value for e in w1.spec.containers[0].env if e.name == "TF_CONFIG"))
    assert list(tf_config) == ["cluster", "task", "environment"] and tf_config["environment"] == "cloud"
    assert tf_config["task"] == {"type": "worker", "index": 1} and len(tf_config["cluster"]["worker"]) == 2
    assert all(re.fullmatch(r"127\.0\.0\.1:\d+", a) for a in tf_config["cluster"]["worker"])
    assert w1.status.phase == "Running" and w1.spec.restart_policy == "Never"
    log = core.read_namespaced_pod_log("workers-worker-0", NS, container="tensorflow", tail_lines=1)
    assert log.strip() == "replica worker-0 exiting with 0"

    # cleanPodPolicy Running: once the job is done, replicas still running are deleted (None above keeps them).
    custom.create_namespaced_custom_object("kubeflow.org", "v1", NS, "tfjobs", _tfjob(
        "cleaned", {"Worker": _replica(tmp_path, 2, plan=plan)}, runPolicy={"cleanPodPolicy": "Running"}))
    eventually(lambda: [p.metadata.name for p in core.list_namespaced_pod(
        NS, label_selector="training.kubeflow.org/job-name=cleaned").items] == ["cleaned-worker-0"],
        what="the running replica cleaned up")

    # API errors as the real server returns them.
    with pytest.raises(client.ApiException) as info:
        custom.create_namespaced_custom_object("kubeflow.org", "v1", NS, "tfjobs",
                                               _tfjob("workers", {"Worker": _replica(tmp_path)}))
    assert info.value.status == 409 and json.loads(info.value.body)["reason"] == "AlreadyExists"
    with pytest.raises(client.ApiException) as info:
        custom.get_namespaced_custom_object("kubeflow.org", "v1", NS, "tfjobs", "nope")
    assert info.value.status == 404 and json.loads(info.value.body)["message"] == 'tfjobs.kubeflow.org "nope" not found'
    bad = _replica(tmp_path)
    bad["template"]["spec"]["containers"][0]["name"] = "main"
    with pytest.raises(client.ApiException) as info:
        custom.create_namespaced_custom_object("kubeflow.org", "v1", NS, "tfjobs", _tfjob("bad", {"Worker": bad}))
    assert info.value.status == 403 and "must have at least one container with name tensorflow" in info.value.body
    with pytest.raises(client.ApiException) as info:
        custom.create_namespaced_custom_object("kubeflow.org", "v1", "elsewhere", "tfjobs",
                                               _tfjob("x", {"Worker": _replica(tmp_path)}))
    assert info.value.status == 404 and json.loads(info.value.body)["message"] == 'namespaces "elsewhere" not found'
    # A single replica gets no TF_CONFIG (the operator's isDistributed).
    custom.create_namespaced_custom_object("kubeflow.org", "v1", NS, "tfjobs",
                                           _tfjob("one", {"Chief": _replica(tmp_path)}))
    pod = eventually(lambda: core.list_namespaced_pod(NS, label_selector="training.kubeflow.org/job-name=one").items)
    assert not [e for e in pod[0].spec.containers[0].env if e.name == "TF_CONFIG"]


def test_delete_kills_every_replica_process_group_after_the_grace_period(api, tmp_path):
    custom, core = _apis(api)
    ignore_term = ("import signal, subprocess, sys, time, os; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                   "c = subprocess.Popen(['sleep', '120'], preexec_fn=lambda: signal.signal(signal.SIGTERM, "
                   "signal.SIG_IGN)); open(sys.argv[1] + '/' + os.environ['HOSTNAME'], 'w').write(str(c.pid)); "
                   "time.sleep(120)")
    replica = {"replicas": 2, "restartPolicy": "Never", "template": {"spec": {
        "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "tensorflow", "image": IMAGE, "command": ["python3", "-c", ignore_term],
                        "args": [str(tmp_path)]}]}}}
    custom.create_namespaced_custom_object("kubeflow.org", "v1", NS, "tfjobs", _tfjob("stuck", {"Worker": replica}))
    pids = eventually(lambda: len(api.replica_pids()) == 2 and api.replica_pids(), what="2 replicas")
    children = eventually(lambda: all((tmp_path / p).exists() for p in pids) and
                           [int((tmp_path / p).read_text() or 0) for p in pids], what="children")
    assert all(alive(p) for p in [*pids.values(), *children])
    deleted = custom.delete_namespaced_custom_object("kubeflow.org", "v1", NS, "tfjobs", "stuck",
                                                     propagation_policy="Foreground")
    # Foreground: the TFJob stays (being deleted) while its pods terminate; SIGTERM is ignored, SIGKILL after 1 s.
    assert deleted["metadata"]["deletionTimestamp"] and deleted["metadata"]["finalizers"] == ["foregroundDeletion"]
    assert custom.get_namespaced_custom_object("kubeflow.org", "v1", NS, "tfjobs", "stuck")["metadata"]["name"]

    def gone():
        try:
            custom.get_namespaced_custom_object("kubeflow.org", "v1", NS, "tfjobs", "stuck")
            return False
        except client.ApiException as exc:
            return exc.status == 404
    eventually(gone, timeout=10, what="TFJob removed")
    assert not core.list_namespaced_pod(NS).items
    eventually(lambda: not any(alive(p) for p in [*pids.values(), *children]), timeout=5, what="processes dead")
    events = core.list_namespaced_event(NS, field_selector="involvedObject.name=stuck-worker-0,reason=Killing").items
    assert events and events[0].message == "Stopping container tensorflow"


def test_logs_follow_container_restarts_and_tail_lines(api, tmp_path):
    custom, core = _apis(api)
    plan = {"worker-0": {"exit": 3, "runs": {"2": {"exit": 0, "sleep": 30}}}}
    custom.create_namespaced_custom_object("kubeflow.org", "v1", NS, "tfjobs", _tfjob(
        "flaky", {"Worker": _replica(tmp_path, 1, policy="OnFailure", plan=plan)}))
    pod = eventually(lambda: [p for p in core.list_namespaced_pod(NS).items
                               if p.status.container_statuses and p.status.container_statuses[0].restart_count == 1
                               and p.status.container_statuses[0].state.running], what="a restarted replica")[0]
    status = pod.status.container_statuses[0]
    assert pod.status.phase == "Running" and status.last_state.terminated.exit_code == 3
    previous = core.read_namespaced_pod_log("flaky-worker-0", NS, container="tensorflow", previous=True)
    assert previous.splitlines() == ["replica worker-0 run 1 TF_CONFIG=None", "replica worker-0 exiting with 3"]
    current = eventually(lambda: core.read_namespaced_pod_log("flaky-worker-0", NS, container="tensorflow"))
    assert current.splitlines() == ["replica worker-0 run 2 TF_CONFIG=None"]
    with pytest.raises(client.ApiException) as info:
        core.read_namespaced_pod_log("flaky-worker-0", NS, container="sidecar")
    assert info.value.status == 400


def test_cli_serves_until_sigterm_and_leaves_no_process_behind(tmp_path):
    cli = subprocess.Popen([sys.executable, "-m", "pipeline.kfp_local.kube_api", "--workdir", str(tmp_path / "kube"),
                            "--namespace", NS], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        kubeconfig = cli.stdout.readline().strip()
        assert kubeconfig == str(tmp_path / "kube" / "kubeconfig")
        custom, core = _apis(type("Api", (), {"kubeconfig": kubeconfig}))
        custom.create_namespaced_custom_object("kubeflow.org", "v1", NS, "tfjobs", _tfjob(
            "cli", {"Chief": _replica(tmp_path, plan={"chief-0": {"sleep": 120, "child": True}}),
                    "Worker": _replica(tmp_path, plan={"worker-0": {"sleep": 120}})}))
        eventually(lambda: len(replica_runs(tmp_path)) == 2 and (tmp_path / "state" / "chief-0.child").exists(),
                    timeout=20, what="2 replicas")
        pids = [r["pid"] for r in replica_runs(tmp_path)] + [int((tmp_path / "state" / "chief-0.child").read_text())]
        assert all(alive(p) for p in pids)
        cli.send_signal(signal.SIGTERM)
        assert cli.wait(timeout=20) == 0
    finally:
        if cli.poll() is None:
            cli.kill()
    eventually(lambda: not any(alive(p) for p in pids), timeout=5, what="replicas gone")


# ---- the launcher -------------------------------------------------------------------------------------------

def test_success_through_the_kubeconfig_saves_logs_and_deletes_the_tfjob(api, tmp_path, job):
    handler = signal.getsignal(signal.SIGTERM)
    result = _launcher(api, tmp_path, {"worker-0": {"sleep": 0.3}}).launch(job)
    assert signal.getsignal(signal.SIGTERM) is handler  # the launcher's own handler only lived with the TFJob
    assert result.attempts == 1 and result.failures == ()
    (chief, worker) = sorted(replica_runs(tmp_path), key=lambda r: r["task"])
    assert chief["task"] == "chief-0" and worker["task"] == "worker-0"
    name = chief["pod"].rsplit("-chief-0", 1)[0]
    assert re.fullmatch(r"bresnet-[0-9a-f]{6}-[0-9a-f]{6}-a0", name)
    # The job description went where the pods can read it (under the run dir, not local scratch).
    assert chief["job"] == job.run_dir + "/scratch/job.json"
    assert json.loads(Path(chief["job"]).read_text())["config"]["workers"] == 2
    logs = {Path(p).name: Path(p).read_text() for p in result.worker_logs}
    assert sorted(logs) == [f"{name}-chief-0.log", f"{name}-worker-0.log"]
    tf_config = json.loads(re.search(r"TF_CONFIG=(\{.*\})", logs[f"{name}-chief-0.log"]).group(1))
    assert tf_config["task"] == {"type": "chief", "index": 0} and sorted(tf_config["cluster"]) == ["chief", "worker"]
    # Namespace None: the kubeconfig context's. Everything is gone afterwards.
    creates = [r for r in api.requests() if r["verb"] == "create"]
    assert [(r["namespace"], r["code"]) for r in creates] == [(NS, 201)]
    _no_tfjobs(api)
    assert api.replica_pids() == {}


def test_failure_names_the_pod_exit_code_and_log_tail_and_cleans_up(api, tmp_path, job):
    plan = {"worker-0": {"exit": 3}, "chief-0": {"sleep": 30}}
    with pytest.raises(WorkerFailedError) as info:
        _launcher(api, tmp_path, plan).launch(job)
    error = info.value
    assert error.worker_index == 1 and error.exit_code == 3     # Worker 0 is our worker 1 (chief is 0)
    assert "replica worker-0 exiting with 3" in error.log_tail
    _no_tfjobs(api)
    eventually(lambda: not any(alive(r["pid"]) for r in replica_runs(tmp_path)), timeout=5, what="replicas dead")


def test_never_restarts_the_whole_cluster_as_a_new_tfjob(api, tmp_path, job):
    plan = {"chief-0": {"runs": {"1": {"exit": 1}}}, "worker-0": {"sleep": 0.2}}
    result = _launcher(api, tmp_path, plan, restart_policy="Never").launch(with_config(job, max_restarts=1))
    assert result.attempts == 2 and result.failures[0].worker_index == 0 and result.failures[0].exit_code == 1
    runs = replica_runs(tmp_path)
    names = {r["pod"].rsplit("-", 2)[0] for r in runs}
    assert len(names) == 2 and all(n.endswith(("-a0", "-a1")) for n in names)
    assert sorted({r["attempt"] for r in runs}) == ["0", "1"]
    _no_tfjobs(api)


def test_on_failure_restarts_the_replica_in_place(api, tmp_path, job, caplog):
    caplog.set_level(logging.INFO, logger="components.trainer.kubeflow_launcher")
    plan = {"worker-0": {"runs": {"1": {"exit": 1}}, "sleep": 0.2}, "chief-0": {"sleep": 1.0}}
    result = _launcher(api, tmp_path, plan).launch(with_config(job, max_restarts=1))
    assert result.attempts == 1
    runs = replica_runs(tmp_path)
    assert [r["task"] for r in runs].count("worker-0") == 2 and len({r["pod"] for r in runs}) == 2  # same pod
    assert "replica bresnet-" in caplog.text and "exited with code 1" in caplog.text


def test_on_failure_backoff_limit_fails_with_the_first_crash(api, tmp_path, job):
    plan = {"worker-0": {"exit": 5}, "chief-0": {"sleep": 30}}
    with pytest.raises(WorkerFailedError) as info:
        _launcher(api, tmp_path, plan).launch(with_config(job, max_restarts=1))
    assert (info.value.worker_index, info.value.exit_code) == (1, 5)
    assert "replica worker-0 exiting with 5" in info.value.log_tail
    _no_tfjobs(api)


def test_exit_code_policy_retries_signals_and_fails_on_errors(api, tmp_path, job):
    plan = {"worker-0": {"runs": {"1": {"exit": 137}}, "sleep": 0.2}, "chief-0": {"sleep": 1.5}}
    result = _launcher(api, tmp_path, plan, restart_policy="ExitCode").launch(with_config(job, max_restarts=1))
    assert result.attempts == 1
    runs = [r for r in replica_runs(tmp_path) if r["task"] == "worker-0"]
    assert len(runs) == 2 and runs[0]["pod"] == runs[1]["pod"]   # a new pod of the same name
    _, core = _apis(api)
    (event,) = core.list_namespaced_event(NS, field_selector="reason=TFJobRestarting").items
    assert event.involved_object.kind == "TFJob" and "restarting because Worker replica(s) failed" in event.message
    (tmp_path / "state" / "runs.jsonl").unlink()
    with pytest.raises(WorkerFailedError) as info:   # 1-127: permanent, no retry
        _launcher(api, tmp_path, {"worker-0": {"exit": 2}, "chief-0": {"sleep": 30}},
                  restart_policy="ExitCode").launch(with_config(job, max_restarts=1))
    assert info.value.exit_code == 2 and [r["task"] for r in replica_runs(tmp_path)].count("worker-0") == 1


@pytest.mark.parametrize("cause", ["unschedulable", "image"])
def test_pending_replicas_fail_the_step_with_reason_and_events(tmp_path, job, cause):
    kwargs = {"node_allocatable": {"cpu": "2", "memory": "8Gi"}} if cause == "unschedulable" else {"images": ["x:1"]}
    with KubeApiServer(str(tmp_path / "kube"), namespace=NS, crash_loop_backoff_s=0.1, **kwargs) as api:
        with pytest.raises(ReplicaPendingError) as info:
            _launcher(api, tmp_path, pending_timeout_s=0.5, worker_cpu="4").launch(job)
        _no_tfjobs(api)
    message = str(info.value)
    if cause == "unschedulable":
        assert "Unschedulable: 0/1 nodes are available: 1 Insufficient cpu" in message
        assert "Warning FailedScheduling" in message and "default-scheduler" in message
    else:
        assert re.search(r"(ErrImagePull|ImagePullBackOff): .*" + re.escape(IMAGE), message)
        assert f'Failed to pull image "{IMAGE}"' in message
    assert not replica_runs(tmp_path)  # nothing ever started


def test_active_deadline_stops_everything(api, tmp_path, job):
    started = time.monotonic()
    with pytest.raises(TFJobTimeoutError, match="active longer than specified deadline"):
        _launcher(api, tmp_path, {"chief-0": {"sleep": 60}, "worker-0": {"sleep": 60}}, timeout_s=1).launch(job)
    assert time.monotonic() - started < 20
    _no_tfjobs(api)
    eventually(lambda: not any(alive(r["pid"]) for r in replica_runs(tmp_path)), timeout=5, what="replicas dead")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_termination_signal_deletes_the_tfjob_before_the_launcher_exits(api, tmp_path, job, sig):
    options = _options(api, tmp_path, {"chief-0": {"sleep": 120}, "worker-0": {"sleep": 120}})
    proc = start_launcher("kubeflow", job, options, tmp_path)
    try:
        eventually(lambda: len(api.replica_pids()) == 2, timeout=30, what="2 running replicas")
        pids = list(api.replica_pids().values())
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "deleted TFJob" in out, out
    # Both end the process as the signal's default action would, after the cleanup (Ctrl-C: KeyboardInterrupt,
    # which Python reports as death by SIGINT).
    assert proc.returncode == -sig, out
    _no_tfjobs(api)
    eventually(lambda: not any(alive(p) for p in pids), timeout=5, what="replicas dead")


def test_rbac_role_covers_exactly_the_calls_the_launcher_makes(tmp_path, job):
    with open(ROOT / "deploy" / "rbac.yaml") as f:
        docs = list(yaml.safe_load_all(f))
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {("ServiceAccount", "bresnet-pipeline-runner"), ("ServiceAccount", "bresnet-serving"),
            ("Role", "bresnet-trainer"), ("RoleBinding", "bresnet-trainer")} <= kinds
    (role,) = [d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "bresnet-trainer"]
    (binding,) = [d for d in docs if d["kind"] == "RoleBinding" and d["roleRef"]["name"] == "bresnet-trainer"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "bresnet-pipeline-runner"}]
    with open(ROOT / "deploy" / "tf-serving.yaml") as f:
        serving_sa = [d for d in yaml.safe_load_all(f) if d["kind"] == "Deployment"][0]["spec"]["template"]["spec"]
    assert ("ServiceAccount", serving_sa["serviceAccountName"]) in kinds
    granted = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
               for v in rule["verbs"]}

    # What the launcher really asks for: success, a failure and a Pending replica, recorded by the stand-in.
    with KubeApiServer(str(tmp_path / "kube"), namespace=NS, node_allocatable={"cpu": "8"}) as api:
        _launcher(api, tmp_path).launch(job)
        with pytest.raises(WorkerFailedError):
            _launcher(api, tmp_path, {"chief-0": {"exit": 4}}).launch(job)
        with pytest.raises(ReplicaPendingError):
            _launcher(api, tmp_path, worker_cpu="16", pending_timeout_s=0.3).launch(job)
        used = {(r["apiGroup"], r["resource"] + (f"/{r['subresource']}" if r["subresource"] else ""), r["verb"])
                for r in api.requests()}
    assert used == granted


# ---- the real worker ----------------------------------------------------------------------------------------

def test_real_workers_train_as_chief_and_worker_replicas(clip_data, tmp_path):
    """components.trainer.worker as the Chief and Worker replicas: real MultiWorkerMirroredStrategy over the
    stand-in's TF_CONFIG, 1 epoch of 2 steps, the chief's serving export. The network is tests/trainer/tiny_model.py
    (the image, i.e. the replicas' PYTHONPATH, has it): this is about the launch, not BResNet."""
    from trainer_test_data import training_config, training_job

    job = dataclasses.replace(
        training_job(clip_data, tmp_path, training_config(workers=2, epochs=1, steps_per_epoch=2, eval_steps=0,
                                                          batch_size_per_worker=2, warmup_epochs=0.0)),
        model_builder="tiny_model:build_tiny_classifier")
    pythonpath = [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]
    image_env = {"PYTHONPATH": os.pathsep.join(filter(None, pythonpath))}
    with KubeApiServer(str(tmp_path / "kube"), namespace=NS, env=image_env) as api:
        launcher = KubeflowTFJobLauncher(image=IMAGE, kubeconfig=api.kubeconfig, poll_s=0.5, timeout_s=600)
        result = launcher.launch(job)
        _no_tfjobs(api)
    assert result.attempts == 1 and [e["epoch"] for e in result.history["epochs"]] == [1]
    logs = {Path(p).name: Path(p).read_text() for p in result.worker_logs}
    assert len(logs) == 2
    for name, log in logs.items():
        assert "2 replicas in sync" in log, (name, log[-3000:])
    chief = next(log for name, log in logs.items() if "-chief-0" in name)
    assert "worker 0 of 2 (chief)" in chief and "'chief': ['127.0.0.1:" in chief
    assert os.path.isfile(os.path.join(job.serving_model_dir, "saved_model.pb"))
