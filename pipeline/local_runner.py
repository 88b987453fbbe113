"""Runs the pipeline on this machine with TFX's LocalDagRunner and summarizes the outcome."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import time
from typing import Iterator

import tensorflow as tf
import tensorflow_model_analysis as tfma
from tfx.orchestration import metadata
from tfx.orchestration.local.local_dag_runner import LocalDagRunner

from components import beam_workers
from components.evaluation import GATE_FILE
from components.trainer.launcher import termination_guard
from pipeline.config import RunConfig
from pipeline.pipeline import create_pipeline

log = logging.getLogger(__name__)


@dataclasses.dataclass
class RunSummary:
    seconds: float
    blessed: bool | None
    pushed_version: str | None
    pushed_path: str | None
    metrics: dict[str, float]
    gate_failures: list[dict]
    component_seconds: dict[str, float]
    skipped: str | None = None    # why the run did nothing (ingest.on_missing_span: skip)
    new_classes: list[str] = dataclasses.field(default_factory=list)   # trained now, not known to the served model


class _ComponentTimer(logging.Handler):
    """Turns LocalDagRunner's 'Component X is running/finished' log lines into progress with elapsed time."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.started: dict[str, float] = {}

    def emit(self, record):
        message = record.getMessage()
        if not message.startswith("Component ") or not message.endswith(("is running.", "is finished.")):
            return
        name = message.split()[1]
        if message.endswith("is running."):
            self.started[name] = time.time()
            print(f"[run-local] {name} started", flush=True)
        elif name in self.started:
            print(f"[run-local] {name} finished in {time.time() - self.started[name]:.1f}s", flush=True)


@contextlib.contextmanager
def component_progress() -> Iterator[_ComponentTimer]:
    """Prints a line as each component starts and finishes, for the duration of the block.

    TFX reports component starts/ends through absl's logger at INFO; libraries loaded mid-run (and pytest) change
    the root level, so the timer listens on that logger directly, with its level pinned: Transform's libraries set
    absl's verbosity to WARNING (absl.logging.set_verbosity), which silenced every later component's line, so
    setLevel is a no-op on that logger until the block ends."""
    timer = _ComponentTimer()
    absl_logger = logging.getLogger("absl")
    absl_level = absl_logger.level
    absl_logger.setLevel(logging.INFO)
    absl_logger.setLevel = lambda level: None
    absl_logger.addHandler(timer)
    try:
        yield timer
    finally:
        absl_logger.removeHandler(timer)
        del absl_logger.setLevel          # the class's method again
        absl_logger.setLevel(absl_level)


def run_local(config: RunConfig) -> RunSummary:
    # Before anything is cached: a missing newest span fails here (on_missing_span: fail), or skips the run.
    window = config.resolve_window()
    if window.kind is not None:
        print(f"[run-local] input window: {window.describe(config.ingest.patterns(config.data_layout))}", flush=True)
    if window.skipped:
        why = (f"the newest span is missing (ingest.newest_span: {config.ingest.newest_span}); "
               f"on_missing_span: skip, so nothing runs")
        print(f"[run-local] {why}", flush=True)
        return RunSummary(seconds=0.0, blessed=None, pushed_version=None, pushed_path=None, metrics={},
                          gate_failures=[], component_seconds={}, skipped=why)
    beam_args = config.beam_pipeline_args()
    beam_workers.prepare(beam_args)
    os.makedirs(config.pipeline_root, exist_ok=True)
    root_logger = logging.getLogger()
    # Everything (TFX, Beam, TFMA at INFO) goes to a run log next to the artifacts; the console stays readable.
    log_path = os.path.join(config.pipeline_root, "logs", time.strftime("run-%Y%m%d-%H%M%S.log"))
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    file_handler = logging.FileHandler(log_path)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root_logger.addHandler(file_handler)
    print(f"[run-local] pipeline {config.pipeline_name}: full log in {log_path}", flush=True)
    print(f"[run-local] Beam steps (Ingest, ClipGen, Transform, Evaluator) on {beam_workers.describe(beam_args)}",
          flush=True)
    if root_logger.level > logging.INFO or root_logger.level == logging.NOTSET:
        root_logger.setLevel(logging.INFO)
    start = time.time()
    try:
        # SIGTERM raises here (as Ctrl-C does), so the cleanup below runs before the process ends.
        with termination_guard(), component_progress():
            try:
                LocalDagRunner().run(create_pipeline(config, metadata_path=config.metadata_path))
            finally:
                beam_workers.stop_job_servers()   # Flink's job server, when the Beam steps ran on Flink
    finally:
        root_logger.removeHandler(file_handler)
        file_handler.close()
    summary = summarize(config)
    summary.seconds = round(time.time() - start, 1)
    return summary


