"""Classification metrics for TFMA at clip and video level: accuracy, top-k accuracy, mean per-class accuracy.

Clip accuracy answers "is this window right?"; users care whether the *video* is right. Video papers report both
(torchvision's video reference: clip and video accuracy side by side), plus top-5 and the mean of the per-class
accuracies (MMAction2's ``top_k_accuracy`` and ``mean_class_accuracy``: each class's share of its own samples that
are right, averaged over the classes that have samples, so a rare class counts as much as a common one). At video
level the clip probabilities of a video are averaged first (MMAction2's ``average_clips='prob'``), then scored.

``ClassificationMetric(name, statistic, level, k)`` is one of these; ``VideoAccuracy`` is the video-level top-1.
The video id is the ``video_id`` output of the Transform graph (TFMA gets it through ``transform_features``).
Registered with TFMA, so an EvalConfig names them as ``MetricConfig(class_name=..., module=__name__)``. Clip-level
accuracy and top-k accuracy come from Keras (``sparse_categorical_accuracy``, ``top_<k>_accuracy``).
"""
import apache_beam as beam
import numpy as np
from tensorflow_model_analysis.metrics import metric_types

from components.metric_names import LEVELS, STATISTICS
from components.transform_module import VIDEO_ID

VIDEO_ACCURACY = "video_accuracy"
PROBABILITIES = "probabilities"  # the serving signature's output (components.trainer.export)
class ClassificationMetric(metric_types.Metric):
    """``statistic`` (accuracy, top_k_accuracy, mean_class_accuracy) over clips or over videos (``level``)."""

    def __init__(self, name: str = VIDEO_ACCURACY, statistic: str = "accuracy", level: str = "video", k: int = 1,
                 video_id_key: str = VIDEO_ID):
        if statistic not in STATISTICS or level not in LEVELS:
            raise ValueError(f"statistic must be one of {STATISTICS} and level one of {LEVELS}, got {statistic!r}, "
                             f"{level!r}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        super().__init__(_computations, name=name, statistic=statistic, level=level, k=k, video_id_key=video_id_key)


class VideoAccuracy(ClassificationMetric):
    """Top-1 accuracy of the videos (clip probabilities averaged per video)."""

    def __init__(self, name: str = VIDEO_ACCURACY, video_id_key: str = VIDEO_ID):
        super().__init__(name=name, statistic="accuracy", level="video", k=1, video_id_key=video_id_key)


def _computations(name=VIDEO_ACCURACY, statistic="accuracy", level="video", k=1, video_id_key=VIDEO_ID,
                  eval_config=None, model_names=None, output_names=None, example_weighted=False, **_):
    computations = []
    for model_name in model_names or [""]:
        for output_name in output_names or [""]:
            key = metric_types.MetricKey(name=name, model_name=model_name, output_name=output_name,
                                         example_weighted=example_weighted)
            preprocessors = None
            if level == "video":
                preprocessors = [metric_types.TransformedFeaturePreprocessor(
                    feature_keys=[video_id_key], model_names=[model_name] if model_name else None)]
            computations.append(metric_types.MetricComputation(
                keys=[key], preprocessors=preprocessors,
                combiner=_Combiner(key, statistic, level, k, video_id_key, model_name)))
    return computations


def score(scored: list, statistic: str, k: int = 1) -> float:
    """``statistic`` of (probabilities, label) pairs; NaN for none. Top-k is clipped to the class count."""
    if not scored:
        return float("nan")
    if statistic == "top_k_accuracy":
        return sum(int(label in np.argsort(-p, kind="stable")[:min(k, len(p))]) for p, label in scored) / len(scored)
    right = [(label, int(np.argmax(p) == label)) for p, label in scored]
    if statistic == "accuracy":
        return sum(r for _, r in right) / len(right)
    per_class: dict[int, list[int]] = {}
    for label, r in right:
        per_class.setdefault(label, []).append(r)
    return float(np.mean([np.mean(rs) for rs in per_class.values()]))


class _Combiner(beam.CombineFn):
    """Video level: {video_id: [summed probabilities, label]} (memory grows with eval videos, not clips). Clip level:
    {label: [clips, right, right in top k]} (constant memory)."""

    def __init__(self, key, statistic, level, k, video_id_key, model_name):
        self._key, self._statistic, self._level, self._k = key, statistic, level, k
        self._video_id_key, self._model_name = video_id_key, model_name

    def create_accumulator(self):
        return {}

    def _for_model(self, value):
        """With a baseline, TFMA keys labels, predictions and features by model name."""
        if isinstance(value, dict) and self._model_name in value:
            return value[self._model_name]
        return value

    def add_input(self, accumulator, element):
        prediction = self._for_model(element.prediction)
        if isinstance(prediction, dict):  # the signature returns several outputs; TFMA passes them all here
            prediction = prediction[PROBABILITIES]
        probabilities = np.asarray(prediction, dtype=np.float64).reshape(-1)
        label = int(np.asarray(self._for_model(element.label)).reshape(-1)[0])
        if self._level == "clip":
            counts = accumulator.setdefault(label, [0, 0, 0])
            counts[0] += 1
            counts[1] += int(np.argmax(probabilities) == label)
            top = np.argsort(-probabilities, kind="stable")[:min(self._k, len(probabilities))]
            counts[2] += int(label in top)
            return accumulator
        features = self._for_model(element.transformed_features or {})
        video_id = np.asarray(features[self._video_id_key]).reshape(-1)[0]
        video_id = video_id.decode() if isinstance(video_id, bytes) else str(video_id)
        entry = accumulator.get(video_id)
        if entry is None:
            accumulator[video_id] = [probabilities.copy(), label]
        else:
            entry[0] += probabilities
        return accumulator

    def merge_accumulators(self, accumulators):
        merged = {}
        for accumulator in accumulators:
            for key, value in accumulator.items():
                if key not in merged:
                    merged[key] = [value[0].copy(), value[1]] if self._level == "video" else list(value)
                elif self._level == "video":
                    merged[key][0] = merged[key][0] + value[0]
                else:
                    merged[key] = [a + b for a, b in zip(merged[key], value)]
        return merged

    def extract_output(self, accumulator):
        if self._level == "video":
            return {self._key: score(list(accumulator.values()), self._statistic, self._k)}
        clips = sum(c[0] for c in accumulator.values())
        if not clips:
            return {self._key: float("nan")}
        if self._statistic == "mean_class_accuracy":
            value = float(np.mean([c[1] / c[0] for c in accumulator.values()]))
        else:
            value = sum(c[1 if self._statistic == "accuracy" else 2] for c in accumulator.values()) / clips
        return {self._key: value}


metric_types.register_metric(ClassificationMetric)
metric_types.register_metric(VideoAccuracy)
