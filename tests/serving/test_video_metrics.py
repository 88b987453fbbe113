"""The Evaluator's classification metrics: accuracy, top-k and mean class accuracy of clips and of videos (clip
probabilities averaged per video), for one model and with a baseline (TFMA keys by model); the gate on any of them."""
import json

import numpy as np
import pytest
from tensorflow_model_analysis.metrics import metric_types

from components.evaluation import fit_to_classes, make_eval_config
from components.metric_names import GATE_METRICS, gate_metric_name
from components.video_metrics import ClassificationMetric, VideoAccuracy


def _inputs(video, label, probabilities, model=None):
    def keyed(value):
        return {model: value} if model else value
    return metric_types.StandardMetricInputs(
        labels=keyed(np.array([label])),
        predictions=keyed({"probabilities": np.array(probabilities, np.float32), "top_class": np.array([b"x"])}),
        transformed_features=keyed({"video_id": np.array([video.encode()], dtype=object)}))


def _video_accuracy(elements, model_names=None):
    (computation,) = VideoAccuracy().computations(model_names=model_names or [""], output_names=[""])[:1]
    combiner = computation.combiner
    halves = [combiner.create_accumulator(), combiner.create_accumulator()]
    for i, element in enumerate(elements):
        halves[i % 2] = combiner.add_input(halves[i % 2], element)
    return next(iter(combiner.extract_output(combiner.merge_accumulators(halves)).values()))


def test_averaging_clips_can_fix_a_video_that_single_clips_get_wrong():
    clips = [
        _inputs("v1", 0, [0.4, 0.6]),   # wrong alone
        _inputs("v1", 0, [0.9, 0.1]),   # right, and confident: v1 right on average
        _inputs("v2", 1, [0.6, 0.4]),   # wrong
        _inputs("v2", 1, [0.55, 0.45]),  # wrong: v2 wrong
        _inputs("v3", 1, [0.2, 0.8]),   # right
    ]
    assert _video_accuracy(clips) == 2 / 3


def test_with_a_baseline_each_model_reads_its_own_predictions():
    clips = [_inputs("v1", 0, [0.9, 0.1], model="candidate"), _inputs("v2", 1, [0.9, 0.1], model="candidate")]
    assert _video_accuracy(clips, model_names=["candidate"]) == 0.5


# ---- every statistic at clip and video level, and the gate on any of them ---------------------------------------


def _metric(elements, **options):
    (computation,) = ClassificationMetric(**options).computations(model_names=[""], output_names=[""])[:1]
    combiner = computation.combiner
    halves = [combiner.create_accumulator(), combiner.create_accumulator()]
    for i, element in enumerate(elements):
        halves[i % 2] = combiner.add_input(halves[i % 2], element)
    return next(iter(combiner.extract_output(combiner.merge_accumulators(halves)).values()))


# 3 classes; class 0 has 3 clips (2 right), class 1 one clip (wrong, its label 2nd), class 2 two clips (1 right,
# the other's label 3rd). Videos: a (class 0, clips 1-2), b (class 0, clip 3), c (class 1), d (class 2, both clips).
CLIPS = [
    _inputs("a", 0, [0.7, 0.2, 0.1]), _inputs("a", 0, [0.2, 0.5, 0.3]), _inputs("b", 0, [0.6, 0.3, 0.1]),
    _inputs("c", 1, [0.5, 0.3, 0.2]),
    _inputs("d", 2, [0.1, 0.2, 0.7]), _inputs("d", 2, [0.5, 0.4, 0.1]),
]


def test_clip_level_accuracy_top_k_and_mean_class_accuracy():
    assert _metric(CLIPS, statistic="accuracy", level="clip") == pytest.approx(3 / 6)
    assert _metric(CLIPS, statistic="top_k_accuracy", level="clip", k=2) == pytest.approx(4 / 6)   # a2, d2 miss
    assert _metric(CLIPS, statistic="top_k_accuracy", level="clip", k=9) == 1.0       # k clipped to the classes
    # (2/3 + 0/1 + 1/2) / 3: every class counts once, however many clips it has
    assert _metric(CLIPS, statistic="mean_class_accuracy", level="clip") == pytest.approx((2 / 3 + 0 + 1 / 2) / 3)


def test_video_level_statistics_average_the_clip_probabilities_first():
    # a: [0.9, 0.7, 0.4] -> 0 right; b right; c wrong (label 2nd); d: [0.6, 0.6, 0.8] -> 2 right
    assert _metric(CLIPS, statistic="accuracy", level="video") == pytest.approx(3 / 4)
    assert _metric(CLIPS, statistic="top_k_accuracy", level="video", k=2) == pytest.approx(4 / 4)
    assert _metric(CLIPS, statistic="mean_class_accuracy", level="video") == pytest.approx((2 / 2 + 0 + 1) / 3)
    assert _metric([], statistic="accuracy", level="video") != _metric([], statistic="accuracy", level="video")  # NaN
    with pytest.raises(ValueError):
        ClassificationMetric(statistic="median", level="video")
    with pytest.raises(ValueError):
        ClassificationMetric(statistic="accuracy", level="video", k=0)


@pytest.mark.parametrize("gate_metric", GATE_METRICS)
def test_the_gate_thresholds_exactly_the_metric_it_names(gate_metric):
    config = make_eval_config(8, 0.4, 0.01, top_k=5, gate_metric=gate_metric)
    names = {}
    for spec in config.metrics_specs:
        for metric in spec.metrics:
            name = json.loads(metric.config or "{}").get("name") or metric.class_name
            names[name] = metric.HasField("threshold")
    # all six classification metrics are reported, whichever gates
    assert {"SparseCategoricalAccuracy", "top_5_accuracy", "mean_class_accuracy", "video_accuracy",
            "video_top_5_accuracy", "video_mean_class_accuracy"} <= set(names)
    gated = [n for n, has in names.items() if has]
    expected = gate_metric_name(gate_metric, 5)
    assert gated == ["SparseCategoricalAccuracy" if expected == "sparse_categorical_accuracy" else expected]
    # 3 classes known only at run time: every top-k shrinks to 3 and keeps its name
    fitted = fit_to_classes(make_eval_config(None, 0.4, 0.01, top_k=5, gate_metric=gate_metric), 3)
    ks = [json.loads(m.config)["k"] for s in fitted.metrics_specs for m in s.metrics
          if m.class_name in ("SparseTopKCategoricalAccuracy", "ClassificationMetric")]
    assert ks and set(ks) == {3}
