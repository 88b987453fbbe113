"""ImportExampleGen(SequenceExample) -> ClipGen -> ImportSchemaGen -> Transform, run by LocalDagRunner on tiny videos.

One pipeline run (module fixture, ~45 s on 2 cores) feeds every test here.
"""
import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from clip_test_data import video_record
from components.clipgen import CLIP_STATS_FILENAME, ClipGen
from components.clipgen.schema import write_clip_schema
from components.video_format import ClipKeys, clip_feature_spec, make_clip_example, parse_clip_frames

pytestmark = pytest.mark.slow

T, H, W = 4, 16, 16
LABELS = ["walk", "jump", "run"]          # sorted: jump=0, run=1, walk=2
TRAIN_GOOD = {f"t{i}": LABELS[i % 3] for i in range(6)}
EVAL_GOOD = {"e0": "walk", "e1": "run"}
CLIPS_PER_VIDEO = {"train": 2, "eval": 3}


def _write(path, records):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for record in records:
            writer.write(record)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from tfx import v1 as tfx
    from tfx.proto import example_gen_pb2

    root = str(tmp_path_factory.mktemp("clip_pipeline"))
    train = [video_record(vid, num_frames=10 + i, height=24 + 2 * i, width=32, label=label, seed=i)
             for i, (vid, label) in enumerate(TRAIN_GOOD.items())]
    train += [
        tf.train.Example().SerializeToString(),                        # parses as a SequenceExample, has no frames
        video_record("t-zero", frames_jpeg=[], label="run"),
        video_record("t-corrupt", frames_jpeg=[b"\xff\xd8\xffgarbage"] * 8, label="run"),
        video_record("t-unknown", label="swim"),
    ]
    evals = [video_record("e0", label="walk", seed=20), video_record("e-nolabel", label=None)]
    # A record carrying only a label index (index 1 of the sorted label map = "run").
    evals.append(video_record("e1", label=None, label_index=1, seed=21, num_frames=3))  # 3 frames: loops
    _write(f"{root}/videos/train/part.tfrecord", train)
    _write(f"{root}/videos/eval/part.tfrecord", evals)

    example_gen = tfx.components.ImportExampleGen(
        input_base=f"{root}/videos", payload_format=example_gen_pb2.FORMAT_TF_SEQUENCE_EXAMPLE,
        input_config=tfx.proto.Input(splits=[tfx.proto.Input.Split(name="train", pattern="train/*"),
                                             tfx.proto.Input.Split(name="eval", pattern="eval/*")]))
    clipgen = ClipGen(examples=example_gen.outputs["examples"], num_frames=T, frame_stride=2, height=H, width=W,
                      labels=LABELS, clips_per_video_train=CLIPS_PER_VIDEO["train"],
                      clips_per_video_eval=CLIPS_PER_VIDEO["eval"], seed=3,
                      max_rejected_fraction=0.5)       # train rejects 4 of 10, eval 1 of 3
    schema_gen = tfx.components.ImportSchemaGen(schema_file=write_clip_schema(f"{root}/schema"))
    transform = tfx.components.Transform(
        examples=clipgen.outputs["clips"], schema=schema_gen.outputs["schema"],
        preprocessing_fn="components.transform_module.preprocessing_fn",
        custom_config={"clip_shape": clipgen.clip_shape},
        materialize=True, disable_statistics=True)
    metadata_path = f"{root}/metadata.sqlite"
    pipeline = tfx.dsl.Pipeline(
        pipeline_name="clips", pipeline_root=f"{root}/pipeline",
        components=[example_gen, clipgen, schema_gen, transform],
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata_path),
        beam_pipeline_args=["--direct_running_mode=in_memory", "--direct_num_workers=1"])
    tfx.orchestration.LocalDagRunner().run(pipeline)
    return {"root": f"{root}/pipeline", "metadata": metadata_path}


def _one(pattern):
    matches = glob.glob(pattern)
    assert len(matches) == 1, (pattern, matches)
    return matches[0]


def _records(pattern):
    return [r.numpy() for r in tf.data.TFRecordDataset(sorted(glob.glob(pattern)), compression_type="GZIP")]


def test_clip_counts_and_statistics(run):
    stats = json.load(open(_one(f"{run['root']}/ClipGen/clip_stats/*/{CLIP_STATS_FILENAME}")))
    assert stats["clip_shape"] == [T, H, W, 3] and stats["labels"] == ["jump", "run", "walk"]
    train, evals = stats["splits"]["train"], stats["splits"]["eval"]
    assert (train["videos_in"], train["videos_ok"], train["rejected"], train["clips_out"]) == (10, 6, 4, 12)
    assert train["rejected_by_reason"] == {"unparsable_record": 1, "zero_frames": 1, "undecodable_frame": 1,
                                           "unknown_label": 1}
    assert (evals["videos_in"], evals["videos_ok"], evals["rejected"], evals["clips_out"]) == (3, 2, 1, 6)
    assert evals["rejected_by_reason"] == {"missing_label": 1}
    for split, n in (("train", 12), ("eval", 6)):
        assert len(_records(f"{run['root']}/ClipGen/clips/*/Split-{split}/data_tfrecord-*.gz")) == n


def test_dead_letter_lines(run):
    lines = [json.loads(line) for path in glob.glob(f"{run['root']}/ClipGen/dead_letter/*/Split-*/*.jsonl")
             for line in open(path)]
    by_id = {(d["split"], d["video_id"]): d["reason"] for d in lines}
    assert len(lines) == 5
    assert by_id[("train", "t-zero")] == "zero_frames"
    assert by_id[("train", "t-corrupt")] == "undecodable_frame"
    assert by_id[("train", "t-unknown")] == "unknown_label"
    assert by_id[("eval", "e-nolabel")] == "missing_label"
    assert sum(reason == "unparsable_record" for reason in by_id.values()) == 1


