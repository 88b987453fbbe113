"""One video record in, its clip records out (or the reason it was rejected): ClipGen's per-element work.

No Beam here, so the logic runs and is tested without a pipeline. Only the frames that some clip uses are
decoded, each once, and resized once; the crops of all clips of the video are cut from those.
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Mapping, Sequence

import numpy as np

from components import clip_sampling
from components.clip_sampling import check_int
from components.frame_formats import DEFAULT_JPEG_QUALITY, RAW, check_frame_format, check_jpeg_quality
from components.video_format import (DEFAULT_VIDEO_KEYS, LabelMap, Video, VideoKeys, VideoRecordError,
                                     decode_jpeg_bgr, image_header, make_clip_example, parse_video)

# Why a video was rejected: a closed set, so per-reason counters stay few and dashboards stay stable.
UNPARSABLE_RECORD = "unparsable_record"     # not a SequenceExample, or no frames feature list
ZERO_FRAMES = "zero_frames"
MISSING_LABEL = "missing_label"             # neither label string nor label index
UNKNOWN_LABEL = "unknown_label"             # label string not in the label map / index out of its range
UNDECODABLE_FRAME = "undecodable_frame"     # a frame some clip needs is not a decodable image
UNSUPPORTED_FRAME_FORMAT = "unsupported_frame_format"  # a frame that is neither JPEG nor PNG (header bytes)
FRAME_TOO_LARGE = "frame_too_large"         # a frame header declares more than max_frame_pixels pixels
PROCESSING_ERROR = "processing_error"       # anything unforeseen; counted and reported, never crashes the run
REJECT_REASONS = (UNPARSABLE_RECORD, ZERO_FRAMES, MISSING_LABEL, UNKNOWN_LABEL, UNDECODABLE_FRAME,
                  UNSUPPORTED_FRAME_FORMAT, FRAME_TOO_LARGE, PROCESSING_ERROR)
DEFAULT_MAX_FRAME_PIXELS = 7680 * 4320     # 8K UHD: a decoded frame stays under 100 MB

TRAIN_SPLIT = "train"  # the one split sampled with the train policy (random windows/crops); others use eval


class Rejected(Exception):
    """A video that cannot give clips; ``reason`` is one of REJECT_REASONS, ``detail`` says what was seen."""

    def __init__(self, reason: str, detail: str):
        if reason not in REJECT_REASONS:
            raise ValueError(f"reason must be one of {REJECT_REASONS}, got {reason!r}")
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclasses.dataclass(frozen=True)
class ClipGenConfig:
    """Everything that decides which clips a video gives. Validated on construction."""
    num_frames: int
    frame_stride: int
    height: int
    width: int
    labels: tuple[str, ...]
    clips_per_video_train: int = 1
    clips_per_video_eval: int = 1
    eval_crops: int = 1                 # spatial crops per eval window (clip_sampling.eval_crop_boxes)
    seed: int = 0
    resize_short_side: int | None = None
    video_keys: VideoKeys = DEFAULT_VIDEO_KEYS
    max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS   # memory bound: larger frames are rejected undecoded
    frame_format: str = RAW             # how clip frames are stored: frame_formats.FRAME_FORMATS
    jpeg_quality: int = DEFAULT_JPEG_QUALITY   # of frame_format "jpeg"

    def __post_init__(self):
        for name in ("num_frames", "frame_stride", "height", "width", "clips_per_video_train",
                     "clips_per_video_eval", "eval_crops"):
            check_int(name, getattr(self, name), minimum=1)
        check_int("seed", self.seed, minimum=0)
        check_int("max_frame_pixels", self.max_frame_pixels, minimum=1)
        check_frame_format(self.frame_format)
        check_jpeg_quality(self.jpeg_quality)
        if self.resize_short_side is not None:
            check_int("resize_short_side", self.resize_short_side, minimum=1)
        if isinstance(self.labels, (str, bytes)) or not isinstance(self.labels, Sequence):
            raise TypeError(f"labels must be a list of label strings, got {type(self.labels).__name__} "
                            f"{self.labels!r}")
        if not all(isinstance(label, str) for label in self.labels):
            raise TypeError(f"labels must all be str, got {list(self.labels)!r}")
        object.__setattr__(self, "labels", tuple(LabelMap(self.labels).labels))  # sorted, validated
        if not isinstance(self.video_keys, VideoKeys):
            raise TypeError(f"video_keys must be a VideoKeys, got {type(self.video_keys).__name__}")

    @property
    def clip_shape(self) -> tuple[int, int, int, int]:
        return (self.num_frames, self.height, self.width, 3)

    @property
    def short_side(self) -> int:
        if self.resize_short_side is not None:
            return self.resize_short_side
        return clip_sampling.default_short_side(self.height, self.width)

    def mode(self, split: str) -> str:
        return clip_sampling.TRAIN if split == TRAIN_SPLIT else clip_sampling.EVAL

    def windows_per_video(self, split: str) -> int:
        """Temporal windows per video; each gives ``crops(split)`` clips."""
        return self.clips_per_video_train if split == TRAIN_SPLIT else self.clips_per_video_eval

    def clips_per_video(self, split: str) -> int:
        """Clips (views) per accepted video: windows x crops."""
        return self.windows_per_video(split) * self.crops(split)

    def crops(self, split: str) -> int:
        """Spatial crops per window: one random crop when training, ``eval_crops`` fixed ones otherwise."""
        return 1 if split == TRAIN_SPLIT else self.eval_crops


def video_keys_from_dict(fields: Mapping[str, Any] | None) -> VideoKeys:
    """VideoKeys from a JSON-able dict of some of its fields (the rest keep their defaults)."""
    if fields is None:
        return DEFAULT_VIDEO_KEYS
    if not isinstance(fields, Mapping):
        raise TypeError(f"video_keys must be a dict of VideoKeys fields, got {type(fields).__name__} {fields!r}")
    known = {f.name for f in dataclasses.fields(VideoKeys)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"video_keys has unknown fields {unknown}; known fields: {sorted(known)}")
    values = dict(fields)
    if "video_ids" in values:
        if isinstance(values["video_ids"], str):
            raise TypeError(f"video_keys['video_ids'] must be a list of keys, got {values['video_ids']!r}")
        values["video_ids"] = tuple(values["video_ids"])
    for name, value in values.items():
        items = value if name == "video_ids" else (value,)
        if not all(isinstance(v, str) and v for v in items):
            raise TypeError(f"video_keys[{name!r}] must be non-empty string(s), got {value!r}")
    return VideoKeys(**values)


def video_keys_to_dict(keys: VideoKeys) -> dict:
    fields = dataclasses.asdict(keys)
    fields["video_ids"] = list(fields["video_ids"])
    return fields


@dataclasses.dataclass
class VideoClips:
    """The outcome of one accepted video: serialized clip tf.Examples and how much decoding it took."""
    video_id: str
    label: str
    clips: list[bytes]
    frames_decoded: int
    frames_resized_to_fit: int  # frames whose decoded size differed from the video's first needed frame


_NO_ID = "\0no-id\0"


def extract_clips(serialized: bytes, split: str, config: ClipGenConfig, label_map: LabelMap) -> VideoClips:
    """Serialized video SequenceExample -> its clips under ``split``'s policy. Raises Rejected.

    All clips are built before any is returned, so a video either gives all its clips or is rejected: counts in
    always equal clips out plus rejected."""
    video = _parse(serialized, config.video_keys)
    num_video_frames = len(video.jpeg_frames)
    if num_video_frames == 0:
        raise Rejected(ZERO_FRAMES, "the frames feature list is empty")
    label = resolve_label(video, label_map)
    mode = config.mode(split)
    seed = clip_sampling.derive_seed(config.seed, video.video_id) if mode == clip_sampling.TRAIN else 0
    cut = cut_clip_frames(video, mode, config.windows_per_video(split), config, seed, crops=config.crops(split))
    clips = [make_clip_example(clip, label, video.video_id, window.clip_index, config.frame_format,
                               config.jpeg_quality, crop_index=crop).SerializeToString(deterministic=True)
             for window, crop, clip in zip(cut.windows, cut.crops, cut.clips)]  # deterministic: same input, same bytes
    return VideoClips(video.video_id, label, clips, frames_decoded=cut.frames_decoded,
                      frames_resized_to_fit=cut.frames_resized_to_fit)


@dataclasses.dataclass
class ClipFrames:
    """The uint8 clips [T, H, W, 3] cut from one video, each with its window and crop index (window-major: a
    window's crops are consecutive), and how much decoding it took."""
    windows: list
    crops: list[int]
    clips: list[np.ndarray]
    frames_decoded: int
    frames_resized_to_fit: int


def cut_clip_frames(video: Video, mode: str, clips_per_video: int, config: ClipGenConfig,
                    seed: int = 0, crops: int = 1) -> ClipFrames:
    """A video with frames -> its clips under ``mode``'s policy (ClipGen's, and ``predict``'s eval cut): every
    frame header checked, each needed frame decoded once and resized, windows cropped (eval: ``crops`` boxes per
    window, so clips_per_video x crops views; train: one seeded random box). Raises Rejected."""
    if mode == clip_sampling.TRAIN and crops != 1:
        raise ValueError(f"training clips take one random crop per window, got crops={crops}")
    check_frame_headers(video, config.max_frame_pixels)
    windows = clip_sampling.sample_windows(mode, len(video.jpeg_frames), config.num_frames, config.frame_stride,
                                           clips_per_video, seed)
    needed = sorted({i for w in windows for i in w.frames})
    frames, mismatched = _decode_and_resize(video, needed, config)
    height, width = frames[needed[0]].shape[:2]  # every needed frame has this size after _decode_and_resize
    eval_boxes = (clip_sampling.eval_crop_boxes(height, width, config.height, config.width, crops)
                  if mode == clip_sampling.EVAL else None)
    views, crop_indices, clips = [], [], []
    for window in windows:
        boxes = eval_boxes or [clip_sampling.random_crop_box(height, width, config.height, config.width, seed,
                                                             window.clip_index)]
        for crop, box in enumerate(boxes):
            views.append(window)
            crop_indices.append(crop)
            clips.append(np.stack([frames[i][box.top:box.top + box.height, box.left:box.left + box.width]
                                   for i in window.frames]))
    return ClipFrames(views, crop_indices, clips, frames_decoded=len(needed), frames_resized_to_fit=mismatched)


def resolve_label(video: Video, label_map: LabelMap) -> str:
    """The video's label string; a record with only a label index is mapped through the label map."""
    if video.label is not None:
        if video.label not in label_map:
            raise Rejected(UNKNOWN_LABEL, f"label {video.label!r} is not in the label map ({len(label_map)} labels)")
        return video.label
    if video.label_index is not None:
        if not 0 <= video.label_index < len(label_map):
            raise Rejected(UNKNOWN_LABEL, f"label index {video.label_index} is outside the label map "
                                          f"[0, {len(label_map)})")
        return label_map.labels[video.label_index]
    raise Rejected(MISSING_LABEL, "the record has neither a label string nor a label index")


def check_frame_headers(video: Video, max_frame_pixels: int) -> None:
    """Every frame (not only those a clip needs, so the verdict does not depend on sampling) must be JPEG or PNG
    and declare at most ``max_frame_pixels`` pixels; read from the headers, before any frame is decoded."""
    for i, data in enumerate(video.jpeg_frames):
        try:
            header = image_header(data)
        except ValueError as exc:
            raise Rejected(UNDECODABLE_FRAME, f"frame {i}: {exc}") from None
        if header is None:
            raise Rejected(UNSUPPORTED_FRAME_FORMAT, f"frame {i} is neither JPEG nor PNG (starts with "
                                                     f"{bytes(data[:8])!r})")
        kind, height, width = header
        if height * width > max_frame_pixels:
            raise Rejected(FRAME_TOO_LARGE, f"frame {i} is a {width}x{height} {kind} ({height * width} pixels > "
                                            f"max_frame_pixels {max_frame_pixels}); not decoded")


def record_id(serialized: bytes, keys: VideoKeys = DEFAULT_VIDEO_KEYS) -> str:
    """Best-effort id of a record for the dead-letter line, even when it does not parse as a video."""
    try:
        video = parse_video(serialized, keys, source=_NO_ID)
        if video.video_id != _NO_ID:
            return video.video_id
    except VideoRecordError:
        pass
    return f"record-sha1:{hashlib.sha1(serialized).hexdigest()[:16]}"


def _parse(serialized: bytes, keys: VideoKeys) -> Video:
    try:
        video = parse_video(serialized, keys, source=_NO_ID)
    except VideoRecordError as exc:
        raise Rejected(UNPARSABLE_RECORD, str(exc).replace(_NO_ID + ": ", "")) from None
    if video.video_id == _NO_ID:
        video.video_id = record_id(serialized, keys)
    return video


def _decode_and_resize(video: Video, indices: list[int], config: ClipGenConfig) -> tuple[dict[int, np.ndarray], int]:
    """Decode each needed frame once and resize it for the crop; frames come back RGB.

    The resize target comes from the first needed frame; a frame of another size is resized to that same target
    (so all frames of a clip stack), and counted. Frames are resized in the decoder's BGR order (per channel, so
    the same pixels), then made contiguous RGB: OpenCV and np.stack on a reversed-channel view copy it slowly."""
    import cv2
    frames: dict[int, np.ndarray] = {}
    target = None
    reference_shape = None
    mismatched = 0
    for i in indices:
        try:
            frame = decode_jpeg_bgr(video.jpeg_frames[i])
        except ValueError as exc:
            raise Rejected(UNDECODABLE_FRAME, f"frame {i}: {exc}") from None
        if target is None:
            reference_shape = frame.shape[:2]
            target = clip_sampling.resized_shape(reference_shape[0], reference_shape[1], config.short_side,
                                                 config.height, config.width)
        elif frame.shape[:2] != reference_shape:
            mismatched += 1
        if frame.shape[:2] != target:
            shrinking = frame.shape[0] * frame.shape[1] > target[0] * target[1]
            frame = cv2.resize(frame, (target[1], target[0]),
                               interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
        frames[i] = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    return frames, mismatched
