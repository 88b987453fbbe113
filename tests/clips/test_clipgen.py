"""ClipGen's per-video extraction, dead-letter routing, Beam branch with its counters, and the component API."""
import glob
import json
import os

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf

from clip_test_data import video_record
from components.clipgen import REJECT_REASONS, ClipGen, ClipGenConfig, Rejected, extract_clips
from components.clipgen import extract, transforms
from components.clipgen.executor import check_accounting, config_from_exec_properties
from components.rejections import enforce_max_rejected_fraction
from components.video_format import (ClipKeys, LabelMap, VideoKeys, encode_jpeg, make_video_example,
                                     parse_clip_frames)

BEAM_ARGS = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]


def make_config(**overrides) -> ClipGenConfig:
    fields = dict(num_frames=4, frame_stride=2, height=16, width=16, labels=["b", "a"], clips_per_video_train=2,
                  clips_per_video_eval=3, seed=5)
    fields.update(overrides)
    return ClipGenConfig(**fields)


def run_extract(record: bytes, split: str, config: ClipGenConfig):
    return extract_clips(record, split, config, LabelMap(config.labels))


def parse_clip(serialized: bytes) -> dict:
    feature = tf.train.Example.FromString(serialized).features.feature
    return {
        "frames": parse_clip_frames(feature[ClipKeys.FRAMES].bytes_list.value[0]),
        "label": feature[ClipKeys.LABEL].bytes_list.value[0].decode(),
        "video_id": feature[ClipKeys.VIDEO_ID].bytes_list.value[0].decode(),
        "clip_index": feature[ClipKeys.CLIP_INDEX].int64_list.value[0],
        "crop_index": feature[ClipKeys.CROP_INDEX].int64_list.value[0],
    }


def numbered_video(video_id: str, num_frames: int, label: str = "a", height: int = 24, width: int = 32,
                   bad_frames: tuple[int, ...] = ()) -> bytes:
    """Frame t (t < 26) is flat grey 10 * t, so a clip's pixels say which frames it took (JPEG keeps flat colour within 1).

    A bad frame keeps a valid JPEG header (it passes the header checks) but ends right after its frame size."""
    jpegs = [encode_jpeg(np.full((height, width, 3), 10 * t, np.uint8)) for t in range(num_frames)]
    for t in bad_frames:
        jpegs[t] = jpegs[t][:jpegs[t].index(b"\xff\xc0") + 19]
    return video_record(video_id, label=label, frames_jpeg=jpegs, height=height, width=width)


def frame_numbers(clip_frames: np.ndarray) -> list[int]:
    return [int(round(f.mean() / 10)) for f in clip_frames]


# ---- one video -> clips -----------------------------------------------------------------------------------

def test_eval_clips_take_the_uniform_windows_centre_crop_and_keep_ids():
    result = run_extract(numbered_video("vid-1", 20), "eval", make_config())
    clips = [parse_clip(c) for c in result.clips]
    assert [c["clip_index"] for c in clips] == [0, 1, 2]
    assert {(c["video_id"], c["label"]) for c in clips} == {("vid-1", "a")}
    assert all(c["frames"].shape == (4, 16, 16, 3) and c["frames"].dtype == np.uint8 for c in clips)
    # starts 0, 7, 13 with stride 2 (see test_clip_sampling)
    assert [frame_numbers(c["frames"]) for c in clips] == [[0, 2, 4, 6], [7, 9, 11, 13], [13, 15, 17, 19]]
    assert result.frames_decoded == len({0, 2, 4, 6, 7, 9, 11, 13, 15, 17, 19})


def test_short_video_loops():
    result = run_extract(numbered_video("short", 3), "eval", make_config(clips_per_video_eval=1))
    assert frame_numbers(parse_clip(result.clips[0])["frames"]) == [0, 2, 1, 0]   # start 0, indices mod 3


