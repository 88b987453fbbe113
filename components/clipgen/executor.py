"""ClipGen's TFX executor: runs the clip Beam pipeline over every split, then checks and records the accounting."""
from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import tensorflow as tf
from tfx import types
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_beam_executor
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils
from tfx.utils import io_utils

from components import label_maps
from components.clipgen import transforms
from components.clipgen.extract import DEFAULT_MAX_FRAME_PIXELS, ClipGenConfig, video_keys_from_dict
from components.clipgen.window import SpanWindow
from components.frame_formats import DEFAULT_JPEG_QUALITY, JPEG, RAW
from components.spans import CLIP_STORE_KEY, examples_file_prefix
from components.rejections import add_split_counts, check_split_accounting, enforce_max_rejected_fraction
from components.tfrecord_io import DEFAULT_COMPRESSION_LEVEL

logger = logging.getLogger(__name__)

EXAMPLES_KEY = "examples"
CLIPS_KEY = "clips"
DEAD_LETTER_KEY = "dead_letter"
CLIP_STATS_KEY = "clip_stats"
CLIP_STATS_FILENAME = "clip_stats.json"
_PARTS_DIR = "_parts"


def config_from_exec_properties(exec_properties: dict[str, Any]) -> ClipGenConfig:
    """The ClipGenConfig encoded by ClipGen's execution properties (labels and video_keys are JSON strings)."""
    video_keys = exec_properties.get("video_keys")
    return ClipGenConfig(
        num_frames=int(exec_properties["num_frames"]),
        frame_stride=int(exec_properties["frame_stride"]),
        height=int(exec_properties["height"]),
        width=int(exec_properties["width"]),
        labels=tuple(json.loads(exec_properties["labels"])),
        clips_per_video_train=int(exec_properties["clips_per_video_train"]),
        clips_per_video_eval=int(exec_properties["clips_per_video_eval"]),
        eval_crops=int(exec_properties.get("eval_crops") or 1),
        seed=int(exec_properties["seed"]),
        resize_short_side=(int(exec_properties["resize_short_side"])
                           if exec_properties.get("resize_short_side") is not None else None),
        video_keys=video_keys_from_dict(json.loads(video_keys) if video_keys else None),
        max_frame_pixels=int(exec_properties.get("max_frame_pixels") or DEFAULT_MAX_FRAME_PIXELS),
        frame_format=exec_properties.get("frame_format") or RAW,
        jpeg_quality=int(exec_properties.get("jpeg_quality") or DEFAULT_JPEG_QUALITY),
    )


class Executor(base_beam_executor.BaseBeamExecutor):
    """Video Examples (SequenceExamples) -> clip Examples, dead letters and clip statistics, split by split."""

    def Do(self, input_dict: dict[str, list[types.Artifact]], output_dict: dict[str, list[types.Artifact]],
           exec_properties: dict[str, Any]) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        examples = input_dict[EXAMPLES_KEY]
        labels, label_source = run_labels(exec_properties, examples)
        config = config_from_exec_properties({**exec_properties, "labels": json.dumps(labels)})
        splits = _common_split_names(examples)
        for artifact in examples:
            payload = examples_utils.get_payload_format(artifact)
            if payload != example_gen_pb2.PayloadFormat.FORMAT_TF_SEQUENCE_EXAMPLE:
                logger.warning("ClipGen: input %s has payload format %s, expected FORMAT_TF_SEQUENCE_EXAMPLE; "
                               "records that are not video SequenceExamples go to the dead letter",
                               artifact.uri, example_gen_pb2.PayloadFormat.Name(payload))

        clips = artifact_utils.get_single_instance(output_dict[CLIPS_KEY])
        dead_letter = artifact_utils.get_single_instance(output_dict[DEAD_LETTER_KEY])
        clip_stats = artifact_utils.get_single_instance(output_dict[CLIP_STATS_KEY])
        clips.split_names = artifact_utils.encode_split_names(splits)
        examples_utils.set_payload_format(clips, example_gen_pb2.PayloadFormat.FORMAT_TF_EXAMPLE)
        examples_utils.set_file_format(clips, "tfrecords_gzip")
        label_maps.record(clips, config.labels, label_source)
        parts_dir = os.path.join(clip_stats.uri, _PARTS_DIR)

        window = SpanWindow.of(examples)
        pipeline = self._make_beam_pipeline()
        for split in splits:
            for tag in window.tags_to_cut:
                patterns = ([f"{artifact_utils.get_split_uri(examples, split)}/{examples_file_prefix(tag)}-*"]
                            if tag else examples_utils.get_split_file_patterns(examples, split))
                transforms.clip_split(
                    pipeline, split, patterns, config,
                    clips_dir=artifact_utils.get_split_uri([clips], split),
                    dead_letter_dir=os.path.join(dead_letter.uri, f"Split-{split}"),
                    stats_path=os.path.join(parts_dir, f"{split}{tag}.json"),
                    compression_level=int(exec_properties.get("compression_level", DEFAULT_COMPRESSION_LEVEL)),
                    num_shards=int(exec_properties.get("num_shards") or 0), tag=tag)
        logger.info("ClipGen: clipping splits %s into %s clips, %s frames (%s)%s", splits, list(config.clip_shape),
                    config.frame_format + (f" q{config.jpeg_quality}" if config.frame_format == JPEG else ""),
                    ", ".join(f"{s}: {config.windows_per_video(s)}x{config.crops(s)} clips/video, {config.mode(s)} "
                              "policy" for s in splits),
                    f"; spans {window.spans_to_cut}" if window.windowed else "")
        started = time.monotonic()
        if window.tags_to_cut:
            result = pipeline.run()
            result.wait_until_finish()
        elapsed = time.monotonic() - started

        stats = {split: transforms.empty_stats() for split in splits}
        per_span = {}
        for split in splits:
            for tag in window.tags_to_cut:
                counts = json.loads(io_utils.read_string_file(os.path.join(parts_dir, f"{split}{tag}.json")))
                per_span.setdefault(tag, {})[split] = counts
                add_split_counts(stats[split], counts)
        if tf.io.gfile.exists(parts_dir):
            io_utils.delete_dir(parts_dir)
        for split, split_stats in stats.items():
            check_accounting(split, split_stats, config.clips_per_video(split))
        counters = transforms.beam_counters(result) if window.tags_to_cut else {}
        for split in splits:  # Metrics are best effort (some runners report none); the data-path counts rule.
            if counters.get(split) and counters[split].get("videos_in") != stats[split]["videos_in"]:
                logger.warning("ClipGen[%s]: Beam counter videos_in=%s differs from the counted %s (retries?)",
                               split, counters[split].get("videos_in"), stats[split]["videos_in"])
        window_clips = window.assemble(clips, splits, per_span)   # copies the reused spans' clips in
        summary = clip_stats_document(config, stats, elapsed)
        if window.windowed:
            summary["window"] = {"spans": window.spans, "cut": window.spans_to_cut, "reused": sorted(window.reused),
                                 "clips": window_clips}
        io_utils.write_string_file(os.path.join(clip_stats.uri, CLIP_STATS_FILENAME),
                                   json.dumps(summary, indent=2, sort_keys=True))
        _record_on_artifact(clips, config, stats)
        _log_summary(stats, elapsed, config.num_frames)
        enforce_max_rejected_fraction("ClipGen", stats, "videos",
                                      float(exec_properties.get("max_rejected_fraction", 1.0)), dead_letter.uri)
        window.register(exec_properties.get(CLIP_STORE_KEY) or "", clips, splits, per_span)


