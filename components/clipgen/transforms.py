"""The Beam half of ClipGen: a PTransform from serialized video records to clips, dead letters and statistics.

Each video is handled on its own (one ParDo, no grouping), so memory per worker is one video's needed frames
whatever the dataset size; per-split statistics come from a CombineFn over tiny per-video outcomes, which runners
combine incrementally (no list of all videos is ever built).
"""
from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Callable, Iterable

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter

from components.clipgen.extract import (PROCESSING_ERROR, REJECT_REASONS, ClipGenConfig, Rejected,
                                        extract_clips, record_id)
from components.rejections import add_split_counts, count_outcome, dead_letter_line
from components.sinks import WriteTextLines
from components.spans import examples_file_prefix
from components.tfrecord_io import DEFAULT_COMPRESSION_LEVEL, WriteToGzipTFRecord
from components.video_format import LabelMap

logger = logging.getLogger(__name__)

CLIPS = "clips"
DEAD_LETTER = "dead_letter"
OUTCOMES = "outcomes"
STATS = "stats"

DEAD_LETTER_FILE_PREFIX = "dead_letter"
PROGRESS_EVERY_S = 30.0


def counter_namespace(split: str) -> str:
    """Beam Metrics namespace of one split's counters (videos_in, videos_ok, clips_out, rejected, rejected.<reason>,
    frames_decoded, frames_resized_to_fit)."""
    return f"ClipGen.{split}"


class _VideosToClipsFn(beam.DoFn):
    """serialized video -> serialized clip Examples (main output), a dead-letter JSON line, and one outcome."""

    def __init__(self, split: str, config: ClipGenConfig):
        self._split = split
        self._config = config

    def setup(self):
        self._label_map = LabelMap(self._config.labels)
        ns = counter_namespace(self._split)
        self._videos_in = Metrics.counter(ns, "videos_in")
        self._videos_ok = Metrics.counter(ns, "videos_ok")
        self._clips_out = Metrics.counter(ns, "clips_out")
        self._rejected = Metrics.counter(ns, "rejected")
        self._rejected_by = {r: Metrics.counter(ns, f"rejected.{r}") for r in REJECT_REASONS}
        self._frames_decoded = Metrics.counter(ns, "frames_decoded")
        self._frames_resized = Metrics.counter(ns, "frames_resized_to_fit")
        self._progress = _Progress(self._split, self._config.num_frames)

    def process(self, serialized: bytes) -> Iterable[Any]:
        self._videos_in.inc()
        try:
            result = extract_clips(serialized, self._split, self._config, self._label_map)
        except Rejected as rejection:
            yield from self._reject(serialized, rejection.reason, rejection.detail)
            return
        except Exception as exc:  # one bad record must not fail a run over millions; it is counted and reported
            logger.warning("ClipGen[%s]: unexpected error on a video, sent to dead letter: %r", self._split, exc)
            yield from self._reject(serialized, PROCESSING_ERROR, f"{type(exc).__name__}: {exc}")
            return
        self._videos_ok.inc()
        self._clips_out.inc(len(result.clips))
        self._frames_decoded.inc(result.frames_decoded)
        self._frames_resized.inc(result.frames_resized_to_fit)
        self._progress.add(ok=True, clips=len(result.clips))
        yield from result.clips
        yield beam.pvalue.TaggedOutput(OUTCOMES, (None, len(result.clips), result.frames_decoded))

    def _reject(self, serialized: bytes, reason: str, detail: str) -> Iterable[Any]:
        self._rejected.inc()
        self._rejected_by[reason].inc()
        self._progress.add(ok=False, clips=0)
        video_id = record_id(serialized, self._config.video_keys)
        yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter_line(video_id, self._split, reason, detail))
        yield beam.pvalue.TaggedOutput(OUTCOMES, (reason, 0, 0))

    def teardown(self):
        if getattr(self, "_progress", None) is not None:
            self._progress.log(final=True)


class _Progress:
    """Per-worker progress log, at most every PROGRESS_EVERY_S seconds."""

    def __init__(self, split: str, clip_length: int):
        self._split, self._clip_length = split, clip_length
        self._start = self._last_log = time.monotonic()
        self.videos = self.rejected = self.clips = 0

    def add(self, ok: bool, clips: int) -> None:
        self.videos += 1
        self.rejected += not ok
        self.clips += clips
        if time.monotonic() - self._last_log >= PROGRESS_EVERY_S:
            self.log()

    def log(self, final: bool = False) -> None:
        if not self.videos:
            return
        self._last_log = time.monotonic()
        elapsed = max(self._last_log - self._start, 1e-9)
        logger.info("ClipGen[%s] worker %s: %d videos (%d rejected), %d clips, %.1f clips/s, %.1f frames/s",
                    self._split, "done" if final else "progress", self.videos, self.rejected, self.clips,
                    self.clips / elapsed, self.clips * self._clip_length / elapsed)


def empty_stats() -> dict:
    return {"videos_in": 0, "videos_ok": 0, "clips_out": 0, "rejected": 0, "frames_decoded": 0,
            "rejected_by_reason": {}}


