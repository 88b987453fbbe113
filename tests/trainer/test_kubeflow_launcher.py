"""The Kubeflow TFJob launcher backend.

No Kubernetes cluster (and no Training Operator) can run on this machine, so the wait/failure/cleanup logic
runs against a small in-memory test double of the two Kubernetes APIs it uses (CustomObjectsApi for the TFJob,
CoreV1Api for pods and logs). The manifest itself is checked with the kubeflow-training SDK's own models.
"""
import json

import pytest
from kubernetes.client import (V1ContainerState, V1ContainerStateTerminated, V1ContainerStatus, V1ObjectMeta,
                               V1Pod, V1PodList, V1PodStatus)

from components.trainer.config import TrainingConfig, TrainingJob
from components.trainer.kubeflow_launcher import CONTAINER_NAME, KubeflowTFJobLauncher
from components.trainer.launcher import WorkerFailedError, make_launcher


class FakeCustomObjects:
    """Scripted TFJob states, one per poll; records what was created and deleted."""

    def __init__(self, states_per_attempt):
        self.states_per_attempt = list(states_per_attempt)
        self.created, self.deleted, self._states = [], [], []

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        assert (group, version, plural) == ("kubeflow.org", "v1", "tfjobs")
        self.created.append(body)
        self._states = list(self.states_per_attempt.pop(0))
        return body

    def get_namespaced_custom_object_status(self, group, version, namespace, plural, name):
        state = self._states.pop(0) if len(self._states) > 1 else self._states[0]
        return {"status": {"conditions": [{"type": state, "message": f"TFJob {name} is {state}"}]}}

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name, propagation_policy=None):
        self.deleted.append(name)


class FakeCore:
    def __init__(self, failed_worker=None):
        self.failed_worker = failed_worker   # (replica type, index, exit code)

    def list_namespaced_pod(self, namespace, label_selector):
        job = label_selector.split("=", 1)[1]
        pods = []
        for rtype, index in [("chief", 0), ("worker", 0)]:
            code = 0
            if self.failed_worker and self.failed_worker[:2] == (rtype, index):
                code = self.failed_worker[2]
            pods.append(V1Pod(
                metadata=V1ObjectMeta(name=f"{job}-{rtype}-{index}", labels={
                    "training.kubeflow.org/job-name": job, "training.kubeflow.org/replica-type": rtype,
                    "training.kubeflow.org/replica-index": str(index)}),
                status=V1PodStatus(container_statuses=[V1ContainerStatus(
                    name=CONTAINER_NAME, image="img", image_id="", ready=False, restart_count=0,
                    state=V1ContainerState(terminated=V1ContainerStateTerminated(exit_code=code)))])))
        return V1PodList(items=pods)

    def read_namespaced_pod_log(self, name, namespace, container, tail_lines=None):
        return f"log of {name}\nTraceback: something broke in {name}\n"


@pytest.fixture
def job(tmp_path):
    config = TrainingConfig(labels=("a", "b"), clip_shape=(4, 8, 8, 3), workers=2, epochs=1, steps_per_epoch=1,
                            warmup_epochs=0.0)
    return TrainingJob(config=config, train_uri=str(tmp_path / "train"), eval_uri=str(tmp_path / "eval"),
                       transform_graph_uri=str(tmp_path / "tg"), serving_model_dir=str(tmp_path / "model"),
                       run_dir=str(tmp_path / "run"), scratch_dir=str(tmp_path / "local-scratch"))


def _launcher(custom, core):
    return KubeflowTFJobLauncher(image="registry.example/bresnet-tfx:1", namespace="ml", poll_s=0.001,
                                 custom_api=custom, core_api=core)


class _Response:
    def __init__(self, body):
        self.data = json.dumps(body)


