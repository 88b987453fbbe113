"""The pipeline DAG, built from one RunConfig; the runners (local_runner, kubeflow_runner) only choose where it runs.

ingest ─▶ ClipGen ─▶ Transform ─▶ MultiWorkerTrainer ─▶ Evaluator(+ baseline = latest pushed model) ─▶ ServingPusher
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os

# TFX classes come from their own modules, not `tfx.v1`: its `extensions` import google-cloud-aiplatform, ~6 s of
# every process's start-up (README, demo timings).
from tfx.components.transform.component import Transform
from tfx.orchestration import metadata
from tfx.orchestration.pipeline import Pipeline

from components.clipgen import ClipGen
from components.clipgen.schema import ClipSchemaGen
from components.evaluation import Evaluator, make_eval_config
from components.ingest import make_video_example_gen
from components.pusher import LatestPushedModel, ServingPusher
from components.trainer.component import MultiWorkerTrainer
from pipeline.config import RunConfig

TRANSFORM_FN = "components.transform_module.preprocessing_fn"


def create_components(config: RunConfig, launcher: str = "local", launcher_options: dict | None = None) -> list:
    clips = config.clips
    store = clip_store(config)
    ingest = make_video_example_gen(config.data_dir, mode=config.data_layout,
                                    train_pattern=config.ingest.train_pattern, eval_pattern=config.ingest.eval_pattern,
                                    records_pattern=config.ingest.records_pattern,
                                    window_spans=config.ingest.window_spans, newest_span=config.ingest.newest_span,
                                    on_missing_span=config.ingest.on_missing_span, clip_store=store,
                                    label_map=config.ingest.label_map, labels=config.labels,
                                    max_rejected_fraction=config.max_rejected_fraction)
    clipgen = ClipGen(
        examples=ingest.outputs["examples"],
        num_frames=clips.num_frames, frame_stride=clips.frame_stride, height=clips.height, width=clips.width,
        clips_per_video_train=clips.clips_per_video_train, clips_per_video_eval=clips.eval_clips_per_video,
        eval_crops=clips.eval_crops,
        seed=clips.seed, labels=list(config.labels), max_rejected_fraction=config.max_rejected_fraction,
        compression_level=clips.compression_level, frame_format=config.clip_frame_format,
        jpeg_quality=clips.jpeg_quality,
        num_shards=clips.num_shards or config.training_config().workers, clip_store=store)
    schema = ClipSchemaGen()
    transform = Transform(
        examples=clipgen.outputs["clips"], schema=schema.outputs["schema"],
        preprocessing_fn=TRANSFORM_FN,
        custom_config={"clip_shape": list(clips.shape)},
        materialize=False,            # the Trainer applies the TFT layer in tf.data (see README: measured)
        disable_statistics=True)
    trainer = MultiWorkerTrainer(
        examples=clipgen.outputs["clips"], transform_graph=transform.outputs["transform_graph"],
        config=config.training_config(), launcher=launcher, launcher_options=launcher_options or {},
        # training.init_from "serving" starts from the model served when the Trainer runs, found as the baseline is
        serving_model_base=f"{config.serving_dir.rstrip('/')}/{config.model_name}")
    baseline = LatestPushedModel(candidate=trainer.outputs["model"], serving_base_dir=config.serving_dir,
                                 model_name=config.model_name)
    evaluator = Evaluator(
        examples=clipgen.outputs["clips"], model=trainer.outputs["model"],
        baseline_model=baseline.outputs["baseline"],
        example_splits=["eval"],
        eval_config=make_eval_config(len(config.labels) or None, config.gate.min_accuracy,
                                     config.gate.max_accuracy_drop, config.gate.top_k, config.gate.metric))
    pusher = ServingPusher(model=trainer.outputs["model"], model_blessing=evaluator.outputs["blessing"],
                           serving_base_dir=config.serving_dir, model_name=config.model_name)
    # Stable ids (the TFX default is the class name): they name folders under pipeline_root and KFP tasks.
    for component, node_id in [(ingest, "Ingest"), (clipgen, "ClipGen"), (schema, "ClipSchema"),
                               (transform, "Transform"), (trainer, "Trainer"), (baseline, "Baseline"),
                               (evaluator, "Evaluator"), (pusher, "Pusher")]:
        component.with_id(node_id)
    return [ingest, clipgen, schema, transform, trainer, baseline, evaluator, pusher]


def clip_store(config: RunConfig) -> str:
    """Where ClipGen records each span's clips for later windows: under the pipeline root, one folder per clip
    recipe (anything that changes a clip changes the folder, so clips cut another way are never reused).
    "" when the window is one span: nothing to reuse."""
    if config.ingest.window_spans == 1:
        return ""
    recipe = json.dumps({"clips": {**dataclasses.asdict(config.clips), "frame_format": config.clip_frame_format},
                         "labels": list(config.labels),
                         "data_layout": config.data_layout}, sort_keys=True)
    return f"{config.pipeline_root.rstrip('/')}/ClipStore/{hashlib.sha256(recipe.encode()).hexdigest()[:16]}"


def create_pipeline(config: RunConfig, *, metadata_path: str | None = None, **component_kwargs) -> Pipeline:
    """``metadata_path``: a local sqlite file for LocalDagRunner; None on Kubeflow (the cluster's MLMD)."""
    connection = metadata.sqlite_metadata_connection_config(metadata_path) if metadata_path else None
    if metadata_path:
        os.makedirs(os.path.dirname(os.path.abspath(metadata_path)), exist_ok=True)
    return Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=create_components(config, **component_kwargs),
        metadata_connection_config=connection,
        enable_cache=True,
        beam_pipeline_args=config.beam_pipeline_args(),
    )
