"""Worker-side pieces in-process: the input pipeline through the real Transform graph, the optimizer and
its schedule, and the merged training history."""
import pytest
import tensorflow as tf
import tensorflow_transform as tft

from bresnet._keras import keras
from components.trainer import history
from components.trainer.training import (MIN_SHARD_BYTES, make_dataset, make_learning_rate, make_optimizer, plan_shards,
                                         split_files)
from trainer_test_data import CLIP_SHAPE, LABELS, training_config


def test_dataset_yields_transformed_global_batches_sharded_by_element(clip_data):
    config = training_config(workers=2, batch_size_per_worker=3)
    ds = make_dataset(split_files(clip_data.eval_uri), tft.TFTransformOutput(clip_data.transform_graph_uri), config,
                      training=False)
    assert ds.options().experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.DATA
    # No tf.data autotuning thread, whose lost wake-up on cancellation made `fit` wait up to 60 s for it at its
    # end (make_dataset's comment; the race is not reproducible on demand, so the option itself is checked).
    assert ds.options().autotune.enabled is False
    frames, labels = next(iter(ds))
    assert frames.shape == (6, *CLIP_SHAPE) and frames.dtype == tf.float32   # global batch = 3 x 2 workers
    # Eval is not shuffled: the labels are the file's labels, as label-map indices.
    assert list(labels.numpy()) == [LABELS.index(l) for l in clip_data.eval_labels]
    assert abs(float(tf.reduce_mean(frames))) < 1.0  # normalized by Transform, not raw 0..255 pixels


def test_training_input_shuffles_across_the_shuffle_buffer(clip_data):
    """ClipGen writes a video's clips next to each other: the buffer decides how far apart a batch's clips come from."""
    tft_output = tft.TFTransformOutput(clip_data.transform_graph_uri)
    files = split_files(clip_data.train_uri)

    def first_batches(buffer, n, training=True):
        ds = make_dataset(files, tft_output, training_config(workers=1, batch_size_per_worker=6, shuffle_buffer=buffer),
                          training=training)
        return [frames.numpy() for frames, _ in ds.take(n)]

    in_file_order = [clip for batch in first_batches(1, 4, training=False) for clip in batch]   # no shuffle at all
    assert len(in_file_order) == 24

    def positions(batch):
        return sorted(next(i for i, c in enumerate(in_file_order) if (c == clip).all()) for clip in batch)

    assert positions(first_batches(1, 1)[0]) == [0, 1, 2, 3, 4, 5]   # a buffer of 1 keeps the file's order
    # A buffer as large as the split: the first batch already draws from the whole file.
    assert max(positions(first_batches(24, 1)[0])) >= 12


def _records_each_worker_reads(files, plan, workers):
    """What TF's auto-shard (the rewrite MultiWorkerMirroredStrategy applies) leaves each worker to read: the
    serialized records, from the same file-reading source make_dataset builds, with make_dataset's policy."""
    from tensorflow.python.distribute import input_ops
    policy = (tf.data.experimental.AutoShardPolicy.FILE if plan.policy == "file"
              else tf.data.experimental.AutoShardPolicy.DATA)
    seen = []
    for worker in range(workers):
        ds = tf.data.TFRecordDataset(list(files), compression_type="GZIP", num_parallel_reads=min(4, len(files)))
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = policy
        ds = input_ops.auto_shard_dataset(ds.with_options(options), workers, worker, workers)
        seen.append(sorted(r.numpy() for r in ds))
    return seen


