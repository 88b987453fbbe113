"""VideoAccuracy: clip probabilities averaged per video, for one model and with a baseline (TFMA keys by model)."""
import numpy as np
from tensorflow_model_analysis.metrics import metric_types

from components.video_metrics import VideoAccuracy


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
