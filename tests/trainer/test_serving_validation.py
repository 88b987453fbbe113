"""Bad serving requests fail with a clear InvalidArgument (what TF Serving answers as INVALID_ARGUMENT), through
tf.saved_model.load and through saved_model_cli, instead of crashing or allocating without bound."""
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from components.trainer.export import max_clips_per_request
from components.video_format import make_clip_example
from trainer_test_data import CLIP_SHAPE

MAX_CLIPS_PER_REQUEST = max_clips_per_request(CLIP_SHAPE)


@pytest.fixture(scope="module")
def served(restarted_run):
    return tf.saved_model.load(restarted_run.job.serving_model_dir)


def _example(frames):
    return make_clip_example(frames, "a", "v", 0).SerializeToString()


def _clip(shape=CLIP_SHAPE):
    return np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)


def test_frames_of_the_wrong_dtype_rank_or_size_are_rejected(served):
    frames = served.signatures["serving_frames"]
    for bad in (tf.zeros([1, *CLIP_SHAPE], tf.float32),            # dtype
                tf.zeros(CLIP_SHAPE, tf.uint8),                      # rank
                tf.zeros([1, CLIP_SHAPE[0] + 1, *CLIP_SHAPE[1:]], tf.uint8)):  # size
        with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError)):
            frames(frames=bad)


def test_examples_with_a_wrong_clip_shape_or_garbage_are_invalid_argument(served):
    default = served.signatures["serving_default"]
    wrong = _clip((CLIP_SHAPE[0], CLIP_SHAPE[1] + 2, CLIP_SHAPE[2], 3))
    with pytest.raises(tf.errors.InvalidArgumentError, match="clip frames must have shape"):
        default(examples=tf.constant([_example(wrong)]))
    with pytest.raises(tf.errors.InvalidArgumentError):
        default(examples=tf.constant([b"not a tf.Example"]))


def test_oversized_requests_are_refused_before_allocating(served):
    default = served.signatures["serving_default"]
    too_many = tf.constant([_example(_clip())] * (MAX_CLIPS_PER_REQUEST + 1))
    with pytest.raises(tf.errors.InvalidArgumentError, match="split it into smaller requests"):
        default(examples=too_many)
    with pytest.raises(tf.errors.InvalidArgumentError, match="split it into smaller requests"):
        served.signatures["serving_frames"](frames=tf.zeros([MAX_CLIPS_PER_REQUEST + 1, *CLIP_SHAPE], tf.uint8))
    # One example claiming a huge clip: rejected by its byte size, not decoded.
    huge = _example(np.zeros((CLIP_SHAPE[0] * 40, *CLIP_SHAPE[1:]), np.uint8))
    with pytest.raises(tf.errors.InvalidArgumentError, match="larger than"):
        default(examples=tf.constant([huge]))
    # Exactly at the limit still works.
    ok = default(examples=tf.constant([_example(_clip())] * MAX_CLIPS_PER_REQUEST))
    assert ok["probabilities"].shape[0] == MAX_CLIPS_PER_REQUEST


def test_saved_model_cli_runs_good_input_and_reports_bad_input(restarted_run, tmp_path):
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    good, bad = tmp_path / "good.npy", tmp_path / "bad.npy"
    np.save(good, _clip((2, *CLIP_SHAPE)))
    np.save(bad, _clip((MAX_CLIPS_PER_REQUEST + 1, *CLIP_SHAPE)))
    base = [cli, "run", "--dir", restarted_run.job.serving_model_dir, "--tag_set", "serve",
            "--signature_def", "serving_frames"]
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1"}
    result = subprocess.run(base + ["--inputs", f"frames={good}"], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "probabilities" in result.stdout and "top_class" in result.stdout
    result = subprocess.run(base + ["--inputs", f"frames={bad}"], capture_output=True, text=True, env=env)
    assert result.returncode != 0
    assert "InvalidArgument" in result.stderr and "split it into smaller requests" in result.stderr