def test_manifest_validates_against_the_training_operator_models(job):
    from kubeflow.training.api_client import ApiClient

    launcher = _launcher(None, None)
    body = ApiClient().sanitize_for_serialization(launcher.build_tfjob("t", "gs://b/job.json", workers=3, attempt=1))
    tfjob = ApiClient().deserialize(_Response(body), "KubeflowOrgV1TFJob")  # the SDK's own schema models
    assert tfjob.api_version == "kubeflow.org/v1" and tfjob.kind == "TFJob"
    specs = tfjob.spec.tf_replica_specs
    assert sorted(specs) == ["Chief", "Worker"]
    assert specs["Chief"].replicas == 1 and specs["Worker"].replicas == 2
    for spec in specs.values():
        (container,) = spec.template.spec.containers
        assert container.name == "tensorflow"
        assert container.image == "registry.example/bresnet-tfx:1"
        assert container.command == ["python", "-m", "components.trainer.worker", "--job", "gs://b/job.json"]
        env = {e.name: e.value for e in container.env}
        assert env["TF_USE_LEGACY_KERAS"] == "1" and env["TRAINER_ATTEMPT"] == "1"
        assert container.resources.requests == {"cpu": "4", "memory": "16Gi"}
    # A single worker is just a Chief.
    single = ApiClient().sanitize_for_serialization(launcher.build_tfjob("t", "j", workers=1, attempt=0))
    assert sorted(single["spec"]["tfReplicaSpecs"]) == ["Chief"]


def test_success_waits_for_succeeded_saves_pod_logs_and_deletes_the_job(job):
    custom = FakeCustomObjects([["Created", "Running", "Running", "Succeeded"]])
    result = _launcher(custom, FakeCore()).launch(job)
    assert result.attempts == 1
    assert len(custom.created) == 1 and custom.deleted == [custom.created[0]["metadata"]["name"]]
    # The job description went where the pods can read it (under the run dir, not local scratch).
    command = custom.created[0]["spec"]["tfReplicaSpecs"]["Chief"]["template"]["spec"]["containers"][0]["command"]
    assert command[-1] == job.run_dir + "/scratch/job.json"
    with open(command[-1]) as f:
        assert json.loads(f.read())["config"]["workers"] == 2
    assert len(result.worker_logs) == 2
    with open(result.worker_logs[0]) as f:
        assert f.read().startswith("log of ")


def test_failure_names_the_pod_exit_code_and_log_tail_and_cleans_up(job):
    custom = FakeCustomObjects([["Created", "Running", "Failed"]])
    with pytest.raises(WorkerFailedError) as info:
        _launcher(custom, FakeCore(failed_worker=("worker", 0, 137))).launch(job)
    error = info.value
    assert error.worker_index == 1 and error.exit_code == 137     # Worker 0 is our worker 1 (chief is 0)
    assert "something broke in" in error.log_tail and "-worker-0" in error.log_tail
    assert custom.deleted == [custom.created[0]["metadata"]["name"]]


def test_failed_attempt_is_retried_as_a_new_tfjob(job):
    import dataclasses
    job = dataclasses.replace(job, config=dataclasses.replace(job.config, max_restarts=1))
    custom = FakeCustomObjects([["Running", "Failed"], ["Running", "Succeeded"]])
    result = _launcher(custom, FakeCore(failed_worker=("chief", 0, 1))).launch(job)
    assert result.attempts == 2 and result.failures[0].worker_index == 0
    names = [c["metadata"]["name"] for c in custom.created]
    assert len(set(names)) == 2 and custom.deleted == names
    envs = [c["spec"]["tfReplicaSpecs"]["Chief"]["template"]["spec"]["containers"][0]["env"] for c in custom.created]
    assert [{e["name"]: e["value"] for e in env}["TRAINER_ATTEMPT"] for env in envs] == ["0", "1"]


def test_registered_and_validated_by_name():
    launcher = make_launcher("kubeflow", {"image": "img:1", "namespace": "team"})
    assert isinstance(launcher, KubeflowTFJobLauncher) and launcher.namespace == "team"
    with pytest.raises(ValueError, match="image"):
        make_launcher("kubeflow", {"image": ""})
