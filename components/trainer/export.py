"""The serving SavedModel: the trained classifier with the Transform graph attached, and its signatures.

Every signature runs the same path, raw clip features -> Transform layer -> model -> outputs, and differs
only in how it obtains raw features (parsed from serialized tf.Examples, or built from uint8 frames with
the same encoder the record format uses), so training/serving skew cannot arise by construction.

Signatures:
  serving_default(examples: string [None])        -> probabilities float [B,K], classes string [B,K],
                                                      top_class string [B]
  serving_frames(frames: uint8 [None,T,H,W,3])     -> same outputs
  serving_video(frames: uint8 [F,H,W,3] a whole video's frames, any size; clips, crops, frame_stride: int32)
                                                   -> probabilities float [K] (the mean over the video's clips x
                                                      crops views, cut as evaluation cuts them:
                                                      components/trainer/video_views.py), classes string [K],
                                                      top_class string [], views int32 []
  transform_features(examples: string [None])      -> transformed features (frames, label_name, label: its
                                                      index in this model's labels, video_id); the examples
                                                      must carry labels (TFMA's preprocessing)
The examples' ``clip/frames`` may hold either clip frame format, raw or JPEG per frame (components/video_format.py),
whatever format the model was trained on: the Transform graph's decoder reads both.
The class names are also in ``assets.extra/labels.txt``, one a line.
"""
from __future__ import annotations

import logging
import time
from typing import Sequence

import numpy as np

from bresnet._keras import keras
import tensorflow as tf
import tensorflow_transform as tft

from components import label_maps, transform_module
from components.trainer.config import DEFAULT_MODEL_BUILDER, TrainingConfig
from components.trainer.precision import serving_precision
from components.trainer.training import build_model
from components.trainer.video_views import cut_views, resized_size
from components.video_format import ClipKeys, clip_feature_spec, encode_frames_tensor

logger = logging.getLogger(__name__)

SERVING_DEFAULT = "serving_default"
SERVING_FRAMES = "serving_frames"
SERVING_VIDEO = "serving_video"
TRANSFORM_FEATURES = "transform_features"


# Serving requests are bounded before anything big is allocated; TF Serving returns these as INVALID_ARGUMENT.
MAX_REQUEST_BYTES = 512 * 1024 * 1024   # decoded clip pixels per request
MAX_CLIPS_PER_REQUEST = 1024             # also above TFMA's largest batch (1,000), so evaluation never trips it
EXAMPLE_OVERHEAD_BYTES = 64 * 1024       # ids, keys and the TensorProto header around a clip's pixels


