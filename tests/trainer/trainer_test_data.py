"""Test data of the Trainer tests: tiny synthetic clips in a TFX Examples layout, a real Transform graph
built from them with tensorflow_transform.beam and the project's preprocessing_fn, and job helpers."""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from bresnet._keras import keras  # noqa: F401  (Keras mode first)
import tensorflow as tf

from components.video_format import make_clip_example

LABELS = ("jump", "run", "walk")          # label-map order (sorted)
CLIP_SHAPE = (4, 16, 16, 3)


@dataclasses.dataclass(frozen=True)
class ClipData:
    examples_uri: str        # Examples artifact root: Split-train/, Split-eval/
    transform_graph_uri: str
    eval_frames: np.ndarray  # uint8 [N, T, H, W, 3]
    eval_labels: tuple[str, ...]

    @property
    def train_uri(self) -> str:
        return os.path.join(self.examples_uri, "Split-train")

    @property
    def eval_uri(self) -> str:
        return os.path.join(self.examples_uri, "Split-eval")


def synthetic_clips(n: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """Clips whose class is visible (each class brightens its own colour channel), plus noise."""
    rng = np.random.default_rng(seed)
    labels = [LABELS[i % len(LABELS)] for i in range(n)]
    frames = rng.integers(0, 120, size=(n, *CLIP_SHAPE), dtype=np.uint8)
    for i, label in enumerate(labels):
        frames[i, ..., LABELS.index(label)] += 120
    return frames, labels


def write_split(directory: str, frames: np.ndarray, labels: list[str], prefix: str, files: int = 1) -> None:
    os.makedirs(directory, exist_ok=True)
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    writers = [tf.io.TFRecordWriter(os.path.join(directory, f"data_tfrecord-{k:05d}-of-{files:05d}.gz"), options)
               for k in range(files)]
    for i, (clip, label) in enumerate(zip(frames, labels)):
        example = make_clip_example(clip, label, f"{prefix}-video-{i}", clip_index=i)
        writers[i % files].write(example.SerializeToString())
    for w in writers:
        w.close()


def build_transform_graph(output_dir: str, frames: np.ndarray, labels: list[str], temp_dir: str) -> None:
    import apache_beam as beam
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata

    from components import transform_module
    from components.video_format import clip_feature_spec, serialize_frames

    custom_config = {"clip_shape": list(CLIP_SHAPE)}
    # A schema (as SchemaGen would infer) has no default values.
    spec = {k: tf.io.FixedLenFeature(v.shape, v.dtype) for k, v in clip_feature_spec(with_label=True).items()}
    metadata = dataset_metadata.DatasetMetadata.from_feature_spec(spec)
    rows = [{"clip/frames": serialize_frames(clip), "clip/label/string": label.encode(),
             "video/id": f"v{i}".encode(), "clip/index": i,
             "clip/crop_index": 0} for i, (clip, label) in enumerate(zip(frames, labels))]
    with beam.Pipeline() as pipeline, tft_beam.Context(temp_dir=temp_dir, force_tf_compat_v1=False):
        raw = pipeline | beam.Create(rows)
        transform_fn = (raw, metadata) | tft_beam.AnalyzeDataset(
            lambda inputs: transform_module.preprocessing_fn(inputs, custom_config))
        _ = transform_fn | tft_beam.WriteTransformFn(output_dir)


def training_config(**overrides):
    from components.trainer.config import TrainingConfig

    base = dict(labels=LABELS, clip_shape=CLIP_SHAPE, epochs=3, steps_per_epoch=3, eval_steps=1,
                batch_size_per_worker=2, learning_rate=1e-3, warmup_epochs=1.0, workers=2, seed=7,
                collective_timeout_s=120.0, max_restarts=0)
    base.update(overrides)
    return TrainingConfig(**base)


def training_job(data: ClipData, root, config):
    from components.trainer.config import TrainingJob

    return TrainingJob(config=config, train_uri=data.train_uri, eval_uri=data.eval_uri,
                       transform_graph_uri=data.transform_graph_uri,
                       serving_model_dir=str(root / "model" / "Format-Serving"),
                       run_dir=str(root / "model_run"), scratch_dir=str(root / "scratch"))


# Worker 1 of attempt 0 dies abruptly when epoch index 1 begins, i.e. after one finished (backed-up) epoch.
FAULT = {"worker": 1, "epoch": 1, "exit_code": 17, "attempt": 0}


@dataclasses.dataclass(frozen=True)
class FinishedRun:
    job: object          # TrainingJob
    result: object       # LaunchResult
    seconds: float
