"""A corpus of bad (and tricky but valid) inputs, built on disk by the tests, with the fate each item must meet.

Layout under ``root``::

    raw/*.mp4, raw/videos.csv     convert's input: good mp4s, a truncated one, a zero-frame one, an empty file and
                                  a CSV row naming a file that does not exist
    train/                        convert writes videos-*.tfrecord here; next to it TFRecord files with bad
                                  records, truncated and corrupted files, and videos ClipGen must handle or reject
    eval/eval.tfrecord            eval videos, one duplicating a train video's id

Every item says at which stage it ends and why: ``Item.stage`` is "convert", "ingest" or "clipgen" for a
rejection (``reason`` is that stage's dead-letter reason) or "clips" for a video that must come out as clips.
"""
from __future__ import annotations

import dataclasses
import gzip
import os

import av
import cv2
import numpy as np
import tensorflow as tf

from components.tfrecord_io import encode_record
from components.video_format import encode_jpeg, make_video_example

LABELS = ["jump", "run", "walk"]      # convert's label map of the CSV below (sorted)
T, H, W = 4, 16, 16                   # clip shape of the pipeline run


@dataclasses.dataclass(frozen=True)
class Item:
    name: str
    split: str            # "train" or "eval"
    stage: str            # "convert" | "ingest" | "clipgen" (rejected there) | "clips" (comes out as clips)
    reason: str | None    # the dead-letter reason at ``stage``; None for "clips"
    video_id: str | None = None          # how the item is found in outputs and ClipGen/convert dead letters
    file: str | None = None              # ingest dead letters: basename of the TFRecord file ...
    record_index: int | None = None      # ... and the record's number in it


@dataclasses.dataclass
class Corpus:
    root: str
    csv_path: str
    items: list[Item]

    def by_stage(self, stage: str) -> list[Item]:
        return [i for i in self.items if i.stage == stage]


# ---- frames and records -------------------------------------------------------------------------------------

def _frames(n: int, height: int, width: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 200, size=3)
    return [np.clip(np.full((height, width, 3), base, np.int32) + 5 * t + rng.integers(0, 20, (height, width, 3)),
                    0, 255).astype(np.uint8) for t in range(n)]


def _jpegs(n: int, seed: int, height: int = 24, width: int = 24) -> list[bytes]:
    return [encode_jpeg(f) for f in _frames(n, height, width, seed)]


def record(video_id: str, frames: list[bytes], label: str | None) -> bytes:
    return make_video_example(video_id, frames, label, None, 24, 24, 25.0).SerializeToString()


def _grayscale_jpegs(n: int, seed: int) -> list[bytes]:
    return [cv2.imencode(".jpg", f[:, :, 0])[1].tobytes() for f in _frames(n, 20, 20, seed)]


def _rgba_pngs(n: int, seed: int) -> list[bytes]:
    out = []
    for f in _frames(n, 20, 28, seed):
        bgra = np.concatenate([f[:, :, ::-1], np.full(f.shape[:2] + (1,), 128, np.uint8)], axis=-1)
        out.append(cv2.imencode(".png", bgra)[1].tobytes())
    return out


def huge_header_jpeg() -> bytes:
    """A small JPEG whose frame header claims 60000x60000: bounded memory means refusing it before decoding."""
    jpeg = encode_jpeg(np.zeros((8, 8, 3), np.uint8))
    sof = jpeg.index(b"\xff\xc0")
    return jpeg[:sof + 5] + (60000).to_bytes(2, "big") + (60000).to_bytes(2, "big") + jpeg[sof + 9:]


def not_a_protobuf(seed: int = 0) -> bytes:
    """Random bytes that do not parse as a SequenceExample: they open field 1 with a length far beyond the end."""
    return b"\x0a\xff\xff\xff\x07" + np.random.default_rng(seed).bytes(59)


def tfrecord_bytes(records: list[bytes]) -> tuple[bytes, list[int]]:
    """TFRecord framing of ``records`` (tfrecord_io.encode_record, checked byte for byte against TensorFlow's
    writer) and the byte offset where each starts, so that a test can corrupt exact bytes."""
    out, offsets = bytearray(), []
    for r in records:
        offsets.append(len(out))
        out += encode_record(r)
    return bytes(out), offsets


