"""Where clips come from: temporal windows and spatial crops as pure functions (no TF, no Beam).

ClipGen calls these per video; keeping them pure makes the sampling policy testable to the exact index and
reproducible on any worker of any runner.

Temporal policy for a video of ``num_video_frames`` (N) frames, clips of ``clip_length`` (T) frames taken every
``frame_stride`` (S) frames, so a window spans ``(T - 1) * S + 1`` frames:
  - train: ``clips_per_video`` random window starts, drawn from a seed derived from (global seed, video id,
    epoch) with SHA-256, so every worker and every rerun draws the same windows (Python's ``hash()`` is
    salted per process and would not be).
  - eval: ``clips_per_video`` window starts spaced uniformly from the first possible start to the last, so the
    windows cover the whole video; one clip is the centre window.
  - a video shorter than one window loops: frame indices are taken modulo N.

Spatial policy: each frame is resized so its short side is ``resize_short_side`` (or larger, if that is needed
for the output crop to fit), then cropped to the output height x width: a seeded random crop for train (one box
per clip, the same for all its frames); for eval, S boxes spaced evenly along the frame's longer
free axis and centred across it: S = 1 is the centre crop, S = 3 left/centre/right on a landscape frame and
top/centre/bottom on a portrait one (MMAction2's and Model Garden's "3 crops"). A view is one (window, crop) pair;
``parse_views`` reads the "TxS" spelling of clips.eval_views.
"""
from __future__ import annotations

import dataclasses
import hashlib
import numbers
import re
import struct

TRAIN = "train"
EVAL = "eval"
_MODES = (TRAIN, EVAL)


# ---- seeds ----------------------------------------------------------------------------------------------

def derive_seed(global_seed: int, video_id: str, epoch: int = 0) -> int:
    """A 63-bit seed that depends only on (global_seed, video_id, epoch), identical on every machine."""
    check_int("global_seed", global_seed, minimum=0)
    check_int("epoch", epoch, minimum=0)
    if not isinstance(video_id, str):
        raise TypeError(f"video_id must be a str, got {type(video_id).__name__} {video_id!r}")
    digest = hashlib.sha256(f"clip-seed\0{global_seed}\0{epoch}\0{video_id}".encode("utf-8")).digest()
    return struct.unpack(">Q", digest[:8])[0] >> 1


def _uniform_int(seed: int, purpose: str, index: int, upper: int) -> int:
    """A deterministic integer in [0, upper) for draw number ``index`` of ``purpose`` under ``seed``.

    Counter-based (hash of seed, purpose, index) rather than a stateful RNG: the value of draw i never depends
    on how many draws came before, and no library's stream-stability policy is involved. The modulo bias of a
    64-bit value reduced to a frame count is below 1e-15."""
    if upper <= 0:
        raise ValueError(f"upper must be > 0, got {upper}")
    digest = hashlib.sha256(f"{purpose}\0{seed}\0{index}".encode("utf-8")).digest()
    return struct.unpack(">Q", digest[:8])[0] % upper


# ---- temporal windows -----------------------------------------------------------------------------------

def window_span(clip_length: int, frame_stride: int) -> int:
    """How many consecutive video frames one clip window covers: (T - 1) * S + 1."""
    check_int("clip_length", clip_length, minimum=1)
    check_int("frame_stride", frame_stride, minimum=1)
    return (clip_length - 1) * frame_stride + 1