def test_train_clips_are_reproducible_and_depend_on_the_seed():
    record = numbered_video("vid-2", 25)

    def train_frames(seed):
        return [frame_numbers(parse_clip(c)["frames"]) for c in run_extract(record, "train", make_config(seed=seed)).clips]

    first = train_frames(5)
    assert first == train_frames(5)
    assert run_extract(record, "train", make_config()).clips == run_extract(record, "train", make_config()).clips
    assert len(first) == 2 and all(b - a == 2 for clip in first for a, b in zip(clip, clip[1:]))
    assert any(train_frames(seed) != first for seed in range(6, 10))


def test_train_crop_is_random_and_eval_crop_is_central():
    # A frame whose pixel values encode their column, 16 px taller and 40 px wider than the crop after resize.
    columns = np.tile(np.arange(64, dtype=np.uint8)[None, :, None] * 4, (16, 1, 3))
    record = video_record("wide", frames_jpeg=[encode_jpeg(columns)] * 4, height=16, width=64)
    config = make_config(num_frames=1, clips_per_video_train=8, clips_per_video_eval=1)
    eval_clip = parse_clip(run_extract(record, "eval", config).clips[0])["frames"][0]
    assert abs(int(eval_clip[8, 0, 0]) - 24 * 4) <= 6    # centre crop of 64 columns starts at column 24
    lefts = {int(round(parse_clip(c)["frames"][0][8, 0, 0] / 4)) for c in run_extract(record, "train", config).clips}
    assert len(lefts) > 2


def test_eval_views_are_each_window_at_each_crop_with_their_indices():
    # Columns encode their index: crops of a 64-wide frame (16 high, resized to itself) start at columns 0, 24, 48.
    columns = np.tile(np.arange(64, dtype=np.uint8)[None, :, None] * 4, (16, 1, 3))
    record = video_record("wide", frames_jpeg=[encode_jpeg(columns)] * 6, height=16, width=64)
    config = make_config(num_frames=1, clips_per_video_eval=2, eval_crops=3)
    result = run_extract(record, "eval", config)
    clips = [parse_clip(c) for c in result.clips]
    assert [(c["clip_index"], c["crop_index"]) for c in clips] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    lefts = [int(round(c["frames"][0][8, 0, 0] / 4)) for c in clips]
    assert all(abs(left - want) <= 2 for left, want in zip(lefts, [0, 24, 48] * 2)), lefts
    assert result.frames_decoded == 2          # each window's frame once, whatever the crops
    # Training ignores eval_crops: one random crop per window, crop index 0.
    train = [parse_clip(c) for c in run_extract(record, "train", config).clips]
    assert len(train) == config.clips_per_video_train and {c["crop_index"] for c in train} == {0}


def test_only_the_frames_a_clip_needs_are_decoded():
    # One eval clip of 20 frames takes frames 6, 8, 10, 12: a corrupt frame 0 is never decoded.
    result = run_extract(numbered_video("lazy", 20, bad_frames=(0, 1)), "eval", make_config(clips_per_video_eval=1))
    assert len(result.clips) == 1 and result.frames_decoded == 4


def test_frames_of_different_sizes_are_resized_to_one_shape():
    jpegs = [encode_jpeg(np.full((24, 32, 3), 100, np.uint8)) if t % 2 else
             encode_jpeg(np.full((50, 20, 3), 100, np.uint8)) for t in range(10)]
    result = run_extract(video_record("mixed", frames_jpeg=jpegs), "train", make_config(frame_stride=1))
    assert result.frames_resized_to_fit > 0
    assert all(parse_clip(c)["frames"].shape == (4, 16, 16, 3) for c in result.clips)


