"""The k8s-job launcher (an Indexed Job + a headless Service) against the Kubernetes API stand-in.

The launcher's real kubernetes client talks to pipeline/kfp_local/kube_api.py, whose Job controller
(batch_jobs.py) creates the pods and whose kubelet runs each one as a real local process in a network namespace of
its own (pod_network.py), where the Service's DNS names resolve. Most tests use a tiny Python replica (REPLICA
below: derives TF_CONFIG as the worker does, listens on the cluster port, greets every peer by its DNS name, then
follows a per-index plan); one runs the real training worker as two replicas under MultiWorkerMirroredStrategy.
Needs root for the network namespaces (the CI machine is); without it these tests are skipped with the reason.
"""
import dataclasses
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from components.trainer.cluster import derive_tf_config, indexed_job_tf_config
from components.trainer.k8s_job_launcher import COMPLETION_INDEX_KEY, IndexedJobLauncher, job_status
from components.trainer.kubernetes_pods import JobTimeoutError, ReplicaPendingError
from components.trainer.launcher import WorkerFailedError, make_launcher
from pipeline.kfp_local import pod_network
from pipeline.kfp_local.kube_api import KubeApiServer
from launcher_test_tools import (alive, eventually, replica_runs, scripted_options, start_launcher, tiny_job,
                                 with_config)

ROOT = Path(__file__).resolve().parents[2]
NS = "kubeflow-user"
IMAGE = "registry.example/bresnet-tfx:1"
needs_netns = pytest.mark.skipif(pod_network.available() is not None,
                                 reason=f"pod network namespaces: {pod_network.available()}")

# A replica: derives TF_CONFIG like components.trainer.worker, listens on its port (every replica the same one, as
# pods with addresses of their own can), greets each peer by its DNS name, then does what PLAN says for its index
# ("0", "1", ...) in this run of it (1, 2, ...; "runs" overrides). Every run is appended to $STATE_DIR/runs.jsonl.
REPLICA = r"""
import json, os, socket, sys, threading, time
from components.trainer.cluster import derive_tf_config
derive_tf_config()
tf_config = json.loads(os.environ.get("TF_CONFIG") or "{}")
index = os.environ["JOB_COMPLETION_INDEX"]
state = os.environ["STATE_DIR"]
with open(os.path.join(state, "runs.jsonl"), "a") as f:
    f.write(json.dumps({"task": index, "pid": os.getpid(), "pod": os.environ.get("HOSTNAME"),
                        "attempt": os.environ.get("TRAINER_ATTEMPT"), "job": sys.argv[1],
                        "tf_config": tf_config}) + "\n")
runs = sum(1 for line in open(os.path.join(state, "runs.jsonl")) if json.loads(line)["task"] == index)
plan = json.loads(os.environ.get("PLAN", "{}")).get(index, {})
step = {**plan, **plan.get("runs", {}).get(str(runs), {})}
print("replica %s run %d TF_CONFIG=%s" % (index, runs, json.dumps(tf_config)), flush=True)
peers = tf_config.get("cluster", {}).get("worker", [])
if peers and not step.get("exit"):
    port = int(peers[int(index)].rsplit(":", 1)[1])
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", port))
    server.listen()
    def serve():
        while True:
            conn, _ = server.accept()
            conn.sendall(index.encode())
            conn.close()
    threading.Thread(target=serve, daemon=True).start()
    heard, deadline = {}, time.time() + 30
    for peer in peers:
        host, peer_port = peer.rsplit(":", 1)
        while peer not in heard:
            try:
                with socket.create_connection((host, int(peer_port)), timeout=2) as conn:
                    heard[peer] = conn.recv(16).decode()
                    address = conn.getpeername()[0]
            except OSError as exc:
                if time.time() > deadline:
                    print("could not reach %s: %s" % (peer, exc), flush=True)
                    sys.exit(9)
                time.sleep(0.1)
        print("replica %s heard %s from %s (%s)" % (index, heard[peer], peer, address), flush=True)
    time.sleep(1.0)   # let the slower peers greet this one too
time.sleep(step.get("sleep", 0))
print("replica %s exiting with %d" % (index, step.get("exit", 0)), flush=True)
sys.exit(step.get("exit", 0))
"""
COMMAND = ["python", "-c", REPLICA, "{job}"]