def summarize(config: RunConfig) -> RunSummary:
    """Reads the newest Evaluator and Pusher outputs of this pipeline from its ML Metadata store."""
    connection = metadata.sqlite_metadata_connection_config(config.metadata_path)
    with metadata.Metadata(connection) as m:
        def newest(type_name):
            artifacts = m.store.get_artifacts_by_type(type_name)
            if type_name == "Model":   # the Trainer's, not the Baseline's snapshot of the served one
                artifacts = [a for a in artifacts if "new_classes" in a.custom_properties]
            return max(artifacts, key=lambda a: a.id) if artifacts else None
        evaluation, pushed, model = newest("ModelEvaluation"), newest("PushedModel"), newest("Model")
        component_seconds = _component_seconds(m.store)

    metrics, failures, blessed = {}, [], None
    if evaluation is not None:
        for per_slice in tfma.load_metrics(evaluation.uri):
            if per_slice.slice_key.single_slice_keys:
                continue
            for key_and_value in per_slice.metric_keys_and_values:
                key, value = key_and_value.key, key_and_value.value
                if not is_candidate(key) or key.HasField("sub_key"):
                    continue
                if value.HasField("double_value"):
                    metrics[key.name] = round(value.double_value.value, 4)
        gate_path = os.path.join(evaluation.uri, GATE_FILE)
        if tf.io.gfile.exists(gate_path):
            with tf.io.gfile.GFile(gate_path) as f:
                gate = json.load(f)
            blessed, failures = gate["blessed"], gate["failures"]
    pushed_version = pushed_path = None
    if pushed is not None and pushed.custom_properties["pushed"].int_value == 1:
        pushed_version = pushed.custom_properties["pushed_version"].string_value
        pushed_path = pushed.custom_properties["pushed_destination"].string_value
    new_classes = []
    if model is not None and "new_classes" in model.custom_properties:
        new_classes = json.loads(model.custom_properties["new_classes"].string_value)
    return RunSummary(seconds=0.0, blessed=blessed, pushed_version=pushed_version, pushed_path=pushed_path,
                      metrics=metrics, gate_failures=failures, component_seconds=component_seconds,
                      new_classes=new_classes)


def is_candidate(key) -> bool:
    """A TFMA MetricKey/PlotKey of the candidate model: with a baseline TFMA also reports the baseline's values and
    (metrics only) the differences under the same names."""
    return key.model_name in ("", "candidate") and not (key.DESCRIPTOR.name == "MetricKey" and key.is_diff)


def execution_seconds(execution) -> float:
    return round((execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1000, 1)


def newest_run_executions(store) -> tuple[object | None, list[tuple[str, object]]]:
    """(the newest pipeline_run context or None, [(node id, execution)] of that run in start order)."""
    runs = store.get_contexts_by_type("pipeline_run")
    if not runs:
        return None, []
    run = max(runs, key=lambda c: c.create_time_since_epoch)
    executions = []
    for execution in sorted(store.get_executions_by_context(run.id), key=lambda e: e.create_time_since_epoch):
        nodes = [c.name for c in store.get_contexts_by_execution(execution.id) if c.type == "node"]
        if nodes:
            executions.append((nodes[0].rsplit(".", 1)[-1], execution))
    return run, executions


def _component_seconds(store) -> dict[str, float]:
    """Seconds per component in the newest run, from ML Metadata (cached components take ~0 s)."""
    return {node_id: execution_seconds(execution) for node_id, execution in newest_run_executions(store)[1]}