def _write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def write_mp4(path: str, num_frames: int, seed: int = 0, size: int = 32) -> None:
    with av.open(path, "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = size, size, "yuv420p"
        if num_frames == 0:
            container.start_encoding()
        for frame in _frames(num_frames, size, size, seed):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


# ---- the corpus -----------------------------------------------------------------------------------------------

def build_corpus(root: str) -> Corpus:
    items: list[Item] = []
    raw = os.path.join(root, "raw")
    os.makedirs(raw)

    # convert: CSV rows
    write_mp4(os.path.join(raw, "good1.mp4"), 6, seed=1)
    write_mp4(os.path.join(raw, "good2.mp4"), 3, seed=2)         # shorter than a 4-frame clip: loops
    write_mp4(os.path.join(raw, "zero.mp4"), 0)
    full = open(os.path.join(raw, "good1.mp4"), "rb").read()
    _write(os.path.join(raw, "truncated.mp4"), full[:len(full) // 2])
    _write(os.path.join(raw, "empty.mp4"), b"")
    rows = [("good1.mp4", "walk"), ("good2.mp4", "run"), ("zero.mp4", "walk"), ("truncated.mp4", "jump"),
            ("empty.mp4", "run"), ("no/such/file.mp4", "jump")]
    csv_path = os.path.join(raw, "videos.csv")
    with open(csv_path, "w") as f:
        f.write("path,label\n" + "".join(f"{p},{label}\n" for p, label in rows))
    items += [Item("mp4 good", "train", "clips", None, video_id="good1"),
              Item("mp4 shorter than a clip", "train", "clips", None, video_id="good2"),
              Item("mp4 with zero frames", "train", "convert", "no video stream", video_id="zero"),
              Item("mp4 truncated", "train", "convert", "no video stream", video_id="truncated"),
              Item("empty file", "train", "convert", "empty file", video_id="empty"),
              Item("CSV row with an unknown path", "train", "convert", "cannot open", video_id="no/such/file")]

    # ingest + ClipGen: videos written directly as records (not named videos-*, which convert would take for an
    # earlier conversion in its --out)
    mixed = _jpegs(3, seed=5, height=24, width=24) + _jpegs(3, seed=6, height=30, width=40)
    videos = [
        ("t-good", _jpegs(8, 3), "jump", "clips", None),
        ("t-gray", _grayscale_jpegs(6, 4), "run", "clips", None),
        ("t-rgba", _rgba_pngs(6, 7), "walk", "clips", None),
        ("t-mixed-sizes", mixed, "walk", "clips", None),
        ("t-one-frame", _jpegs(1, 8), "jump", "clips", None),
        ("t-zero-frames", [], "run", "clipgen", "zero_frames"),
        ("t-not-jpeg", [b"GIF89a" + bytes(40)] * 5, "run", "clipgen", "unsupported_frame_format"),
        ("t-broken-jpeg", [b"\xff\xd8\xff" + bytes(40)] * 5, "run", "clipgen", "undecodable_frame"),
        ("t-huge-frame", _jpegs(4, 9) + [huge_header_jpeg()], "jump", "clipgen", "frame_too_large"),
        ("t-no-label", _jpegs(5, 10), None, "clipgen", "missing_label"),
        ("t-unknown-label", _jpegs(5, 11), "swim", "clipgen", "unknown_label"),
        ("dup", _jpegs(5, 12), "walk", "clips", None),
    ]
    records = [record(vid, frames, label) for vid, frames, label, _, _ in videos]
    items += [Item(f"video {vid}", "train", stage, reason, video_id=vid) for vid, _, _, stage, reason in videos]
    records.append(records[-1])      # the same record twice (a shard copied twice)
    items.append(Item("byte-identical duplicate", "train", "ingest", "duplicate_record",
                      file="direct.tfrecord", record_index=len(records) - 1))
    _write(os.path.join(root, "train", "direct.tfrecord"), tfrecord_bytes(records)[0])

    # ingest: bytes that are no protobuf, between two good records
    data, _ = tfrecord_bytes([record("np-before", _jpegs(4, 13), "run"), not_a_protobuf(),
                              record("np-after", _jpegs(4, 14), "walk")])
    _write(os.path.join(root, "train", "bytes.tfrecord"), data)
    items += [Item("record before random bytes", "train", "clips", None, video_id="np-before"),
              Item("random bytes", "train", "ingest", "not_a_sequence_example", file="bytes.tfrecord",
                   record_index=1),
              Item("record after random bytes", "train", "clips", None, video_id="np-after")]

    # ingest: a file cut inside its third record
    data, offsets = tfrecord_bytes([record(f"tr-{i}", _jpegs(4, 20 + i), "jump") for i in range(3)])
    _write(os.path.join(root, "train", "truncated.tfrecord"), data[:offsets[2] + 40])
    items += [Item("record 0 of a truncated file", "train", "clips", None, video_id="tr-0"),
              Item("record 1 of a truncated file", "train", "clips", None, video_id="tr-1"),
              Item("the cut record of a truncated file", "train", "ingest", "truncated_file",
                   file="truncated.tfrecord", record_index=2)]

    # ingest: a flipped byte in a record's data (only it is lost) and in a length (the rest of the file is lost)
    data, offsets = tfrecord_bytes([record(f"cr-{i}", _jpegs(4, 30 + i), "run") for i in range(3)])
    corrupt = bytearray(data)
    corrupt[offsets[1] + 12 + 20] ^= 0xFF
    _write(os.path.join(root, "train", "corrupt-data.tfrecord"), bytes(corrupt))
    items += [Item("record before a corrupt record", "train", "clips", None, video_id="cr-0"),
              Item("record with a corrupt byte", "train", "ingest", "corrupt_record", file="corrupt-data.tfrecord",
                   record_index=1),
              Item("record after a corrupt record", "train", "clips", None, video_id="cr-2")]
    data, offsets = tfrecord_bytes([record(f"cf-{i}", _jpegs(4, 40 + i), "walk") for i in range(3)])
    corrupt = bytearray(data)
    corrupt[offsets[1] + 1] ^= 0xFF                      # record 1's length
    _write(os.path.join(root, "train", "corrupt-framing.tfrecord"), bytes(corrupt))
    items += [Item("record before a corrupt length", "train", "clips", None, video_id="cf-0"),
              Item("records from a corrupt length on", "train", "ingest", "corrupt_framing",
                   file="corrupt-framing.tfrecord", record_index=1)]

    # ingest: a gzipped file reads as well
    _write(os.path.join(root, "train", "gz.tfrecord.gz"),
           gzip.compress(tfrecord_bytes([record("gz-0", _jpegs(5, 50), "run")])[0]))
    items.append(Item("record in a gzipped file", "train", "clips", None, video_id="gz-0"))

    # eval: good videos, a missing label, and a train video's id again (a leak across splits)
    evals = [("e-good", _jpegs(6, 60), "walk", "clips", None),
             ("e-no-label", _jpegs(6, 61), None, "clipgen", "missing_label")]
    eval_records = [record(vid, frames, label) for vid, frames, label, _, _ in evals]
    items += [Item(f"video {vid}", "eval", stage, reason, video_id=vid) for vid, _, _, stage, reason in evals]
    eval_records.append(record("t-good", _jpegs(6, 62), "jump"))
    items.append(Item("train video id again in eval", "eval", "ingest", "duplicate_id_across_splits",
                      file="eval.tfrecord", record_index=2))
    _write(os.path.join(root, "eval", "eval.tfrecord"), tfrecord_bytes(eval_records)[0])

    # sanity of the corpus itself: the random bytes really are no SequenceExample
    try:
        tf.train.SequenceExample.FromString(not_a_protobuf())
    except Exception:  # protobuf's DecodeError
        pass
    else:
        raise AssertionError("not_a_protobuf() parses; pick other bytes")
    return Corpus(root=root, csv_path=csv_path, items=items)


# ---- a component that crashes once ------------------------------------------------------------------------------

CRASH_MARKER = "crash_marker"     # custom_config key: while this file exists, Transform crashes (and removes it)


def crash_once_preprocessing_fn(inputs, custom_config):
    """The project's preprocessing_fn, after crashing once: a stand-in for a preempted or failed Transform step
    whose re-run (the same pipeline, unchanged) must find the earlier steps in TFX's cache."""
    from components import transform_module
    marker = custom_config[CRASH_MARKER]
    if os.path.exists(marker):
        os.remove(marker)
        raise RuntimeError("injected Transform crash")
    config = {k: v for k, v in custom_config.items() if k != CRASH_MARKER}
    return transform_module.preprocessing_fn(inputs, config)