@pytest.fixture
def api(tmp_path):
    image_env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    with KubeApiServer(str(tmp_path / "kube"), namespace=NS, env=image_env, crash_loop_backoff_s=0.3,
                       pod_backoff_s=0.3) as server:
        yield server


@pytest.fixture
def job(tmp_path):
    return tiny_job(tmp_path)


def _options(api, tmp_path, plan=None, **overrides):
    return scripted_options(api.kubeconfig, tmp_path, COMMAND, IMAGE, plan, **overrides)


def _launcher(api, tmp_path, plan=None, **overrides):
    return IndexedJobLauncher(**_options(api, tmp_path, plan, **overrides))


def _nothing_left(api):
    """The Job goes in the foreground (pods first), then its Service; the pods' namespaces with the pods."""
    eventually(lambda: api.jobs() == [] and api.services() == [] and api.replica_pids() == {}, timeout=15,
               what="the Job, its Service and its pods to be gone")
    mine = [n for n in pod_network._ip("netns", "list", check=False).stdout.split() if n.startswith(
        api.network.name + "-p")] if api.network else []
    assert mine == []


def _batch(api):
    api_client = config.new_client_from_config(config_file=api.kubeconfig)
    return client.BatchV1Api(api_client), client.CoreV1Api(api_client)


class _Response:
    def __init__(self, body):
        self.data = json.dumps(body)


# ---- the manifests and the TF_CONFIG a replica derives ----------------------------------------------------------

def test_manifests_are_an_indexed_job_and_a_headless_service():
    api_client = client.ApiClient()
    launcher = IndexedJobLauncher(image=IMAGE, timeout_s=3600, worker_gpu=1, node_selector={"pool": "gpu"},
                                  service_account="trainer")
    body = api_client.sanitize_for_serialization(
        launcher.build_job("bresnet-abc-a1", "gs://b/job.json", 3, attempt=1, namespace="ml", max_restarts=2))
    job = api_client.deserialize(_Response(body), "V1Job")   # the client's own schema models
    spec = job.spec
    assert (spec.completion_mode, spec.completions, spec.parallelism) == ("Indexed", 3, 3)
    assert (spec.backoff_limit, spec.active_deadline_seconds) == (7, 3600)      # 2 restarts x 3 workers + 1
    pod = spec.template.spec
    assert pod.subdomain == "bresnet-abc-a1" and pod.restart_policy == "OnFailure" and pod.hostname is None
    assert pod.node_selector == {"pool": "gpu"} and pod.service_account_name == "trainer"
    (container,) = pod.containers
    assert container.name == "tensorflow" and container.image == IMAGE
    assert container.command == ["python", "-m", "components.trainer.worker", "--job", "gs://b/job.json"]
    assert container.resources.limits == {"nvidia.com/gpu": "1"} and container.ports[0].container_port == 2222
    env = {e.name: e.value for e in container.env}
    assert env["TRAINER_PEER_PATTERN"] == "bresnet-abc-a1-{index}.bresnet-abc-a1.ml.svc:2222"
    assert env["TRAINER_REPLICAS"] == "3" and env["TRAINER_ATTEMPT"] == "1"
    service = api_client.deserialize(_Response(api_client.sanitize_for_serialization(
        launcher.build_service("bresnet-abc-a1", "ml"))), "V1Service")
    assert service.spec.cluster_ip == "None" and service.spec.publish_not_ready_addresses is True
    assert service.spec.selector == {"batch.kubernetes.io/job-name": "bresnet-abc-a1"}
    # No restart allowed: Never and backoffLimit 0 (the API's default would be 6 replacement pods).
    never = launcher.build_job("j", "u", 2, attempt=0, namespace="ml", max_restarts=0)
    assert never.spec.backoff_limit == 0 and never.spec.template.spec.restart_policy == "Never"
    with pytest.raises(ValueError, match="ExitCode is the Training Operator's"):
        make_launcher("k8s-job", {"image": IMAGE, "restart_policy": "ExitCode"})
    for bad in ({"image": IMAGE, "port": 0}, {"image": ""}, {"image": IMAGE, "timeout_s": -1}):
        with pytest.raises(ValueError):
            make_launcher("k8s-job", bad)


