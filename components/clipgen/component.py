"""ClipGen, the TFX component: video Examples in, fixed-shape clip Examples out (plus dead letters and statistics)."""
from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

from tfx import types
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.clipgen import executor
from components.clipgen.extract import (DEFAULT_MAX_FRAME_PIXELS, ClipGenConfig, video_keys_from_dict,
                                        video_keys_to_dict)
from components.frame_formats import DEFAULT_JPEG_QUALITY, RAW
from components.rejections import check_max_rejected_fraction
from components.spans import CLIP_STORE_KEY
from components.tfrecord_io import DEFAULT_COMPRESSION_LEVEL, check_compression_level


class ClipGenDeadLetter(types.Artifact):
    """Videos ClipGen rejected: ``Split-<split>/dead_letter-*.jsonl``, one {video_id, split, reason, detail} a line."""
    TYPE_NAME = "bresnet.ClipGenDeadLetter"  # <namespace>.<Name>: the form KFP v2 schema titles need


class ClipGenStatistics(types.Artifact):
    """``clip_stats.json``: per split videos_in, videos_ok, clips_out, rejected, rejected_by_reason."""
    TYPE_NAME = "bresnet.ClipGenStatistics"


class ClipGenSpec(ComponentSpec):
    PARAMETERS = {
        "num_frames": ExecutionParameter(type=int),
        "frame_stride": ExecutionParameter(type=int),
        "height": ExecutionParameter(type=int),
        "width": ExecutionParameter(type=int),
        "resize_short_side": ExecutionParameter(type=int, optional=True),
        "clips_per_video_train": ExecutionParameter(type=int),
        "clips_per_video_eval": ExecutionParameter(type=int),
        "eval_crops": ExecutionParameter(type=int, optional=True),   # spatial crops per eval window; default 1
        "seed": ExecutionParameter(type=int),
        "labels": ExecutionParameter(type=str),        # JSON list of label strings
        "video_keys": ExecutionParameter(type=str, optional=True),  # JSON dict of VideoKeys fields
        "max_rejected_fraction": ExecutionParameter(type=float),
        "max_frame_pixels": ExecutionParameter(type=int, optional=True),
        "compression_level": ExecutionParameter(type=int, optional=True),  # ISA-L gzip level of the clip files
        "frame_format": ExecutionParameter(type=str, optional=True),   # frame_formats.FRAME_FORMATS; default raw
        "jpeg_quality": ExecutionParameter(type=int, optional=True),   # of frame_format jpeg
        "num_shards": ExecutionParameter(type=int, optional=True),  # clip files per split; 0: the runner decides
        # Where the spans' clips are recorded for later windows (components/spans.py); "": no window.
        CLIP_STORE_KEY: ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {executor.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples)}
    OUTPUTS = {
        executor.CLIPS_KEY: ChannelParameter(type=standard_artifacts.Examples),
        executor.DEAD_LETTER_KEY: ChannelParameter(type=ClipGenDeadLetter),
        executor.CLIP_STATS_KEY: ChannelParameter(type=ClipGenStatistics),
    }


