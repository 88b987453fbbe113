"""The clip frame formats (components/video_format.py says how each is written and read), TensorFlow-free so
that configs can validate them without importing TensorFlow."""
from __future__ import annotations

RAW, JPEG = "raw", "jpeg"
FRAME_FORMATS = (RAW, JPEG)
DEFAULT_JPEG_QUALITY = 90


def check_frame_format(frame_format) -> str:
    if frame_format not in FRAME_FORMATS:
        raise ValueError(f"frame_format must be one of {FRAME_FORMATS}, got {frame_format!r}")
    return frame_format


def check_jpeg_quality(quality) -> int:
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ValueError(f"jpeg_quality must be an int in [1, 100], got {quality!r}")
    return quality
