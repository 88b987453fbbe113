"""Synthetic demo videos whose class is only visible in the motion, written as video SequenceExamples.

Each video shows one object (random shape, colour, size and orientation) on a random background (solid,
gradient or smooth texture) with per-frame pixel noise. The eight classes are what the object does over time:
moving left / right / up / down, growing / shrinking, rotating clockwise / counter-clockwise.

No single frame tells the class, by construction:
  * position: the start is uniform and motion wraps around the frame edges (a torus), so the position in
    every frame is uniform whatever the class;
  * angle: the start angle is uniform on the circle and rotation keeps it uniform;
  * size: growing/shrinking videos are centred on a random mid size; the other classes draw their constant
    size as if it were a random frame of a growing video, so every class has the same per-frame size
    distribution;
  * length, frame size, background, shape and colours are drawn independently of the class.

Output layout (all paths under ``out_dir``)::

    train/videos-00000-of-00002.tfrecord ...   uncompressed TFRecords of video SequenceExamples
    eval/videos-00000-of-00002.tfrecord ...
    label_map.txt                              sorted class names; record label indices follow it

``class_colours=True`` paints each class's object in its own fixed colour and tints the background towards it: a
static, whole-frame cue that a model learns in a few hundred steps. The tests use it to check that the whole pipeline learns and ships a working classifier without
paying the ~1,000 steps that motion takes; the demo itself never sets it.

Same arguments give byte-identical files: every video has its own generator seeded from
(seed, class index, video index), and nothing depends on time, hashing order or threads.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import time

import numpy as np

from components import video_format

logger = logging.getLogger(__name__)

DEMO_CLASSES: tuple[str, ...] = (
    "grow", "move_down", "move_left", "move_right", "move_up", "rotate_ccw", "rotate_cw", "shrink")
DEMO_FRAME_RATE = 25.0
SPLITS = ("train", "eval")

# Per-class motion: (dx, dy) direction of translation, sign of log-size change, sign of rotation.
# Image coordinates (y down): a positive angle step turns the object clockwise on screen.
_MOTION = {
    "move_left": ((-1, 0), 0, 0), "move_right": ((1, 0), 0, 0),
    "move_up": ((0, -1), 0, 0), "move_down": ((0, 1), 0, 0),
    "grow": ((0, 0), 1, 0), "shrink": ((0, 0), -1, 0),
    "rotate_cw": ((0, 0), 0, 1), "rotate_ccw": ((0, 0), 0, -1),
}
assert set(_MOTION) == set(DEMO_CLASSES)

_SHAPES = ("rectangle", "ellipse", "triangle", "ell")
_SHORT_VIDEO_FRACTION = 0.1           # share of videos shorter than the 8-frame clip
_SHORT_MAX_FRAMES = 7
_SPEED_RANGE = (0.05, 0.09)           # translation, fraction of the short side per frame (3-8 px)
_SPIN_RANGE_DEG = (12.0, 20.0)       # rotation per frame; < 90 so a 180-degree-symmetric shape stays unambiguous
_GROWTH_RANGE = (0.06, 0.10)          # log-size change per frame
_MAX_LOG_SIZE_SPAN = math.log(2.5)    # long videos grow slower instead of filling the frame
_MID_SIZE_RANGE = (0.20, 0.30)        # half-extent of the object, fraction of the short side (big: more moving edge)
_NOISE_SIGMA_RANGE = (1.0, 4.0)
DEFAULT_VIDEOS_PER_CLASS = 100      # 75 train + 25 eval per class: fewer lets the model memorize appearance
_MIN_COLOUR_DISTANCE = 90.0           # object colour vs. any background colour (RGB euclidean)


@dataclasses.dataclass
class DemoDataSummary:
    """What generate_demo_data wrote."""
    out_dir: str
    classes: tuple[str, ...]
    label_map_path: str
    train_files: list[str]
    eval_files: list[str]
    train_counts: dict[str, int]      # videos per class
    eval_counts: dict[str, int]
    num_frames: int
    total_bytes: int
    seconds: float

    @property
    def num_train_videos(self) -> int:
        return sum(self.train_counts.values())

    @property
    def num_eval_videos(self) -> int:
        return sum(self.eval_counts.values())

    @property
    def megabytes(self) -> float:
        return self.total_bytes / 1e6

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "num_train_videos": self.num_train_videos,
                "num_eval_videos": self.num_eval_videos, "megabytes": round(self.megabytes, 2)}


# ---- one video ------------------------------------------------------------------------------------------

@dataclasses.dataclass
class _Scene:
    """Everything random about one video; rendering from it is deterministic."""
    background: np.ndarray            # float32 [H, W, 3]
    colour: np.ndarray                # float32 [3]
    outline: np.ndarray               # float32 [N, 2], unit-size polygon centred at 0
    centres: np.ndarray               # float32 [T, 2] (x, y) before wrapping
    sizes: np.ndarray                 # float32 [T] half-extent in pixels
    angles: np.ndarray                # float32 [T] radians
    noise_sigma: float


def _outline(shape: str, rng: np.random.Generator) -> np.ndarray:
    """Unit polygon with a visible orientation (none is rotationally symmetric below 180 degrees)."""
    aspect = rng.uniform(1.6, 2.4)
    if shape == "rectangle":
        pts = [(-1, -1 / aspect), (1, -1 / aspect), (1, 1 / aspect), (-1, 1 / aspect)]
    elif shape == "ellipse":
        t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        pts = np.stack([np.cos(t), np.sin(t) / aspect], axis=1)
    elif shape == "triangle":
        pts = [(1, 0), (-1, -1 / aspect), (-1, 1 / aspect)]
    elif shape == "ell":
        w = 0.45
        pts = [(-1, -1), (-1 + w, -1), (-1 + w, 1 - w), (1, 1 - w), (1, 1), (-1, 1)]
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return np.asarray(pts, np.float32)


def _background(height: int, width: int, c1: np.ndarray, c2: np.ndarray,
                rng: np.random.Generator) -> np.ndarray:
    import cv2
    kind = rng.choice(["solid", "gradient", "texture"])
    if kind == "solid":
        mix = np.zeros((height, width), np.float32)
    elif kind == "gradient":
        phi = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        proj = xx * np.cos(phi) + yy * np.sin(phi)
        mix = (proj - proj.min()) / max(float(np.ptp(proj)), 1e-6)
    else:
        grid = rng.uniform(0, 1, size=(int(rng.integers(3, 9)), int(rng.integers(3, 9)))).astype(np.float32)
        mix = np.clip(cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC), 0, 1)
    return (c1[None, None] * (1 - mix[..., None]) + c2[None, None] * mix[..., None]).astype(np.float32)


def _distance_to_segment(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    ab = b - a
    t = float(np.clip(np.dot(p - a, ab) / max(float(np.dot(ab, ab)), 1e-6), 0, 1))
    return float(np.linalg.norm(p - (a + t * ab)))


# class_colours=True: one saturated colour per class (RGB), far apart from each other.
_CLASS_COLOURS = {
    "grow": (230, 25, 25), "move_down": (25, 200, 25), "move_left": (25, 60, 230), "move_right": (240, 220, 20),
    "move_up": (230, 20, 230), "rotate_ccw": (20, 220, 230), "rotate_cw": (245, 245, 245), "shrink": (10, 10, 10),
}
assert set(_CLASS_COLOURS) == set(DEMO_CLASSES)


def _sample_scene(label: str, rng: np.random.Generator, frame_range: tuple[int, int],
                  side_range: tuple[int, int], class_colour: bool = False) -> _Scene:
    (dx, dy), grow_sign, spin_sign = _MOTION[label]
    can_be_short, can_be_long = frame_range[0] <= _SHORT_MAX_FRAMES, frame_range[1] > _SHORT_MAX_FRAMES
    if can_be_short and (not can_be_long or rng.uniform() < _SHORT_VIDEO_FRACTION):
        num_frames = int(rng.integers(frame_range[0], min(_SHORT_MAX_FRAMES, frame_range[1]) + 1))
    else:
        num_frames = int(rng.integers(max(frame_range[0], _SHORT_MAX_FRAMES + 1), frame_range[1] + 1))
    height, width = (int(v) for v in rng.integers(side_range[0], side_range[1] + 1, size=2))
    short = min(height, width)

    c1, c2 = rng.uniform(0, 255, size=(2, 3)).astype(np.float32)
    while True:  # an object that stands out from every colour the background can take
        colour = rng.uniform(0, 255, size=3).astype(np.float32)
        if _distance_to_segment(colour, c1, c2) >= _MIN_COLOUR_DISTANCE:
            break
    background = _background(height, width, c1, c2, rng)
    if class_colour:   # a static cue over the whole frame (see the module docstring): object and tinted background
        colour = np.asarray(_CLASS_COLOURS[label], np.float32)
        background = 0.4 * background + 0.6 * colour[None, None]
    outline = _outline(str(rng.choice(_SHAPES)), rng)

    t = np.arange(num_frames, dtype=np.float32)
    # Size: log-size line through a random mid size; classes without scaling take one random frame of it.
    growth = min(rng.uniform(*_GROWTH_RANGE), _MAX_LOG_SIZE_SPAN / max(num_frames - 1, 1))
    mid = math.log(short * rng.uniform(*_MID_SIZE_RANGE))
    offsets = t - (num_frames - 1) / 2
    if grow_sign:
        log_sizes = mid + grow_sign * growth * offsets
    else:
        log_sizes = np.full(num_frames, mid + growth * offsets[int(rng.integers(num_frames))])
    # Angle: uniform start; rotation keeps it uniform.
    spin = np.deg2rad(rng.uniform(*_SPIN_RANGE_DEG)) * spin_sign
    angles = rng.uniform(0, 2 * np.pi) + spin * t
    # Position: uniform start on the torus; translation keeps it uniform.
    speed = rng.uniform(*_SPEED_RANGE) * short
    start = rng.uniform(0, 1, size=2) * (width, height)
    centres = start[None, :] + speed * t[:, None] * np.asarray((dx, dy), np.float32)[None, :]
    return _Scene(background=background, colour=colour, outline=outline, centres=centres.astype(np.float32),
                  sizes=np.exp(log_sizes).astype(np.float32), angles=angles.astype(np.float32),
                  noise_sigma=float(rng.uniform(*_NOISE_SIGMA_RANGE)))


def _object_mask(scene: _Scene, index: int, height: int, width: int) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of the object in frame ``index``, wrapped around the edges."""
    import cv2
    c, s = math.cos(scene.angles[index]), math.sin(scene.angles[index])
    rotation = np.asarray([[c, -s], [s, c]], np.float32)
    pts = scene.outline @ rotation.T * scene.sizes[index]
    centre = np.mod(scene.centres[index], (width, height))
    mask = np.zeros((height, width), np.uint8)
    radius = float(np.abs(pts).max())
    for ox in (-width, 0, width):
        for oy in (-height, 0, height):
            cx, cy = centre[0] + ox, centre[1] + oy
            if -radius <= cx <= width + radius and -radius <= cy <= height + radius:
                poly = np.round((pts + (cx, cy)) * 16).astype(np.int32)   # 4 fractional bits: sub-pixel motion
                cv2.fillPoly(mask, [poly], 255, lineType=cv2.LINE_AA, shift=4)
    return mask.astype(np.float32) / 255.0


