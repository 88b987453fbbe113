"""TFX ingest: ImportExampleGen on video SequenceExamples (pre-split and split by video id), run for real with
LocalDagRunner on a tiny demo dataset, plus StatisticsGen/SchemaGen on the result."""
import collections
import glob
import gzip
import json
import os

import ml_metadata as mlmd
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx.components import SchemaGen, StatisticsGen
from tfx.orchestration import metadata
from tfx.orchestration import pipeline as tfx_pipeline
from tfx.orchestration.local.local_dag_runner import LocalDagRunner
from tfx.proto import example_gen_pb2

from components import video_format
from components.ingest import (PRE_SPLIT, SPLIT_BY_ID, make_video_example_gen, split_by_id_output_config,
                               video_input_config)
from pipeline.demo_data import DEMO_CLASSES, generate_demo_data

NUM_PAIRS = 40   # ids that each appear in two different records


def _write_same_id_pairs(folder):
    """Two different records per video id (as after re-encoding a video): a split by id keeps each pair
    together, a split by whole record (TFX's default) would separate many of them."""
    os.makedirs(folder)
    rng = np.random.default_rng(0)
    with tf.io.TFRecordWriter(os.path.join(folder, "videos-00000-of-00001.tfrecord")) as writer:
        for i in range(NUM_PAIRS):
            for _ in range(2):
                jpeg = video_format.encode_jpeg(rng.integers(0, 255, size=(8, 8, 3), dtype=np.uint8))
                writer.write(video_format.make_video_example(f"vid/{i:03d}", [jpeg], "x", 0, 8, 8, 25.0)
                             .SerializeToString())
        no_id = video_format.make_video_example("x", [jpeg], "x", 0, 8, 8, 25.0)
        del no_id.context.feature["example/id"]
        writer.write(no_id.SerializeToString())   # cannot be split by id: a dead letter, not a failed run
    video_format.LabelMap(["x"]).save(folder)     # the run's label map, which Ingest reads


