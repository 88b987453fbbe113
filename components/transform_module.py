"""The module file TFX Transform loads: thin, the logic is ``preprocess_clips`` below.

Contract with the Trainer and the serving signatures (one place, see also video_format.ClipKeys):
  inputs : clip tf.Examples (video_format.clip_feature_spec)
  outputs: ``frames`` float32 [B, T, H, W, 3] normalized per channel; ``label`` int64 index of the label in
           the sorted label map (-1 when unknown); ``video_id`` bytes.
  custom_config: {"clip_shape": [T, H, W, 3], "labels": [sorted class names]}

Labels map through a static table built from the stored label map rather than ``tft.vocabulary``: TFT orders
vocabularies by frequency, and indices must follow the one sorted label map that the served model's class
names come from.
"""
import tensorflow as tf
import tensorflow_transform as tft

from components.video_format import ClipKeys, decode_frames_tensor

FRAMES = "frames"
LABEL = "label"
VIDEO_ID = "video_id"


def preprocess_clips(inputs, clip_shape, labels):
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
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(list(labels)), tf.range(len(labels), dtype=tf.int64)),
            default_value=-1)
        outputs[LABEL] = table.lookup(inputs[ClipKeys.LABEL])
    return outputs


def preprocessing_fn(inputs, custom_config):
    return preprocess_clips(inputs, custom_config["clip_shape"], custom_config["labels"])