def _render(scene: _Scene, rng: np.random.Generator) -> np.ndarray:
    height, width = scene.background.shape[:2]
    frames = np.empty((len(scene.sizes), height, width, 3), np.uint8)
    for i in range(len(scene.sizes)):
        alpha = _object_mask(scene, i, height, width)[..., None]
        frame = scene.background * (1 - alpha) + scene.colour[None, None] * alpha
        frame += rng.normal(0, scene.noise_sigma, size=frame.shape).astype(np.float32)
        frames[i] = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
    return frames


def make_demo_video(label: str, rng: np.random.Generator, frame_range: tuple[int, int] = (4, 32),
                    side_range: tuple[int, int] = (64, 96), class_colour: bool = False) -> np.ndarray:
    """One synthetic video of class ``label``: uint8 [T, H, W, 3] RGB (``class_colour``: see class_colours)."""
    if label not in _MOTION:
        raise ValueError(f"label must be one of {DEMO_CLASSES}, got {label!r}")
    return _render(_sample_scene(label, rng, frame_range, side_range, class_colour), rng)


# ---- the dataset ----------------------------------------------------------------------------------------

def _check_range(name: str, value, lowest: int) -> tuple[int, int]:
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            or not lowest <= value[0] <= value[1]):
        raise ValueError(f"{name} must be a pair of ints (lo, hi) with {lowest} <= lo <= hi, got {value!r}")
    return int(value[0]), int(value[1])