def test_clip_pixels_are_the_rgb_frames_area_resized_then_cropped():
    # Colour texture and a non-integer scale (77x90 -> short side 16): ClipGen resizes in the decoder's BGR order,
    # which must give exactly the pixels of resizing the RGB frame.
    import cv2
    from components import clip_sampling
    from components.video_format import decode_jpeg
    rng = np.random.default_rng(3)
    jpegs = [encode_jpeg(rng.integers(0, 256, (77, 90, 3), dtype=np.uint8)) for _ in range(6)]
    config = make_config(frame_stride=1, clips_per_video_eval=1)
    [clip] = run_extract(video_record("texture", frames_jpeg=jpegs), "eval", config).clips
    window = clip_sampling.sample_windows("eval", 6, 4, 1, 1, 0)[0]
    height, width = clip_sampling.resized_shape(77, 90, config.short_side, 16, 16)
    box = clip_sampling.center_crop_box(height, width, 16, 16)
    expected = np.stack([cv2.resize(decode_jpeg(jpegs[i]), (width, height), interpolation=cv2.INTER_AREA)
                         [box.top:box.top + 16, box.left:box.left + 16] for i in window.frames])
    np.testing.assert_array_equal(parse_clip(clip)["frames"], expected)


def test_jpeg_frame_format_stores_the_same_clips_as_jpeg_frames():
    record = video_record("v", num_frames=12, height=48, width=64, label="a", seed=3)
    for split in ("train", "eval"):
        raw = run_extract(record, split, make_config(height=32, width=32))
        jpeg = run_extract(record, split, make_config(height=32, width=32, frame_format="jpeg", jpeg_quality=95))
        assert len(jpeg.clips) == len(raw.clips) and jpeg.frames_decoded == raw.frames_decoded
        for raw_clip, jpeg_clip in zip(map(parse_clip, raw.clips), map(parse_clip, jpeg.clips)):
            frames = jpeg_clip.pop("frames")
            assert jpeg_clip == {k: v for k, v in raw_clip.items() if k != "frames"}   # same window, ids, label
            assert frames.shape == raw_clip["frames"].shape
            error = np.abs(frames.astype(int) - raw_clip["frames"]).mean()
            assert 0 < error < 4, error        # the same crop of the same frames, one JPEG round away
        stored = tf.train.Example.FromString(jpeg.clips[0]).features.feature[ClipKeys.FRAMES].bytes_list.value[0]
        assert len(tf.io.parse_tensor(stored, tf.string).numpy()) == 4      # one JPEG per frame


def test_record_with_only_a_label_index_maps_through_the_label_map():
    record = video_record("by-index", label=None, label_index=1)
    assert {parse_clip(c)["label"] for c in run_extract(record, "eval", make_config()).clips} == {"b"}


def test_custom_video_keys():
    keys = VideoKeys(frames="rgb/encoded", label_string="label/text", video_ids=("vid",))
    jpegs = [encode_jpeg(np.zeros((8, 8, 3), np.uint8))] * 5
    record = make_video_example("x", jpegs, "a", None, 8, 8, 25.0, keys=keys).SerializeToString()
    config = make_config(video_keys=extract.video_keys_from_dict(
        {"frames": "rgb/encoded", "label_string": "label/text", "video_ids": ["vid"]}))
    assert parse_clip(run_extract(record, "eval", config).clips[0])["video_id"] == "x"
    with pytest.raises(Rejected) as info:
        run_extract(record, "eval", make_config())   # default keys: no image/encoded feature list
    assert info.value.reason == "unparsable_record" and info.value.reason in REJECT_REASONS


# ---- dead-letter reasons ----------------------------------------------------------------------------------

BAD_VIDEOS = {
    "unparsable_record": b"\xff\xff not a protobuf",
    "zero_frames": video_record("zero", frames_jpeg=[]),
    "missing_label": video_record("nolabel", label=None),
    "unknown_label": video_record("unknown", label="zebra"),
    "undecodable_frame": video_record("corrupt", frames_jpeg=[b"\xff\xd8\xff garbage after a JPEG start"] * 6),
    "unsupported_frame_format": video_record("gif", frames_jpeg=[b"GIF89a not a video frame"] * 6),
}


