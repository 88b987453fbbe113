"""The whole pipeline on LocalDagRunner with 2 training workers (the demo preset with `training.workers=2`) on a smaller dataset.

Run 1 (no model in serving yet): blessed on the value threshold, pushed as <serving>/<model>/<version>/, and the
pushed SavedModel classifies held-out demo clips far better than chance.
Run 2 (a deliberately worse model, same data: cached ingest/ClipGen/Transform): the change threshold against
the served baseline fails, nothing new is pushed, and the run says which threshold failed.
"""
import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from components.video_format import ClipKeys

pytestmark = pytest.mark.slow

# The `runs` fixture (two real pipeline runs, shared with test_report) lives in conftest.py.


def test_first_run_is_blessed_and_pushed_as_a_tf_serving_version(runs):
    root, first, _ = runs
    assert first.blessed is True and first.gate_failures == []
    model_dir = root / "serving" / "bresnet"
    versions = sorted(os.listdir(model_dir))
    assert versions == [first.pushed_version] and first.pushed_version.isdigit()
    assert first.pushed_path == str(model_dir / first.pushed_version)
    assert (model_dir / first.pushed_version / "saved_model.pb").exists()
    assert (model_dir / first.pushed_version / "variables" / "variables.index").exists()
    for component in ("Ingest", "ClipGen", "Transform", "Trainer", "Evaluator", "Pusher"):
        assert component in first.component_seconds
    assert first.metrics["sparse_categorical_accuracy"] >= 0.3
    for name in ("video_accuracy", "top_5_accuracy", "mean_class_accuracy", "video_top_5_accuracy",
                 "video_mean_class_accuracy"):
        assert 0.0 <= first.metrics[name] <= 1.0, name
    assert first.metrics["top_5_accuracy"] >= first.metrics["sparse_categorical_accuracy"]
    assert first.metrics["video_top_5_accuracy"] >= first.metrics["video_accuracy"]


def test_both_workers_trained(runs):
    root, _, _ = runs
    (model_run,) = glob.glob(str(root / "root" / "Trainer" / "model_run" / "*"))[:1]
    logs = sorted(os.listdir(os.path.join(model_run, "worker_logs")))
    assert logs == ["worker-0.log", "worker-1.log"]
    for name in logs:
        with open(os.path.join(model_run, "worker_logs", name)) as f:
            text = f.read()
        assert "2 replicas in sync" in text
        # ClipGen wrote one clip file per worker, so each worker read only its own half of the train split.
        assert "train split shards by file (2 files >= 2 workers)" in text


def _eval_clips(root):
    clips, labels = [], []
    for path in sorted(glob.glob(str(root / "root" / "ClipGen" / "clips" / "*" / "Split-eval" / "*.gz"))):
        for record in tf.data.TFRecordDataset(path, compression_type="GZIP"):
            example = tf.train.Example.FromString(record.numpy())
            clips.append(record.numpy())
            labels.append(example.features.feature[ClipKeys.LABEL].bytes_list.value[0].decode())
    return clips, labels


def test_pushed_model_classifies_held_out_clips_far_better_than_chance(runs):
    root, first, _ = runs
    served = tf.saved_model.load(first.pushed_path)
    clips, labels = _eval_clips(root)
    predicted = []
    for start in range(0, len(clips), 32):
        out = served.signatures["serving_default"](examples=tf.constant(clips[start:start + 32]))
        predicted += [c.decode() for c in out["top_class"].numpy()]
    accuracy = float(np.mean(np.array(predicted) == np.array(labels)))
    chance = 1 / 8
    assert len(clips) >= 100
    assert accuracy >= 2.5 * chance, accuracy


def test_worse_model_is_not_pushed_and_the_run_says_why(runs):
    root, first, second = runs
    assert second.blessed is False
    assert second.pushed_path is None
    assert sorted(os.listdir(root / "serving" / "bresnet")) == [first.pushed_version]
    assert any("change vs baseline" in f["metric"] and "video_mean_class_accuracy" in f["metric"]
               for f in second.gate_failures), second.gate_failures
    assert all("video_mean_class_accuracy" in f["metric"] for f in second.gate_failures)   # the gated metric only
    # The summary reports the candidate's metrics, not the baseline's or the differences TFMA adds.
    assert second.metrics["sparse_categorical_accuracy"] < first.metrics["sparse_categorical_accuracy"]
    # Only the Trainer and what follows re-ran: ingest, ClipGen and Transform came from the cache.
    assert second.component_seconds["ClipGen"] < 1.0 and second.component_seconds["Transform"] < 1.0
    gate_files = glob.glob(str(root / "root" / "Evaluator" / "evaluation" / "*" / "gate.json"))
    gates = [json.load(open(p)) for p in sorted(gate_files, key=lambda p: int(p.split(os.sep)[-2]))]
    assert [g["blessed"] for g in gates] == [True, False] and gates[1]["had_baseline"] is True