def eval_window_starts(num_video_frames: int, clip_length: int, frame_stride: int,
                       clips_per_video: int) -> list[int]:
    """Uniformly spaced window starts covering the video (first start 0, last start N - span).

    One clip takes the centre window. A video shorter than one window loops, and its starts are spread evenly
    over one period of the loop."""
    check_int("num_video_frames", num_video_frames, minimum=1)
    check_int("clips_per_video", clips_per_video, minimum=1)
    span = window_span(clip_length, frame_stride)
    if num_video_frames < span:
        return [i * num_video_frames // clips_per_video for i in range(clips_per_video)]
    last_start = num_video_frames - span
    if clips_per_video == 1:
        return [last_start // 2]
    # round(i * last_start / (K - 1)) in integer arithmetic (halves round up), exact for any N.
    k1 = clips_per_video - 1
    return [(2 * i * last_start + k1) // (2 * k1) for i in range(clips_per_video)]


def train_window_starts(num_video_frames: int, clip_length: int, frame_stride: int, clips_per_video: int,
                        seed: int) -> list[int]:
    """``clips_per_video`` random window starts, a pure function of ``seed`` (see ``derive_seed``).

    Starts are uniform over every start whose window fits; for a video shorter than one window (which loops),
    uniform over [0, N)."""
    check_int("num_video_frames", num_video_frames, minimum=1)
    check_int("clips_per_video", clips_per_video, minimum=1)
    check_int("seed", seed, minimum=0)
    span = window_span(clip_length, frame_stride)
    choices = num_video_frames - span + 1 if num_video_frames >= span else num_video_frames
    return [_uniform_int(seed, "window-start", i, choices) for i in range(clips_per_video)]


def frame_indices(start: int, num_video_frames: int, clip_length: int, frame_stride: int) -> list[int]:
    """The video frame indices of the clip whose window starts at ``start``, looping past the last frame."""
    check_int("num_video_frames", num_video_frames, minimum=1)
    check_int("start", start, minimum=0)
    window_span(clip_length, frame_stride)  # validates both
    return [(start + t * frame_stride) % num_video_frames for t in range(clip_length)]


@dataclasses.dataclass(frozen=True)
class ClipWindow:
    """One clip of one video: its index within the video and the video frames it takes."""
    clip_index: int
    start: int
    frames: tuple[int, ...]


def sample_windows(mode: str, num_video_frames: int, clip_length: int, frame_stride: int, clips_per_video: int,
                   seed: int = 0) -> list[ClipWindow]:
    """All clip windows of one video under the ``mode`` ("train" or "eval") policy; ``seed`` is used by train."""
    _check_mode(mode)
    if mode == TRAIN:
        starts = train_window_starts(num_video_frames, clip_length, frame_stride, clips_per_video, seed)
    else:
        starts = eval_window_starts(num_video_frames, clip_length, frame_stride, clips_per_video)
    return [ClipWindow(i, s, tuple(frame_indices(s, num_video_frames, clip_length, frame_stride)))
            for i, s in enumerate(starts)]


# ---- spatial: resize then crop --------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class CropBox:
    top: int
    left: int
    height: int
    width: int


def default_short_side(out_height: int, out_width: int) -> int:
    """The resize target when none is configured: the larger crop side, so the crop always fits."""
    check_int("out_height", out_height, minimum=1)
    check_int("out_width", out_width, minimum=1)
    return max(out_height, out_width)


def resized_shape(height: int, width: int, short_side: int, out_height: int, out_width: int) -> tuple[int, int]:
    """(height, width) of a ``height`` x ``width`` frame after aspect-preserving resize for an output crop.

    The short side becomes ``short_side``; if the crop would then not fit (a crop wider than the resized long
    side allows), the scale grows just enough for it to fit, so no configuration can produce an impossible
    crop."""
    check_int("height", height, minimum=1)
    check_int("width", width, minimum=1)
    check_int("short_side", short_side, minimum=1)
    check_int("out_height", out_height, minimum=1)
    check_int("out_width", out_width, minimum=1)
    scale = max(short_side / min(height, width), out_height / height, out_width / width)
    # max(...) guards float rounding: round(h * scale) may land one pixel under the crop.
    return max(out_height, round(height * scale)), max(out_width, round(width * scale))


def center_crop_box(height: int, width: int, out_height: int, out_width: int) -> CropBox:
    _check_crop_fits(height, width, out_height, out_width)
    return CropBox((height - out_height) // 2, (width - out_width) // 2, out_height, out_width)


def random_crop_box(height: int, width: int, out_height: int, out_width: int, seed: int,
                    clip_index: int) -> CropBox:
    """A uniformly random crop box, a pure function of (seed, clip_index)."""
    _check_crop_fits(height, width, out_height, out_width)
    check_int("seed", seed, minimum=0)
    check_int("clip_index", clip_index, minimum=0)
    top = _uniform_int(seed, "crop-top", clip_index, height - out_height + 1)
    left = _uniform_int(seed, "crop-left", clip_index, width - out_width + 1)
    return CropBox(top, left, out_height, out_width)


def eval_crop_boxes(height: int, width: int, out_height: int, out_width: int, crops: int) -> list[CropBox]:
    """``crops`` eval boxes of a resized ``height`` x ``width`` frame, in order (left to right, or top to bottom).

    They slide along the axis with more room to spare (width on a tie, as landscape video is the common case) from
    one edge to the other, evenly spaced (integer rounding, halves up), and sit centred on the other axis; one crop
    is the centre crop. When the frame is exactly the crop size every box is the same."""
    _check_crop_fits(height, width, out_height, out_width)
    check_int("crops", crops, minimum=1)
    free_h, free_w = height - out_height, width - out_width
    if crops == 1:
        return [center_crop_box(height, width, out_height, out_width)]
    along_width = free_w >= free_h
    free = free_w if along_width else free_h
    offsets = [(2 * j * free + crops - 1) // (2 * (crops - 1)) for j in range(crops)]
    if along_width:
        return [CropBox(free_h // 2, o, out_height, out_width) for o in offsets]
    return [CropBox(o, free_w // 2, out_height, out_width) for o in offsets]


def parse_views(views: str) -> tuple[int, int]:
    """"TxS" (e.g. "10x3": 10 temporal clips, each at 3 spatial crops) -> (T, S). Raises ValueError saying what
    was expected."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", views) if isinstance(views, str) else None
    if match is None or int(match.group(1)) < 1 or int(match.group(2)) < 1:
        raise ValueError(f"views must be 'TxS' with T clips and S crops per clip, both >= 1 (e.g. '3x1', "
                         f"'10x3'), got {views!r}")
    return int(match.group(1)), int(match.group(2))


# ---- argument checks ------------------------------------------------------------------------------------

def check_int(name: str, value, minimum: int) -> None:
    """Raise TypeError unless ``value`` is an integer (not a bool), ValueError if it is below ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _check_mode(mode: str) -> None:
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")


def _check_crop_fits(height: int, width: int, out_height: int, out_width: int) -> None:
    for name, value in (("height", height), ("width", width), ("out_height", out_height),
                        ("out_width", out_width)):
        check_int(name, value, minimum=1)
    if out_height > height or out_width > width:
        raise ValueError(f"crop {out_height}x{out_width} does not fit in a {height}x{width} frame")
