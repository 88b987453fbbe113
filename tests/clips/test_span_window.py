"""A rolling window over spans, run by LocalDagRunner: Ingest (span specs) -> ClipGen (clip store), four runs.

Run 1 reads span 1; run 2 finds nothing new and is served from the cache; run 3 reads only the new span 2 and reuses
span 1's clips byte for byte; run 4 (window 2) reads only span 3 and drops span 1. ~1 min on 2 cores.
"""
import glob
import hashlib
import json
import os

import pytest
import tensorflow as tf

from clip_test_data import video_record
from components.clipgen import ClipGen
from components.ingest import make_video_example_gen
from components.spans import read_store_entry

pytestmark = pytest.mark.slow

LABELS = ["a", "b"]
PATTERNS = {"train_pattern": "span-{SPAN}/train/*", "eval_pattern": "span-{SPAN}/eval/*"}


def _write_span(data_dir, span, train=3, evals=1):
    for split, n in (("train", train), ("eval", evals)):
        path = f"{data_dir}/span-{span}/{split}/videos.tfrecord"
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with tf.io.TFRecordWriter(path) as writer:
            for i in range(n):
                writer.write(video_record(f"s{span}-{split}-{i}", num_frames=8, height=16, width=16,
                                          label=LABELS[i % 2], seed=100 * span + i))


def _run(root, data_dir, window_spans):
    from tfx.orchestration import metadata
    from tfx.orchestration.local.local_dag_runner import LocalDagRunner
    from tfx.orchestration.pipeline import Pipeline

    store = f"{root}/pipeline/ClipStore/test"
    ingest = make_video_example_gen(data_dir, window_spans=window_spans, clip_store=store, labels=LABELS, **PATTERNS)
    clipgen = ClipGen(examples=ingest.outputs["examples"], num_frames=4, height=8, width=8, labels=LABELS,
                      clips_per_video_train=2, clips_per_video_eval=1, seed=1, clip_store=store)
    LocalDagRunner().run(Pipeline(
        pipeline_name="spans", pipeline_root=f"{root}/pipeline", components=[ingest.with_id("Ingest"),
                                                                              clipgen.with_id("ClipGen")],
        metadata_connection_config=metadata.sqlite_metadata_connection_config(f"{root}/metadata.sqlite"),
        enable_cache=True, beam_pipeline_args=["--direct_running_mode=in_memory", "--direct_num_workers=1"]))
    return store


def _newest(root, component, output):
    """The newest artifact ``output`` of ``component`` recorded in the run folder's ML Metadata."""
    from tfx.orchestration import metadata
    with metadata.Metadata(metadata.sqlite_metadata_connection_config(f"{root}/metadata.sqlite")) as m:
        artifacts = [a for a in m.store.get_artifacts() if f"/{component}/{output}/" in a.uri]
    return max(artifacts, key=lambda a: a.id)


def _executions(root, component):
    """How many times the component's executor ran (one output folder per execution; a cached run makes none)."""
    return len(glob.glob(f"{root}/pipeline/{component}/examples/*" if component == "Ingest"
                         else f"{root}/pipeline/{component}/clips/*"))


def _clip_digests(uri, split):
    digests = []
    for path in sorted(glob.glob(f"{uri}/Split-{split}/*.gz")):
        for record in tf.data.TFRecordDataset(path, compression_type="GZIP"):
            digests.append(hashlib.sha1(record.numpy()).hexdigest())
    return sorted(digests)


def _clips_artifact(root):
    return _newest(root, "ClipGen", "clips")


def _ingest_stats(root):
    examples = _newest(root, "Ingest", "examples")
    with open(f"{_newest(root, 'Ingest', 'ingest_stats').uri}/ingest_stats.json") as f:
        return examples, json.load(f)


def test_each_run_reads_only_its_new_span_and_reuses_earlier_clips(tmp_path):
    root, data_dir = str(tmp_path), str(tmp_path / "videos")
    _write_span(data_dir, 1)

    store = _run(root, data_dir, window_spans=3)                     # run 1: span 1
    examples, stats = _ingest_stats(root)
    assert json.loads(examples.custom_properties["ingested_spans"].string_value) == [1]
    assert stats["inputs"]["train"]["records_in"] == 3 and stats["inputs"]["eval"]["records_in"] == 1
    run1 = _clips_artifact(root)
    span1_train = _clip_digests(run1.uri, "train")
    assert len(span1_train) == 6 and read_store_entry(store, 1)["clips"] == {"train": 6, "eval": 1}

    _run(root, data_dir, window_spans=3)                              # run 2: nothing new, all cached
    assert (_executions(root, "Ingest"), _executions(root, "ClipGen")) == (1, 1)
    assert _clips_artifact(root).id == run1.id

    _write_span(data_dir, 2, train=2)                                 # run 3: span 2 is new
    _run(root, data_dir, window_spans=3)
    examples, stats = _ingest_stats(root)
    assert json.loads(examples.custom_properties["ingested_spans"].string_value) == [2]
    assert stats["inputs"]["train"]["records_in"] == 2                # span 1's videos are not read again
    assert examples.properties["span"].int_value == 2 and _executions(root, "ClipGen") == 2
    run3 = _clips_artifact(root)
    assert run3.custom_properties["train_window_clips"].int_value == 6 + 4
    train3 = _clip_digests(run3.uri, "train")
    assert len(train3) == 10 and set(span1_train) <= set(train3)      # span 1's clips, as cut in run 1
    assert sorted(os.path.basename(p) for p in glob.glob(f"{run3.uri}/Split-train/*span-00001*")) == \
        read_store_entry(store, 1)["files"]["train"]
    with open(glob.glob(f"{run3.uri.replace('/clips/', '/clip_stats/')}/clip_stats.json")[0]) as f:
        window = json.load(f)["window"]
    assert window == {"spans": [1, 2], "cut": [2], "reused": [1], "clips": {"train": 10, "eval": 2}}

    _write_span(data_dir, 3, train=1)                                 # run 4: window of 2 drops span 1
    _run(root, data_dir, window_spans=2)
    examples, _ = _ingest_stats(root)
    assert json.loads(examples.custom_properties["ingested_spans"].string_value) == [3]
    run4 = _clips_artifact(root)
    assert not glob.glob(f"{run4.uri}/Split-train/*span-00001*")
    assert run4.custom_properties["train_window_clips"].int_value == 4 + 2