class ClipGen(base_beam_component.BaseBeamComponent):
    """Samples fixed-shape clips from every video of every split of ``examples``.

    The "train" split gets seeded random windows and crops, every other split uniformly spaced windows, each at
    ``eval_crops`` fixed crops (1: the centre crop; 3: left/centre/right), so ``clips_per_video_eval`` x
    ``eval_crops`` views per video, each clip carrying its window and crop index (see components.clip_sampling).
    Outputs: ``clips`` (Examples, same splits, gzipped TFRecords of video_format clip tf.Examples),
    ``dead_letter`` (ClipGenDeadLetter) and ``clip_stats`` (ClipGenStatistics).
    Beam pipeline args come from the pipeline or ``with_beam_pipeline_args``.

    ``max_rejected_fraction``: the run fails (after writing its dead letters and clip_stats) when some split
    rejects more than this fraction of its videos; 1.0 never fails. ``max_frame_pixels``: a video with a frame
    whose header declares more pixels is rejected (``frame_too_large``) before any of its frames is decoded.
    ``compression_level``: ISA-L gzip level (0-3) of the clip files (components.tfrecord_io; bench/README.md).
    ``frame_format``: "raw" (lossless uint8 clips) or "jpeg" (a JPEG per frame at ``jpeg_quality``), see
    components.video_format; everything downstream reads either.
    ``num_shards``: clip files per split (0: the runner decides). At least as many as training workers lets each
    worker read only its own files (components.trainer.training.plan_shards). ``clip_store``: where the clips of
    each span cut are recorded so a later window reuses them (components/clipgen/window.py); Ingest gets the same.
    """
    SPEC_CLASS = ClipGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(self, examples: types.BaseChannel, *, num_frames: int, height: int, width: int,
                 labels: Sequence[str] = (), frame_stride: int = 1, resize_short_side: int | None = None,
                 clips_per_video_train: int = 1, clips_per_video_eval: int = 1, eval_crops: int = 1, seed: int = 0,
                 video_keys: Mapping[str, Any] | None = None, max_rejected_fraction: float = 1.0,
                 max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS,
                 compression_level: int = DEFAULT_COMPRESSION_LEVEL, num_shards: int = 0, clip_store: str = "",
                 frame_format: str = RAW, jpeg_quality: int = DEFAULT_JPEG_QUALITY):
        config = ClipGenConfig(  # validates every argument now, not at run time on a worker
            num_frames=num_frames, frame_stride=frame_stride, height=height, width=width,
            # no labels: the run's label map, which Ingest reads from the data window (components/label_maps.py);
            # a placeholder stands in for it while the other arguments are checked
            labels=(tuple(labels) or ("(from the data)",)) if isinstance(labels, (list, tuple)) else labels,
            clips_per_video_train=clips_per_video_train, clips_per_video_eval=clips_per_video_eval,
            eval_crops=eval_crops, seed=seed,
            resize_short_side=resize_short_side, video_keys=video_keys_from_dict(video_keys),
            max_frame_pixels=max_frame_pixels, frame_format=frame_format, jpeg_quality=jpeg_quality)
        check_max_rejected_fraction(max_rejected_fraction)
        check_compression_level(compression_level)
        if isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 0:
            raise ValueError(f"num_shards must be an int >= 0 (0: the runner decides), got {num_shards!r}")
        spec = ClipGenSpec(
            examples=examples,
            num_frames=config.num_frames, frame_stride=config.frame_stride, height=config.height,
            width=config.width, resize_short_side=config.resize_short_side,
            clips_per_video_train=config.clips_per_video_train, clips_per_video_eval=config.clips_per_video_eval,
            eval_crops=config.eval_crops,
            seed=config.seed, labels=json.dumps(list(config.labels) if labels else []),
            video_keys=json.dumps(video_keys_to_dict(config.video_keys)) if video_keys is not None else None,
            max_rejected_fraction=float(max_rejected_fraction), max_frame_pixels=config.max_frame_pixels,
            compression_level=compression_level, num_shards=num_shards, clip_store=clip_store,
            frame_format=config.frame_format, jpeg_quality=config.jpeg_quality,
            clips=types.Channel(type=standard_artifacts.Examples),
            dead_letter=types.Channel(type=ClipGenDeadLetter),
            clip_stats=types.Channel(type=ClipGenStatistics))
        super().__init__(spec=spec)

    @property
    def clip_shape(self) -> list[int]:
        """[T, H, W, 3]: what Transform's custom_config "clip_shape" must be."""
        spec = self.spec.exec_properties
        return [spec["num_frames"], spec["height"], spec["width"], 3]

    @property
    def labels(self) -> list[str]:
        """The configured label map, sorted; empty: the run's, which Ingest reads from the data."""
        return json.loads(self.spec.exec_properties["labels"])
