"""bench/warm_start.py's pure helpers (the benchmark itself runs the pipeline four times: not run here)."""
import os

from bench import warm_start


def test_steps_to_gate_is_the_first_epoch_at_or_above_the_gate():
    assert warm_start.steps_to_gate([0.2, 0.5, 0.7], 200, 0.5) == 400
    assert warm_start.steps_to_gate([0.6], 200, 0.5) == 200
    assert warm_start.steps_to_gate([None, 0.51], 10, 0.5) == 20
    assert warm_start.steps_to_gate([0.1, 0.4], 200, 0.5) == "not reached in 400 steps"


def test_add_span_copies_each_split_into_its_span_folder(tmp_path):
    for name in ("a.tfrecord", "b.tfrecord"):
        (tmp_path / name).write_text(name)
    videos = tmp_path / "videos"
    warm_start.add_span(str(videos), 2, {"train": [str(tmp_path / "a.tfrecord")],
                                         "eval": [str(tmp_path / "b.tfrecord")]})
    assert (videos / "span-2" / "train" / "a.tfrecord").read_text() == "a.tfrecord"
    assert os.listdir(videos / "span-2" / "eval") == ["b.tfrecord"]


def test_served_versions_counts_only_version_folders(tmp_path):
    class Config:
        serving_dir, model_name = str(tmp_path), "bresnet"
    assert warm_start.served_versions(Config) == []
    for name in ("17", "3", ".tmp-5", "notes"):
        (tmp_path / "bresnet" / name).mkdir(parents=True)
    assert warm_start.served_versions(Config) == ["17", "3"]