def test_a_replica_derives_tf_config_from_its_completion_index():
    env = {"TRAINER_PEER_PATTERN": "j-{index}.j.ns.svc:2222", "TRAINER_REPLICAS": "3", "JOB_COMPLETION_INDEX": "2"}
    assert json.loads(indexed_job_tf_config(env)) == {
        "cluster": {"worker": ["j-0.j.ns.svc:2222", "j-1.j.ns.svc:2222", "j-2.j.ns.svc:2222"]},
        "task": {"type": "worker", "index": 2}}
    assert indexed_job_tf_config({**env, "TRAINER_REPLICAS": "1", "JOB_COMPLETION_INDEX": "0"}) is None
    assert indexed_job_tf_config({}) is None                                  # another launcher's replica
    for bad in ({"JOB_COMPLETION_INDEX": "3"}, {"JOB_COMPLETION_INDEX": ""}, {"TRAINER_PEER_PATTERN": "j:2222"}):
        with pytest.raises(ValueError, match="TRAINER_PEER_PATTERN|JOB_COMPLETION_INDEX"):
            indexed_job_tf_config({**env, **bad})
    given = {**env, "TF_CONFIG": '{"cluster": {}, "task": {"type": "worker", "index": 0}}'}
    assert derive_tf_config(given) is None and given["TF_CONFIG"].startswith('{"cluster": {}')   # never overridden
    derive_tf_config(env)
    assert json.loads(env["TF_CONFIG"])["task"]["index"] == 2


def test_job_states_count_true_conditions_and_the_earlier_targets():
    status = client.V1JobStatus
    condition = client.V1JobCondition
    assert job_status(status(active=2)).state == "Running"
    assert job_status(status()).state == "Pending" and job_status(None).state == "Pending"
    failed = job_status(status(conditions=[condition(type="FailureTarget", status="True", reason="DeadlineExceeded",
                                                     message="Job was active longer than specified deadline")]))
    assert failed.state == "Failed" and failed.deadline and "DeadlineExceeded" in failed.message
    assert job_status(status(conditions=[condition(type="Complete", status="False")])).state == "Pending"
    done = job_status(status(conditions=[condition(type="SuccessCriteriaMet", status="True")]))
    assert done.state == "Succeeded" and not done.deadline


# ---- the stand-in speaks batch/v1 ---------------------------------------------------------------------------------

@needs_netns
def test_stand_in_runs_indexed_jobs_like_the_job_controller(api, tmp_path):
    batch, core = _batch(api)
    (tmp_path / "state").mkdir()
    container = {"name": "tensorflow", "image": IMAGE, "command": ["python", "-c", REPLICA, "x"],
                 "env": [{"name": "STATE_DIR", "value": str(tmp_path / "state")},
                         {"name": "PLAN", "value": json.dumps({"1": {"exit": 0}})}]}

    def job(name, **spec):
        return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
                "spec": {"template": {"spec": {"containers": [container], "restartPolicy": "Never"}}, **spec}}

    for bad, message in ((job("a", completionMode="Indexed", parallelism=2), "spec.completions: Required value"),
                         ({**job("b"), "spec": {"template": {"spec": {"containers": [container],
                                                                      "restartPolicy": "Always"}}}},
                          'spec.template.spec.restartPolicy: Unsupported value: "Always"')):
        with pytest.raises(ApiException) as info:
            batch.create_namespaced_job(NS, bad)
        assert info.value.status == 422 and message in json.loads(info.value.body)["message"]
    batch.create_namespaced_job(NS, job("idx", completionMode="Indexed", completions=2, parallelism=2))
    eventually(lambda: (batch.read_namespaced_job("idx", NS).status.completed_indexes == "0-1"), timeout=30,
               what="both indexes to complete")
    done = eventually(lambda: (j := batch.read_namespaced_job("idx", NS)).status.completion_time and j, timeout=10,
                      what="the Complete condition")
    assert [c.type for c in done.status.conditions] == ["SuccessCriteriaMet", "Complete"]
    assert (done.status.succeeded, done.status.active, done.spec.backoff_limit) == (2, None, 6)
    pods = core.list_namespaced_pod(NS, label_selector="batch.kubernetes.io/job-name=idx").items
    assert sorted(re.sub(r"-[a-z0-9]{5}$", "", p.metadata.name) for p in pods) == ["idx-0", "idx-1"]
    for pod in pods:
        index = pod.metadata.annotations[COMPLETION_INDEX_KEY]
        assert pod.metadata.labels[COMPLETION_INDEX_KEY] == index and pod.spec.hostname == f"idx-{index}"
        assert pod.metadata.owner_references[0].kind == "Job" and pod.status.pod_ip.startswith("10.244.0.")
        env = {e.name: e for e in pod.spec.containers[0].env}
        assert "job-completion-index" in env["JOB_COMPLETION_INDEX"].value_from.field_ref.field_path
    # Without a propagation policy a Job's pods are orphaned (batch/v1's default), as kubectl warns.
    batch.delete_namespaced_job("idx", NS)
    pods = core.list_namespaced_pod(NS).items
    assert len(pods) == 2 and all(p.metadata.owner_references is None for p in pods)