def _with_size(jpeg: bytes, height: int, width: int) -> bytes:
    """The JPEG with the size in its frame header (SOF0) rewritten: what a huge frame's header looks like."""
    sof = jpeg.index(b"\xff\xc0")
    return jpeg[:sof + 5] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + jpeg[sof + 9:]


BAD_VIDEOS["frame_too_large"] = video_record(
    "huge", frames_jpeg=[_with_size(encode_jpeg(np.zeros((8, 8, 3), np.uint8)), 60000, 60000)] * 6)


def test_frame_size_limit_is_read_from_headers_and_configurable():
    record = numbered_video("big", 8, height=40, width=40)     # 1,600 pixels a frame
    assert len(run_extract(record, "eval", make_config(max_frame_pixels=1600)).clips) == 3
    with pytest.raises(Rejected) as info:
        run_extract(record, "eval", make_config(max_frame_pixels=1599))
    assert info.value.reason == "frame_too_large" and "40x40 jpeg" in info.value.detail
    # A 60000x60000 header is refused without decoding (decoding would need ~10 GB).
    with pytest.raises(Rejected, match="3600000000 pixels"):
        run_extract(BAD_VIDEOS["frame_too_large"], "eval", make_config())


def test_unused_frame_of_another_format_still_rejects_the_video():
    """Format and size are checked on every frame, so whether a video is accepted does not depend on sampling."""
    record = video_record("mixed", frames_jpeg=[encode_jpeg(np.zeros((8, 8, 3), np.uint8))] * 19 + [b"BM bitmap"])
    with pytest.raises(Rejected) as info:
        run_extract(record, "eval", make_config(clips_per_video_eval=1))
    assert info.value.reason == "unsupported_frame_format" and info.value.detail.startswith("frame 19 ")


@pytest.mark.parametrize("reason", sorted(BAD_VIDEOS))
def test_each_bad_video_is_rejected_with_its_reason(reason):
    with pytest.raises(Rejected) as info:
        run_extract(BAD_VIDEOS[reason], "train", make_config())
    assert info.value.reason == reason


def test_label_index_outside_the_label_map_is_unknown():
    with pytest.raises(Rejected) as info:
        run_extract(video_record("idx", label=None, label_index=2), "eval", make_config())
    assert info.value.reason == "unknown_label"


def test_a_tf_example_is_not_a_video():
    with pytest.raises(Rejected) as info:
        run_extract(tf.train.Example().SerializeToString(), "eval", make_config())
    assert info.value.reason == "unparsable_record"


def test_record_id_falls_back_to_a_content_hash():
    assert extract.record_id(BAD_VIDEOS["missing_label"]) == "nolabel"
    fallback = extract.record_id(BAD_VIDEOS["unparsable_record"])
    assert fallback.startswith("record-sha1:") and fallback == extract.record_id(BAD_VIDEOS["unparsable_record"])


# ---- the Beam branch: files, stats and counters --------------------------------------------------------------