def _read_split(examples_uri, split):
    files = glob.glob(os.path.join(examples_uri, f"Split-{split}", "*.gz"))
    assert files, f"no records in {examples_uri} Split-{split}"
    return [video_format.parse_video(r.numpy()) for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    root = tmp_path_factory.mktemp("ingest")
    demo = generate_demo_data(str(root / "demo"), videos_per_class=4, num_shards=2)   # 24 train + 8 eval
    _write_same_id_pairs(str(root / "pairs"))
    pre_split = make_video_example_gen(str(root / "demo")).with_id("PreSplitGen")
    by_id = make_video_example_gen(str(root / "demo"), SPLIT_BY_ID,
                                   records_pattern="*/videos-*.tfrecord").with_id("ByIdGen")
    pairs = make_video_example_gen(str(root / "pairs"), SPLIT_BY_ID, eval_percent=50).with_id("PairsGen")
    statistics = StatisticsGen(examples=pre_split.outputs["examples"])
    schema = SchemaGen(statistics=statistics.outputs["statistics"])
    db = str(root / "metadata.sqlite")
    LocalDagRunner().run(tfx_pipeline.Pipeline(
        pipeline_name="ingest_test", pipeline_root=str(root / "pipeline"),
        components=[pre_split, by_id, pairs, statistics, schema],
        metadata_connection_config=metadata.sqlite_metadata_connection_config(db)))
    store = mlmd.MetadataStore(metadata.sqlite_metadata_connection_config(db))
    artifacts = {}
    for type_name in ("Examples", "ExampleStatistics", "Schema", "bresnet.IngestDeadLetter"):
        for artifact in store.get_artifacts_by_type(type_name):
            component = os.path.relpath(artifact.uri, str(root / "pipeline")).split(os.sep)[0]
            artifacts[component if type_name != "bresnet.IngestDeadLetter" else component + "/dead"] = artifact
    return demo, artifacts


def test_pre_split_keeps_the_train_and_eval_folders(ran):
    demo, artifacts = ran
    examples = artifacts["PreSplitGen"]
    assert json.loads(examples.properties["split_names"].string_value) == ["train", "eval"]
    assert examples.custom_properties["payload_format"].string_value == "FORMAT_TF_SEQUENCE_EXAMPLE"
    train, evaluation = _read_split(examples.uri, "train"), _read_split(examples.uri, "eval")
    assert len(train) == demo.num_train_videos == 24 and len(evaluation) == demo.num_eval_videos == 8
    assert collections.Counter(v.label for v in train) == demo.train_counts
    assert all(v.video_id.endswith("_0000") for v in evaluation)   # the generator's eval videos, untouched
    assert all(len(v.jpeg_frames) >= 4 for v in train + evaluation)
    # the run's label map, read from the data's label_map.txt (no labels configured)
    assert json.loads(examples.custom_properties["labels"].string_value) == sorted(demo.train_counts)
    assert examples.custom_properties["label_source"].string_value == "data"


def test_split_by_id_uses_every_video_once(ran):
    demo, artifacts = ran
    examples = artifacts["ByIdGen"]
    assert json.loads(examples.properties["split_names"].string_value) == ["train", "eval"]
    train, evaluation = _read_split(examples.uri, "train"), _read_split(examples.uri, "eval")
    ids = [v.video_id for v in train + evaluation]
    assert len(ids) == len(set(ids)) == demo.num_train_videos + demo.num_eval_videos
    assert 2 <= len(evaluation) <= 16       # 25 of 100 buckets on 32 videos


def test_split_by_id_keeps_records_of_one_video_together(ran):
    _, artifacts = ran
    examples = artifacts["PairsGen"]
    splits = {split: collections.Counter(v.video_id for v in _read_split(examples.uri, split))
              for split in ("train", "eval")}
    assert sum(sum(c.values()) for c in splits.values()) == 2 * NUM_PAIRS
    assert all(n == 2 for c in splits.values() for n in c.values())          # no pair is split up
    assert not set(splits["train"]) & set(splits["eval"])
    assert len(splits["eval"]) >= 8 and len(splits["train"]) >= 8           # 50/50 buckets on 40 ids
    dead = [json.loads(line) for path in glob.glob(os.path.join(artifacts["PairsGen/dead"].uri, "Split-all", "*"))
            for line in open(path)]
    assert [(d["reason"], d["record_index"], d["split"]) for d in dead] == [("missing_id", 2 * NUM_PAIRS, "all")]


def test_split_by_id_assigns_splits_exactly_as_tfx_example_gen():
    """Same buckets as ImportExampleGen's partition_feature_name split, so earlier runs' splits do not move."""
    from tfx.components.example_gen.base_example_gen_executor import _PartitionFn
    from components.ingest import _ReadFileFn
    config = split_by_id_output_config(eval_percent=25)
    fn = _ReadFileFn("all", 0, "example/id", [(s.name, s.hash_buckets) for s in config.split_config.splits], 1024)
    fn.setup()
    for i in range(200):
        seq = video_format.make_video_example(f"video/{i}", [b"x"], "a", 0, 1, 1, 1.0)
        tfx_split = _PartitionFn(seq, 2, [75, 100], config.split_config)
        assert fn.output_split(seq.context.feature["example/id"]) == ["train", "eval"][tfx_split]


def test_scan_tfrecords_reads_what_tensorflow_writes_and_reports_each_corruption(tmp_path):
    import io
    from components.ingest import scan_tfrecord_file, scan_tfrecords
    records = [bytes([i]) * (10 + i) for i in range(4)]
    path = str(tmp_path / "r.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for r in records:
            writer.write(r)
    data = open(path, "rb").read()
    assert [s.data for s in scan_tfrecord_file(path)] == records       # TF's own framing and checksums
    offsets = [sum(16 + len(r) for r in records[:i]) for i in range(4)]

    def scan(raw, **kw):
        return [(s.index, s.data is not None, s.reason) for s in scan_tfrecords(io.BytesIO(raw), **kw)]

    bad = bytearray(data)
    bad[offsets[1] + 12] ^= 1                                            # a data byte of record 1
    assert scan(bytes(bad)) == [(0, True, None), (1, False, "corrupt_record"), (2, True, None), (3, True, None)]
    bad = bytearray(data)
    bad[offsets[2]] ^= 1                                                 # record 2's length
    assert scan(bytes(bad)) == [(0, True, None), (1, True, None), (2, False, "corrupt_framing")]
    assert scan(data[:offsets[3] + 5]) == [(0, True, None), (1, True, None), (2, True, None),
                                            (3, False, "truncated_file")]
    assert scan(data[:offsets[3] + 20]) == [(0, True, None), (1, True, None), (2, True, None),
                                             (3, False, "truncated_file")]
    assert scan(data, max_record_bytes=10) == [(0, True, None), (1, False, "record_too_large"),
                                               (2, False, "record_too_large"), (3, False, "record_too_large")]
    gz = str(tmp_path / "r.tfrecord.gz")
    with gzip.open(gz, "wb") as f:
        f.write(data)
    assert [s.data for s in scan_tfrecord_file(gz)] == records
    open(gz, "wb").write(b"\x1f\x8b not really gzip")
    (item,) = list(scan_tfrecord_file(gz))
    assert item.reason == "unreadable_file" and "from record 0 (byte 0) on" in item.detail


def test_statistics_and_schema_work_on_sequence_examples(ran):
    _, artifacts = ran
    stats = tfdv.load_stats_binary(os.path.join(artifacts["StatisticsGen"].uri, "Split-train", "FeatureStats.pb"))
    dataset = stats.datasets[0]
    assert dataset.num_examples == 24
    by_path = {"/".join(f.path.step): f for f in dataset.features}
    labels = by_path["clip/label/string"].string_stats
    assert labels.unique == len(DEMO_CLASSES)
    assert {b.label: b.sample_count for b in labels.rank_histogram.buckets} == {c: 3 for c in DEMO_CLASSES}
    assert by_path["image/height"].num_stats.min >= 64 and by_path["image/height"].num_stats.max <= 96
    frames = by_path["##SEQUENCE##/image/encoded"]     # the feature list, as a child of the sequence struct
    assert frames.type == frames.STRING

    schema = tfdv.load_schema_text(os.path.join(artifacts["SchemaGen"].uri, "schema.pbtxt"))
    domains = {d.name: list(d.value) for d in schema.string_domain}
    assert sorted(domains["clip/label/string"]) == sorted(DEMO_CLASSES)
    features = {f.name: f for f in schema.feature}
    assert features["clip/label/index"].type == schema_pb2.INT
    sequence = {f.name: f for f in features["##SEQUENCE##"].struct_domain.feature}
    assert sequence["image/encoded"].type == schema_pb2.BYTES


def test_configs_and_argument_checks():
    config = video_input_config(PRE_SPLIT)
    assert [(s.name, s.pattern) for s in config.splits] == [("train", "train/*"), ("eval", "eval/*")]
    output = split_by_id_output_config(eval_percent=10)
    assert [(s.name, s.hash_buckets) for s in output.split_config.splits] == [("train", 90), ("eval", 10)]
    assert output.split_config.partition_feature_name == "example/id"
    gen = make_video_example_gen("/data/videos")
    assert gen.exec_properties["output_data_format"] == example_gen_pb2.PayloadFormat.FORMAT_TF_SEQUENCE_EXAMPLE
    with pytest.raises(ValueError, match="mode"):
        make_video_example_gen("/data/videos", "by_label")
    with pytest.raises(ValueError, match="eval_percent"):
        make_video_example_gen("/data/videos", SPLIT_BY_ID, eval_percent=0)
    with pytest.raises(ValueError, match="input_base"):
        make_video_example_gen("")
