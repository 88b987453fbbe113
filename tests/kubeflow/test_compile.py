"""Compiling for Kubeflow Pipelines v2 (.yaml) and Vertex AI (.json), loaded back with KFP's own loaders.

Compiling runs offline: a gs:// pipeline root that cannot be reached here must not matter."""
import json
import subprocess
import sys

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

EXPECTED_TASKS = {"Ingest", "ClipGen", "ClipSchema", "Transform", "Trainer", "Baseline", "Evaluator", "Pusher"}
KFP_TASKS = EXPECTED_TASKS | {"input-fingerprint"}   # the KFP YAML fingerprints Ingest's input files (kfp_caching)
IMAGE = "registry.example/bresnet-tfx:test"


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("kfp")
    data = out / "data"
    data.mkdir()
    (data / "label_map.txt").write_text("jump\nrun\nwalk\n")
    common = ["--image", IMAGE, "--data-dir", "gs://data-bucket/videos", "--pipeline-root", "gs://pipes/root",
              "--serving-dir", "gs://serving-bucket/models", "--workers", "3", "--namespace", "team-ml",
              "--set", "labels=[jump, run, walk]", "--set", "pipeline_name=nightly-video"]
    paths = {}
    for suffix in ("yaml", "json"):
        path = out / f"pipeline.{suffix}"
        subprocess.run([sys.executable, "-m", "pipeline", "compile", "--out", str(path), *common],
                       check=True, capture_output=True, text=True)
        paths[suffix] = path
    return paths


def _spec_from_yaml(path):
    with open(path) as f:
        spec = pipeline_spec_pb2.PipelineSpec()
        json_format.ParseDict(yaml.safe_load(f), spec)
    return spec


def test_kfp_yaml_is_a_pipeline_spec_kfp_can_load(compiled):
    from kfp import components
    component = components.load_component_from_file(str(compiled["yaml"]))   # KFP's own YAML loader
    assert component.name == "nightly-video"
    spec = _spec_from_yaml(compiled["yaml"])
    assert set(spec.root.dag.tasks) == KFP_TASKS
    assert spec.schema_version == "2.1.0"       # the only schema the open-source KFP API server accepts
    assert spec.default_pipeline_root == "gs://pipes/root"


def test_vertex_json_is_a_pipeline_job(compiled):
    with open(compiled["json"]) as f:
        job = json_format.ParseDict(json.load(f), pipeline_spec_pb2.PipelineJob(), ignore_unknown_fields=True)
    assert set(job.pipeline_spec["root"]["dag"]["tasks"]) == EXPECTED_TASKS
    assert job.runtime_config.gcs_output_directory == "gs://pipes/root"


def _yaml(path):
    with open(path) as f:
        return yaml.safe_load(f)


def test_every_step_uses_the_image_has_resources_and_no_resolver(compiled):
    executors = _yaml(compiled["yaml"])["deploymentSpec"]["executors"]
    assert len(executors) == len(KFP_TASKS)
    for name, executor in executors.items():
        container = executor["container"]
        assert container["image"] == IMAGE, name
        if name != "Ingest_executor":  # TFX builds file-based ExampleGen containers without platform_config
            assert container["resources"]["cpuLimit"] >= 1 and container["resources"]["memoryLimit"] >= 1, name
        assert "importer" not in executor and "resolver" not in json.dumps(executor).lower(), name
    text = compiled["yaml"].read_text()
    assert "Resolver" not in text and "latest_blessed_model" not in text.lower()
    assert executors["Trainer_executor"]["container"]["args"][1] == "components.trainer.component.Executor"


def _parameters(spec, task):
    inputs = spec["root"]["dag"]["tasks"][task]["inputs"]["parameters"]
    return {k: v["runtimeValue"]["constant"] for k, v in inputs.items() if "runtimeValue" in v}


def test_parameters_are_plumbed_from_the_command_line(compiled):
    spec = _yaml(compiled["yaml"])
    assert _parameters(spec, "Pusher")["serving_base_dir"] == "gs://serving-bucket/models"
    assert _parameters(spec, "Baseline")["serving_base_dir"] == "gs://serving-bucket/models"
    assert _parameters(spec, "Ingest")["input_base"] == "gs://data-bucket/videos"
    clipgen = _parameters(spec, "ClipGen")
    assert json.loads(clipgen["labels"]) == ["jump", "run", "walk"]
    trainer = _parameters(spec, "Trainer")
    assert trainer["launcher"] == "kubeflow"
    options = json.loads(trainer["launcher_options"])
    assert options["image"] == IMAGE and options["namespace"] == "team-ml"
    assert json.loads(trainer["config"])["workers"] == 3
    assert json.loads(trainer["config"])["labels"] == ["jump", "run", "walk"]


