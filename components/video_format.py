"""The one definition of the video and clip record formats, shared by demo data, convert, ingest and ClipGen.

Videos are ``tf.train.SequenceExample``s in the MediaSequence / DMVR / TF Model Garden convention, so
existing Kinetics/UCF101 TFRecords work without conversion. Clips (ClipGen's output) are flat
``tf.train.Example``s whose frames are one serialized ``TensorProto`` in one of two frame formats:

* ``raw``: uint8 [T, H, W, 3], lossless (the default; the right one for CPU training workers);
* ``jpeg``: string [T], one JPEG per frame at the clip's size, about 1/7 of raw's bytes and cheaper to read
  than gzipped raw, at a second lossy round (for GPU workers, whose input rate is the limit: bench/SCALE.md).

Both are self-describing (the TensorProto's dtype says which, the shape travels with the bytes) and decode
in-graph (``decode_frames_tensor``), so the Transform graph, the Trainer's input and every serving signature
read either, even mixed in one batch.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Iterable, Sequence

import numpy as np
import tensorflow as tf

from components.frame_formats import DEFAULT_JPEG_QUALITY, JPEG, RAW, check_frame_format, check_jpeg_quality


# ---- video records (SequenceExample) ------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class VideoKeys:
    """Feature keys of a video SequenceExample. Defaults are Model Garden's / DMVR's; override for other data."""
    frames: str = "image/encoded"                 # feature list, one JPEG per frame
    label_index: str = "clip/label/index"          # context int64
    label_string: str = "clip/label/string"        # context bytes
    video_ids: tuple[str, ...] = ("example/id", "video/filename", "clip/media_id")  # first present wins
    height: str = "image/height"
    width: str = "image/width"
    frame_rate: str = "image/frame_rate"


DEFAULT_VIDEO_KEYS = VideoKeys()


@dataclasses.dataclass
class Video:
    """A decoded-enough video: JPEG frames stay encoded until someone needs pixels."""
    video_id: str
    jpeg_frames: list[bytes]
    label: str | None = None           # label string; None when the record has none
    label_index: int | None = None
    height: int = 0
    width: int = 0
    frame_rate: float = 0.0


class VideoRecordError(ValueError):
    """A record that cannot be read as a video; the message says which record and why."""


def encode_jpeg(frame: np.ndarray, quality: int = 90) -> bytes:
    """uint8 [H, W, 3] RGB -> JPEG bytes (OpenCV, which runs in any Beam worker without a TF session)."""
    import cv2
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame must be uint8 [H, W, 3], got {frame.dtype} {frame.shape}")
    ok, buf = cv2.imencode(".jpg", frame[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def decode_jpeg_bgr(data: bytes) -> np.ndarray:
    """JPEG (or PNG) bytes -> contiguous uint8 [H, W, 3] in OpenCV's BGR order. Grayscale and RGBA become 3
    channels. For OpenCV work on the frame before :func:`decode_jpeg`'s RGB view: cv2 on that reversed-channel
    view first copies it (ClipGen's resize took 1.4x as long).

    Raises ValueError on bytes that are not a decodable image."""
    import cv2
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if arr is None:
        raise ValueError("frame is not a decodable JPEG/PNG image")
    return arr


def decode_jpeg(data: bytes) -> np.ndarray:
    """JPEG (or PNG) bytes -> uint8 [H, W, 3] RGB (a view of the BGR decode). Raises ValueError as
    :func:`decode_jpeg_bgr`."""
    return decode_jpeg_bgr(data)[:, :, ::-1]


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}  # start-of-frame markers
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def image_header(data: bytes) -> tuple[str, int, int] | None:
    """("jpeg" | "png", height, width) read from the header of a frame, without decoding any pixel.

    None when the bytes are neither JPEG nor PNG (the frame formats of this project; decode_jpeg's OpenCV would
    also decode BMP, TIFF, ... which no video record should hold). Raises ValueError on a JPEG/PNG whose header
    ends or breaks before it gives the size. Lets a caller bound memory before decoding a frame."""
    if data[:8] == _PNG_SIGNATURE:
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise ValueError("PNG header ends before its IHDR chunk")
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        return "png", height, width
    if data[:3] != b"\xff\xd8\xff":
        return None
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise ValueError(f"JPEG header: no marker at byte {i}")
        marker = data[i + 1]
        if marker == 0xFF:          # fill byte
            i += 1
            continue
        if marker in (0x01,) or 0xD0 <= marker <= 0xD7:   # markers without a length
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            break
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if marker in _JPEG_SOF:
            if i + 9 > len(data):
                break
            return "jpeg", int.from_bytes(data[i + 5:i + 7], "big"), int.from_bytes(data[i + 7:i + 9], "big")
        i += 2 + length
    raise ValueError("JPEG header has no frame size (SOF) marker before the image data")


def make_video_example(video_id: str, jpeg_frames: Sequence[bytes], label: str | None,
                       label_index: int | None, height: int, width: int, frame_rate: float,
                       keys: VideoKeys = DEFAULT_VIDEO_KEYS) -> tf.train.SequenceExample:
    seq = tf.train.SequenceExample()
    ctx = seq.context.feature
    ctx[keys.video_ids[0]].bytes_list.value.append(video_id.encode())
    if label is not None:
        ctx[keys.label_string].bytes_list.value.append(label.encode())
    if label_index is not None:
        ctx[keys.label_index].int64_list.value.append(int(label_index))
    ctx[keys.height].int64_list.value.append(int(height))
    ctx[keys.width].int64_list.value.append(int(width))
    ctx[keys.frame_rate].float_list.value.append(float(frame_rate))
    frames = seq.feature_lists.feature_list[keys.frames].feature
    for jpeg in jpeg_frames:
        frames.add().bytes_list.value.append(jpeg)
    return seq


def parse_video(serialized: bytes, keys: VideoKeys = DEFAULT_VIDEO_KEYS, source: str = "<record>") -> Video:
    """Serialized SequenceExample -> Video. Raises VideoRecordError naming ``source`` on malformed input."""
    seq = tf.train.SequenceExample()
    try:
        seq.ParseFromString(serialized)
    except Exception as exc:  # protobuf's DecodeError has no stable import path across versions
        raise VideoRecordError(f"{source}: not a tf.train.SequenceExample ({exc})") from None
    ctx = seq.context.feature
    video_id = next((ctx[k].bytes_list.value[0].decode("utf-8", "replace")
                     for k in keys.video_ids if k in ctx and ctx[k].bytes_list.value), None)
    if keys.frames not in seq.feature_lists.feature_list:
        raise VideoRecordError(f"{source}: no feature list {keys.frames!r} (keys present: "
                               f"{sorted(seq.feature_lists.feature_list)})")
    frames = [f.bytes_list.value[0] for f in seq.feature_lists.feature_list[keys.frames].feature
              if f.bytes_list.value]

    def _first(key, kind):
        if key not in ctx:
            return None
        values = getattr(ctx[key], kind).value
        return values[0] if values else None

    label = _first(keys.label_string, "bytes_list")
    return Video(
        video_id=video_id if video_id is not None else source,
        jpeg_frames=frames,
        label=label.decode("utf-8") if label is not None else None,
        label_index=_first(keys.label_index, "int64_list"),
        height=int(_first(keys.height, "int64_list") or 0),
        width=int(_first(keys.width, "int64_list") or 0),
        frame_rate=float(_first(keys.frame_rate, "float_list") or 0.0),
    )


# ---- label map ----------------------------------------------------------------------------------------

LABEL_MAP_FILENAME = "label_map.txt"


class LabelMap:
    """Sorted class names; the index of a label is its position. Stored as one label per line."""

    def __init__(self, labels: Iterable[str]):
        labels = sorted(set(labels))
        if not labels:
            raise ValueError("label map is empty")
        bad = [l for l in labels if not l or "\n" in l]
        if bad:
            raise ValueError(f"labels must be non-empty single-line strings, got {bad!r}")
        self.labels: list[str] = labels
        self._index = {label: i for i, label in enumerate(labels)}

    def __len__(self) -> int:
        return len(self.labels)

    def __contains__(self, label: str) -> bool:
        return label in self._index

    def index(self, label: str) -> int:
        try:
            return self._index[label]
        except KeyError:
            raise KeyError(f"label {label!r} is not in the label map ({len(self)} labels)") from None

    def save(self, directory: str) -> str:
        path = os.path.join(directory, LABEL_MAP_FILENAME)
        tf.io.gfile.makedirs(directory)
        with tf.io.gfile.GFile(path, "w") as f:
            f.write("\n".join(self.labels) + "\n")
        return path

    @classmethod
    def load(cls, path: str) -> "LabelMap":
        if tf.io.gfile.isdir(path):
            path = os.path.join(path, LABEL_MAP_FILENAME)
        with tf.io.gfile.GFile(path) as f:
            return cls(line.rstrip("\n") for line in f if line.strip())


# ---- clip records (tf.Example) ------------------------------------------------------------------------

class ClipKeys:
    """Feature keys of a clip tf.Example (ClipGen output, Transform and serving input)."""
    FRAMES = "clip/frames"                 # bytes: serialized uint8 TensorProto [T, H, W, 3]
    LABEL = "clip/label/string"            # bytes
    VIDEO_ID = "video/id"                  # bytes
    CLIP_INDEX = "clip/index"              # int64: the temporal window within the video
    CROP_INDEX = "clip/crop_index"         # int64: the spatial crop of that window (eval views; 0 when training)


_DT_UINT8 = 4   # tensorflow/core/framework/types.proto


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _length_delimited(number: int, payload: bytes) -> bytes:
    """A protobuf field of wire type 2 (bytes or an embedded message)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


@functools.lru_cache(maxsize=64)
def _tensor_proto_prefix(shape: tuple[int, ...]) -> bytes:
    """A uint8 TensorProto up to its content bytes: dtype = 1; tensor_shape = 2, its dims = 2 each {size = 1};
    the tag and length of tensor_content = 4. proto3 leaves out zeros and empty bytes."""
    dims = b"".join(_length_delimited(2, _varint(1 << 3) + _varint(n) if n else b"") for n in shape)
    size = int(np.prod(shape))
    content_header = _varint(4 << 3 | 2) + _varint(size) if size else b""
    return _varint(1 << 3) + _varint(_DT_UINT8) + _length_delimited(2, dims) + content_header


def serialize_frames(frames: np.ndarray) -> bytes:
    """uint8 [T, H, W, 3] -> a serialized TensorProto (what ``tf.io.parse_tensor`` reads).

    Written here from tensor.proto's wire format, byte-identical to ``tf.make_tensor_proto(frames)
    .SerializeToString()`` (tested), whose Python-side checks took ~13 us of ClipGen's ~270 us per demo clip."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"clip frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    return _tensor_proto_prefix(frames.shape) + frames.tobytes()


_DT_STRING = 7  # tensorflow/core/framework/types.proto


def serialize_jpeg_frames(frames: np.ndarray, quality: int = DEFAULT_JPEG_QUALITY) -> bytes:
    """uint8 [T, H, W, 3] RGB -> a serialized string TensorProto [T] of one JPEG per frame (``tf.io.parse_tensor``
    with tf.string reads it). Byte-identical to ``tf.make_tensor_proto`` of the same JPEG strings (tested):
    dtype = 1; tensor_shape = 2 {dim {size: T}}; string_val = 8, one per frame."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"clip frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    check_jpeg_quality(quality)
    dims = _length_delimited(2, _varint(1 << 3) + _varint(len(frames)) if len(frames) else b"")
    head = _varint(1 << 3) + _varint(_DT_STRING) + _length_delimited(2, dims)
    return head + b"".join(_length_delimited(8, encode_jpeg(frame, quality)) for frame in frames)


def clip_frames_bytes(frames: np.ndarray, frame_format: str = RAW, jpeg_quality: int = DEFAULT_JPEG_QUALITY) -> bytes:
    """A clip's ``clip/frames`` value in ``frame_format``."""
    if check_frame_format(frame_format) == JPEG:
        return serialize_jpeg_frames(frames, jpeg_quality)
    return serialize_frames(frames)


def parse_clip_frames(serialized: bytes) -> np.ndarray:
    """A ``clip/frames`` value of either format -> uint8 [T, H, W, 3] (eagerly; for tools and tests: the pipeline
    decodes in-graph with ``decode_frames_tensor``, whose decoder this uses)."""
    tensor = tf.constant(serialized)
    if serialized[:2] == _STRING_TENSOR_TAG:
        return tf.stack([_decode_one_jpeg(j) for j in tf.io.parse_tensor(tensor, tf.string)]).numpy()
    return tf.io.parse_tensor(tensor, tf.uint8).numpy()


def make_clip_example(frames: np.ndarray, label: str, video_id: str, clip_index: int, frame_format: str = RAW,
                      jpeg_quality: int = DEFAULT_JPEG_QUALITY, crop_index: int = 0) -> tf.train.Example:
    example = tf.train.Example()
    f = example.features.feature
    f[ClipKeys.FRAMES].bytes_list.value.append(clip_frames_bytes(frames, frame_format, jpeg_quality))
    f[ClipKeys.LABEL].bytes_list.value.append(label.encode())
    f[ClipKeys.VIDEO_ID].bytes_list.value.append(video_id.encode())
    f[ClipKeys.CLIP_INDEX].int64_list.value.append(int(clip_index))
    f[ClipKeys.CROP_INDEX].int64_list.value.append(int(crop_index))
    return example


def clip_feature_spec(with_label: bool = True) -> dict:
    """Raw feature spec of clip examples (what Transform and the serving signature parse)."""
    spec = {
        ClipKeys.FRAMES: tf.io.FixedLenFeature([], tf.string),
        ClipKeys.VIDEO_ID: tf.io.FixedLenFeature([], tf.string, default_value=""),
        ClipKeys.CLIP_INDEX: tf.io.FixedLenFeature([], tf.int64, default_value=0),
        ClipKeys.CROP_INDEX: tf.io.FixedLenFeature([], tf.int64, default_value=0),
    }
    if with_label:
        spec[ClipKeys.LABEL] = tf.io.FixedLenFeature([], tf.string)
    return spec


# A serialized TensorProto starts with its dtype field (tag 0x08, then the DataType): how a clip says its format.
_UINT8_TENSOR_TAG = bytes([1 << 3, _DT_UINT8])
_STRING_TENSOR_TAG = bytes([1 << 3, _DT_STRING])


def _decode_one_jpeg(jpeg: tf.Tensor) -> tf.Tensor:
    # INTEGER_ACCURATE: libjpeg's accurate DCT, the one OpenCV decodes with (TF's default picks the fast one).
    return tf.io.decode_jpeg(jpeg, channels=3, dct_method="INTEGER_ACCURATE")


def decode_frames_tensor(serialized: tf.Tensor, clip_shape: Sequence[int]) -> tf.Tensor:
    """In-graph: batch of ``clip/frames`` values [B], each raw or JPEG (module docstring) -> uint8 [B, T, H, W, 3]
    with a static shape.

    A clip of another shape fails with its shape named, before anything of that shape is allocated: a raw
    clip's shape is read from its TensorProto, a JPEG frame's from its header (``tf.io.extract_jpeg_shape``)."""
    clip_shape = tuple(int(d) for d in clip_shape)
    n = len(clip_shape)

    def checked(shape, make, what):
        same = tf.logical_and(tf.equal(tf.size(shape), n),  # pad+slice: comparable even at another rank
                              tf.reduce_all(tf.equal(tf.pad(shape, [[0, n]])[:n], clip_shape)))

        def wrong_shape():
            with tf.control_dependencies([tf.debugging.Assert(False, [f"clip frames must have shape {clip_shape}, "
                                                                      f"got {what}", shape])]):
                return tf.zeros(clip_shape, tf.uint8)

        # A cond, not a control dependency: the shape check must run before anything relies on the shape.
        return tf.cond(same, make, wrong_shape)

    def raw(s):
        frames = tf.io.parse_tensor(s, tf.uint8)
        return checked(tf.shape(frames), lambda: tf.reshape(frames, clip_shape), "a raw clip of shape")

    def jpeg(s):
        jpegs = tf.io.parse_tensor(s, tf.string)
        jpegs = tf.reshape(jpegs, [-1])   # a scalar string would otherwise pass as one frame
        # [T, H, W, 3] from the T frames' headers (a JPEG's own channel count may be 1: it decodes to 3).
        sizes = tf.map_fn(lambda j: tf.io.extract_jpeg_shape(j)[:2], jpegs,
                          fn_output_signature=tf.TensorSpec([2], tf.int32))
        first = tf.cond(tf.size(jpegs) > 0, lambda: sizes[0], lambda: tf.zeros([2], tf.int32))
        uniform = tf.reduce_all(tf.equal(sizes, first))
        shape = tf.where(uniform, tf.concat([tf.shape(jpegs), first, [3]], 0), tf.constant([-1, -1, -1, -1]))
        return checked(shape, lambda: tf.map_fn(_decode_one_jpeg, jpegs,
                                                fn_output_signature=tf.TensorSpec(clip_shape[1:], tf.uint8)),
                       "JPEG frames of shape (all -1: frames of different sizes)")

    def unknown(s):
        with tf.control_dependencies([tf.debugging.Assert(False, [
                "clip frames must be a serialized TensorProto of dtype uint8 (raw) or string (JPEG frames); "
                "its first bytes are", tf.strings.substr(s, 0, 8)])]):
            return tf.zeros(clip_shape, tf.uint8)

    def one(s):
        tag = tf.strings.substr(s, 0, 2)
        # Nested conds, not tf.switch_case: TFT's graph analysis cannot hash Case's list-of-functions attribute.
        return tf.cond(tf.equal(tag, _UINT8_TENSOR_TAG), lambda: raw(s),
                       lambda: tf.cond(tf.equal(tag, _STRING_TENSOR_TAG), lambda: jpeg(s), lambda: unknown(s)))

    return tf.map_fn(one, serialized, fn_output_signature=tf.TensorSpec(clip_shape, tf.uint8))


def encode_frames_tensor(frames: tf.Tensor) -> tf.Tensor:
    """In-graph inverse of decode_frames_tensor: uint8 [B, T, H, W, 3] -> serialized TensorProtos [B]."""
    return tf.map_fn(tf.io.serialize_tensor, frames, fn_output_signature=tf.string)
