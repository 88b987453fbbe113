"""Evaluator configuration and the blessing gate.

The standard TFX Evaluator (TFMA) with one change: the baseline arrives from ``LatestPushedModel`` (not a Resolver,
which open-source KFP v2 cannot run), and on a first run that artifact is marked ``found=0``; the executor then
drops it so TFMA rubber-stamps the change threshold exactly as with an empty Resolver. After evaluating, the
executor logs each failed threshold (metric, value, threshold) and writes them to ``gate.json``.
"""
from __future__ import annotations

import json
import logging
import os

import tensorflow as tf
import tensorflow_model_analysis as tfma
from tfx.components.evaluator import component as evaluator_component
from tfx.components.evaluator import executor as evaluator_executor
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_component_specs

from components import video_metrics
from components.pusher import BASELINE_FOUND
from components.transform_module import LABEL

log = logging.getLogger(__name__)

GATE_FILE = "gate.json"


def make_eval_config(num_classes: int, min_accuracy: float, max_accuracy_drop: float, top_k: int = 3) -> tfma.EvalConfig:
    """Multi-class metrics plus the gate: accuracy >= min_accuracy and >= baseline - max_accuracy_drop."""
    if not 0.0 <= min_accuracy <= 1.0:
        raise ValueError(f"min_accuracy must be in [0, 1], got {min_accuracy!r}")
    if max_accuracy_drop < 0:
        raise ValueError(f"max_accuracy_drop must be >= 0, got {max_accuracy_drop!r}")
    top_k = max(1, min(top_k, num_classes))
    gate = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={"value": min_accuracy}),
        change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER, absolute={"value": -max_accuracy_drop - 1e-9}))
    metrics = [
        tfma.MetricConfig(class_name="SparseCategoricalAccuracy", threshold=gate),
        tfma.MetricConfig(class_name="SparseTopKCategoricalAccuracy", config=json.dumps({"k": top_k, "name": f"top_{top_k}_accuracy"})),
        tfma.MetricConfig(class_name="SparseCategoricalCrossentropy", config=json.dumps({"from_logits": False})),
        tfma.MetricConfig(class_name="ExampleCount"),
        tfma.MetricConfig(class_name="MultiClassConfusionMatrixPlot"),
        tfma.MetricConfig(class_name="VideoAccuracy", module=video_metrics.__name__),
    ]
    per_class = tfma.MetricsSpec(
        metrics=[tfma.MetricConfig(class_name="Precision"), tfma.MetricConfig(class_name="Recall")],
        binarize=tfma.BinarizationOptions(class_ids={"values": list(range(num_classes))}))
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(signature_name="serving_default", label_key=LABEL,
                                    prediction_key="probabilities",
                                    preprocessing_function_names=["transform_features"])],
        metrics_specs=[tfma.MetricsSpec(metrics=metrics), per_class],
        slicing_specs=[tfma.SlicingSpec()])


def describe_failures(validation_result) -> list[dict]:
    """Failed thresholds as plain dicts: metric, value, threshold, message."""
    failures = []
    for per_slice in validation_result.metric_validations_per_slice:
        for failure in per_slice.failures:
            failures.append({
                "metric": failure.metric_key.name + (" (change vs baseline)" if failure.metric_key.is_diff else ""),
                "value": _metric_value(failure.metric_value),
                "threshold": str(failure.metric_threshold).replace("\n", " ").strip(),
                "message": failure.message,
            })
    return failures


def _metric_value(value) -> float | None:
    return value.double_value.value if value.HasField("double_value") else None


class BaselineAwareEvaluatorExecutor(evaluator_executor.Executor):
    def Do(self, input_dict, output_dict, exec_properties):
        key = standard_component_specs.BASELINE_MODEL_KEY
        baselines = input_dict.get(key) or []
        if baselines and baselines[0].get_int_custom_property(BASELINE_FOUND) == 0:
            log.info("no model in serving yet: evaluating without a baseline (change threshold rubber-stamped)")
            input_dict = {**input_dict, key: []}
        super().Do(input_dict, output_dict, exec_properties)
        evaluation_uri = output_dict[standard_component_specs.EVALUATION_KEY][0].uri
        result = tfma.load_validation_result(evaluation_uri)
        failures = describe_failures(result)
        gate = {"blessed": bool(result.validation_ok), "had_baseline": bool(input_dict.get(key)),
                "failures": failures}
        with tf.io.gfile.GFile(os.path.join(evaluation_uri, GATE_FILE), "w") as f:
            json.dump(gate, f, indent=2)
        if result.validation_ok:
            log.info("model blessed%s", " (better than or within tolerance of the baseline)" if gate["had_baseline"] else "")
        for failure in failures:
            log.warning("NOT BLESSED: %s = %s fails threshold %s", failure["metric"], failure["value"], failure["threshold"])


class Evaluator(evaluator_component.Evaluator):
    """tfx.components.Evaluator with the baseline-aware executor above."""
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(BaselineAwareEvaluatorExecutor)
