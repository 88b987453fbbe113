"""Compiles the pipeline for Kubeflow Pipelines v2 (KubeflowV2DagRunner) and submits / schedules it with kfp.Client.

``.yaml`` output: the KFP v2 PipelineSpec (what ``kfp.Client`` uploads), with the pipeline root as its default.
``.json`` output: the Vertex AI PipelineJob exactly as KubeflowV2DagRunner writes it.

Compiling works offline: components are referenced by import path (the code is in the image), the Transform
function too, so no module-file wheel is built into the pipeline root.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile

import yaml
from tfx.orchestration.kubeflow.v2.kubeflow_v2_dag_runner import KubeflowV2DagRunner, KubeflowV2DagRunnerConfig
from tfx.orchestration.pipeline import Pipeline
from kfp.pipeline_spec import pipeline_spec_pb2

from pipeline.config import ConfigError, KubeflowConfig, RunConfig
from pipeline.kfp_caching import prepare_for_kfp, route_tfx_executors
from pipeline.pipeline import create_pipeline

log = logging.getLogger(__name__)

ResourceSpec = pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec


def launcher_options(config: RunConfig) -> dict:
    """The options of the Trainer's cluster launcher (``config.launcher``) from its config section."""
    if config.launcher == "vertex":
        vertex = config.vertex
        return {"project": vertex.project, "region": vertex.region, "image": config.kubeflow.image,
                "machine_type": vertex.machine_type, "accelerator_type": vertex.accelerator_type,
                "accelerator_count": vertex.accelerator_count, "service_account": vertex.service_account,
                "timeout_s": config.kubeflow.timeout_s, "api_endpoint": vertex.api_endpoint or None}
    return kubernetes_options(config.kubeflow)


def kubernetes_options(kubeflow: KubeflowConfig) -> dict:
    """The options of the Kubernetes launchers, ``kubeflow`` (TFJob) and ``k8s-job`` (Indexed Job), from the kubeflow
    section (components.trainer.kubernetes_pods.KubernetesLauncher)."""
    return {"image": kubeflow.image, "namespace": kubeflow.namespace or None,
            "service_account": kubeflow.service_account, "worker_cpu": kubeflow.worker_cpu,
            "worker_memory": kubeflow.worker_memory, "worker_gpu": kubeflow.worker_gpu,
            "node_selector": dict(kubeflow.node_selector), "tolerations": [dict(t) for t in kubeflow.tolerations],
            "restart_policy": kubeflow.restart_policy, "timeout_s": kubeflow.timeout_s,
            "pending_timeout_s": kubeflow.pending_timeout_s}


def build_kubeflow_pipeline(config: RunConfig) -> Pipeline:
    pipeline = create_pipeline(config, metadata_path=None, launcher=config.launcher,
                               launcher_options=launcher_options(config))
    for component in pipeline.components:
        cpu, memory = config.kubeflow.resources(component.id)
        component.with_platform_config(ResourceSpec(cpu_limit=cpu, memory_limit=memory))
    return pipeline


def compile_pipeline(config: RunConfig, out: str, *, allow_local_beam: bool = False) -> str:
    """Writes ``out`` (.yaml: KFP PipelineSpec, .json: Vertex PipelineJob) and returns its path.

    Refuses Beam arguments that keep every Beam step on one machine unless ``allow_local_beam``: the
    DirectRunner's (``--direct_running_mode``, ``--direct_num_workers``), or Flink's embedded cluster, loopback
    workers and a local job server jar. On a cluster they would run each Beam step inside its own pod (kfp-local on
    this machine is where they belong)."""
    if not out.endswith((".yaml", ".yml", ".json")):
        raise ConfigError(f"--out must end in .yaml (KFP) or .json (Vertex), got {out!r}")
    if config.local_beam_args() and not allow_local_beam:
        raise ConfigError(f"the Beam steps would run with one machine's settings {config.local_beam_args()} in every "
                          f"step's pod: compile with --beam-runner dataflow, or --beam-runner flink with "
                          f"beam.job_endpoint (a Flink job server) and beam.environment external or docker, or "
                          f"beam_args=[] (DirectRunner in each pod), or pass --allow-local-beam (e.g. for kfp-local)")
    image = config.kubeflow.image
    if not image:
        raise ConfigError("an image is required (--image or kubeflow.image), e.g. "
                          "us-docker.pkg.dev/PROJECT/REPO/bresnet-tfx:TAG")
    # Schema 2.1.0: the only one the open-source KFP API server accepts (pipeline/kfp_local/runner.py).
    runner_config = KubeflowV2DagRunnerConfig(default_image=image, use_pipeline_spec_2_1=True)
    with tempfile.TemporaryDirectory() as scratch:
        runner = KubeflowV2DagRunner(config=runner_config, output_dir=scratch, output_filename="pipeline.json")
        job = runner.run(build_kubeflow_pipeline(config), write_out=False)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    if out.endswith(".json"):
        # Vertex runs TFX's preCacheCheck itself (input fingerprint); the entrypoint wrapper is still needed there
        # for our custom artifact types (pipeline/kfp_entrypoint.py).
        job["pipelineSpec"] = route_tfx_executors(job["pipelineSpec"])
        spec = job["pipelineSpec"]
        with open(out, "w") as f:
            json.dump(job, f, indent=2, sort_keys=True)
    else:
        spec = dict(job["pipelineSpec"])
        spec["defaultPipelineRoot"] = config.pipeline_root
        spec = prepare_for_kfp(spec)   # Ingest's cache key sees the input files; TFX executors run on OSS KFP
        with open(out, "w") as f:
            yaml.safe_dump(spec, f, sort_keys=True)
    log.info("compiled %s (%d steps, image %s)", out, len(spec["root"]["dag"]["tasks"]), image)
    return out


def kfp_client(host: str):
    import kfp
    return kfp.Client(host=host)


def submit(package: str, host: str, experiment: str, run_name: str | None = None) -> str:
    client = kfp_client(host)
    result = client.create_run_from_pipeline_package(package, arguments={}, run_name=run_name,
                                                     experiment_name=experiment)
    log.info("submitted run %s", result.run_id)
    return result.run_id


def schedule(package: str, host: str, experiment: str, cron: str, job_name: str, *, cache: bool = True) -> str:
    """A recurring run (KFP cron has 6 fields, seconds first) that never overlaps itself and never backfills.

    ``no_catchup=True``: after a pause KFP starts only the latest missed interval, not one run per missed interval
    (kfp.Client.create_recurring_run). The pipeline needs no backfill: each run reads the window of the newest
    spans (components/spans.py), so one run catches up with every span that arrived meanwhile.
    ``cache=False`` runs every step of every run (KFP's per-run caching switch, ``enable_caching=False``). There is
    no switch to force caching on: KFP would then cache the input-fingerprint task too, and new data would be
    served the last run's outputs; left unset, each task keeps its compiled caching option."""
    if len(cron.split()) != 6:
        raise ConfigError(f"--cron needs 6 fields (second minute hour day month weekday), got {cron!r}")
    client = kfp_client(host)
    experiment_id = client.create_experiment(experiment).experiment_id
    recurring = client.create_recurring_run(experiment_id=experiment_id, job_name=job_name, cron_expression=cron,
                                            max_concurrency=1, no_catchup=True, pipeline_package_path=package,
                                            enabled=True, enable_caching=None if cache else False)
    log.info("scheduled %s (%s)", job_name, cron)
    return recurring.recurring_run_id
