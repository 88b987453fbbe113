"""Scheduled runs over a growing span layout, with LocalDagRunner (issue #12's "done when"):

  run 1   span 1 (4 classes): trains from scratch and pushes version 1
  run 2   nothing new: every step is served from the cache, nothing is pushed
  run 3   span 2 arrives with more videos and a 5th class: Ingest reads only span 2, ClipGen reuses span 1's clips,
          the Trainer starts from version 1 (its body; the head grows to 5 classes and is re-initialised), the run
          reports the new class and pushes version 2; the Evaluator skips the change threshold against version 1,
          whose label set differs

Tiny settings (4x16x16 clips, a few steps): these tests prove the wiring, not accuracy (bench/warm_start.py measures
that). ~3-4 min on 2 cores.
"""
import glob
import json
import os

import pytest
import tensorflow as tf

pytestmark = pytest.mark.slow

CLASSES = ("grow", "move_left", "move_right", "shrink", "rotate_cw")
SPAN1_CLASSES = CLASSES[:4]
SETTINGS = [
    "ingest.train_pattern=span-{SPAN}/train/*", "ingest.eval_pattern=span-{SPAN}/eval/*",
    "ingest.label_map=span-{SPAN}/label_map.txt", "ingest.window_spans=2", "training.init_from=serving",
    "clips.num_frames=4", "clips.height=16", "clips.width=16", "clips.clips_per_video_train=1",
    "clips.eval_views=1x1",
    "training.epochs=1", "training.steps_per_epoch=3", "training.eval_steps=1", "training.batch_size_per_worker=4",
    "training.warmup_epochs=0.0", "training.shuffle_buffer=16",
    "gate.min_accuracy=0.0", "gate.max_accuracy_drop=1.0",
]


def _write_span(source: str, data_dir: str, span: int, classes) -> dict:
    """Copies the videos of ``classes`` from the generated demo data into span-<span>/{train,eval}/ with the span's
    label map; returns the video counts per split."""
    from components.video_format import DEFAULT_VIDEO_KEYS, LabelMap
    counts = {}
    for split in ("train", "eval"):
        out = f"{data_dir}/span-{span}/{split}/videos.tfrecord"
        os.makedirs(os.path.dirname(out), exist_ok=True)
        n = 0
        with tf.io.TFRecordWriter(out) as writer:
            for path in sorted(glob.glob(f"{source}/{split}/*")):
                for record in tf.data.TFRecordDataset(path):
                    example = tf.train.SequenceExample.FromString(record.numpy())
                    label = example.context.feature[DEFAULT_VIDEO_KEYS.label_string].bytes_list.value[0].decode()
                    if label in classes:
                        writer.write(record.numpy())
                        n += 1
        counts[split] = n
    LabelMap(classes).save(f"{data_dir}/span-{span}")
    return counts


def _versions(serving: str) -> list[str]:
    return sorted(os.listdir(f"{serving}/bresnet")) if os.path.isdir(f"{serving}/bresnet") else []


def _newest_artifact(metadata_path: str, path_part: str):
    from tfx.orchestration import metadata
    with metadata.Metadata(metadata.sqlite_metadata_connection_config(metadata_path)) as m:
        return max((a for a in m.store.get_artifacts() if path_part in a.uri), key=lambda a: a.id)


@pytest.fixture(scope="module")
def story(tmp_path_factory):
    from pipeline.config import load_config
    from pipeline.demo_data import generate_demo_data
    from pipeline.local_runner import run_local
    root = tmp_path_factory.mktemp("scheduled")
    source, data = str(root / "source"), str(root / "videos")
    generate_demo_data(source, videos_per_class=4, seed=3, class_colours=True, num_shards=1)
    config = load_config("demo", SETTINGS + [f"data_dir={data}", f"pipeline_root={root / 'root'}",
                                             f"metadata_path={root / 'metadata.sqlite'}",
                                             f"serving_dir={root / 'serving'}"])
    told = {"config": config, "root": root, "span1": _write_span(source, data, 1, SPAN1_CLASSES)}
    told["run1"] = run_local(config)
    told["versions1"] = _versions(config.serving_dir)
    told["model1"] = _newest_artifact(config.metadata_path, "/Trainer/model/")
    told["run2"] = run_local(config)
    told["versions2"] = _versions(config.serving_dir)
    told["model2"] = _newest_artifact(config.metadata_path, "/Trainer/model/")
    # span 2: the same four classes' videos of another draw, and a fifth class
    generate_demo_data(str(root / "source2"), videos_per_class=4, seed=4, class_colours=True, num_shards=1)
    told["span2"] = _write_span(str(root / "source2"), data, 2, CLASSES)
    told["run3"] = run_local(config)
    told["versions3"] = _versions(config.serving_dir)
    return told


