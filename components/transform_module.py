"""The preprocessing_fn TFX Transform runs: thin, the logic is ``preprocess_clips`` below.

Contract with the Trainer and the serving signatures (one place, see also video_format.ClipKeys):
  inputs : clip tf.Examples (video_format.clip_feature_spec)
  outputs: ``frames`` float32 [B, T, H, W, 3] normalized per channel; ``label_name`` the clip's label string;
           ``video_id`` bytes. Without a label input (serving), no ``label_name`` output.
  custom_config: {"clip_shape": [T, H, W, 3]}

The label's index is not Transform's business: the label map is the run's, known only when the run reads its data
window (components/ingest.py), and Transform's statistics do not depend on it. ``label_indices`` below maps names to
indices; the Trainer's input pipeline applies it with the labels it trains, and the serving model's
``transform_features`` signature (what the Evaluator runs) with the labels it was trained on, giving ``label``.

Give Transform the import path ``preprocessing_fn="components.transform_module.preprocessing_fn"`` rather than
``module_file``: TFX would pack every .py of components/ into a wheel of top-level modules, while this module
imports ``components.video_format`` from the installed project anyway.

Labels map by comparison against the sorted label map rather than ``tft.vocabulary``: TFT orders vocabularies
by frequency, and indices must follow the one sorted label map that the served model's class names come from.
A [B, num_labels] string comparison needs no lookup table, so nothing is re-initialized per call of the traced
function.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import tensorflow as tf
import tensorflow_transform as tft

from components.video_format import ClipKeys, decode_frames_tensor

FRAMES = "frames"
LABEL_NAME = "label_name"   # Transform's output: the label string
LABEL = "label"             # its index in the model's label map (the Trainer's input, transform_features' output)
VIDEO_ID = "video_id"


def preprocess_clips(inputs: Mapping[str, tf.Tensor], clip_shape: Sequence[int]) -> dict[str, tf.Tensor]:
    clip_shape = _check_clip_shape(clip_shape)
    frames = tf.cast(decode_frames_tensor(inputs[ClipKeys.FRAMES], clip_shape), tf.float32) / 255.0
    # Per-channel statistics from cheap per-clip reductions (3 floats per clip, not the whole tensor):
    # the mean of per-clip means is the dataset mean because all clips have the same size.
    clip_mean = tf.reduce_mean(frames, axis=[1, 2, 3])                   # [B, 3]
    clip_mean_sq = tf.reduce_mean(tf.square(frames), axis=[1, 2, 3])     # [B, 3]
    mean = tft.mean(clip_mean, reduce_instance_dims=False)
    mean_sq = tft.mean(clip_mean_sq, reduce_instance_dims=False)
    std = tf.sqrt(tf.maximum(mean_sq - tf.square(mean), 1e-6))
    outputs = {
        FRAMES: (frames - mean) / std,
        VIDEO_ID: inputs[ClipKeys.VIDEO_ID],
    }
    if ClipKeys.LABEL in inputs:  # absent at serving time
        outputs[LABEL_NAME] = inputs[ClipKeys.LABEL]
    return outputs


def label_indices(label: tf.Tensor, labels: Sequence[str]) -> tf.Tensor:
    """Label strings [B] -> int64 index in ``labels`` (the sorted label map) [B], -1 for a label not in it."""
    labels = check_labels(labels)
    matches = tf.equal(tf.expand_dims(label, -1), tf.constant(list(labels), tf.string))   # [B, L]
    index = tf.argmax(tf.cast(matches, tf.int32), axis=-1, output_type=tf.int64)
    return tf.where(tf.reduce_any(matches, axis=-1), index, tf.constant(-1, tf.int64))


def preprocessing_fn(inputs: Mapping[str, tf.Tensor], custom_config: Mapping[str, Any]) -> dict[str, tf.Tensor]:
    if not isinstance(custom_config, Mapping) or "clip_shape" not in custom_config:
        raise ValueError(f'custom_config must be {{"clip_shape": [T, H, W, 3]}}, got {custom_config!r}')
    return preprocess_clips(inputs, custom_config["clip_shape"])


def _check_clip_shape(clip_shape: Sequence[int]) -> tuple[int, ...]:
    if (isinstance(clip_shape, (str, bytes)) or not isinstance(clip_shape, Sequence) or len(clip_shape) != 4
            or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in clip_shape)
            or clip_shape[3] != 3):
        raise ValueError(f"clip_shape must be [T, H, W, 3] of positive ints, got {clip_shape!r}")
    return tuple(clip_shape)


def check_labels(labels: Sequence[str]) -> list[str]:
    if isinstance(labels, (str, bytes)) or not isinstance(labels, Sequence) or not labels:
        raise ValueError(f"labels must be a non-empty list of label strings, got {labels!r}")
    labels = list(labels)
    if not all(isinstance(label, str) and label for label in labels) or labels != sorted(set(labels)):
        raise ValueError(f"labels must be the sorted label map (unique non-empty strings, sorted), got {labels!r}")
    return labels