class SplitStatsFn(beam.CombineFn):
    """Outcomes (reason or None, clips, frames decoded) -> the split's counts; constant memory."""

    def create_accumulator(self) -> dict:
        return empty_stats()

    def add_input(self, acc: dict, outcome: tuple) -> dict:
        reason, clips, frames_decoded = outcome
        count_outcome(acc, "videos", reason)
        if reason is None:
            acc["clips_out"] += clips
            acc["frames_decoded"] += frames_decoded
        return acc

    def merge_accumulators(self, accumulators: Iterable[dict]) -> dict:
        merged = empty_stats()
        for acc in accumulators:
            add_split_counts(merged, acc)
        return merged

    def extract_output(self, acc: dict) -> dict:
        return acc


class VideosToClips(beam.PTransform):
    """PCollection of serialized video SequenceExamples -> {"clips": serialized clip Examples,
    "dead_letter": JSON lines, "stats": one dict of the split's counts}."""

    def __init__(self, split: str, config: ClipGenConfig):
        super().__init__()
        if not isinstance(split, str) or not split:
            raise ValueError(f"split must be a non-empty string, got {split!r}")
        if not isinstance(config, ClipGenConfig):
            raise TypeError(f"config must be a ClipGenConfig, got {type(config).__name__}")
        self._split = split
        self._config = config

    def expand(self, videos):
        results = videos | "ExtractClips" >> beam.ParDo(_VideosToClipsFn(self._split, self._config)).with_outputs(
            DEAD_LETTER, OUTCOMES, main=CLIPS)
        stats = results[OUTCOMES] | "CountOutcomes" >> beam.CombineGlobally(SplitStatsFn())
        return {CLIPS: results[CLIPS], DEAD_LETTER: results[DEAD_LETTER], STATS: stats}


def clip_split(pipeline: beam.Pipeline, split: str, input_patterns: list[str], config: ClipGenConfig,
               clips_dir: str, dead_letter_dir: str, stats_path: str,
               compression_level: int = DEFAULT_COMPRESSION_LEVEL,
               clip_writer: Callable[..., beam.PTransform] = WriteToGzipTFRecord, num_shards: int = 0,
               tag: str = "") -> None:
    """Add one split's read -> clips -> write branch to ``pipeline`` (one span's, when ``tag`` names one: its
    files and Beam labels then carry the tag, e.g. ``data_tfrecord-span-00007-*``).

    Writes gzipped TFRecord shards ``<clips_dir>/data_tfrecord-*.gz``, ``num_shards`` of them (0: as the runner
    likes) (``clip_writer(prefix, compression_level[, num_shards=])``;
    the benchmark swaps in Beam's stock writer to measure ours), dead-letter JSON lines
    ``<dead_letter_dir>/dead_letter-*.jsonl`` and the split's counts as one JSON object at ``stats_path``."""
    where = f"[{split}]" + (f"[{tag}]" if tag else "")
    suffix = f"-{tag}" if tag else ""
    reads = [pipeline | f"Read{where}[{i}]" >> beam.io.ReadFromTFRecord(pattern, coder=beam.coders.BytesCoder())
             for i, pattern in enumerate(input_patterns)]
    videos = reads[0] if len(reads) == 1 else reads | f"Flatten{where}" >> beam.Flatten()
    out = videos | f"VideosToClips{where}" >> VideosToClips(split, config)
    prefix = os.path.join(clips_dir, examples_file_prefix(tag))   # data_tfrecord[-span-00007], as Ingest's
    writer = (clip_writer(prefix, compression_level, num_shards=num_shards) if num_shards
              else clip_writer(prefix, compression_level))
    _ = out[CLIPS] | f"WriteClips{where}" >> writer
    _ = out[DEAD_LETTER] | f"WriteDeadLetter{where}" >> WriteTextLines(
        os.path.join(dead_letter_dir, DEAD_LETTER_FILE_PREFIX + suffix), file_name_suffix=".jsonl")
    _ = (out[STATS] | f"StatsToJson{where}" >> beam.Map(lambda stats: json.dumps(stats, sort_keys=True))
         | f"WriteStats{where}" >> WriteTextLines(stats_path, shard_name_template=""))


def beam_counters(result: beam.runners.runner.PipelineResult) -> dict[str, dict[str, int]]:
    """ClipGen's Beam counters from a finished pipeline, {split: {name: committed value}}; empty where the
    runner does not report metrics."""
    counters: dict[str, dict[str, int]] = {}
    try:
        query = result.metrics().query(MetricsFilter())
    except (NotImplementedError, AttributeError):
        return counters
    for counter in query.get("counters", []):
        namespace = counter.key.metric.namespace
        if not namespace.startswith("ClipGen."):
            continue
        value = counter.committed if counter.committed is not None else counter.attempted
        split_counters = counters.setdefault(namespace[len("ClipGen."):], {})
        split_counters[counter.key.metric.name] = split_counters.get(counter.key.metric.name, 0) + value
    return counters