def run_labels(exec_properties: dict[str, Any], examples: list[types.Artifact]) -> tuple[list[str], str]:
    """ClipGen's labels when configured, else the run's label map Ingest recorded (components/label_maps.py)."""
    configured = json.loads(exec_properties.get("labels") or "[]")
    if configured:
        return configured, label_maps.CONFIG
    labels, source = label_maps.recorded(examples[0]) if examples else ([], "")
    if not labels:
        raise ValueError("ClipGen: no labels configured and the input examples record no label map "
                         f"({examples[0].uri if examples else 'no input'}): configure labels, or feed it the "
                         "examples of this project's Ingest")
    return labels, source


def check_accounting(split: str, stats: dict, clips_per_video: int) -> None:
    """Every video is either ok or rejected, and every ok video gives exactly clips_per_video clips."""
    check_split_accounting("ClipGen", split, stats, unit="videos")
    if stats["clips_out"] != stats["videos_ok"] * clips_per_video:
        raise RuntimeError(f"ClipGen[{split}]: clips_out={stats['clips_out']} != videos_ok={stats['videos_ok']} x "
                           f"{clips_per_video} clips per video")


def clip_stats_document(config: ClipGenConfig, stats: dict[str, dict], elapsed_s: float) -> dict:
    return {
        "clip_shape": list(config.clip_shape),
        "frame_stride": config.frame_stride,
        "frame_format": config.frame_format,
        "labels": list(config.labels),
        "splits": stats,
        "elapsed_s": round(elapsed_s, 3),
    }


def _record_on_artifact(clips: types.Artifact, config: ClipGenConfig, stats: dict[str, dict]) -> None:
    clips.set_string_custom_property("clip_shape", json.dumps(list(config.clip_shape)))
    clips.set_string_custom_property("frame_format", config.frame_format)
    for split, split_stats in stats.items():
        for key in ("videos_in", "videos_ok", "clips_out", "rejected"):
            clips.set_int_custom_property(f"{split}_{key}", int(split_stats[key]))


def _log_summary(stats: dict[str, dict], elapsed_s: float, clip_length: int) -> None:
    clips = sum(s["clips_out"] for s in stats.values())
    decoded = sum(s["frames_decoded"] for s in stats.values())
    elapsed_s = max(elapsed_s, 1e-9)
    for split, s in stats.items():
        logger.info("ClipGen[%s]: %d videos in, %d ok, %d rejected %s, %d clips out", split, s["videos_in"],
                    s["videos_ok"], s["rejected"], s["rejected_by_reason"], s["clips_out"])
    logger.info("ClipGen: %d clips in %.1f s (%.1f clips/s, %.1f clip frames/s, %.1f decoded frames/s, "
                "pipeline start-up included)", clips, elapsed_s, clips / elapsed_s, clips * clip_length / elapsed_s,
                decoded / elapsed_s)


def _common_split_names(examples: list[types.Artifact]) -> list[str]:
    if not examples:
        raise ValueError("ClipGen needs at least one input examples artifact, got none")
    splits = artifact_utils.decode_split_names(examples[0].split_names)
    for artifact in examples[1:]:
        other = artifact_utils.decode_split_names(artifact.split_names)
        if other != splits:
            raise ValueError(f"input examples artifacts have different splits: {splits} vs {other}")
    if not splits:
        raise ValueError(f"input examples artifact {examples[0].uri} has no splits")
    return splits