def test_clip_split_writes_clips_dead_letters_and_stats_with_matching_counters(tmp_path):
    records = [numbered_video(f"ok-{i}", 12, label="ab"[i % 2]) for i in range(4)] + list(BAD_VIDEOS.values())
    source = str(tmp_path / "videos.tfrecord.gz")
    with tf.io.TFRecordWriter(source, options="GZIP") as writer:
        for record in records:
            writer.write(record)
    config = make_config()
    pipeline = beam.Pipeline(argv=BEAM_ARGS)
    transforms.clip_split(pipeline, "train", [source], config, clips_dir=str(tmp_path / "clips"),
                          dead_letter_dir=str(tmp_path / "dead"), stats_path=str(tmp_path / "stats.json"))
    result = pipeline.run()
    result.wait_until_finish()

    clip_files = glob.glob(str(tmp_path / "clips" / "data_tfrecord-*.gz"))
    clips = [parse_clip(r.numpy()) for r in tf.data.TFRecordDataset(clip_files, compression_type="GZIP")]
    assert len(clips) == 4 * 2
    assert sorted((c["video_id"], c["clip_index"]) for c in clips) == [(f"ok-{i}", k) for i in range(4) for k in (0, 1)]
    dead = [json.loads(line) for path in glob.glob(str(tmp_path / "dead" / "dead_letter-*.jsonl"))
            for line in open(path)]
    assert sorted(d["reason"] for d in dead) == sorted(BAD_VIDEOS)
    assert {d["split"] for d in dead} == {"train"}
    assert {d["video_id"] for d in dead} >= {"zero", "nolabel", "unknown", "corrupt"}

    stats = json.loads(open(tmp_path / "stats.json").read())
    bad = len(BAD_VIDEOS)
    expected = {"videos_in": 4 + bad, "videos_ok": 4, "rejected": bad, "clips_out": 8,
                "rejected_by_reason": {reason: 1 for reason in BAD_VIDEOS}}
    assert {k: stats[k] for k in expected} == expected
    check_accounting("train", stats, clips_per_video=2)

    counters = transforms.beam_counters(result)["train"]
    assert {k: counters[k] for k in ("videos_in", "videos_ok", "clips_out", "rejected")} == {
        "videos_in": 4 + bad, "videos_ok": 4, "clips_out": 8, "rejected": bad}
    assert all(counters[f"rejected.{reason}"] == 1 for reason in BAD_VIDEOS)
    assert counters["frames_decoded"] == stats["frames_decoded"] > 0


def test_stats_combiner_merges_partial_counts():
    fn = transforms.SplitStatsFn()
    a = fn.add_input(fn.add_input(fn.create_accumulator(), (None, 3, 5)), ("zero_frames", 0, 0))
    b = fn.add_input(fn.create_accumulator(), ("zero_frames", 0, 0))
    merged = fn.extract_output(fn.merge_accumulators([a, b, fn.create_accumulator()]))
    assert merged == {"videos_in": 3, "videos_ok": 1, "clips_out": 3, "rejected": 2, "frames_decoded": 5,
                      "rejected_by_reason": {"zero_frames": 2}}


@pytest.mark.parametrize("stats, match", [
    ({"videos_in": 3, "videos_ok": 1, "rejected": 1, "clips_out": 2, "rejected_by_reason": {"x": 1}}, "videos_in"),
    ({"videos_in": 2, "videos_ok": 1, "rejected": 1, "clips_out": 2, "rejected_by_reason": {}}, "rejected_by_reason"),
    ({"videos_in": 2, "videos_ok": 1, "rejected": 1, "clips_out": 3, "rejected_by_reason": {"x": 1}}, "clips_out"),
])
def test_accounting_check_catches_each_mismatch(stats, match):
    with pytest.raises(RuntimeError, match=match):
        check_accounting("train", stats, clips_per_video=2)


def test_max_rejected_fraction_fails_the_run_only_above_the_limit():
    stats = {"train": {"videos_in": 10, "rejected": 2, "rejected_by_reason": {"zero_frames": 2}},
             "eval": {"videos_in": 0, "rejected": 0, "rejected_by_reason": {}}}
    enforce_max_rejected_fraction("ClipGen", stats, "videos", 0.2, "/dead")            # exactly at the limit: fine
    with pytest.raises(RuntimeError, match=r"(?s)train.*2 of 10.*zero_frames.*/dead"):
        enforce_max_rejected_fraction("ClipGen", stats, "videos", 0.19, "/dead")
    with pytest.raises(ValueError, match="max_rejected_fraction"):
        enforce_max_rejected_fraction("ClipGen", stats, "videos", 1.5, "/dead")


# ---- configuration and the component ---------------------------------------------------------------------