def test_clips_artifact_carries_the_counts(run):
    from ml_metadata.metadata_store import metadata_store
    from tfx import v1 as tfx
    store = metadata_store.MetadataStore(tfx.orchestration.metadata.sqlite_metadata_connection_config(run["metadata"]))
    clips = [a for a in store.get_artifacts_by_type("Examples") if "/ClipGen/clips/" in a.uri]
    assert len(clips) == 1
    props = clips[0].custom_properties
    assert props["train_clips_out"].int_value == 12 and props["train_rejected"].int_value == 4
    assert props["eval_videos_in"].int_value == 3 and props["eval_videos_ok"].int_value == 2
    assert json.loads(props["clip_shape"].string_value) == [T, H, W, 3]
    assert props["payload_format"].string_value == "FORMAT_TF_EXAMPLE"
    assert json.loads(clips[0].properties["split_names"].string_value) == ["train", "eval"]
    types = {t.name for t in store.get_artifact_types()}
    assert {"bresnet.ClipGenDeadLetter", "bresnet.ClipGenStatistics"} <= types


def _transform_output(run):
    import tensorflow_transform as tft
    return tft.TFTransformOutput(_one(f"{run['root']}/Transform/transform_graph/*"))


def _raw_clip_frames(run, split):
    spec = clip_feature_spec()
    out = []
    for record in _records(f"{run['root']}/ClipGen/clips/*/Split-{split}/*.gz"):
        parsed = tf.io.parse_single_example(record, spec)
        out.append(tf.io.parse_tensor(parsed[ClipKeys.FRAMES], tf.uint8).numpy())
    return np.stack(out).astype(np.float64) / 255.0


def test_materialized_examples_are_normalized_and_keep_their_label(run):
    tft_output = _transform_output(run)
    spec = tft_output.transformed_feature_spec()
    assert spec["frames"].shape == [T, H, W, 3] and set(spec) == {"frames", "label_name", "video_id"}
    for split, good in (("train", TRAIN_GOOD), ("eval", EVAL_GOOD)):
        records = _records(f"{run['root']}/Transform/transformed_examples/*/Split-{split}/*.gz")
        batch = tf.io.parse_example(records, spec)
        assert batch["frames"].shape == (len(good) * CLIPS_PER_VIDEO[split], T, H, W, 3)
        for video_id, label in zip(batch["video_id"].numpy(), batch["label_name"].numpy()):
            assert label.decode() == good[video_id.decode()]
        if split == "train":  # the statistics were computed on train: exactly standardized there
            frames = batch["frames"].numpy()
            np.testing.assert_allclose(frames.mean(axis=(0, 1, 2, 3)), 0.0, atol=1e-3)
            np.testing.assert_allclose(frames.std(axis=(0, 1, 2, 3)), 1.0, atol=1e-3)


def test_transform_layer_serves_raw_clips_without_labels(run):
    train = _raw_clip_frames(run, "train")
    mean, std = train.mean(axis=(0, 1, 2, 3)), train.std(axis=(0, 1, 2, 3))
    records = _records(f"{run['root']}/ClipGen/clips/*/Split-eval/*.gz")
    layer = _transform_output(run).transform_features_layer()
    served = layer(tf.io.parse_example(records, clip_feature_spec(with_label=False)))
    assert set(served) == {"frames", "video_id"}
    expected = (_raw_clip_frames(run, "eval") - mean) / std
    np.testing.assert_allclose(served["frames"].numpy(), expected, atol=2e-3)
    # A request without video id or clip index still parses (clip_feature_spec defaults) and serves.
    bare = tf.train.Example()
    bare.features.feature[ClipKeys.FRAMES].bytes_list.value.append(
        tf.train.Example.FromString(records[0]).features.feature[ClipKeys.FRAMES].bytes_list.value[0])
    served_bare = layer(tf.io.parse_example([bare.SerializeToString()], clip_feature_spec(with_label=False)))
    np.testing.assert_allclose(served_bare["frames"].numpy()[0], served["frames"].numpy()[0], atol=1e-6)


def test_transform_layer_reads_clips_stored_as_jpeg_frames(run):
    """The Transform graph (analysed on raw clips here) reads a clip stored as JPEG frames as its decoded pixels."""
    layer = _transform_output(run).transform_features_layer()
    raw = _records(f"{run['root']}/ClipGen/clips/*/Split-eval/*.gz")[:3]
    pixels = [parse_clip_frames(tf.train.Example.FromString(r).features.feature[ClipKeys.FRAMES].bytes_list.value[0])
              for r in raw]
    jpeg = [make_clip_example(p, "walk", f"v{i}", i, frame_format="jpeg").SerializeToString()
            for i, p in enumerate(pixels)]
    decoded = [parse_clip_frames(tf.train.Example.FromString(r).features.feature[ClipKeys.FRAMES].bytes_list.value[0])
               for r in jpeg]
    spec = clip_feature_spec(with_label=False)
    by_jpeg = layer(tf.io.parse_example(jpeg, spec))["frames"].numpy()
    by_raw = layer(tf.io.parse_example([make_clip_example(d, "walk", "v", 0).SerializeToString() for d in decoded],
                                       spec))["frames"].numpy()
    np.testing.assert_allclose(by_jpeg, by_raw, rtol=0, atol=1e-6)
    assert by_jpeg.shape == (3, T, H, W, 3)
