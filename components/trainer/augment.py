"""Augmentation of training clips, in tf.data on the Transform's output (float32 [B, T, H, W, 3], normalized).

Each op draws per clip and is off at its TrainingConfig default (see the ``augment_*`` fields there); ``augment``
applies the ones a config turns on, in this order: temporal stride jitter, random resized crop, flip, brightness,
contrast; then ``mix`` blends clips of a batch with each other (mixup, CutMix) and their one-hot targets alike.
Only ``training.make_dataset(training=True)`` calls them: evaluation, the Evaluator and the serving
signatures see clips as ClipGen cut them. The ops follow Model Garden's video input (random resized crop over an
area and aspect range, one box for every frame; brightness and contrast jitter), on clips already normalized.
"""
from __future__ import annotations

import math

import tensorflow as tf

from components.trainer.config import TrainingConfig

ASPECT_RANGE = (3 / 4, 4 / 3)


def enabled(config: TrainingConfig) -> list[str]:
    """The augmentations ``config`` turns on, by field name."""
    on = {"augment_speed_min": config.augment_speed_min < 1.0,
          "augment_crop_area_min": config.augment_crop_area_min < 1.0, "augment_flip": config.augment_flip,
          "augment_brightness": config.augment_brightness > 0, "augment_contrast": config.augment_contrast > 0,
          "augment_mixup_alpha": config.augment_mixup_alpha > 0,
          "augment_cutmix_alpha": config.augment_cutmix_alpha > 0}
    return [name for name, is_on in on.items() if is_on]


def mixes(config: TrainingConfig) -> bool:
    """Mixup or CutMix is on: the labels are one-hot targets (``training.make_dataset``, ``make_loss``)."""
    return config.augment_mixup_alpha > 0 or config.augment_cutmix_alpha > 0


def speed_jitter(frames: tf.Tensor, speed_min: float) -> tf.Tensor:
    """Per clip: a random run of n in [ceil(speed_min * T), T] consecutive frames, stretched over T frames."""
    batch, length = tf.shape(frames)[0], frames.shape[1]
    shortest = max(1, math.ceil(speed_min * length))
    n = tf.random.uniform([batch], shortest, length + 1, dtype=tf.int32)
    start = tf.cast(tf.floor(tf.random.uniform([batch]) * tf.cast(length - n + 1, tf.float32)), tf.int32)
    steps = tf.range(length, dtype=tf.float32)[None, :] * tf.cast(n - 1, tf.float32)[:, None] / max(length - 1, 1)
    index = start[:, None] + tf.cast(tf.floor(steps), tf.int32)
    return tf.gather(frames, tf.minimum(index, length - 1), batch_dims=1)


def random_resized_crop(frames: tf.Tensor, area_min: float) -> tf.Tensor:
    """Per clip: a box of area in [area_min, 1] of the frame and aspect in ASPECT_RANGE (clipped to the frame), the
    same on every frame, resized back to H x W (bilinear)."""
    shape = tf.shape(frames)
    batch, length, height, width = shape[0], frames.shape[1], frames.shape[2], frames.shape[3]
    area = tf.random.uniform([batch], area_min, 1.0)
    log_aspect = tf.random.uniform([batch], math.log(ASPECT_RANGE[0]), math.log(ASPECT_RANGE[1]))
    aspect = tf.exp(log_aspect)
    box_h = tf.minimum(tf.sqrt(area / aspect), 1.0)        # as fractions of the frame
    box_w = tf.minimum(tf.sqrt(area * aspect), 1.0)
    top = tf.random.uniform([batch]) * (1.0 - box_h)
    left = tf.random.uniform([batch]) * (1.0 - box_w)
    boxes = tf.repeat(tf.stack([top, left, top + box_h, left + box_w], axis=1), length, axis=0)
    flat = tf.reshape(frames, [-1, height, width, 3])
    cropped = tf.image.crop_and_resize(flat, boxes, tf.range(batch * length), [height, width])
    return tf.reshape(cropped, [-1, length, height, width, 3])


def flip(frames: tf.Tensor) -> tf.Tensor:
    """Per clip, with probability 0.5: every frame mirrored left-right."""
    mirror = tf.random.uniform([tf.shape(frames)[0], 1, 1, 1, 1]) < 0.5
    return tf.where(mirror, tf.reverse(frames, axis=[3]), frames)


def brightness(frames: tf.Tensor, delta: float) -> tf.Tensor:
    """Per clip: + uniform(-delta, delta) on every value (standard deviations: the clips are normalized)."""
    return frames + tf.random.uniform([tf.shape(frames)[0], 1, 1, 1, 1], -delta, delta)