def test_compile_errors_are_clear(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pipeline", "compile", "--image", IMAGE, "--out",
                             str(tmp_path / "p.txt"), "--set", "labels=[a, b]"], capture_output=True, text=True)
    assert result.returncode == 2 and "--out must end in .yaml (KFP) or .json (Vertex)" in result.stderr
    result = subprocess.run([sys.executable, "-m", "pipeline", "compile", "--out", "x.yaml"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "--image" in result.stderr


def test_compile_starts_from_the_cluster_preset_and_the_kubeflow_section(compiled):
    spec = _yaml(compiled["yaml"])
    trainer = _parameters(spec, "Trainer")
    config = json.loads(trainer["config"])
    # The cluster preset, not the 2-core laptop demo: realistic clips, a cluster-sized collective timeout.
    assert config["clip_shape"] == [16, 112, 112, 3] and config["collective_timeout_s"] == 1800.0
    assert _parameters(spec, "ClipGen")["num_shards"] == 64
    text = compiled["yaml"].read_text()
    assert "direct_running_mode" not in text and "direct_num_workers" not in text
    options = json.loads(trainer["launcher_options"])
    assert options["restart_policy"] == "OnFailure" and options["timeout_s"] == 6 * 3600.0
    assert options["pending_timeout_s"] == 900.0 and options["worker_gpu"] == 0
    # Both packages run TFX's executors through pipeline.kfp_entrypoint (open-source KFP and Vertex alike).
    with open(compiled["json"]) as f:
        vertex = json.load(f)["pipelineSpec"]["deploymentSpec"]["executors"]
    commands = [e["container"]["command"] for e in vertex.values() if "container" in e]
    assert commands and all(c == ["python", "-m", "pipeline.kfp_entrypoint"] for c in commands)


def test_kubeflow_settings_are_validated_with_their_name(tmp_path):
    from pipeline.config import ConfigError, load_config
    for override, words in [("kubeflow.restart_policy=Always", "kubeflow.restart_policy"),
                            ("kubeflow.worker_memory=lots", "kubeflow.worker_memory"),
                            ("kubeflow.step_resources={Trainr: {cpu: 2}}", "Trainr"),
                            ("kubeflow.timeout_s=0", "kubeflow.timeout_s")]:
        with pytest.raises(ConfigError, match=words):
            load_config("cluster", [override])
    config = load_config("cluster", ["kubeflow.step_resources={ClipGen: {cpu: 8, memory: 512Mi}}"])
    assert config.kubeflow.resources("ClipGen") == (8.0, 0.5)
    assert config.kubeflow.resources("Trainer") == (1.0, 2.0)



def test_the_beam_steps_compile_for_dataflow_and_laptop_settings_are_refused(tmp_path):
    common = ["--image", IMAGE, "--set", "labels=[a, b]", "--data-dir", "gs://d/v", "--pipeline-root", "gs://p/r"]
    out = tmp_path / "dataflow.yaml"
    subprocess.run([sys.executable, "-m", "pipeline", "compile", "--out", str(out), *common, "--beam-runner", "dataflow",
                    "--project", "proj", "--region", "europe-west4", "--temp-location", "gs://tmp-bucket/df"],
                   check=True, capture_output=True, text=True)
    executors = _yaml(out)["deploymentSpec"]["executors"]
    expected = ["--runner=DataflowRunner", "--project=proj", "--region=europe-west4",
                "--temp_location=gs://tmp-bucket/df", f"--sdk_container_image={IMAGE}", "--sdk_location=container"]
    for step in ("Ingest", "ClipGen", "Transform", "Evaluator"):                 # every Beam step
        assert all(arg in json.dumps(executors[f"{step}_executor"]["container"]["args"]) for arg in expected), step

    # The demo preset's DirectRunner settings (one process on a laptop) are refused in a cluster spec unless asked.
    refused = subprocess.run([sys.executable, "-m", "pipeline", "compile", "--config", "demo", "--out",
                              str(tmp_path / "demo.yaml"), *common], capture_output=True, text=True)
    assert refused.returncode == 2 and "--direct_running_mode=in_memory" in refused.stderr
    assert "--allow-local-beam" in refused.stderr
    subprocess.run([sys.executable, "-m", "pipeline", "compile", "--config", "demo", "--allow-local-beam", "--out",
                    str(tmp_path / "demo.yaml"), *common], check=True, capture_output=True, text=True)
    missing = subprocess.run([sys.executable, "-m", "pipeline", "compile", "--out", str(tmp_path / "x.yaml"), *common,
                              "--beam-runner", "dataflow", "--project", "proj"], capture_output=True, text=True)
    assert missing.returncode == 2 and "beam.region, beam.temp_location" in missing.stderr


def test_the_beam_steps_compile_for_a_flink_job_server_and_the_embedded_cluster_is_refused(tmp_path):
    common = ["--image", IMAGE, "--set", "labels=[a, b]", "--data-dir", "gs://d/v", "--pipeline-root", "gs://p/r",
              "--beam-runner", "flink"]
    out = tmp_path / "flink.yaml"
    subprocess.run([sys.executable, "-m", "pipeline", "compile", "--out", str(out), *common,
                    "--set", "beam.job_endpoint=flink-jobserver.flink:8099", "--set", "beam.environment=external"],
                   check=True, capture_output=True, text=True)
    executors = _yaml(out)["deploymentSpec"]["executors"]
    expected = ["--runner=PortableRunner", "--job_endpoint=flink-jobserver.flink:8099", "--parallelism=2",
                "--environment_type=EXTERNAL", "--environment_config=localhost:50000"]
    for step in ("Ingest", "ClipGen", "Transform", "Evaluator"):
        assert all(arg in json.dumps(executors[f"{step}_executor"]["container"]["args"]) for arg in expected), step
    refused = subprocess.run([sys.executable, "-m", "pipeline", "compile", "--out", str(tmp_path / "local.yaml"),
                              *common], capture_output=True, text=True)
    assert refused.returncode == 2 and "--flink_master=[local]" in refused.stderr, refused.stderr
    assert "beam.job_endpoint" in refused.stderr



def test_a_vertex_pipeline_job_trains_on_vertex_worker_pools(tmp_path):
    """``--launcher vertex``: the Trainer step creates a Vertex AI CustomJob (components/trainer/vertex_launcher.py);
    its options in the PipelineJob name the pools' machine, accelerators, image and service account, and GPU
    replicas make ClipGen store JPEG clips and the training precision resolve to mixed_float16."""
    out = tmp_path / "vertex.json"
    account = "trainer@my-proj.iam.gserviceaccount.com"
    subprocess.run([sys.executable, "-m", "pipeline", "compile", "--out", str(out), "--launcher", "vertex",
                    "--project", "my-proj", "--region", "europe-west4", "--image", IMAGE, "--workers", "3",
                    "--beam-runner", "dataflow", "--temp-location", "gs://pipes/tmp",
                    "--set", "labels=[a, b]", "--set", "vertex.machine_type=n1-standard-16",
                    "--set", "vertex.accelerator_type=NVIDIA_TESLA_T4", "--set", "vertex.accelerator_count=2",
                    "--set", f"vertex.service_account={account}"], check=True, capture_output=True, text=True)
    with open(out) as f:
        job = json_format.ParseDict(json.load(f), pipeline_spec_pb2.PipelineJob(), ignore_unknown_fields=True)
    assert set(job.pipeline_spec["root"]["dag"]["tasks"]) == EXPECTED_TASKS
    with open(out) as f:
        raw = json.load(f)
    trainer = _parameters(raw["pipelineSpec"], "Trainer")
    assert trainer["launcher"] == "vertex"
    options = json.loads(trainer["launcher_options"])
    assert options == {"project": "my-proj", "region": "europe-west4", "image": IMAGE, "machine_type": "n1-standard-16",
                       "accelerator_type": "NVIDIA_TESLA_T4", "accelerator_count": 2, "service_account": account,
                       "timeout_s": 6 * 3600.0, "api_endpoint": None}
    assert json.loads(trainer["config"])["workers"] == 3
    assert _parameters(raw["pipelineSpec"], "ClipGen")["frame_format"] == "jpeg"   # auto, GPU replicas
    from components.trainer.component import resolve_precision_once
    from components.trainer.launcher import make_launcher
    from components.trainer.config import TrainingConfig
    launcher = make_launcher("vertex", options)
    auto = TrainingConfig.from_json(trainer["config"])
    assert resolve_precision_once(auto, launcher.replica_devices()).precision == "mixed_float16"   # T4: 7.5
    # A bad option fails the compile with its name, not the run hours later.
    bad = subprocess.run([sys.executable, "-m", "pipeline", "compile", "--out", str(tmp_path / "bad.json"),
                          "--launcher", "vertex", "--project", "my-proj", "--region", "europe-west4", "--image", IMAGE,
                          "--beam-runner", "dataflow", "--temp-location", "gs://pipes/tmp", "--set", "labels=[a, b]",
                          "--set", "vertex.accelerator_count=2"], capture_output=True, text=True)
    assert bad.returncode != 0 and "accelerator" in bad.stderr, bad.stderr[-2000:]


def test_a_k8s_job_pipeline_trains_as_an_indexed_job_with_the_kubeflow_section(tmp_path):
    """``--launcher k8s-job``: the Trainer step creates an Indexed Job and a headless Service
    (components/trainer/k8s_job_launcher.py) from the same kubeflow section as a TFJob; GPUs per replica make ClipGen
    store JPEG clips. ExitCode, a Training Operator policy, fails the compile."""
    out = tmp_path / "k8s-job.yaml"
    subprocess.run([sys.executable, "-m", "pipeline", "compile", "--out", str(out), "--launcher", "k8s-job",
                    "--image", IMAGE, "--workers", "4", "--beam-runner", "dataflow", "--project", "p", "--region", "r",
                    "--temp-location", "gs://pipes/tmp", "--set", "labels=[a, b]", "--namespace", "team-a",
                    "--set", "kubeflow.worker_gpu=1", "--set", "kubeflow.service_account=trainer"],
                   check=True, capture_output=True, text=True)
    spec = _yaml(out)
    trainer = _parameters(spec, "Trainer")
    assert trainer["launcher"] == "k8s-job"
    options = json.loads(trainer["launcher_options"])
    assert (options["image"], options["namespace"], options["worker_gpu"], options["service_account"]) == \
        (IMAGE, "team-a", 1, "trainer")
    assert _parameters(spec, "ClipGen")["frame_format"] == "jpeg"
    from components.trainer.launcher import make_launcher
    launcher = make_launcher("k8s-job", options)
    job = launcher.build_job("bresnet-x-a0", "gs://b/job.json", 4, attempt=0, namespace="team-a", max_restarts=1)
    assert job.spec.completions == 4 and job.spec.template.spec.containers[0].resources.limits == {"nvidia.com/gpu": "1"}
    bad = subprocess.run([sys.executable, "-m", "pipeline", "compile", "--out", str(tmp_path / "bad.yaml"),
                          "--launcher", "k8s-job", "--image", IMAGE, "--set", "labels=[a, b]", "--allow-local-beam",
                          "--set", "kubeflow.restart_policy=ExitCode"], capture_output=True, text=True)
    assert bad.returncode != 0 and "ExitCode is a TFJob policy" in bad.stderr, bad.stderr[-2000:]


def test_the_ucf101_preset_compiles_with_its_views_and_a_learning_rate_that_follows_the_workers(tmp_path):
    out = tmp_path / "ucf101.yaml"
    common = ["--image", IMAGE, "--set", "labels=[jump, run, walk]", "--config", "ucf101"]
    subprocess.run([sys.executable, "-m", "pipeline", "compile", "--out", str(out), *common, "--workers", "8"],
                   check=True, capture_output=True, text=True)
    spec = _yaml(out)
    clipgen = _parameters(spec, "ClipGen")
    assert (clipgen["num_frames"], clipgen["frame_stride"], clipgen["height"]) == (16, 2, 112)
    assert (clipgen["clips_per_video_train"], clipgen["clips_per_video_eval"], clipgen["eval_crops"]) == (8, 10, 3)
    config = json.loads(_parameters(spec, "Trainer")["config"])
    assert config["workers"] == 8 and config["batch_size_per_worker"] == 8
    assert config["learning_rate"] == 2e-3 and config["learning_rate_reference_workers"] == 4
    from components.trainer.config import TrainingConfig
    assert TrainingConfig(**config).scaled_learning_rate == 4e-3      # 8 workers: twice the 4-worker rate
    assert config["augment_flip"] is True and config["label_smoothing"] == 0.1
    assert "video_accuracy" in json.dumps(_parameters(spec, "Evaluator")["eval_config"])
