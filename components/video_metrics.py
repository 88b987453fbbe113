"""VideoAccuracy: a TFMA metric that averages clip probabilities per video id, then scores the argmax.

Clip accuracy answers "is this 8-frame window right?"; users care whether the *video* is right. The video id is
the ``video_id`` output of the Transform graph (TFMA gets it through ``transform_features``). Registered with
TFMA so an EvalConfig names it as ``MetricConfig(class_name="VideoAccuracy", module=__name__)``.
"""
import apache_beam as beam
import numpy as np
from tensorflow_model_analysis.metrics import metric_types

from components.transform_module import VIDEO_ID

VIDEO_ACCURACY = "video_accuracy"
PROBABILITIES = "probabilities"  # the serving signature's output (components.trainer.export)


class VideoAccuracy(metric_types.Metric):
    def __init__(self, name: str = VIDEO_ACCURACY, video_id_key: str = VIDEO_ID):
        super().__init__(_computations, name=name, video_id_key=video_id_key)


def _computations(name=VIDEO_ACCURACY, video_id_key=VIDEO_ID, eval_config=None, model_names=None,
                  output_names=None, example_weighted=False, **_):
    computations = []
    for model_name in model_names or [""]:
        for output_name in output_names or [""]:
            key = metric_types.MetricKey(name=name, model_name=model_name, output_name=output_name,
                                         example_weighted=example_weighted)
            preprocessor = metric_types.TransformedFeaturePreprocessor(
                feature_keys=[video_id_key], model_names=[model_name] if model_name else None)
            computations.append(metric_types.MetricComputation(
                keys=[key], preprocessors=[preprocessor],
                combiner=_VideoAccuracyCombiner(key, video_id_key, model_name)))
    return computations


class _VideoAccuracyCombiner(beam.CombineFn):
    """Accumulator: {video_id: [summed probabilities, label]}; memory grows with eval videos, not clips."""

    def __init__(self, key, video_id_key, model_name):
        self._key, self._video_id_key, self._model_name = key, video_id_key, model_name

    def create_accumulator(self):
        return {}

    def _for_model(self, value):
        """With a baseline, TFMA keys labels, predictions and features by model name."""
        if isinstance(value, dict) and self._model_name in value:
            return value[self._model_name]
        return value

    def add_input(self, accumulator, element):
        features = self._for_model(element.transformed_features or {})
        video_id = np.asarray(features[self._video_id_key]).reshape(-1)[0]
        video_id = video_id.decode() if isinstance(video_id, bytes) else str(video_id)
        prediction = self._for_model(element.prediction)
        if isinstance(prediction, dict):  # the signature returns several outputs; TFMA passes them all here
            prediction = prediction[PROBABILITIES]
        probabilities = np.asarray(prediction, dtype=np.float64).reshape(-1)
        label = int(np.asarray(self._for_model(element.label)).reshape(-1)[0])
        entry = accumulator.get(video_id)
        if entry is None:
            accumulator[video_id] = [probabilities.copy(), label]
        else:
            entry[0] += probabilities
        return accumulator

    def merge_accumulators(self, accumulators):
        merged = {}
        for accumulator in accumulators:
            for video_id, (probabilities, label) in accumulator.items():
                if video_id in merged:
                    merged[video_id][0] = merged[video_id][0] + probabilities
                else:
                    merged[video_id] = [probabilities, label]
        return merged

    def extract_output(self, accumulator):
        if not accumulator:
            return {self._key: float("nan")}
        correct = sum(int(np.argmax(p) == label) for p, label in accumulator.values())
        return {self._key: correct / len(accumulator)}


metric_types.register_metric(VideoAccuracy)
