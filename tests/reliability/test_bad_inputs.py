"""The bad-input corpus (bad_inputs.py) through every stage: convert -> Ingest -> ClipGen -> Transform.

One run (module fixture: convert, then a LocalDagRunner pipeline of Ingest, ClipGen, ClipSchema and Transform on
4x16x16 clips) feeds the per-stage checks: each corpus item ends in exactly one place (the clips, or one stage's
dead letter with the expected reason), and at each stage in = out + rejected. Transform crashes once in that
run; the unchanged pipeline's re-run must take the finished steps from TFX's cache. Two more runs of the Ingest
and ClipGen executors show that a run rejecting more than max_rejected_fraction fails, naming split and reasons.
"""
import collections
import glob
import json
import os

import pytest
import tensorflow as tf

from bad_inputs import CRASH_MARKER, LABELS, T, H, W, Corpus, build_corpus

pytestmark = pytest.mark.slow

BEAM_ARGS = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
TRAIN_PATTERN = "train/*.tfrecord*"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from tfx import v1 as tfx

    from components.clipgen import ClipGen
    from components.clipgen.schema import ClipSchemaGen
    from components.convert import run_convert
    from components.ingest import make_video_example_gen

    root = str(tmp_path_factory.mktemp("bad_inputs"))
    corpus = build_corpus(os.path.join(root, "corpus"))
    # convert writes next to the bad TFRecords, so its records flow on into the pipeline
    summary = run_convert(corpus.csv_path, os.path.join(corpus.root, "train"), short_side=None,
                          beam_args=BEAM_ARGS)
    ingest = make_video_example_gen(corpus.root, train_pattern=TRAIN_PATTERN, max_rejected_fraction=1.0,
                                    labels=LABELS)
    clipgen = ClipGen(examples=ingest.outputs["examples"], num_frames=T, height=H, width=W, labels=LABELS,
                      max_rejected_fraction=1.0)
    schema = ClipSchemaGen()
    marker = os.path.join(root, "crash-transform-once")
    open(marker, "w").close()
    transform = tfx.components.Transform(
        examples=clipgen.outputs["clips"], schema=schema.outputs["schema"],
        preprocessing_fn="bad_inputs.crash_once_preprocessing_fn",
        custom_config={"clip_shape": clipgen.clip_shape, CRASH_MARKER: marker},
        materialize=True, disable_statistics=True)
    for component, node_id in [(ingest, "Ingest"), (clipgen, "ClipGen"), (schema, "ClipSchema"),
                               (transform, "Transform")]:
        component.with_id(node_id)
    pipeline_root = os.path.join(root, "pipeline")
    metadata = tfx.orchestration.metadata.sqlite_metadata_connection_config(os.path.join(root, "metadata.sqlite"))
    pipeline = tfx.dsl.Pipeline(
        pipeline_name="bad-inputs", pipeline_root=pipeline_root, components=[ingest, clipgen, schema, transform],
        metadata_connection_config=metadata, enable_cache=True, beam_pipeline_args=BEAM_ARGS)
    # First run: Transform crashes after Ingest, ClipGen and ClipSchema finished. The same pipeline run again
    # must take those three from the cache and run only Transform.
    with pytest.raises(RuntimeError, match="injected Transform crash"):
        tfx.orchestration.LocalDagRunner().run(pipeline)
    tfx.orchestration.LocalDagRunner().run(pipeline)
    return corpus, summary, pipeline_root, metadata


def _one(pattern):
    matches = glob.glob(pattern)
    assert len(matches) == 1, (pattern, matches)
    return matches[0]


def _jsonl(pattern):
    return [json.loads(line) for path in sorted(glob.glob(pattern)) for line in open(path) if line.strip()]