def _split_sizes(videos_per_class: int, eval_fraction: float) -> tuple[int, int]:
    num_eval = int(round(videos_per_class * eval_fraction))
    if eval_fraction > 0 and num_eval == 0:
        raise ValueError(f"eval_fraction={eval_fraction} of videos_per_class={videos_per_class} gives no eval "
                         f"videos; raise videos_per_class or eval_fraction")
    if videos_per_class - num_eval < 1:
        raise ValueError(f"eval_fraction={eval_fraction} of videos_per_class={videos_per_class} leaves no train "
                         f"videos")
    return videos_per_class - num_eval, num_eval


def _shard_paths(split_dir: str, num_shards: int) -> list[str]:
    return [os.path.join(split_dir, f"videos-{i:05d}-of-{num_shards:05d}.tfrecord") for i in range(num_shards)]


def _remove_stale_shards(split_dir: str) -> None:
    """A re-run with another shard count must not leave old shards behind for the ingest to read."""
    import tensorflow as tf
    for path in tf.io.gfile.glob(os.path.join(split_dir, "videos-?????-of-?????.tfrecord")):
        logger.info("removing previous demo shard %s", path)
        tf.io.gfile.remove(path)


def generate_demo_data(out_dir: str, videos_per_class: int = DEFAULT_VIDEOS_PER_CLASS, eval_fraction: float = 0.25,
                       seed: int = 0,
                       num_shards: int = 2, frame_range: tuple[int, int] = (4, 32),
                       side_range: tuple[int, int] = (64, 96), jpeg_quality: int = 90,
                       class_colours: bool = False) -> DemoDataSummary:
    """Writes the demo dataset (see the module docstring) and returns what was written.

    ``videos_per_class`` counts train and eval together; each class contributes
    ``round(videos_per_class * eval_fraction)`` eval videos, so both splits are class-balanced.
    """
    import tensorflow as tf

    if not isinstance(out_dir, str) or not out_dir:
        raise ValueError(f"out_dir must be a non-empty path string, got {out_dir!r}")
    if not isinstance(videos_per_class, int) or isinstance(videos_per_class, bool) or videos_per_class < 1:
        raise ValueError(f"videos_per_class must be an int >= 1, got {videos_per_class!r}")
    if not isinstance(eval_fraction, (int, float)) or not 0 <= eval_fraction < 1:
        raise ValueError(f"eval_fraction must be a number in [0, 1), got {eval_fraction!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    if not isinstance(num_shards, int) or isinstance(num_shards, bool) or num_shards < 1:
        raise ValueError(f"num_shards must be an int >= 1, got {num_shards!r}")
    frame_range = _check_range("frame_range", frame_range, lowest=2)
    side_range = _check_range("side_range", side_range, lowest=16)
    if not isinstance(jpeg_quality, int) or not 1 <= jpeg_quality <= 100:
        raise ValueError(f"jpeg_quality must be an int in [1, 100], got {jpeg_quality!r}")
    num_train, num_eval = _split_sizes(videos_per_class, eval_fraction)

    started = time.monotonic()
    label_map = video_format.LabelMap(DEMO_CLASSES)
    label_map_path = label_map.save(out_dir)

    # Which videos go where: per class, indices [0, num_eval) are eval. Every video is drawn independently,
    # so this is as good as a random split, and it does not depend on num_shards.
    plan = {"eval": [(c, i) for c in label_map.labels for i in range(num_eval)],
            "train": [(c, i) for c in label_map.labels for i in range(num_eval, videos_per_class)]}
    order_rng = np.random.default_rng(np.random.SeedSequence([seed, 1_000_003]))
    files: dict[str, list[str]] = {}
    num_frames = done = 0
    for split in SPLITS:
        videos = [plan[split][j] for j in order_rng.permutation(len(plan[split]))]  # interleave classes
        split_dir = os.path.join(out_dir, split)
        tf.io.gfile.makedirs(split_dir)
        _remove_stale_shards(split_dir)
        files[split] = _shard_paths(split_dir, num_shards)
        writers = [tf.io.TFRecordWriter(p) for p in files[split]]
        try:
            for n, (label, index) in enumerate(videos):
                class_index = label_map.index(label)
                rng = np.random.default_rng(np.random.SeedSequence([seed, class_index, index]))
                frames = make_demo_video(label, rng, frame_range, side_range, class_colours)
                jpegs = [video_format.encode_jpeg(f, quality=jpeg_quality) for f in frames]
                record = video_format.make_video_example(
                    video_id=f"{label}/{label}_{index:04d}", jpeg_frames=jpegs, label=label,
                    label_index=class_index, height=frames.shape[1], width=frames.shape[2],
                    frame_rate=DEMO_FRAME_RATE)
                writers[n % num_shards].write(record.SerializeToString(deterministic=True))
                num_frames += len(frames)
                done += 1
                if done % 50 == 0:
                    elapsed = time.monotonic() - started
                    logger.info("demo data: %d/%d videos, %d frames, %.0f frames/s", done,
                                videos_per_class * len(label_map), num_frames, num_frames / max(elapsed, 1e-9))
        finally:
            for w in writers:
                w.close()

    total_bytes = sum(tf.io.gfile.stat(p).length for split in SPLITS for p in files[split])
    summary = DemoDataSummary(
        out_dir=out_dir, classes=tuple(label_map.labels), label_map_path=label_map_path,
        train_files=files["train"], eval_files=files["eval"],
        train_counts={c: num_train for c in label_map.labels}, eval_counts={c: num_eval for c in label_map.labels},
        num_frames=num_frames, total_bytes=total_bytes, seconds=time.monotonic() - started)
    logger.info("demo data: wrote %d train + %d eval videos, %d frames, %.1f MB to %s in %.1f s",
                summary.num_train_videos, summary.num_eval_videos, num_frames, summary.megabytes, out_dir,
                summary.seconds)
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--videos_per_class", type=int, default=DEFAULT_VIDEOS_PER_CLASS)
    parser.add_argument("--eval_fraction", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num_shards", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    generate_demo_data(args.out_dir, args.videos_per_class, args.eval_fraction, args.seed, args.num_shards)


if __name__ == "__main__":
    main()
