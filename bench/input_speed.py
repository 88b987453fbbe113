"""Training input pipeline against the trainer's consumption, on ClipGen's demo clips.

input: ``components.trainer.training.make_dataset`` (gzipped clip records -> parse -> TFT Transform layer ->
batches), clips/s with nothing else running; consumption: the Trainer's model and train step
(``training.build_model`` + ``compile_model``, default levers) on batches of the same shape. Interleaved; a
ratio >= 1 means the input could feed the trainer, the target is >= 3 (it shares the cores with training).
"""
from __future__ import annotations

import glob
import os
import time

import numpy as np

from bresnet._keras import keras  # noqa: F401  (Keras mode first)
import tensorflow as tf

from bench.timing import interleaved

SKIP_BATCHES = 2   # the first batches of a fresh iterator fill the shuffle buffer: not timed


def build_transform_graph(clip_files: list[str], labels: list[str], clip_shape, out: str, temp: str,
                          sample: int = 256) -> str:
    """The project's preprocessing_fn analyzed (tft_beam) over the first ``sample`` clips: a real graph."""
    import apache_beam as beam
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import dataset_metadata

    from components import transform_module
    from components.video_format import ClipKeys, clip_feature_spec

    if os.path.exists(os.path.join(out, "transform_fn")):
        return out
    spec = {k: tf.io.FixedLenFeature(v.shape, v.dtype) for k, v in clip_feature_spec(with_label=True).items()}
    rows = []
    for record in tf.data.TFRecordDataset(clip_files, compression_type="GZIP").take(sample):
        parsed = tf.io.parse_single_example(record, spec)
        rows.append({k: parsed[k].numpy() for k in spec})
    if not rows:
        raise ValueError(f"no clip records in {clip_files!r}")
    custom_config = {"clip_shape": list(clip_shape)}
    metadata = dataset_metadata.DatasetMetadata.from_feature_spec(spec)
    with beam.Pipeline(argv=["--direct_running_mode=in_memory", "--direct_num_workers=1"]) as pipeline, \
            tft_beam.Context(temp_dir=temp, force_tf_compat_v1=False):
        transform_fn = ((pipeline | beam.Create(rows), metadata)
                        | tft_beam.AnalyzeDataset(lambda x: transform_module.preprocessing_fn(x, custom_config)))
        _ = transform_fn | tft_beam.WriteTransformFn(out)
    assert ClipKeys.FRAMES in spec
    return out


def bench_input(clips_dir: str, labels: list[str], clip_shape, work: str, batch: int, batches: int,
                repeats: int) -> dict:
    import tensorflow_transform as tft

    from components.trainer import training
    from components.trainer.config import TrainingConfig

    files = sorted(glob.glob(os.path.join(clips_dir, "*.gz")))
    graph = build_transform_graph(files, labels, clip_shape, os.path.join(work, "transform_graph"),
                                  os.path.join(work, "tft_tmp"))
    config = TrainingConfig(labels=tuple(labels), clip_shape=tuple(clip_shape), batch_size_per_worker=batch,
                            warmup_cosine=False)
    tft_output = tft.TFTransformOutput(graph)
    dataset = training.make_dataset(files, tft_output, config, training=True)

    def read():
        iterator = iter(dataset)   # fresh: nothing prefetched while the trainer was being timed
        for _ in range(SKIP_BATCHES):
            next(iterator)
        start = time.perf_counter()
        for _ in range(batches):
            next(iterator)
        read.seconds.append(time.perf_counter() - start)
    read.seconds = []

    frames, labels_batch = next(iter(dataset))
    model = training.build_model(config)
    training.compile_model(model, config)

    def train():
        for _ in range(batches):
            model.train_on_batch(frames, labels_batch)

    seconds = interleaved({"input": read, "train": train}, repeats)
    input_s = float(np.median(read.seconds))   # the timed part only (without the skipped batches)
    input_clips_s = batches * batch / input_s
    train_clips_s = batches * batch / seconds["train"]
    return {"clip": "x".join(map(str, clip_shape[:3])), "batch": batch, "files": len(files),
            "input_clips_s": input_clips_s, "train_clips_s": train_clips_s,
            "input_over_consumption": input_clips_s / train_clips_s}