def max_clips_per_request(clip_shape: Sequence[int]) -> int:
    return max(1, min(MAX_CLIPS_PER_REQUEST, MAX_REQUEST_BYTES // int(np.prod(clip_shape))))


def _check_request_size(batch, limit: int, what: str):
    return tf.debugging.assert_less_equal(
        batch, tf.constant(limit, batch.dtype),
        message=f"request has more {what} than the limit of {limit}; split it into smaller requests")


def _video_request_checks(frames, clips, crops, frame_stride, clip_shape, max_clips) -> list:
    """serving_video's bounds, checked before any frame is gathered or resized: at least one frame, positive counts,
    at most ``max_clips`` views, and the gathered and the resized frames each within MAX_REQUEST_BYTES."""
    t, out_h, out_w = clip_shape[:3]
    shape = tf.shape(frames, out_type=tf.int64)
    new_h, new_w = resized_size(shape[1], shape[2], out_h, out_w)
    needed = tf.cast(clips, tf.int64) * t * 3
    checks = [tf.debugging.assert_positive(shape[0], message="serving_video: frames holds no frame"),
              tf.debugging.assert_positive(tf.stack([clips, crops, frame_stride]),
                                           message="serving_video: clips, crops and frame_stride must be >= 1")]
    with tf.control_dependencies(checks):   # the products below are only meaningful for positive counts
        return checks + [
            _check_request_size(tf.cast(clips, tf.int64) * tf.cast(crops, tf.int64), max_clips,
                                "views (clips x crops)"),
            tf.debugging.assert_less_equal(needed * shape[1] * shape[2], tf.constant(MAX_REQUEST_BYTES, tf.int64),
                                           message=f"serving_video: clips x T frames of this size exceed "
                                                   f"{MAX_REQUEST_BYTES} bytes; send fewer clips or smaller frames"),
            tf.debugging.assert_less_equal(needed * new_h * new_w, tf.constant(MAX_REQUEST_BYTES, tf.int64),
                                           message=f"serving_video: the resized frames would exceed "
                                                   f"{MAX_REQUEST_BYTES} bytes; send fewer clips or other-shaped "
                                                   "frames")]


def make_signatures(model: keras.Model, labels: Sequence[str], clip_shape: Sequence[int]) -> dict:
    """tf.functions for ``model`` (which must carry ``model.tft_layer``), keyed by signature name."""
    labels = [str(l) for l in labels]
    clip_shape = [int(d) for d in clip_shape]
    max_example_bytes = int(np.prod(clip_shape)) + EXAMPLE_OVERHEAD_BYTES
    max_clips = max_clips_per_request(clip_shape)
    serving_spec = clip_feature_spec(with_label=False)
    labelled_spec = clip_feature_spec(with_label=True)

    def predict(raw_features):
        frames = model.tft_layer(raw_features)[transform_module.FRAMES]
        # TF 2.16's oneDNN Conv3D mishandles an empty batch (wrong output depth), so skip the model then.
        logits = tf.cond(tf.shape(frames)[0] > 0,
                         lambda: model(frames, training=False),
                         lambda: tf.zeros([0, len(labels)], tf.float32))
        probabilities = tf.nn.softmax(logits, axis=-1)
        class_names = tf.constant(labels)
        batch = tf.shape(probabilities)[0]
        return {
            "probabilities": probabilities,
            "classes": tf.tile(class_names[tf.newaxis, :], [batch, 1]),
            "top_class": tf.gather(class_names, tf.argmax(probabilities, axis=-1)),
        }

    def parse(examples, spec):
        # Count and size first: parse_tensor would otherwise allocate whatever a request claims.
        with tf.control_dependencies([
                _check_request_size(tf.size(examples), max_clips, "examples"),
                tf.debugging.assert_less_equal(
                    tf.reduce_max(tf.concat([tf.strings.length(examples), [0]], 0)), max_example_bytes,
                    message=f"an example is larger than a {clip_shape} uint8 clip allows ({max_example_bytes} bytes)")]):
            return tf.io.parse_example(tf.identity(examples), spec)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_examples(examples):
        return predict(parse(examples, serving_spec))

    @tf.function(input_signature=[tf.TensorSpec([None, *clip_shape], tf.uint8, name="frames")])
    def serve_frames(frames):
        batch = tf.shape(frames)[0]
        with tf.control_dependencies([_check_request_size(batch, max_clips, "clips")]):
            frames = tf.identity(frames)
        # Exactly what parse_example yields for a clip example carrying only frames (spec defaults).
        raw = {
            ClipKeys.FRAMES: encode_frames_tensor(frames),
            ClipKeys.VIDEO_ID: tf.fill([batch], serving_spec[ClipKeys.VIDEO_ID].default_value),
            **{key: tf.fill([batch], tf.constant(serving_spec[key].default_value, tf.int64))
               for key in (ClipKeys.CLIP_INDEX, ClipKeys.CROP_INDEX)},
        }
        return predict(raw)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="frames"),
                                  tf.TensorSpec([], tf.int32, name="clips"),
                                  tf.TensorSpec([], tf.int32, name="crops"),
                                  tf.TensorSpec([], tf.int32, name="frame_stride")])
    def serve_video(frames, clips, crops, frame_stride):
        with tf.control_dependencies(_video_request_checks(frames, clips, crops, frame_stride, clip_shape, max_clips)):
            views = cut_views(tf.identity(frames), clip_shape, clips, crops, frame_stride)
        out = serve_frames(views)
        probabilities = tf.reduce_mean(out["probabilities"], axis=0)   # Evaluator's video level: mean softmax
        class_names = tf.constant(labels)
        return {"probabilities": probabilities, "classes": class_names,
                "top_class": tf.gather(class_names, tf.argmax(probabilities)), "views": clips * crops}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def transform_features(examples):
        # What the Evaluator feeds TFMA: the label as its index in this model's label map (-1: not in it).
        transformed = dict(model.tft_layer(parse(examples, labelled_spec)))
        transformed[transform_module.LABEL] = transform_module.label_indices(
            transformed[transform_module.LABEL_NAME], labels)
        return transformed

    return {
        SERVING_DEFAULT: serve_examples.get_concrete_function(),
        SERVING_FRAMES: serve_frames.get_concrete_function(),
        SERVING_VIDEO: serve_video.get_concrete_function(),
        TRANSFORM_FEATURES: transform_features.get_concrete_function(),
    }


def export_serving_model(weights: Sequence[np.ndarray], config: TrainingConfig, transform_graph_uri: str,
                         export_dir: str, model_builder: str = DEFAULT_MODEL_BUILDER) -> str:
    """Writes the serving SavedModel of the trained ``weights`` (model.get_weights() order) to ``export_dir``.

    The weights go into a fresh, strategy-free model: the export then holds plain variables and no
    optimizer, and saving needs no collective ops, so only the chief has to do it.
    """
    started = time.perf_counter()
    precision = serving_precision(config)
    model = build_model(config, model_builder, precision=precision)
    model.set_weights(weights)
    model.tft_layer = tft.TFTransformOutput(transform_graph_uri).transform_features_layer()
    signatures = make_signatures(model, config.labels, config.clip_shape)
    model.save(export_dir, save_format="tf", signatures=signatures, include_optimizer=False)
    # The class names as a file too (TF Serving ignores assets.extra/): a later run compares its label map with
    # the served model's without loading it.
    label_maps.write_served_labels(export_dir, config.labels)
    logger.info("exported serving model to %s in %.1fs (computes in %s; signatures: %s)", export_dir,
                time.perf_counter() - started, precision, ", ".join(sorted(signatures)))
    return export_dir
