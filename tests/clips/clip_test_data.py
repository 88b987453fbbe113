"""Tiny synthetic videos for the ClipGen / Transform tests: smooth moving patterns, so JPEG behaves as on video."""
from __future__ import annotations

import numpy as np

from components.video_format import encode_jpeg, make_video_example


def video_frames(num_frames: int, height: int, width: int, seed: int = 0) -> list[np.ndarray]:
    """uint8 RGB frames of a gradient background with a bright square moving across it."""
    rng = np.random.default_rng(seed)
    base = np.stack(np.meshgrid(np.linspace(0, 1, width), np.linspace(0, 1, height)), -1)  # [H, W, 2]
    tint = rng.uniform(0.2, 1.0, size=3)
    frames = []
    for t in range(num_frames):
        img = np.empty((height, width, 3))
        img[..., 0] = base[..., 0] * tint[0]
        img[..., 1] = base[..., 1] * tint[1]
        img[..., 2] = (1 - base[..., 0]) * tint[2]
        size = max(2, min(height, width) // 4)
        top = (t * 3 + seed) % max(1, height - size)
        left = (t * 5 + 2 * seed) % max(1, width - size)
        img[top:top + size, left:left + size] = 1.0
        img = img * 255 + rng.normal(0, 4, img.shape)
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    return frames


def video_record(video_id: str, num_frames: int = 12, height: int = 24, width: int = 32, label: str | None = "a",
                 label_index: int | None = None, seed: int = 0, frames_jpeg: list[bytes] | None = None) -> bytes:
    """A serialized video SequenceExample (video_format.make_video_example)."""
    if frames_jpeg is None:
        frames_jpeg = [encode_jpeg(f) for f in video_frames(num_frames, height, width, seed)]
    return make_video_example(video_id, frames_jpeg, label, label_index, height, width, 25.0).SerializeToString()