# Inside a test's own network namespace (as kfp-local runs in tests/standins/gcs_netns.py): a service on the node
# listening on all its addresses, whose name the node's hosts file points at its loopback, and a Job whose pod
# calls it by that name from the pod's own namespace.
NODE_SCRIPT = r"""
import json, socket, sys, threading, time
from kubernetes import client, config
from pipeline.kfp_local.kube_api import KubeApiServer
server = socket.socket()
server.bind(("0.0.0.0", 0))
server.listen()
port = server.getsockname()[1]
def serve():
    while True:
        conn, peer = server.accept()
        conn.sendall(("node answered " + peer[0]).encode())
        conn.close()
threading.Thread(target=serve, daemon=True).start()
call = "import socket; print(socket.create_connection(('node-service.test', %d), timeout=5).recv(64).decode())" % port
with KubeApiServer(sys.argv[1], namespace="ns") as api:
    batch = client.BatchV1Api(config.new_client_from_config(config_file=api.kubeconfig))
    batch.create_namespaced_job("ns", {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "call"},
        "spec": {"completionMode": "Indexed", "completions": 1, "template": {"spec": {"restartPolicy": "Never",
        "containers": [{"name": "c", "image": "i", "command": ["python", "-c", call]}]}}}})
    deadline = time.time() + 60
    while time.time() < deadline and not batch.read_namespaced_job("call", "ns").status.conditions:
        time.sleep(0.1)
    print("CONDITIONS", [c.type for c in batch.read_namespaced_job("call", "ns").status.conditions or []])
    (pod,) = client.CoreV1Api(batch.api_client).list_namespaced_pod("ns").items
    print("POD LOG", client.CoreV1Api(batch.api_client).read_namespaced_pod_log(pod.metadata.name, "ns"))
"""


