"""Compiles the pipeline for Kubeflow Pipelines v2 (KubeflowV2DagRunner) and submits / schedules it with kfp.Client.

``.yaml`` output: the KFP v2 PipelineSpec (what ``kfp.Client`` uploads), with the pipeline root as its default.
``.json`` output: the Vertex AI PipelineJob exactly as KubeflowV2DagRunner writes it.

Compiling works offline: components are referenced by import path (the code is in the image), the Transform
function too, so no module-file wheel is built into the pipeline root.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile

import yaml
from tfx import v1 as tfx
from kfp.pipeline_spec import pipeline_spec_pb2

from pipeline.config import ConfigError, RunConfig
from pipeline.pipeline import create_pipeline

log = logging.getLogger(__name__)

ResourceSpec = pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec

# Requests per step (vCPU, GiB). The Trainer step only creates and watches a TFJob; the workers get their own.
STEP_RESOURCES = {
    "Ingest": (2, 4), "ClipGen": (4, 16), "ClipSchema": (1, 1), "Transform": (4, 16),
    "Trainer": (1, 2), "Baseline": (1, 2), "Evaluator": (4, 16), "Pusher": (1, 2),
}


@dataclasses.dataclass(frozen=True)
class KubeflowSettings:
    image: str
    namespace: str = "kubeflow"
    worker_cpu: str = "4"
    worker_memory: str = "16Gi"
    service_account: str = ""


def build_kubeflow_pipeline(config: RunConfig, settings: KubeflowSettings) -> tfx.dsl.Pipeline:
    options = dataclasses.asdict(settings)
    pipeline = create_pipeline(config, metadata_path=None, launcher="kubeflow", launcher_options=options)
    for component in pipeline.components:
        cpu, memory = STEP_RESOURCES.get(component.id, (1, 2))
        component.with_platform_config(ResourceSpec(cpu_limit=cpu, memory_limit=memory))
    return pipeline


def compile_pipeline(config: RunConfig, settings: KubeflowSettings, out: str) -> str:
    """Writes ``out`` (.yaml: KFP PipelineSpec, .json: Vertex PipelineJob) and returns its path."""
    if not out.endswith((".yaml", ".yml", ".json")):
        raise ConfigError(f"--out must end in .yaml (KFP) or .json (Vertex), got {out!r}")
    if not settings.image:
        raise ConfigError("an image is required (--image), e.g. us-docker.pkg.dev/PROJECT/REPO/bresnet-tfx:TAG")
    runner_config = tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=settings.image)
    with tempfile.TemporaryDirectory() as scratch:
        runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
            config=runner_config, output_dir=scratch, output_filename="pipeline.json")
        job = runner.run(build_kubeflow_pipeline(config, settings), write_out=False)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    if out.endswith(".json"):
        with open(out, "w") as f:
            json.dump(job, f, indent=2, sort_keys=True)
    else:
        spec = dict(job["pipelineSpec"])
        spec["defaultPipelineRoot"] = config.pipeline_root
        with open(out, "w") as f:
            yaml.safe_dump(spec, f, sort_keys=True)
    log.info("compiled %s (%d steps, image %s)", out, len(job["pipelineSpec"]["root"]["dag"]["tasks"]), settings.image)
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


def schedule(package: str, host: str, experiment: str, cron: str, job_name: str) -> str:
    """A recurring run (KFP cron has 6 fields, seconds first) that never overlaps itself."""
    if len(cron.split()) != 6:
        raise ConfigError(f"--cron needs 6 fields (second minute hour day month weekday), got {cron!r}")
    client = kfp_client(host)
    experiment_id = client.create_experiment(experiment).experiment_id
    recurring = client.create_recurring_run(experiment_id=experiment_id, job_name=job_name, cron_expression=cron,
                                            max_concurrency=1, pipeline_package_path=package, enabled=True)
    log.info("scheduled %s (%s)", job_name, cron)
    return recurring.recurring_run_id