def contrast(frames: tf.Tensor, spread: float) -> tf.Tensor:
    """Per clip and channel: the distance to the clip's mean scaled by uniform(1 - spread, 1 + spread)."""
    mean = tf.reduce_mean(frames, axis=[1, 2, 3], keepdims=True)
    scale = tf.random.uniform([tf.shape(frames)[0], 1, 1, 1, 1], 1.0 - spread, 1.0 + spread)
    return (frames - mean) * scale + mean


def _beta(alpha: float) -> tf.Tensor:
    """One draw of Beta(alpha, alpha), as the ratio of two Gamma(alpha) draws."""
    a, b = tf.random.gamma([], alpha), tf.random.gamma([], alpha)
    return a / tf.maximum(a + b, 1e-12)


def mixup(frames: tf.Tensor, targets: tf.Tensor, alpha: float) -> tuple[tf.Tensor, tf.Tensor]:
    """The batch blended with itself in reverse order by one lam ~ Beta(alpha, alpha): lam x + (1 - lam) x', the
    targets alike."""
    lam = _beta(alpha)
    return (lam * frames + (1.0 - lam) * tf.reverse(frames, [0]),
            lam * targets + (1.0 - lam) * tf.reverse(targets, [0]))


def cutmix(frames: tf.Tensor, targets: tf.Tensor, alpha: float) -> tuple[tf.Tensor, tf.Tensor]:
    """A box of about (1 - lam) of the frame area (lam ~ Beta(alpha, alpha)) at a uniform centre, clipped to the
    frame, cut from the batch's reversed order and pasted into every frame of each clip; the targets mix by the
    box's actual share of the frame."""
    height, width = frames.shape[2], frames.shape[3]
    side = tf.sqrt(1.0 - _beta(alpha))
    box_h, box_w = tf.cast(tf.round(side * height), tf.int32), tf.cast(tf.round(side * width), tf.int32)
    centre_y = tf.random.uniform([], 0, height, dtype=tf.int32)
    centre_x = tf.random.uniform([], 0, width, dtype=tf.int32)
    top, bottom = tf.maximum(centre_y - box_h // 2, 0), tf.minimum(centre_y + (box_h + 1) // 2, height)
    left, right = tf.maximum(centre_x - box_w // 2, 0), tf.minimum(centre_x + (box_w + 1) // 2, width)
    rows, cols = tf.range(height), tf.range(width)
    inside = (((rows >= top) & (rows < bottom))[:, None] & ((cols >= left) & (cols < right))[None, :])
    pasted = tf.where(inside[None, None, :, :, None], tf.reverse(frames, [0]), frames)
    share = tf.cast((bottom - top) * (right - left), targets.dtype) / float(height * width)
    return pasted, (1.0 - share) * targets + share * tf.reverse(targets, [0])


def mix(frames: tf.Tensor, targets: tf.Tensor, config: TrainingConfig) -> tuple[tf.Tensor, tf.Tensor]:
    """Mixup or CutMix as ``config`` says (both on: one of them per batch, evens) on clips [B, T, H, W, 3] and their
    one-hot targets [B, K]."""
    mixup_alpha, cutmix_alpha = config.augment_mixup_alpha, config.augment_cutmix_alpha
    if mixup_alpha > 0 and cutmix_alpha > 0:
        return tf.cond(tf.random.uniform([]) < 0.5, lambda: cutmix(frames, targets, cutmix_alpha),
                       lambda: mixup(frames, targets, mixup_alpha))
    if cutmix_alpha > 0:
        return cutmix(frames, targets, cutmix_alpha)
    return mixup(frames, targets, mixup_alpha)


def augment(frames: tf.Tensor, config: TrainingConfig) -> tf.Tensor:
    """The per-clip augmentations ``config`` turns on, on a batch of clips [B, T, H, W, 3]; the same tensor when none
    is (``mix`` is separate: it needs the targets)."""
    if config.augment_speed_min < 1.0:
        frames = speed_jitter(frames, config.augment_speed_min)
    if config.augment_crop_area_min < 1.0:
        frames = random_resized_crop(frames, config.augment_crop_area_min)
    if config.augment_flip:
        frames = flip(frames)
    if config.augment_brightness > 0:
        frames = brightness(frames, config.augment_brightness)
    if config.augment_contrast > 0:
        frames = contrast(frames, config.augment_contrast)
    return frames
