"""The Transform module's own logic: label indices and custom_config checks (the TFX run is in test_clip_pipeline)."""
import pytest
import tensorflow as tf

from components import transform_module as tm
from components.video_format import ClipKeys, encode_frames_tensor


def test_label_indices_follow_the_sorted_label_map_and_unknown_is_minus_one():
    labels = ["jump", "run", "walk"]
    got = tm.label_indices(tf.constant(["walk", "swim", "jump", "run", ""]), labels)
    assert got.dtype == tf.int64
    assert got.numpy().tolist() == [2, -1, 0, 1, -1]
    for bad, match in [([], "non-empty"), (["b", "a"], "sorted"), (["a", "a"], "sorted")]:
        with pytest.raises(ValueError, match=match):
            tm.label_indices(tf.constant(["a"]), bad)


@pytest.mark.parametrize("config, match", [
    (None, "custom_config"),
    ({"labels": ["a"]}, "custom_config"),
    ({"clip_shape": [4, 8, 8]}, "clip_shape"),
    ({"clip_shape": [4, 8, 8, 1]}, "clip_shape"),
])
def test_preprocessing_fn_rejects_a_bad_custom_config(config, match):
    frames = encode_frames_tensor(tf.zeros([1, 4, 8, 8, 3], tf.uint8))
    with pytest.raises(ValueError, match=match):
        tm.preprocessing_fn({ClipKeys.FRAMES: frames}, config)


def test_preprocess_clips_outputs_contract_in_graph():
    """Traced like TFT traces it: output names, dtypes and static shapes of the contract, the label name only when
    given (its index is the Trainer's and the serving model's: they know the labels)."""
    spec = {ClipKeys.FRAMES: tf.TensorSpec([None], tf.string), ClipKeys.VIDEO_ID: tf.TensorSpec([None], tf.string),
            ClipKeys.LABEL: tf.TensorSpec([None], tf.string)}
    with tf.compat.v1.Graph().as_default():
        inputs = {k: tf.compat.v1.placeholder(s.dtype, s.shape) for k, s in spec.items()}
        out = tm.preprocessing_fn(inputs, {"clip_shape": [4, 8, 8, 3]})
        assert set(out) == {tm.FRAMES, tm.LABEL_NAME, tm.VIDEO_ID}
        assert out[tm.FRAMES].dtype == tf.float32 and out[tm.FRAMES].shape.as_list() == [None, 4, 8, 8, 3]
        assert out[tm.LABEL_NAME].dtype == tf.string
        del inputs[ClipKeys.LABEL]
        assert set(tm.preprocessing_fn(inputs, {"clip_shape": [4, 8, 8, 3]})) == {
            tm.FRAMES, tm.VIDEO_ID}
