"""The TFX component: ``MultiWorkerTrainer`` (spec, executor, component class).

Inputs:  ``examples`` (clip Examples with splits train/eval), ``transform_graph`` (TransformGraph).
Outputs: ``model`` (Model; the serving SavedModel in ``<uri>/Format-Serving``, where the standard
         Evaluator and Pusher look) and ``model_run`` (ModelRun; TensorBoard logs,
         ``training_history.json`` and the workers' logs under ``worker_logs/``).
Parameters: ``config`` (TrainingConfig JSON), ``launcher`` (registry name, 'local' for now),
         ``launcher_options`` (JSON object of that launcher's keyword options) and ``serving_model_base``
         (``<serving_dir>/<model_name>``, where ``init_from: serving`` looks for the served model).

The executor only assembles a TrainingJob and hands it to the launcher; where workers run is the
launcher's business. BackupAndRestore state lives in the execution's stateful working directory, which
TFX keeps across retries of the same run, so a retried component resumes too.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any, Mapping

import tensorflow as tf
from tfx import types
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter
from tfx.utils import path_utils

from components import label_maps
from components.trainer import history, warm_start
from components.trainer.config import TrainingConfig, TrainingJob
from components.trainer.launcher import LaunchResult, make_launcher
from components.trainer.precision import ReplicaDevices, compute_precision, serving_precision
from components.trainer.launcher import launcher_options as parse_launcher_options

logger = logging.getLogger(__name__)

EXAMPLES_KEY = "examples"
TRANSFORM_GRAPH_KEY = "transform_graph"
MODEL_KEY = "model"
MODEL_RUN_KEY = "model_run"
CONFIG_KEY = "config"
LAUNCHER_KEY = "launcher"
LAUNCHER_OPTIONS_KEY = "launcher_options"
SERVING_MODEL_BASE_KEY = "serving_model_base"
TRAIN_SPLIT = "train"
EVAL_SPLIT = "eval"
WORKER_LOGS_DIR = "worker_logs"


class MultiWorkerTrainerSpec(types.ComponentSpec):
    PARAMETERS = {
        CONFIG_KEY: ExecutionParameter(type=str),
        LAUNCHER_KEY: ExecutionParameter(type=str),
        LAUNCHER_OPTIONS_KEY: ExecutionParameter(type=str, optional=True),
        SERVING_MODEL_BASE_KEY: ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {
        EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
        TRANSFORM_GRAPH_KEY: ChannelParameter(type=standard_artifacts.TransformGraph),
    }
    OUTPUTS = {
        MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
        MODEL_RUN_KEY: ChannelParameter(type=standard_artifacts.ModelRun),
    }


class Executor(base_executor.BaseExecutor):
    """Builds the TrainingJob from the artifacts and runs it with the configured launcher."""

    def Do(self, input_dict: dict[str, list[types.Artifact]], output_dict: dict[str, list[types.Artifact]],
           exec_properties: dict[str, Any]) -> None:
        launcher = make_launcher(exec_properties[LAUNCHER_KEY], exec_properties.get(LAUNCHER_OPTIONS_KEY))
        config = resolve_precision_once(TrainingConfig.from_json(exec_properties[CONFIG_KEY]),
                                        launcher.replica_devices())
        serving_model_base = exec_properties.get(SERVING_MODEL_BASE_KEY) or ""
        config, new_classes = resolve_labels(config, input_dict[EXAMPLES_KEY], serving_model_base)
        model = artifact_utils.get_single_instance(output_dict[MODEL_KEY])
        model_run = artifact_utils.get_single_instance(output_dict[MODEL_RUN_KEY])
        # Resolved once, here: every worker (and every restart) loads the same source.
        init_source = warm_start.resolve_init_source(config.init_from, serving_model_base)
        job = TrainingJob(
            config=config,
            train_uri=artifact_utils.get_split_uri(input_dict[EXAMPLES_KEY], TRAIN_SPLIT),
            eval_uri=artifact_utils.get_split_uri(input_dict[EXAMPLES_KEY], EVAL_SPLIT),
            transform_graph_uri=artifact_utils.get_single_uri(input_dict[TRANSFORM_GRAPH_KEY]),
            serving_model_dir=path_utils.serving_model_dir(model.uri),
            run_dir=model_run.uri,
            scratch_dir=self._scratch_dir(model_run.uri),
            init_weights_from=init_source,
        )
        logger.info("MultiWorkerTrainer: %d worker(s) via %r launcher, global batch %d, scratch %s, initial "
                    "weights: %s", config.workers, exec_properties[LAUNCHER_KEY], config.global_batch_size,
                    job.scratch_dir, init_source or "from scratch")
        result = launcher.launch(job)
        history.write_history(result.history, model_run.uri)
        _keep_worker_logs(result, model_run.uri)
        model_run.set_int_custom_property("attempts", result.attempts)
        model.set_int_custom_property("workers", config.workers)
        model.set_string_custom_property("labels", json.dumps(list(config.labels)))
        model.set_string_custom_property("new_classes", json.dumps(new_classes))
        model.set_string_custom_property("training_precision", config.precision)
        model.set_string_custom_property("serving_precision", serving_precision(config))
        model.set_string_custom_property("init_from", init_source or "scratch")
        if init_source:
            report = warm_start.read_report(job.run_dir)
            if report is None:
                raise RuntimeError(f"the chief wrote no warm-start report ({warm_start.report_path(job.run_dir)}) "
                                   f"although the run started from {init_source}")
            model.set_string_custom_property("reinitialized", json.dumps(report["reinitialized"]))
            model.set_string_custom_property("init_scope", report.get("scope", warm_start.SCOPE_ALL))

    def _scratch_dir(self, fallback_root: str) -> str:
        ctx = self._context
        if ctx is not None and ctx.stateful_working_dir:
            return os.path.join(ctx.stateful_working_dir, "trainer")
        if ctx is not None:
            try:
                return os.path.join(self._get_tmp_dir(), "trainer")
            except RuntimeError:
                pass
        return os.path.join(fallback_root, "scratch")


def resolve_labels(config: TrainingConfig, examples: list[types.Artifact],
                   serving_model_base: str) -> tuple[TrainingConfig, list[str]]:
    """The labels this run trains: configured, or the run's label map ClipGen recorded on the clips
    (components/label_maps.py); checked against the served model's, and the classes new to this run."""
    labels, source = list(config.labels), label_maps.CONFIG
    if not labels:
        labels, source = label_maps.recorded(examples[0])
        if not labels:
            raise ValueError(f"MultiWorkerTrainer: no labels configured and the clips ({examples[0].uri}) record no "
                             "label map")
        config = dataclasses.replace(config, labels=tuple(labels))
    served = None
    if serving_model_base:
        from components.pusher import latest_version_path   # TFX imports: executor side only
        latest = latest_version_path(serving_model_base)
        if latest:
            served = label_maps.served_labels(latest)
            if served is None:
                logger.info("the served model %s records no labels (exported before assets.extra/labels.txt): "
                            "its classes are not compared with this run's", latest)
    new = label_maps.check_against_served(labels, source, served, f"the served model under {serving_model_base}")
    logger.info("labels (%s): %s%s", "configured" if source == label_maps.CONFIG else "the window's label map",
                labels, f"; new since the served model: {new}" if new else "")
    return config, new


