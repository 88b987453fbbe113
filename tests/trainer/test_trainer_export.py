"""The exported serving SavedModel (from the shared 2-worker run): signatures, no skew between the
examples and frames paths, class names in label-map order, batch independence (TFMA feeds batches)."""
import os

import numpy as np
import pytest
import tensorflow as tf

from components.video_format import make_clip_example, parse_clip_frames
from trainer_test_data import CLIP_SHAPE, LABELS


@pytest.fixture(scope="module")
def served(restarted_run):
    return tf.saved_model.load(restarted_run.job.serving_model_dir)


@pytest.fixture(scope="module")
def eval_examples(clip_data):
    return tf.constant([make_clip_example(f, l, f"v{i}", i).SerializeToString()
                        for i, (f, l) in enumerate(zip(clip_data.eval_frames, clip_data.eval_labels))])


def test_signatures_and_their_inputs(served):
    assert set(served.signatures) == {"serving_default", "serving_frames", "serving_video", "transform_features"}
    _, default_inputs = served.signatures["serving_default"].structured_input_signature
    assert default_inputs == {"examples": tf.TensorSpec([None], tf.string, name="examples")}
    _, frames_inputs = served.signatures["serving_frames"].structured_input_signature
    assert frames_inputs == {"frames": tf.TensorSpec([None, *CLIP_SHAPE], tf.uint8, name="frames")}
    assert set(served.signatures["serving_default"].structured_outputs) == {"probabilities", "classes", "top_class"}
    _, video_inputs = served.signatures["serving_video"].structured_input_signature
    assert video_inputs == {"frames": tf.TensorSpec([None, None, None, 3], tf.uint8, name="frames"),
                            **{k: tf.TensorSpec([], tf.int32, name=k) for k in ("clips", "crops", "frame_stride")}}
    assert set(served.signatures["serving_video"].structured_outputs) == {"probabilities", "classes", "top_class",
                                                                            "views"}


def test_examples_and_frames_paths_agree_and_name_classes_in_label_map_order(served, eval_examples, clip_data):
    by_examples = served.signatures["serving_default"](examples=eval_examples)
    by_frames = served.signatures["serving_frames"](frames=tf.constant(clip_data.eval_frames))
    probabilities = by_examples["probabilities"].numpy()
    n = len(clip_data.eval_labels)
    assert probabilities.shape == (n, len(LABELS))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(by_frames["probabilities"].numpy(), probabilities, rtol=0, atol=1e-6)

    for out in (by_examples, by_frames):
        classes = out["classes"].numpy().astype(str)
        assert classes.shape == (n, len(LABELS)) and (classes == np.array(LABELS)).all()
        expected_top = np.array(LABELS)[probabilities.argmax(axis=1)]
        assert list(out["top_class"].numpy().astype(str)) == list(expected_top)


def test_serving_default_reads_jpeg_clips_as_the_pixels_they_decode_to(served, clip_data):
    """A model trained on raw clips serves clips stored as JPEG frames (clips.frame_format jpeg), even mixed with
    raw ones in one request: each is classified as its decoded pixels are."""
    frames = clip_data.eval_frames[:4]
    jpeg = [make_clip_example(f, l, f"v{i}", i, frame_format="jpeg")
            for i, (f, l) in enumerate(zip(frames, clip_data.eval_labels))]
    decoded = np.stack([parse_clip_frames(e.features.feature["clip/frames"].bytes_list.value[0]) for e in jpeg])
    assert not np.array_equal(decoded, frames)     # JPEG is lossy: these are other pixels than the raw clip's
    mixed = [jpeg[0], make_clip_example(frames[1], "x", "v1", 1), jpeg[2], jpeg[3]]
    by_examples = served.signatures["serving_default"](examples=tf.constant([e.SerializeToString() for e in mixed]))
    expected = served.signatures["serving_frames"](frames=tf.constant(np.stack([decoded[0], frames[1], *decoded[2:]])))
    np.testing.assert_allclose(by_examples["probabilities"].numpy(), expected["probabilities"].numpy(), rtol=0,
                               atol=1e-6)


def test_serving_default_is_batch_independent(served, eval_examples):
    """...and never augments, though the model trained on augmented clips (conftest's restarted_run)."""
    whole = served.signatures["serving_default"](examples=eval_examples)["probabilities"].numpy()
    again = served.signatures["serving_default"](examples=eval_examples)["probabilities"].numpy()
    np.testing.assert_array_equal(again, whole)
    parts = [served.signatures["serving_default"](examples=eval_examples[i:i + 2])["probabilities"].numpy()
             for i in range(0, len(eval_examples), 2)]
    np.testing.assert_allclose(np.concatenate(parts), whole, rtol=0, atol=1e-6)
    empty = served.signatures["serving_default"](examples=tf.constant([], tf.string))
    assert empty["probabilities"].shape == (0, len(LABELS))


def test_transform_features_applies_the_transform_graph(served, eval_examples, clip_data):
    out = served.signatures["transform_features"](examples=eval_examples)
    assert list(out["label"].numpy()) == [LABELS.index(l) for l in clip_data.eval_labels]
    frames = out["frames"].numpy()
    assert frames.shape == (len(clip_data.eval_labels), *CLIP_SHAPE) and frames.dtype == np.float32
    # Normalized with the statistics Transform computed, not raw pixels.
    assert abs(frames.mean()) < 1.0 and frames.std() > 0.1
    assert [v.decode() for v in out["video_id"].numpy()] == [f"v{i}" for i in range(len(eval_examples))]


def test_tfma_evaluates_it_with_the_transform_preprocessing(served, restarted_run, clip_data, eval_examples,
                                                            tmp_path):
    """The Evaluator's configuration: labels from `transform_features`, predictions from batches through
    `serving_default`; TFMA's accuracy must equal the one computed from the signature directly."""
    import tensorflow_model_analysis as tfma

    eval_config = tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(signature_name="serving_default", label_key="label",
                                    prediction_key="probabilities",
                                    preprocessing_function_names=["transform_features"])],
        slicing_specs=[tfma.SlicingSpec()],
        metrics_specs=[tfma.MetricsSpec(metrics=[tfma.MetricConfig(class_name="SparseCategoricalAccuracy"),
                                                 tfma.MetricConfig(class_name="ExampleCount")])])
    model = tfma.default_eval_shared_model(eval_saved_model_path=restarted_run.job.serving_model_dir,
                                           eval_config=eval_config)
    tfma.run_model_analysis(eval_shared_model=model, eval_config=eval_config,
                            data_location=os.path.join(clip_data.eval_uri, "*.gz"), file_format="tfrecords",
                            output_path=str(tmp_path / "tfma"))
    ((_, metrics),) = tfma.load_eval_result(str(tmp_path / "tfma")).slicing_metrics
    values = {name: v["doubleValue"] for name, v in metrics[""][""].items()}

    probabilities = served.signatures["serving_default"](examples=eval_examples)["probabilities"].numpy()
    labels = np.array([LABELS.index(l) for l in clip_data.eval_labels])
    assert values["example_count"] == len(labels)
    assert values["sparse_categorical_accuracy"] == pytest.approx((probabilities.argmax(1) == labels).mean())