def test_workers_shard_by_file_when_a_split_has_enough_files(tmp_path):
    from trainer_test_data import synthetic_clips, write_split
    frames, labels = synthetic_clips(12, seed=3)
    write_split(str(tmp_path), frames, labels, "clips", files=4)
    files = split_files(str(tmp_path))
    plan = plan_shards(files, 2)
    assert plan.policy == "file" and plan.files_per_worker == (tuple(files[0::2]), tuple(files[1::2]))
    reads = _records_each_worker_reads(files, plan, 2)
    every = sorted(r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP"))
    # Measured: each worker reads only its own files, the two together read the split exactly once.
    assert reads[0] and reads[1] and not set(reads[0]) & set(reads[1]) and sorted(reads[0] + reads[1]) == every
    assert sum(plan.bytes_per_worker) == sum(tf.io.gfile.stat(f).length for f in files)
    assert "worker 1 reads 2 file(s)" in plan.describe(1)

    # Fewer files than workers (or a possibly empty shard): every worker reads everything, keeps its slice.
    one = plan_shards(files[:1], 2)
    assert one.policy == "element" and "1 file(s) < 2 workers" in one.reason
    assert one.bytes_per_worker == (tf.io.gfile.stat(files[0]).length,) * 2
    assert plan_shards(files, 2, sizes=[1000, MIN_SHARD_BYTES, 1000, 1000]).policy == "element"
    assert plan_shards(files, 1).policy == "file"


def test_dataset_refuses_a_split_without_files(tmp_path, clip_data):
    config = training_config()
    with pytest.raises(FileNotFoundError, match="no gzipped TFRecord files"):
        make_dataset(split_files(str(tmp_path)), tft.TFTransformOutput(clip_data.transform_graph_uri), config,
                     training=True)


def test_warmup_cosine_schedule_and_optimizers():
    config = training_config(epochs=4, steps_per_epoch=10, warmup_epochs=1.0, learning_rate=0.1)
    lr = make_learning_rate(config)
    assert float(lr(0)) == pytest.approx(0.0)
    assert float(lr(5)) == pytest.approx(0.05)             # linear warm-up over the first epoch
    assert float(lr(10)) == pytest.approx(0.1)             # peak
    assert float(lr(25)) == pytest.approx(0.05, abs=1e-6)  # half-way through the cosine
    assert float(lr(40)) == pytest.approx(0.0, abs=1e-6)
    assert make_learning_rate(training_config(warmup_cosine=False, learning_rate=0.3)) == 0.3

    adamw = make_optimizer(training_config(weight_decay=0.01))
    assert isinstance(adamw, keras.optimizers.AdamW) and adamw.weight_decay == pytest.approx(0.01)
    sgd = make_optimizer(training_config(optimizer="sgd", warmup_cosine=False, learning_rate=0.2))
    assert isinstance(sgd, keras.optimizers.SGD) and sgd.momentum == pytest.approx(0.9)


def test_history_merges_workers_and_keeps_an_epochs_last_record(tmp_path):
    scratch = str(tmp_path)
    chief = {"worker": 0, "starts": [{"attempt": 0, "initial_epoch": 0}, {"attempt": 1, "initial_epoch": 1}],
             "epochs": [{"epoch": 1, "attempt": 0, "loss": 2.0, "clips_per_s": 10.0},
                        {"epoch": 2, "attempt": 0, "loss": 1.9, "clips_per_s": 11.0},   # lost: re-run below
                        {"epoch": 2, "attempt": 1, "loss": 1.5, "clips_per_s": 12.0}]}
    other = {"worker": 1, "starts": [], "epochs": [{"epoch": 1, "attempt": 0, "loss": 2.0, "clips_per_s": 9.0},
                                                   {"epoch": 2, "attempt": 1, "loss": 1.5, "clips_per_s": 8.0}]}
    history.save_progress(scratch, chief)
    history.save_progress(scratch, other)
    merged = history.merge_history(scratch, workers=2)
    assert merged["attempts"] == 2 and merged["resumed_from_epoch"] == [0, 1]
    assert [(e["epoch"], e["attempt"], e["loss"]) for e in merged["epochs"]] == [(1, 0, 2.0), (2, 1, 1.5)]
    assert merged["epochs"][1]["clips_per_s_per_worker"] == [12.0, 8.0]
    assert merged["epochs"][1]["clips_per_s"] == pytest.approx(20.0)
    path = history.write_history(merged, str(tmp_path / "run"))
    assert path.endswith("training_history.json")