@needs_netns
def test_inside_a_test_namespace_pods_reach_the_nodes_own_services_by_name(tmp_path):
    name = f"bresnet-test-node-{os.getpid()}"
    etc = Path("/etc/netns") / name
    try:
        pod_network._ip("netns", "add", name)
        pod_network._ip("-n", name, "link", "set", "lo", "up")
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "hosts").write_text("127.0.0.1 localhost\n127.0.0.1 node-service.test\n")
        out = subprocess.run(["ip", "netns", "exec", name, sys.executable, "-c", NODE_SCRIPT, str(tmp_path / "kube")],
                             capture_output=True, text=True, timeout=120, cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    finally:
        pod_network._ip("netns", "del", name, check=False)
        shutil.rmtree(etc, ignore_errors=True)
    assert "CONDITIONS ['SuccessCriteriaMet', 'Complete']" in out.stdout, out.stdout + out.stderr[-3000:]
    assert re.search(r"POD LOG node answered 10\.244\.0\.\d+", out.stdout), out.stdout   # from the pod's address


# ---- the launcher -------------------------------------------------------------------------------------------------

@needs_netns
def test_replicas_reach_each_other_by_the_services_dns_names_on_one_port(api, tmp_path, job):
    handler = signal.getsignal(signal.SIGTERM)
    result = _launcher(api, tmp_path).launch(with_config(job, workers=3))
    assert signal.getsignal(signal.SIGTERM) is handler
    assert result.attempts == 1 and result.failures == ()
    runs = sorted(replica_runs(tmp_path), key=lambda r: r["task"])
    assert [r["task"] for r in runs] == ["0", "1", "2"]
    name = runs[0]["pod"][:-2]                                              # hostname <job>-<index>
    assert re.fullmatch(r"bresnet-[0-9a-f]{6}-[0-9a-f]{6}-a0", name)
    peers = [f"{name}-{i}.{name}.{NS}.svc:2222" for i in range(3)]
    for run in runs:
        assert run["pod"] == f"{name}-{run['task']}" and run["job"] == job.run_dir + "/scratch/job.json"
        assert run["tf_config"] == {"cluster": {"worker": peers}, "task": {"type": "worker", "index": int(run["task"])}}
    logs = [Path(p).read_text() for p in result.worker_logs]
    assert len(logs) == 3
    for index, log in enumerate(logs):   # every replica heard every other one at a 10.244.0.x address of its own
        heard = re.findall(r"heard (\d) from (\S+) \((10\.244\.0\.\d+)\)", log)
        assert [(h, p) for h, p, _ in heard] == [(str(i), peers[i]) for i in range(3)], log
        assert len({a for _, _, a in heard}) == 3
    creates = [(r["resource"], r["code"]) for r in api.requests() if r["verb"] == "create"]
    assert creates == [("services", 201), ("jobs", 201)]
    _nothing_left(api)


@needs_netns
def test_failure_names_the_replica_exit_code_and_log_tail_and_cleans_up(api, tmp_path, job):
    with pytest.raises(WorkerFailedError) as info:
        _launcher(api, tmp_path, {"1": {"exit": 3}, "0": {"sleep": 30}}).launch(job)
    assert (info.value.worker_index, info.value.exit_code) == (1, 3)
    assert "replica 1 exiting with 3" in info.value.log_tail and "BackoffLimitExceeded" in info.value.log_tail
    _nothing_left(api)
    eventually(lambda: not any(alive(r["pid"]) for r in replica_runs(tmp_path)), timeout=5, what="replicas dead")


@needs_netns
def test_on_failure_restarts_the_replica_in_place_and_never_starts_a_new_job(api, tmp_path, job, caplog):
    caplog.set_level(logging.INFO, logger="components.trainer.kubernetes_pods")
    plan = {"1": {"runs": {"1": {"exit": 1}}}}
    result = _launcher(api, tmp_path, plan).launch(with_config(job, max_restarts=1))
    assert result.attempts == 1
    ones = [r for r in replica_runs(tmp_path) if r["task"] == "1"]
    assert len(ones) == 2 and ones[0]["pod"] == ones[1]["pod"]        # the same pod, restarted by the kubelet
    assert "exited with code 1 (restart count" in caplog.text
    _nothing_left(api)
    (tmp_path / "state" / "runs.jsonl").unlink()
    result = _launcher(api, tmp_path, {"0": {"runs": {"1": {"exit": 1}}}}, restart_policy="Never").launch(
        with_config(job, max_restarts=1))
    assert result.attempts == 2 and (result.failures[0].worker_index, result.failures[0].exit_code) == (0, 1)
    assert sorted({r["attempt"] for r in replica_runs(tmp_path)}) == ["0", "1"]
    _nothing_left(api)


@needs_netns
def test_active_deadline_stops_everything(api, tmp_path, job):
    started = time.monotonic()
    with pytest.raises(JobTimeoutError, match="DeadlineExceeded"):
        _launcher(api, tmp_path, {"0": {"sleep": 60}, "1": {"sleep": 60}}, timeout_s=2).launch(job)
    assert time.monotonic() - started < 30
    _nothing_left(api)


def test_pods_the_node_cannot_place_fail_the_step_with_the_reason(tmp_path, job):
    with KubeApiServer(str(tmp_path / "kube"), namespace=NS, node_allocatable={"cpu": "2"}) as api:
        with pytest.raises(ReplicaPendingError, match="Insufficient cpu"):
            _launcher(api, tmp_path, pending_timeout_s=0.5, worker_cpu="4").launch(job)
        eventually(lambda: api.jobs() == [] and api.services() == [], timeout=10, what="Job and Service gone")


@needs_netns
@pytest.mark.parametrize("sig", [signal.SIGTERM])
def test_termination_signal_deletes_the_job_and_service_before_the_launcher_exits(api, tmp_path, job, sig):
    proc = start_launcher("k8s-job", job, _options(api, tmp_path, {"0": {"sleep": 120}, "1": {"sleep": 120}}),
                          tmp_path)
    try:
        eventually(lambda: len(api.replica_pids()) == 2, timeout=30, what="2 running replicas")
        pids = list(api.replica_pids().values())
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "deleted Job" in out and "deleted Service" in out, out
    assert proc.returncode == -sig, out
    _nothing_left(api)
    eventually(lambda: not any(alive(p) for p in pids), timeout=5, what="replicas dead")


@needs_netns
def test_rbac_role_covers_exactly_the_calls_the_launcher_makes(tmp_path, job):
    with open(ROOT / "deploy" / "rbac.yaml") as f:
        docs = list(yaml.safe_load_all(f))
    (role,) = [d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "bresnet-trainer-jobs"]
    (binding,) = [d for d in docs if d["kind"] == "RoleBinding" and d["roleRef"]["name"] == "bresnet-trainer-jobs"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "bresnet-pipeline-runner"}]
    granted = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
               for v in rule["verbs"]}
    with KubeApiServer(str(tmp_path / "kube"), namespace=NS, node_allocatable={"cpu": "8"},
                       env={"PYTHONPATH": str(ROOT)}) as api:
        _launcher(api, tmp_path).launch(job)
        with pytest.raises(WorkerFailedError):
            _launcher(api, tmp_path, {"0": {"exit": 4}}).launch(job)
        with pytest.raises(ReplicaPendingError):
            _launcher(api, tmp_path, worker_cpu="16", pending_timeout_s=0.3).launch(job)
        used = {(r["apiGroup"], r["resource"] + (f"/{r['subresource']}" if r["subresource"] else ""), r["verb"])
                for r in api.requests()}
    assert used == granted


