"""In-graph evaluation views of a whole video, for the ``serving_video`` signature (components/trainer/export.py).

The same policy as ClipGen's eval split and ``predict`` (components/clip_sampling.py, which is the reference and
whose docstring says why): T windows spaced uniformly over the video (a video shorter than one window loops), each
frame resized so its short side is the larger crop side, and S crops per window along the longer free axis. Here
it is written in TensorFlow ops so that TF Serving can cut a whole video without this project's Python.

Only the frames some window needs are gathered and resized. Resizing is TF's: ``area`` when shrinking and bilinear
when enlarging, as ClipGen picks OpenCV's INTER_AREA and INTER_LINEAR. For frames already at the resized size the
clips are ClipGen's pixel for pixel; otherwise the two libraries' resamplers differ by at most one grey level in
under 1% of the pixels (real mp4 frames of 128x301 and 128x228 at 16x16, 32x32 and 112x112 crops; tests/pipeline/
test_predict.py checks it and the probabilities).
"""
from __future__ import annotations

from typing import Sequence

import tensorflow as tf


def window_starts(num_frames: tf.Tensor, span: tf.Tensor, clips: tf.Tensor) -> tf.Tensor:
    """clip_sampling.eval_window_starts in int64 ops: [clips] starts."""
    i = tf.range(clips, dtype=tf.int64)
    last = num_frames - span
    k1 = tf.maximum(clips - 1, 1)
    spread = (2 * i * last + k1) // (2 * k1)
    fitting = tf.where(clips == 1, tf.fill([clips], last // 2), spread)
    return tf.where(num_frames < span, i * num_frames // clips, fitting)


def resized_size(height: tf.Tensor, width: tf.Tensor, out_height: int, out_width: int) -> tuple[tf.Tensor, tf.Tensor]:
    """clip_sampling.resized_shape with the default short side (the larger crop side), in float64 like Python;
    tf.round rounds halves to even, as Python's round does."""
    h, w = tf.cast(height, tf.float64), tf.cast(width, tf.float64)
    scale = tf.maximum(tf.maximum(max(out_height, out_width) / tf.minimum(h, w), out_height / h), out_width / w)
    return (tf.maximum(tf.constant(out_height, tf.int64), tf.cast(tf.round(h * scale), tf.int64)),
            tf.maximum(tf.constant(out_width, tf.int64), tf.cast(tf.round(w * scale), tf.int64)))


def crop_offsets(height: tf.Tensor, width: tf.Tensor, out_height: int, out_width: int,
                 crops: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """clip_sampling.eval_crop_boxes' (tops, lefts), [crops] each."""
    free_h, free_w = height - out_height, width - out_width
    j = tf.range(crops, dtype=tf.int64)
    k1 = tf.maximum(crops - 1, 1)
    along_width = free_w >= free_h
    free = tf.where(along_width, free_w, free_h)
    slide = tf.where(crops == 1, tf.fill([crops], free // 2), (2 * j * free + k1) // (2 * k1))
    tops = tf.where(along_width, tf.fill([crops], free_h // 2), slide)
    lefts = tf.where(along_width, slide, tf.fill([crops], free_w // 2))
    return tops, lefts


def cut_views(frames: tf.Tensor, clip_shape: Sequence[int], clips: tf.Tensor, crops: tf.Tensor,
              frame_stride: tf.Tensor) -> tf.Tensor:
    """uint8 frames [F, H, W, 3] -> uint8 views [clips x crops, T, h, w, 3], window-major (ClipGen's order).

    The arguments must already be checked (positive counts, F >= 1); the caller bounds the sizes."""
    t, out_h, out_w = (int(d) for d in clip_shape[:3])
    clips, crops, stride = (tf.cast(x, tf.int64) for x in (clips, crops, frame_stride))
    shape = tf.shape(frames, out_type=tf.int64)
    num_frames, height, width = shape[0], shape[1], shape[2]
    starts = window_starts(num_frames, (t - 1) * stride + 1, clips)
    indices = (starts[:, None] + tf.range(t, dtype=tf.int64)[None, :] * stride) % num_frames   # [clips, T]
    needed = tf.gather(frames, tf.reshape(indices, [-1]))                                       # [clips*T, H, W, 3]
    new_h, new_w = resized_size(height, width, out_h, out_w)
    size = tf.cast(tf.stack([new_h, new_w]), tf.int32)
    shrinking = height * width > new_h * new_w

    def resize(method):
        return lambda: tf.cast(tf.clip_by_value(tf.round(tf.image.resize(needed, size, method=method)), 0, 255),
                               tf.uint8)

    same = tf.logical_and(tf.equal(height, new_h), tf.equal(width, new_w))
    resized = tf.cond(same, lambda: needed,
                      lambda: tf.cond(shrinking, resize(tf.image.ResizeMethod.AREA),
                                      resize(tf.image.ResizeMethod.BILINEAR)))
    resized = tf.reshape(resized, tf.stack([clips, t, new_h, new_w, 3]))
    tops, lefts = crop_offsets(new_h, new_w, out_h, out_w, crops)

    def crop(offset):
        return resized[:, :, offset[0]:offset[0] + out_h, offset[1]:offset[1] + out_w, :]

    per_crop = tf.map_fn(crop, tf.stack([tops, lefts], axis=1),
                         fn_output_signature=tf.TensorSpec([None, t, out_h, out_w, 3], tf.uint8))  # [S, clips, ...]
    views = tf.transpose(per_crop, [1, 0, 2, 3, 4, 5])                                          # [clips, S, ...]
    return tf.reshape(views, [-1, t, out_h, out_w, 3])