def resolve_precision_once(config: TrainingConfig, devices: ReplicaDevices | None = None) -> TrainingConfig:
    """``precision: auto`` resolved here, once, for the replicas' ``devices`` as the launcher declares them (None:
    they run on this machine, which is then asked), and handed to every worker as a fixed value: resolved per
    worker, replicas on a mixed node pool would compute in different precisions."""
    if config.precision != "auto":
        return config
    resolved = dataclasses.replace(config, precision=compute_precision(config, devices))
    logger.info("precision 'auto' resolved to %s for %s; every worker computes in it", resolved.precision,
                "this machine's devices" if devices is None else devices.describe())
    return resolved


def _keep_worker_logs(result: LaunchResult, run_dir: str) -> None:
    """Worker logs live in scratch, which TFX removes after success; keep copies with the run."""
    target = os.path.join(run_dir, WORKER_LOGS_DIR)
    tf.io.gfile.makedirs(target)
    for path in result.worker_logs:
        tf.io.gfile.copy(path, os.path.join(target, os.path.basename(path)), overwrite=True)


class MultiWorkerTrainer(base_component.BaseComponent):
    """Trains the clip classifier on N MultiWorkerMirroredStrategy workers and exports it for serving."""

    SPEC_CLASS = MultiWorkerTrainerSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(self, examples: types.BaseChannel, transform_graph: types.BaseChannel,
                 config: TrainingConfig | str, launcher: str = "local",
                 launcher_options: Mapping[str, Any] | str | None = None, serving_model_base: str = ""):
        """``serving_model_base`` (``<serving_dir>/<model_name>``) is where ``init_from: serving`` finds the
        served model; required then."""
        if isinstance(config, str):
            config = TrainingConfig.from_json(config)
        if not isinstance(config, TrainingConfig):
            raise TypeError(f"config must be a TrainingConfig or its JSON, got {type(config).__name__}")
        if not isinstance(serving_model_base, str):
            raise TypeError(f"serving_model_base must be a path string, got {serving_model_base!r}")
        if config.init_from == warm_start.SERVING and not serving_model_base:
            raise ValueError("init_from 'serving' needs serving_model_base (<serving_dir>/<model_name>, where the "
                             "served versions are)")
        options_json = json.dumps(parse_launcher_options(launcher_options), sort_keys=True)
        make_launcher(launcher, options_json)  # fail at pipeline definition, not hours later in the run
        spec = MultiWorkerTrainerSpec(
            examples=examples,
            transform_graph=transform_graph,
            config=config.to_json(),
            launcher=launcher,
            launcher_options=options_json,
            serving_model_base=serving_model_base,
            model=types.Channel(type=standard_artifacts.Model),
            model_run=types.Channel(type=standard_artifacts.ModelRun),
        )
        super().__init__(spec=spec)
