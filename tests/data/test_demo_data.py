"""The demo dataset: layout, determinism, balance, and that its classes need motion (not one frame) to tell."""
import collections
import os

import cv2
import numpy as np
import pytest
import tensorflow as tf
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neighbors import NearestCentroid
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from components import video_format
from pipeline.demo_data import DEMO_CLASSES, generate_demo_data, make_demo_video

CHANCE = 1 / len(DEMO_CLASSES)
CLIP_FRAMES = 8          # what the model sees: 8 consecutive frames


def _read_split(files):
    videos = []
    for path in files:
        for raw in tf.data.TFRecordDataset(path):
            videos.append(video_format.parse_video(raw.numpy(), source=path))
    return videos


def _all_bytes(root):
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out_dir = str(tmp_path_factory.mktemp("demo"))
    summary = generate_demo_data(out_dir)   # default size, as `make demo` uses it
    videos = {"train": _read_split(summary.train_files), "eval": _read_split(summary.eval_files)}
    return summary, videos


def test_layout_counts_and_label_indices(demo):
    summary, videos = demo
    assert sorted(os.listdir(summary.out_dir)) == ["eval", "label_map.txt", "train"]
    for split, files in (("train", summary.train_files), ("eval", summary.eval_files)):
        assert [os.path.basename(f) for f in files] == ["videos-00000-of-00002.tfrecord",
                                                        "videos-00001-of-00002.tfrecord"]
        assert sorted(os.listdir(os.path.join(summary.out_dir, split))) == [os.path.basename(f) for f in files]
    label_map = video_format.LabelMap.load(summary.out_dir)
    assert label_map.labels == sorted(DEMO_CLASSES) == list(summary.classes)
    assert len(videos["train"]) == summary.num_train_videos == 8 * 75
    assert len(videos["eval"]) == summary.num_eval_videos == 8 * 25     # round(100 * 0.25)
    assert summary.num_frames == sum(len(v.jpeg_frames) for s in videos.values() for v in s)
    assert summary.total_bytes == sum(os.path.getsize(f) for f in summary.train_files + summary.eval_files)
    ids = [v.video_id for s in videos.values() for v in s]
    assert len(set(ids)) == len(ids)
    for v in videos["train"] + videos["eval"]:
        assert v.label_index == label_map.index(v.label)
        assert v.frame_rate == 25.0


def test_classes_are_balanced_in_each_split(demo):
    summary, videos = demo
    for split, expected in (("train", summary.train_counts), ("eval", summary.eval_counts)):
        counts = collections.Counter(v.label for v in videos[split])
        assert counts == expected
        assert set(counts.values()) == {75 if split == "train" else 25}
    # shards interleave classes rather than holding one class each
    first_shard = _read_split(summary.train_files[:1])
    assert len({v.label for v in first_shard}) == len(DEMO_CLASSES)


def test_lengths_and_frame_sizes_vary(demo):
    _, videos = demo
    everything = videos["train"] + videos["eval"]
    lengths = [len(v.jpeg_frames) for v in everything]
    assert min(lengths) >= 4 and max(lengths) <= 32
    assert sum(n < CLIP_FRAMES for n in lengths) >= 0.1 * len(lengths)       # some shorter than one clip
    assert sum(8 <= n <= 32 for n in lengths) >= 0.7 * len(lengths)
    sizes = {(v.height, v.width) for v in everything}
    assert len(sizes) > 50
    assert all(64 <= h <= 96 and 64 <= w <= 96 for h, w in sizes)
    assert sum(h != w for h, w in sizes) > 0.8 * len(sizes)
    for v in everything[:20]:
        frame = video_format.decode_jpeg(v.jpeg_frames[0])
        assert frame.shape == (v.height, v.width, 3)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    first = generate_demo_data(str(tmp_path / "a"), videos_per_class=3, eval_fraction=0.34, seed=7)
    second = generate_demo_data(str(tmp_path / "b"), videos_per_class=3, eval_fraction=0.34, seed=7)
    other = generate_demo_data(str(tmp_path / "c"), videos_per_class=3, eval_fraction=0.34, seed=8)
    a, b, c = (_all_bytes(str(tmp_path / d)) for d in "abc")
    assert first.num_frames == second.num_frames
    assert a.keys() == b.keys() == c.keys()
    assert a == b
    shards = [k for k in a if k.endswith(".tfrecord")]
    assert len(shards) == 4 and all(a[k] != c[k] for k in shards)
    assert a["label_map.txt"] == c["label_map.txt"]


def test_rerun_with_fewer_shards_leaves_no_stale_shards(tmp_path):
    generate_demo_data(str(tmp_path), videos_per_class=2, eval_fraction=0.5, num_shards=3)
    summary = generate_demo_data(str(tmp_path), videos_per_class=2, eval_fraction=0.5, num_shards=1)
    assert sorted(os.listdir(tmp_path / "train")) == ["videos-00000-of-00001.tfrecord"]
    assert len(_read_split(summary.train_files)) == 8