# ---- the real worker ----------------------------------------------------------------------------------------------

@needs_netns
def test_real_workers_train_over_the_services_dns_names(clip_data, tmp_path):
    """components.trainer.worker as the Job's two replicas: each derives TF_CONFIG from its completion index, real
    MultiWorkerMirroredStrategy between two network namespaces over the Service's DNS names, 1 epoch of 2 steps, the
    chief's (index 0) serving export. The network is tests/trainer/tiny_model.py: this is about the launch."""
    from trainer_test_data import training_config, training_job

    job = dataclasses.replace(
        training_job(clip_data, tmp_path, training_config(workers=2, epochs=1, steps_per_epoch=2, eval_steps=0,
                                                          batch_size_per_worker=2, warmup_epochs=0.0)),
        model_builder="tiny_model:build_tiny_classifier")
    pythonpath = [str(Path(__file__).parent), str(ROOT), os.environ.get("PYTHONPATH")]
    with KubeApiServer(str(tmp_path / "kube"), namespace=NS,
                       env={"PYTHONPATH": os.pathsep.join(filter(None, pythonpath))}) as api:
        result = IndexedJobLauncher(image=IMAGE, kubeconfig=api.kubeconfig, poll_s=0.5, timeout_s=600).launch(job)
        _nothing_left(api)
    assert result.attempts == 1 and [e["epoch"] for e in result.history["epochs"]] == [1]
    logs = [Path(p).read_text() for p in result.worker_logs]
    assert len(logs) == 2
    for log in logs:
        assert "TF_CONFIG derived from the Indexed Job's completion index" in log and ".svc:2222" in log, log[-3000:]
        assert "2 replicas in sync" in log, log[-3000:]
    assert "worker 0 of 2 (chief)" in logs[0]
    assert os.path.isfile(os.path.join(job.serving_model_dir, "saved_model.pb"))