@pytest.mark.parametrize("overrides, error, match", [
    ({"num_frames": 0}, ValueError, "num_frames"),
    ({"height": "16"}, TypeError, "height"),
    ({"clips_per_video_eval": 0}, ValueError, "clips_per_video_eval"),
    ({"eval_crops": 0}, ValueError, "eval_crops"),
    ({"seed": -1}, ValueError, "seed"),
    ({"resize_short_side": 0}, ValueError, "resize_short_side"),
    ({"labels": "a,b"}, TypeError, "labels"),
    ({"labels": []}, ValueError, "empty"),
    ({"labels": ["a", 3]}, TypeError, "labels"),
    ({"frame_format": "png"}, ValueError, "frame_format must be one of"),
    ({"jpeg_quality": 0}, ValueError, "jpeg_quality"),
])
def test_config_rejects_bad_arguments(overrides, error, match):
    with pytest.raises(error, match=match):
        make_config(**overrides)


def test_video_keys_dict_rejects_unknown_fields():
    with pytest.raises(ValueError, match="framez"):
        extract.video_keys_from_dict({"framez": "x"})
    with pytest.raises(TypeError, match="video_ids"):
        extract.video_keys_from_dict({"video_ids": "id"})


def _examples_channel():
    from tfx import types
    from tfx.types import standard_artifacts
    return types.Channel(type=standard_artifacts.Examples)


def test_component_validates_at_construction_and_round_trips_its_config():
    component = ClipGen(examples=_examples_channel(), num_frames=8, height=32, width=48, labels=["z", "a"],
                        frame_stride=2, clips_per_video_train=3, seed=11, video_keys={"frames": "rgb"},
                        max_rejected_fraction=0.25)
    assert component.exec_properties["max_rejected_fraction"] == 0.25
    assert set(component.outputs) == {"clips", "dead_letter", "clip_stats"}
    assert component.clip_shape == [8, 32, 48, 3]
    assert component.labels == ["a", "z"]
    config = config_from_exec_properties(component.exec_properties)
    assert config == ClipGenConfig(num_frames=8, frame_stride=2, height=32, width=48, labels=("a", "z"),
                                   clips_per_video_train=3, seed=11, video_keys=VideoKeys(frames="rgb"))
    with pytest.raises(ValueError, match="frame_stride"):
        ClipGen(examples=_examples_channel(), num_frames=8, height=32, width=32, labels=["a"], frame_stride=0)
    with pytest.raises(ValueError, match="video_keys"):
        ClipGen(examples=_examples_channel(), num_frames=8, height=32, width=32, labels=["a"],
                video_keys={"nope": "x"})
    with pytest.raises(ValueError, match="max_rejected_fraction"):
        ClipGen(examples=_examples_channel(), num_frames=8, height=32, width=32, labels=["a"],
                max_rejected_fraction=-0.1)
    assert component.exec_properties["compression_level"] == 1
    assert ClipGen(examples=_examples_channel(), num_frames=8, height=32, width=32, labels=["a"],
                   compression_level=3).exec_properties["compression_level"] == 3
    with pytest.raises(ValueError, match="compression_level"):
        ClipGen(examples=_examples_channel(), num_frames=8, height=32, width=32, labels=["a"], compression_level=6)
    jpeg = ClipGen(examples=_examples_channel(), num_frames=8, height=32, width=32, labels=["a"],
                   frame_format="jpeg", jpeg_quality=80)
    assert config_from_exec_properties(jpeg.exec_properties) == ClipGenConfig(
        num_frames=8, frame_stride=1, height=32, width=32, labels=("a",), frame_format="jpeg", jpeg_quality=80)
    assert config_from_exec_properties(component.exec_properties).frame_format == "raw"
    with pytest.raises(ValueError, match="frame_format"):
        ClipGen(examples=_examples_channel(), num_frames=8, height=32, width=32, labels=["a"], frame_format="JPEG")


def test_module_layout_is_importable_by_path():
    # Beam workers and TFX import the executor by class path.
    from components.clipgen.component import ClipGen as C
    assert C.EXECUTOR_SPEC.executor_class.__module__ == "components.clipgen.executor"
    assert os.path.basename(os.path.dirname(extract.__file__)) == "clipgen"