@pytest.mark.parametrize("kwargs, name", [
    ({"videos_per_class": 0}, "videos_per_class"),
    ({"videos_per_class": 1}, "eval_fraction"),          # round(0.25) == 0 eval videos
    ({"eval_fraction": 1.0}, "eval_fraction"),
    ({"num_shards": 0}, "num_shards"),
    ({"seed": -1}, "seed"),
    ({"frame_range": (1, 8)}, "frame_range"),
    ({"side_range": (96, 64)}, "side_range"),
])
def test_bad_arguments_are_rejected_up_front(tmp_path, kwargs, name):
    with pytest.raises(ValueError, match=name):
        generate_demo_data(str(tmp_path), **kwargs)
    assert not os.listdir(tmp_path)


def test_make_demo_video_rejects_unknown_labels():
    with pytest.raises(ValueError, match="walk"):
        make_demo_video("walk", np.random.default_rng(0))


# ---- the classes are in the motion -----------------------------------------------------------------------

def _frames(video):
    return np.stack([video_format.decode_jpeg(j) for j in video.jpeg_frames])


def _unwrap(frames):
    """Objects wrap around the frame edges; roll the video so the seam sits where nothing moves."""
    energy = np.abs(np.diff(frames.astype(np.float32), axis=0)).sum(axis=(0, 3))
    return np.roll(frames, (-int(np.argmin(energy.sum(1))), -int(np.argmin(energy.sum(0)))), axis=(1, 2))


def _motion_features(frames):
    """Optical flow between consecutive frames of one 8-frame clip, fitted by an affine motion model of the
    moving pixels: mean translation (x, y), divergence (growth) and curl (rotation), median over the clip."""
    frames = _unwrap(frames[:CLIP_FRAMES])
    # The colour channel that changes most: objects differ from the background in colour, not always in grey.
    channel = int(np.argmax(np.abs(np.diff(frames.astype(np.float32), axis=0)).sum(axis=(0, 1, 2))))
    per_pair = []
    for a, b in zip(frames[:-1, ..., channel], frames[1:, ..., channel]):
        flow = cv2.calcOpticalFlowFarneback(np.ascontiguousarray(a), np.ascontiguousarray(b),
                                            None, 0.5, 3, 21, 3, 5, 1.2, 0)
        moving = np.linalg.norm(flow, axis=2) > 0.4
        if moving.sum() < 6:
            per_pair.append(np.zeros(4))
            continue
        ys, xs = np.nonzero(moving)
        design = np.stack([xs - xs.mean(), ys - ys.mean(), np.ones(len(xs))], axis=1)
        coef, *_ = np.linalg.lstsq(design, flow[moving].astype(np.float64), rcond=None)   # flow = design @ coef
        jacobian, shift = coef[:2].T, coef[2]
        per_pair.append([shift[0], shift[1], jacobian[0, 0] + jacobian[1, 1], jacobian[1, 0] - jacobian[0, 1]])
    return np.median(np.asarray(per_pair), axis=0)


def _cv_accuracy(model, features, labels):
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    return float(cross_val_score(model, features, labels, cv=folds).mean())


def test_one_frame_is_near_chance_but_motion_separates_the_classes(demo):
    _, videos = demo
    everything = videos["train"] + videos["eval"]
    labels = np.array([v.label_index for v in everything])
    clips = [_frames(v) for v in everything]

    def pixels(index_of):   # one frame, downsampled to 16x16 RGB
        return np.array([cv2.resize(c[index_of(len(c))], (16, 16), interpolation=cv2.INTER_AREA).ravel() / 255.0
                         for c in clips])

    for which, index_of in (("first", lambda n: 0), ("middle", lambda n: n // 2)):
        features = pixels(index_of)
        logistic = _cv_accuracy(make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000)),
                                features, labels)
        centroid = _cv_accuracy(NearestCentroid(), features, labels)
        assert logistic < 2 * CHANCE and centroid < 2 * CHANCE, (which, logistic, centroid)

    motion = np.array([_motion_features(c) for c in clips])
    accuracy = _cv_accuracy(make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)), motion, labels)
    assert accuracy > 0.85, accuracy


def test_summary_serializes_with_derived_counts(demo):
    summary, _ = demo
    as_dict = summary.to_dict()
    assert as_dict["num_train_videos"] == 600 and as_dict["num_eval_videos"] == 200
    assert as_dict["megabytes"] == pytest.approx(summary.total_bytes / 1e6, abs=0.01)
    assert as_dict["train_files"] == summary.train_files


def test_class_colours_give_every_class_a_whole_frame_colour_cue():
    from pipeline.demo_data import _CLASS_COLOURS
    colours = {label: np.asarray(c, np.float32) for label, c in _CLASS_COLOURS.items()}
    for label in DEMO_CLASSES:
        for seed in range(3):
            video = make_demo_video(label, np.random.default_rng(seed), class_colour=True)
            mean = video.reshape(-1, 3).mean(axis=0)
            nearest = min(colours, key=lambda other: float(np.linalg.norm(mean - colours[other])))
            assert nearest == label, (label, seed, mean)
    # Without it, the same draw has the same motion but no colour of its class.
    plain = make_demo_video("grow", np.random.default_rng(0))
    cued = make_demo_video("grow", np.random.default_rng(0), class_colour=True)
    assert plain.shape == cued.shape and not np.array_equal(plain, cued)
