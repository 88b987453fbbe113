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
from tfx.utils import path_utils, proto_utils

from components import label_maps, video_metrics
from components.metric_names import LEVELS, STATISTICS, gate_metric_name, metric_name
from components.pusher import BASELINE_FOUND
from components.transform_module import LABEL

log = logging.getLogger(__name__)

GATE_FILE = "gate.json"
def make_eval_config(num_classes: int | None, min_accuracy: float, max_accuracy_drop: float,
                     top_k: int = 5, gate_metric: str = "accuracy") -> tfma.EvalConfig:
    """The classification metrics at clip and video level (accuracy, top-k accuracy, mean per-class accuracy),
    loss, counts, the confusion matrix and per-class precision/recall, plus the gate on ``gate_metric``:
    >= min_accuracy, and >= the baseline's - max_accuracy_drop.

    ``num_classes`` None: the run's label map is read from the data when the run starts; the executor then fits
    the per-class metrics and top-k to the trained model's labels (``fit_to_classes``)."""
    if not 0.0 <= min_accuracy <= 1.0:
        raise ValueError(f"min_accuracy must be in [0, 1], got {min_accuracy!r}")
    if max_accuracy_drop < 0:
        raise ValueError(f"max_accuracy_drop must be >= 0, got {max_accuracy_drop!r}")
    top_k = max(1, top_k if num_classes is None else min(top_k, num_classes))
    gated = gate_metric_name(gate_metric, top_k)
    gate = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={"value": min_accuracy}),
        change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER, absolute={"value": -max_accuracy_drop - 1e-9}))

    def classification(statistic, level):
        name = metric_name(statistic, level, top_k)
        if name == "sparse_categorical_accuracy":
            config = tfma.MetricConfig(class_name="SparseCategoricalAccuracy")
        elif level == "clip" and statistic == "top_k_accuracy":
            config = tfma.MetricConfig(class_name="SparseTopKCategoricalAccuracy",
                                       config=json.dumps({"k": top_k, "name": name}))
        else:
            config = tfma.MetricConfig(class_name="ClassificationMetric", module=video_metrics.__name__,
                                       config=json.dumps({"name": name, "statistic": statistic, "level": level,
                                                          "k": top_k}))
        if name == gated:
            config.threshold.CopyFrom(gate)
        return config

    metrics = [classification(statistic, level) for level in LEVELS for statistic in STATISTICS]
    metrics += [
        tfma.MetricConfig(class_name="SparseCategoricalCrossentropy", config=json.dumps({"from_logits": False})),
        tfma.MetricConfig(class_name="ExampleCount"),
        tfma.MetricConfig(class_name="MultiClassConfusionMatrixPlot"),
    ]
    per_class = tfma.MetricsSpec(
        metrics=[tfma.MetricConfig(class_name="Precision"), tfma.MetricConfig(class_name="Recall")],
        binarize=tfma.BinarizationOptions(class_ids={"values": list(range(num_classes or 0))}))
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(signature_name="serving_default", label_key=LABEL,
                                    prediction_key="probabilities",
                                    preprocessing_function_names=["transform_features"])],
        metrics_specs=[tfma.MetricsSpec(metrics=metrics), per_class],
        slicing_specs=[tfma.SlicingSpec()])


def fit_to_classes(eval_config: tfma.EvalConfig, num_classes: int) -> tfma.EvalConfig:
    """A copy of ``eval_config`` whose per-class metrics cover ``num_classes`` classes and whose top-k is at most
    that (the metric keeps its name)."""
    fitted = tfma.EvalConfig()
    fitted.CopyFrom(eval_config)
    for spec in fitted.metrics_specs:
        if spec.HasField("binarize"):
            del spec.binarize.class_ids.values[:]
            spec.binarize.class_ids.values.extend(range(num_classes))
        for metric in spec.metrics:
            if metric.class_name in ("SparseTopKCategoricalAccuracy", "ClassificationMetric"):
                options = json.loads(metric.config or "{}")
                options["k"] = max(1, min(int(options.get("k", 1)), num_classes))
                metric.config = json.dumps(options)
    return fitted


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
        labels = json.loads(input_dict[standard_component_specs.MODEL_KEY][0].get_string_custom_property("labels")
                            or "[]")
        if labels:   # the run's label map, known since the run read its data (components/label_maps.py)
            config = tfma.EvalConfig()
            proto_utils.json_to_proto(exec_properties[standard_component_specs.EVAL_CONFIG_KEY], config)
            exec_properties = {**exec_properties, standard_component_specs.EVAL_CONFIG_KEY:
                               proto_utils.proto_to_json(fit_to_classes(config, len(labels)))}
        skipped = None
        if baselines and baselines[0].get_int_custom_property(BASELINE_FOUND) == 0:
            log.info("no model in serving yet: evaluating without a baseline (change threshold rubber-stamped)")
            input_dict = {**input_dict, key: []}
        elif baselines and labels:
            baseline_labels = label_maps.served_labels(path_utils.serving_model_dir(baselines[0].uri))
            if baseline_labels is not None and baseline_labels != labels:
                skipped = (f"the baseline's labels {baseline_labels} differ from this model's {labels}: "
                           "its accuracy is not comparable, so the change threshold is skipped")
                log.warning("%s", skipped)
                input_dict = {**input_dict, key: []}
        super().Do(input_dict, output_dict, exec_properties)
        evaluation_uri = output_dict[standard_component_specs.EVALUATION_KEY][0].uri
        result = tfma.load_validation_result(evaluation_uri)
        failures = describe_failures(result)
        gate = {"blessed": bool(result.validation_ok), "had_baseline": bool(input_dict.get(key)),
                "failures": failures}
        if skipped:
            gate["baseline_skipped"] = skipped
        with tf.io.gfile.GFile(os.path.join(evaluation_uri, GATE_FILE), "w") as f:
            json.dump(gate, f, indent=2)
        if result.validation_ok:
            log.info("model blessed%s", " (better than or within tolerance of the baseline)" if gate["had_baseline"] else "")
        for failure in failures:
            log.warning("NOT BLESSED: %s = %s fails threshold %s", failure["metric"], failure["value"], failure["threshold"])


class Evaluator(evaluator_component.Evaluator):
    """tfx.components.Evaluator with the baseline-aware executor above."""
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(BaselineAwareEvaluatorExecutor)