def _records(pattern):
    files = sorted(glob.glob(pattern))
    return [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")] if files else []


def _video_ids(pattern):
    from components.video_format import parse_video
    return [parse_video(r).video_id for r in _records(pattern)]


def _clip_ids(pattern):
    return [tf.train.Example.FromString(r).features.feature["video/id"].bytes_list.value[0].decode()
            for r in _records(pattern)]


def _expected(corpus: Corpus, stage: str, split: str | None = None):
    return [i for i in corpus.by_stage(stage) if split is None or i.split == split]


def test_convert_stage_dead_letters_bad_files_and_counts_add_up(run):
    corpus, summary, _, _ = run
    expected = {i.video_id: i.reason for i in corpus.by_stage("convert")}
    dead = {d["video_id"]: d["reason"] for d in _jsonl(summary.dead_letter_files[0])}
    assert set(dead) == set(expected)
    for video_id, reason in expected.items():
        assert reason in dead[video_id], (video_id, dead[video_id])
    converted = _video_ids_plain(summary.record_files)
    assert sorted(converted) == ["good1", "good2"]
    assert summary.videos_in == 6 == summary.converted + summary.rejected and summary.rejected == len(expected)


def _video_ids_plain(files):
    from components.video_format import parse_video
    return [parse_video(r.numpy()).video_id for r in tf.data.TFRecordDataset(files)]


def test_ingest_stage_dead_letters_each_bad_record_with_file_and_index(run):
    corpus, _, root, _ = run
    dead = _jsonl(f"{root}/Ingest/dead_letter/*/Split-*/dead_letter-*.jsonl")
    got = {(d["split"], os.path.basename(d["file"]), d["record_index"]): d["reason"] for d in dead}
    assert len(got) == len(dead)
    assert got == {(i.split, i.file, i.record_index): i.reason for i in corpus.by_stage("ingest")}
    assert all(d["detail"] for d in dead)
    framing = next(d for d in dead if d["reason"] == "corrupt_framing")
    assert "records from 1 to the end of the file are lost" in framing["detail"]

    stats = json.load(open(_one(f"{root}/Ingest/ingest_stats/*/ingest_stats.json")))
    for split in ("train", "eval"):
        s = stats["inputs"][split]
        past_convert = [i for i in corpus.items if i.split == split and i.stage != "convert"]
        assert s["records_in"] == len(past_convert) == s["records_ok"] + s["rejected"]
        assert s["rejected_by_reason"] == dict(collections.Counter(
            i.reason for i in _expected(corpus, "ingest", split)))
        out = _video_ids(f"{root}/Ingest/examples/*/Split-{split}/*.gz")
        assert stats["outputs"][split] == len(out) == s["records_ok"]
        assert sorted(out) == sorted(i.video_id for i in corpus.items if i.split == split
                                     and i.stage in ("clipgen", "clips"))
    assert stats["inputs"]["train"]["files"] == 7


def test_clipgen_stage_rejects_or_handles_every_video(run):
    corpus, _, root, _ = run
    dead = _jsonl(f"{root}/ClipGen/dead_letter/*/Split-*/dead_letter-*.jsonl")
    assert sorted((d["split"], d["video_id"], d["reason"]) for d in dead) == sorted(
        (i.split, i.video_id, i.reason) for i in corpus.by_stage("clipgen"))
    stats = json.load(open(_one(f"{root}/ClipGen/clip_stats/*/clip_stats.json")))["splits"]
    ingest_stats = json.load(open(_one(f"{root}/Ingest/ingest_stats/*/ingest_stats.json")))
    for split in ("train", "eval"):
        s = stats[split]
        assert s["videos_in"] == ingest_stats["outputs"][split] == s["videos_ok"] + s["rejected"]
        clips = _clip_ids(f"{root}/ClipGen/clips/*/Split-{split}/*.gz")
        assert s["clips_out"] == len(clips) == s["videos_ok"]          # one clip per video
        assert sorted(clips) == sorted(i.video_id for i in _expected(corpus, "clips", split))


def test_transform_stage_transforms_every_clip(run):
    _, _, root, _ = run
    stats = json.load(open(_one(f"{root}/ClipGen/clip_stats/*/clip_stats.json")))["splits"]
    for split in ("train", "eval"):
        transformed = _records(f"{root}/Transform/transformed_examples/*/Split-{split}/*.gz")
        assert len(transformed) == stats[split]["clips_out"] > 0
        labels = [tf.train.Example.FromString(r).features.feature["label_name"].bytes_list.value[0].decode()
                  for r in transformed]
        assert set(labels) <= set(LABELS)


def test_every_item_ends_in_exactly_one_place(run):
    corpus, summary, root, _ = run
    places = collections.defaultdict(list)
    for d in _jsonl(summary.dead_letter_files[0]):
        places[("convert", d["video_id"])].append("convert dead letter")
    for d in _jsonl(f"{root}/Ingest/dead_letter/*/Split-*/dead_letter-*.jsonl"):
        places[("ingest", os.path.basename(d["file"]), d["record_index"])].append("ingest dead letter")
    for d in _jsonl(f"{root}/ClipGen/dead_letter/*/Split-*/dead_letter-*.jsonl"):
        places[("video", d["split"], d["video_id"])].append("clipgen dead letter")
    for split in ("train", "eval"):
        for video_id in _clip_ids(f"{root}/ClipGen/clips/*/Split-{split}/*.gz"):
            places[("video", split, video_id)].append("clips")
    expected_place = {"convert": "convert dead letter", "ingest": "ingest dead letter",
                      "clipgen": "clipgen dead letter", "clips": "clips"}
    seen = set()
    for item in corpus.items:
        key = (("convert", item.video_id) if item.stage == "convert" else
               ("ingest", item.file, item.record_index) if item.stage == "ingest" else
               ("video", item.split, item.video_id))
        assert places[key] == [expected_place[item.stage]], (item.name, places[key])
        seen.add(key)
    assert set(places) == seen, f"outputs no corpus item explains: {set(places) - seen}"


def test_rerun_after_a_crash_takes_finished_steps_from_the_cache(run):
    import ml_metadata as mlmd
    from ml_metadata.proto import metadata_store_pb2

    _, _, _, metadata = run
    store = mlmd.MetadataStore(metadata)
    states = {}
    for node in ("Ingest", "ClipGen", "ClipSchema", "Transform"):
        (context,) = [c for c in store.get_contexts_by_type("node") if c.name.endswith(f".{node}")]
        executions = sorted(store.get_executions_by_context(context.id), key=lambda e: e.id)
        states[node] = [metadata_store_pb2.Execution.State.Name(e.last_known_state) for e in executions]
    assert states == {"Ingest": ["COMPLETE", "CACHED"], "ClipGen": ["COMPLETE", "CACHED"],
                      "ClipSchema": ["COMPLETE", "CACHED"], "Transform": ["FAILED", "COMPLETE"]}


def _executor(module):
    from tfx.dsl.components.base import base_beam_executor
    return module.Executor(base_beam_executor.BaseBeamExecutor.Context(beam_pipeline_args=BEAM_ARGS))


def test_too_many_rejections_fail_ingest_and_clipgen_after_writing_their_reports(run, tmp_path):
    """The same corpus with max_rejected_fraction 0.1: each stage fails, naming the split, the counts and the
    reasons, after its dead letters and statistics are written (what an operator reads next)."""
    from tfx.types import artifact_utils, standard_artifacts
    from tfx.utils import proto_utils

    from components import ingest
    from components.clipgen import ClipGen, ClipGenDeadLetter, ClipGenStatistics
    from components.clipgen import executor as clipgen_executor

    corpus, _, root, _ = run
    examples, dead, stats = standard_artifacts.Examples(), ingest.IngestDeadLetter(), ingest.IngestStatistics()
    for artifact, name in [(examples, "examples"), (dead, "dead"), (stats, "stats")]:
        artifact.uri = str(tmp_path / name)
    properties = {
        "input_base": corpus.root,
        "input_config": proto_utils.proto_to_json(ingest.video_input_config(train_pattern=TRAIN_PATTERN)),
        "output_config": "{}", "id_feature": "example/id", "max_rejected_fraction": 0.1, "labels": json.dumps(LABELS)}
    rejected = len(_expected(corpus, "ingest", "train"))
    with pytest.raises(RuntimeError, match=rf"Ingest\[train\]: rejected {rejected} of \d+ records .* > max_rejected_"
                                           r"fraction 10\.0%; by reason .*truncated_file.*\nsee the dead letters"):
        _executor(ingest).Do({}, {"examples": [examples], "dead_letter": [dead], "ingest_stats": [stats]},
                             properties)
    written = json.load(open(tmp_path / "stats" / ingest.INGEST_STATS_FILENAME))
    assert written["inputs"]["train"]["rejected"] == rejected
    assert len(_jsonl(str(tmp_path / "dead" / "Split-*" / "*.jsonl"))) == len(corpus.by_stage("ingest"))

    ingested = standard_artifacts.Examples()
    ingested.uri = os.path.dirname(os.path.dirname(_one(f"{root}/Ingest/examples/*/Split-train/*.gz")))
    ingested.split_names = artifact_utils.encode_split_names(["train", "eval"])
    component = ClipGen(examples=_channel(), num_frames=T, height=H, width=W, labels=LABELS,
                        max_rejected_fraction=0.1)
    clips, clip_dead, clip_stats = standard_artifacts.Examples(), ClipGenDeadLetter(), ClipGenStatistics()
    for artifact, name in [(clips, "clips"), (clip_dead, "clip_dead"), (clip_stats, "clip_stats")]:
        artifact.uri = str(tmp_path / name)
    rejected = len(_expected(corpus, "clipgen", "train"))
    with pytest.raises(RuntimeError, match=rf"ClipGen\[train\]: rejected {rejected} of \d+ videos .* > "
                                           r"max_rejected_fraction"):
        _executor(clipgen_executor).Do({"examples": [ingested]},
                                       {"clips": [clips], "dead_letter": [clip_dead], "clip_stats": [clip_stats]},
                                       dict(component.exec_properties))
    assert json.load(open(tmp_path / "clip_stats" / "clip_stats.json"))["splits"]["train"]["rejected"] == rejected


def _channel():
    from tfx import types
    from tfx.types import standard_artifacts
    return types.Channel(type=standard_artifacts.Examples)