def test_run_1_trains_and_pushes(story):
    assert story["run1"].pushed_version and story["versions1"] == [story["run1"].pushed_version]
    model = story["model1"]
    assert json.loads(model.custom_properties["labels"].string_value) == sorted(SPAN1_CLASSES)
    assert model.custom_properties["init_from"].string_value == "scratch"       # nothing was served yet


def test_run_2_with_no_new_span_pushes_nothing(story):
    assert story["versions2"] == story["versions1"]
    assert story["model2"].id == story["model1"].id                             # the Trainer was a cache hit


def test_run_3_reads_only_the_new_span_warm_starts_and_grows_the_head(story):
    config, run = story["config"], story["run3"]
    examples = _newest_artifact(config.metadata_path, "/Ingest/examples/")
    assert json.loads(examples.custom_properties["ingested_spans"].string_value) == [2]
    assert json.loads(examples.custom_properties["labels"].string_value) == sorted(CLASSES)
    stats_uri = _newest_artifact(config.metadata_path, "/Ingest/ingest_stats/").uri
    with open(f"{stats_uri}/ingest_stats.json") as f:
        stats = json.load(f)
    assert {s: stats["inputs"][s]["records_in"] for s in ("train", "eval")} == story["span2"]   # span 2's only
    clips = _newest_artifact(config.metadata_path, "/ClipGen/clips/")
    window_videos = {s: story["span1"][s] + story["span2"][s] for s in ("train", "eval")}
    assert clips.custom_properties["train_window_clips"].int_value == window_videos["train"]    # 1 clip a video

    model = _newest_artifact(config.metadata_path, "/Trainer/model/")
    assert json.loads(model.custom_properties["labels"].string_value) == sorted(CLASSES)
    assert model.custom_properties["init_from"].string_value == \
        f"{config.serving_dir}/bresnet/{story['run1'].pushed_version}"
    assert json.loads(model.custom_properties["new_classes"].string_value) == ["rotate_cw"]
    reinitialized = json.loads(model.custom_properties["reinitialized"].string_value)
    assert sorted(name.split("/", 1)[-1] for name in reinitialized) == ["logits/bias", "logits/kernel"]
    assert run.new_classes == ["rotate_cw"]

    assert run.pushed_version and story["versions3"] == sorted(story["versions1"] + [run.pushed_version])
    with open(f"{config.serving_dir}/bresnet/{run.pushed_version}/assets.extra/labels.txt") as f:
        assert f.read().split() == sorted(CLASSES)
    evaluation = _newest_artifact(config.metadata_path, "/Evaluator/evaluation/")
    with open(f"{evaluation.uri}/gate.json") as f:
        gate = json.load(f)
    assert gate["blessed"] and not gate["had_baseline"] and "differ" in gate["baseline_skipped"]


def test_the_report_names_the_new_class(story):
    from pipeline.report import build_report
    out = story["root"] / "report" / "report.html"
    build_report(str(story["root"]), str(out))
    html = out.read_text()
    assert "new classes (not in the model served before)</td><td>rotate_cw" in html.replace("\n", "")
    assert ", ".join(sorted(CLASSES)) in html


def test_a_served_class_missing_from_the_window_is_a_clear_error(story, tmp_path):
    from components import label_maps
    with pytest.raises(ValueError, match=r"lacks \['rotate_cw'\], which the served model predicts"):
        label_maps.check_against_served(list(SPAN1_CLASSES), label_maps.DATA, list(CLASSES))
    assert label_maps.check_against_served(list(SPAN1_CLASSES), label_maps.CONFIG, list(CLASSES)) == []
