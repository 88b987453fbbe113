"""Raw video files -> sharded video SequenceExample TFRecords, as an Apache Beam pipeline.

Input is either a folder with one subfolder per class (UCF101 style: ``<input>/<label>/<video>.mp4``) or a CSV
file ``path,label[,start_s,end_s]`` (optional header row starting with ``path``; relative paths are relative to
the CSV's folder). Paths go through ``apache_beam.io.filesystems.FileSystems``, so ``gs://`` works wherever
the Beam GCP extras are installed.

Each video is decoded with PyAV as a stream (packets in, frames out; nothing holds the whole video), sampled
at ``fps`` (every frame when ``fps`` is None or not below the source rate), cut to ``[start_s, end_s)``, capped
at ``max_frames``, resized so the short side is ``short_side`` (aspect kept, never upscaled), JPEG-encoded and
written as a SequenceExample in the format of ``components.video_format``. Outputs in ``out_dir``::

    videos-00000-of-0000N.tfrecord   the records (uncompressed TFRecord)
    label_map.txt                    sorted labels of the input; record label indices follow it
    dead_letter-00000-of-00001.jsonl one JSON object per rejected video: path, video_id, label, reason

Beam metrics (namespace ``convert``): videos_in, converted, rejected, frames_written, videos_truncated; the
run checks videos_in == converted + rejected == number of listed videos.

Runs on the DirectRunner by default; pass Beam arguments (``--runner=DataflowRunner --project=...``, Flink,
Spark, ``--direct_num_workers=2``) through ``beam_args``.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import logging
import math
import os
import posixpath
import time

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from components import video_format

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov")
METRICS_NAMESPACE = "convert"
RECORDS_PREFIX = "videos"
DEAD_LETTER_PREFIX = "dead_letter"
_DEAD_LETTER_TAG = "dead_letter"
_COUNTERS = ("videos_in", "converted", "rejected", "frames_written", "videos_truncated")


# ---- listing the input ----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class VideoSource:
    """One video to convert; ``start_s``/``end_s`` (seconds) cut a segment, None means the file's start/end."""
    path: str
    label: str
    video_id: str
    start_s: float | None = None
    end_s: float | None = None


def list_videos(input: str) -> list[VideoSource]:
    """The videos named by ``input`` (class-folder tree or CSV), sorted by video id.

    Raises ValueError on malformed CSV rows, duplicate video ids or an input with no videos."""
    if not isinstance(input, str) or not input:
        raise ValueError(f"input must be a folder or CSV path, got {input!r}")
    sources = _list_csv(input) if input.lower().endswith(".csv") else _list_folder(input)
    if not sources:
        raise ValueError(f"input={input!r} names no videos (expected <input>/<label>/<video> with an extension in "
                         f"{VIDEO_EXTENSIONS}, or a CSV path,label[,start_s,end_s])")
    seen: dict[str, str] = {}
    for s in sources:
        if s.video_id in seen:
            raise ValueError(f"input={input!r}: video id {s.video_id!r} is not unique ({seen[s.video_id]!r} and "
                             f"{s.path!r}); ids are paths without extension")
        seen[s.video_id] = s.path
    return sorted(sources, key=lambda s: s.video_id)


def _list_folder(root: str) -> list[VideoSource]:
    root = root.rstrip("/")
    sources, skipped = [], 0
    for meta in FileSystems.match([FileSystems.join(root, "*", "*")])[0].metadata_list:
        relative = meta.path[len(root):].lstrip("/")
        label, name = relative.split("/", 1)
        stem, ext = posixpath.splitext(name)
        if ext.lower() not in VIDEO_EXTENSIONS:
            skipped += 1
            continue
        sources.append(VideoSource(path=meta.path, label=label, video_id=f"{label}/{stem}"))
    if skipped:
        logger.info("convert: skipped %d files under %s without a video extension %s", skipped, root,
                    VIDEO_EXTENSIONS)
    return sources


def _parse_seconds(text: str, what: str, where: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{where}: {what} must be a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{where}: {what} must be a finite number >= 0, got {text!r}")
    return value


def _segment_id(start_s: float | None, end_s: float | None) -> str:
    """W3C media-fragment suffix, so several segments of one file get distinct ids."""
    if start_s is None and end_s is None:
        return ""
    return "#t=" + ("" if start_s is None else f"{start_s:g}") + ("" if end_s is None else f",{end_s:g}")


def check_label(label: str, where: str) -> None:
    """A label must be usable as one path segment: class names become folder names in the class-folder layout and
    in any per-class export, and a label like '../../x' must never be able to name a place outside an output
    root. Raises ValueError naming ``where`` (the CSV row)."""
    if label in (".", "..") or "/" in label or "\\" in label or not label.isprintable():
        raise ValueError(f"{where}: label {label!r} must be a single name: no '/' or '\\', not '.' or '..', no "
                         f"control characters")


def _normalize_path(path: str) -> str:
    """Absolute, with '.' and '..' segments collapsed; for a URL (gs://bucket/...) only below the bucket."""
    if "://" in path:
        scheme, rest = path.split("://", 1)
        bucket, _, key = rest.partition("/")
        return f"{scheme}://{bucket}/" + posixpath.normpath("/" + key).lstrip("/")
    return os.path.abspath(path)


def _list_csv(csv_path: str) -> list[VideoSource]:
    with FileSystems.open(csv_path, mime_type="text/csv", compression_type=CompressionTypes.UNCOMPRESSED) as f:
        text = f.read().decode("utf-8-sig")
    base = _normalize_path(FileSystems.split(csv_path)[0] or ".").rstrip("/")
    sources = []
    for line_no, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        row = [c.strip() for c in row]
        if not any(row):
            continue
        if not sources and line_no == 1 and row[0].lower() == "path":
            continue  # header
        where = f"{csv_path}:{line_no}"
        if len(row) not in (2, 3, 4) or not row[0] or not row[1]:
            raise ValueError(f"{where}: expected path,label[,start_s,end_s] with a non-empty path and label, "
                             f"got {row!r}")
        path, label = row[0], row[1]
        start_s = _parse_seconds(row[2], "start_s", where) if len(row) > 2 else None
        end_s = _parse_seconds(row[3], "end_s", where) if len(row) > 3 else None
        if start_s is not None and end_s is not None and end_s <= start_s:
            raise ValueError(f"{where}: end_s must be > start_s, got start_s={start_s} end_s={end_s}")
        check_label(label, where)
        if "://" not in path and not os.path.isabs(path):
            path = FileSystems.join(base, path)
        path = _normalize_path(path)   # '../' in a CSV may read from anywhere, but ids show the real place
        if path.startswith(base + "/"):
            relative = path[len(base) + 1:]
        else:
            relative = path.split("://", 1)[-1].lstrip("/")
        video_id = posixpath.splitext(relative)[0] + _segment_id(start_s, end_s)
        if ".." in video_id.split("/"):   # cannot happen after normalization; ids must never climb
            raise ValueError(f"{where}: video id {video_id!r} of path {row[0]!r} climbs out of its root")
        sources.append(VideoSource(path=path, label=label, video_id=video_id, start_s=start_s, end_s=end_s))
    return sources


# ---- decoding one video ---------------------------------------------------------------------------------

class UnreadableVideo(Exception):
    """A video that cannot be converted; the message is the dead-letter reason."""


@dataclasses.dataclass(frozen=True)
class DecodeSettings:
    fps: float | None = None
    short_side: int | None = 128
    max_frames: int = 300
    jpeg_quality: int = 90


@dataclasses.dataclass
class DecodedVideo:
    jpeg_frames: list[bytes]
    height: int
    width: int
    frame_rate: float          # of the written frames
    truncated: bool            # stopped at max_frames with frames left


def output_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """(width, height) with the short side scaled down to ``short_side``; never upscales."""
    if short_side is None or min(width, height) <= short_side:
        return width, height
    scale = short_side / min(width, height)
    if width <= height:
        return short_side, max(1, round(height * scale))
    return max(1, round(width * scale)), short_side


def decode_video(path: str, settings: DecodeSettings = DecodeSettings(), start_s: float | None = None,
                 end_s: float | None = None) -> DecodedVideo:
    """Streams one video file into JPEG frames. Raises UnreadableVideo with the reason on any bad input."""
    import av

    try:
        f = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    except OSError as exc:  # BeamIOError is an OSError
        raise UnreadableVideo(f"cannot open: {exc}") from None
    with f:
        try:
            if not f.read(1):
                raise UnreadableVideo("empty file (0 bytes)")
            f.seek(0)
            with av.open(f, mode="r") as container:
                return _decode_stream(container, settings, start_s, end_s)
        except (av.FFmpegError, OSError, EOFError) as exc:
            raise UnreadableVideo(f"cannot decode: {type(exc).__name__}: {exc}") from None


def _decode_stream(container, settings: DecodeSettings, start_s: float | None,
                   end_s: float | None) -> DecodedVideo:
    import av

    if not container.streams.video:
        raise UnreadableVideo("no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    source_rate = float(stream.average_rate) if stream.average_rate else None
    origin = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    # Sample only when asked for fewer frames per second than the source has; never duplicate frames.
    sample_rate = settings.fps if settings.fps is not None and (source_rate is None or settings.fps < source_rate) \
        else None
    frame_rate = sample_rate or source_rate or 0.0
    begin = start_s or 0.0
    if start_s:
        container.seek(int((origin + start_s) / stream.time_base), stream=stream)  # to the keyframe before

    jpegs: list[bytes] = []
    size = None
    last_bin, t, decoded, truncated = -1, None, 0, False
    try:
        for frame in container.decode(stream):
            decoded += 1
            if frame.time is not None:
                t = frame.time - origin
            else:  # no timestamp: assume a constant rate after the previous frame
                t = begin if t is None else t + 1.0 / (source_rate or 25.0)
            if t < begin - 1e-6:
                continue
            if end_s is not None and t >= end_s:
                break
            if sample_rate is not None:
                time_bin = math.floor((t - begin) * sample_rate + 1e-6)
                if time_bin <= last_bin:
                    continue
                last_bin = time_bin
            if len(jpegs) == settings.max_frames:
                truncated = True
                break
            if size is None:
                size = output_size(frame.width, frame.height, settings.short_side)
            rgb = frame.to_ndarray(width=size[0], height=size[1], format="rgb24", interpolation="AREA")
            jpegs.append(video_format.encode_jpeg(rgb, quality=settings.jpeg_quality))
    except (av.FFmpegError, OSError, EOFError) as exc:
        raise UnreadableVideo(f"decoding failed after {decoded} frames: {type(exc).__name__}: {exc}") from None
    if not jpegs:
        segment = "" if start_s is None and end_s is None else f" in segment [{start_s}, {end_s}) s"
        raise UnreadableVideo(f"no frames decoded{segment} ({decoded} frames read)")
    return DecodedVideo(jpeg_frames=jpegs, height=size[1], width=size[0], frame_rate=frame_rate, truncated=truncated)


# ---- the Beam pipeline ----------------------------------------------------------------------------------

class _Progress:
    """Logs videos done and frame rate every ``every`` videos or ``seconds``, per worker."""

    def __init__(self, every: int = 25, seconds: float = 30.0):
        self._every, self._seconds = every, seconds
        self._started = self._logged = time.monotonic()
        self.videos = self.rejected = self.frames = 0

    def add(self, frames: int, rejected: bool) -> None:
        self.videos += 1
        self.rejected += int(rejected)
        self.frames += frames
        now = time.monotonic()
        if self.videos % self._every == 0 or now - self._logged >= self._seconds:
            self._logged = now
            logger.info("convert: %d videos done on this worker (%d rejected), %d frames, %.1f frames/s",
                        self.videos, self.rejected, self.frames, self.frames / max(now - self._started, 1e-9))


class ConvertVideoFn(beam.DoFn):
    """VideoSource -> serialized SequenceExample; unreadable videos -> dead-letter JSON lines."""

    def __init__(self, labels: list[str], settings: DecodeSettings):
        self._labels = list(labels)
        self._settings = settings
        self._counters = {name: Metrics.counter(METRICS_NAMESPACE, name) for name in _COUNTERS}

    def setup(self):
        self._label_map = video_format.LabelMap(self._labels)
        self._progress = _Progress()

    def process(self, source):  # a VideoSource (no annotation: Beam would warn about the string hint)
        self._counters["videos_in"].inc()
        try:
            video = decode_video(source.path, self._settings, source.start_s, source.end_s)
        except UnreadableVideo as exc:
            self._counters["rejected"].inc()
            self._progress.add(0, rejected=True)
            logger.warning("convert: rejected %s: %s", source.path, exc)
            yield beam.pvalue.TaggedOutput(_DEAD_LETTER_TAG, json.dumps(
                {"path": source.path, "video_id": source.video_id, "label": source.label, "reason": str(exc)}))
            return
        record = video_format.make_video_example(
            video_id=source.video_id, jpeg_frames=video.jpeg_frames, label=source.label,
            label_index=self._label_map.index(source.label), height=video.height, width=video.width,
            frame_rate=video.frame_rate)
        self._counters["converted"].inc()
        self._counters["frames_written"].inc(len(video.jpeg_frames))
        if video.truncated:
            self._counters["videos_truncated"].inc()
        self._progress.add(len(video.jpeg_frames), rejected=False)
        yield record.SerializeToString(deterministic=True)


@dataclasses.dataclass
class ConvertSummary:
    out_dir: str
    labels: list[str]
    label_map_path: str
    record_files: list[str]
    dead_letter_files: list[str]
    videos_in: int
    converted: int
    rejected: int
    frames_written: int
    videos_truncated: int
    seconds: float

    @property
    def frames_per_second(self) -> float:
        return self.frames_written / max(self.seconds, 1e-9)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "frames_per_second": round(self.frames_per_second, 1)}


def _output_files(out_dir: str, prefix: str) -> list[str]:
    pattern = FileSystems.join(out_dir, f"{prefix}-*")
    return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)


def _counter_values(result) -> dict[str, int]:
    values = dict.fromkeys(_COUNTERS, 0)
    for counter in result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))["counters"]:
        # Committed values count each element once despite retries; runners without them report None.
        value = counter.committed if counter.committed is not None else counter.attempted
        values[counter.key.metric.name] += int(value or 0)
    return values


def verify_counts(listed: int, counts: dict[str, int]) -> None:
    """Every listed video was seen once and ended up converted or rejected; RuntimeError otherwise."""
    if counts["videos_in"] != counts["converted"] + counts["rejected"] or counts["videos_in"] != listed:
        raise RuntimeError(f"convert: counts do not add up: {listed} videos listed, videos_in="
                           f"{counts['videos_in']}, converted={counts['converted']}, rejected={counts['rejected']}")


def _check_args(fps, short_side, max_frames, num_shards, beam_args, jpeg_quality) -> None:
    if fps is not None and (not isinstance(fps, (int, float)) or isinstance(fps, bool) or not fps > 0
                            or not math.isfinite(fps)):
        raise ValueError(f"fps must be None or a number > 0, got {fps!r}")
    if short_side is not None and (not isinstance(short_side, int) or isinstance(short_side, bool)
                                   or short_side < 8):
        raise ValueError(f"short_side must be None or an int >= 8, got {short_side!r}")
    if not isinstance(max_frames, int) or isinstance(max_frames, bool) or max_frames < 1:
        raise ValueError(f"max_frames must be an int >= 1, got {max_frames!r}")
    if not isinstance(num_shards, int) or isinstance(num_shards, bool) or num_shards < 1:
        raise ValueError(f"num_shards must be an int >= 1, got {num_shards!r}")
    if beam_args is not None and (not isinstance(beam_args, (list, tuple))
                                  or not all(isinstance(a, str) for a in beam_args)):
        raise TypeError(f"beam_args must be None or a list of str, got {beam_args!r}")
    if not isinstance(jpeg_quality, int) or not 1 <= jpeg_quality <= 100:
        raise ValueError(f"jpeg_quality must be an int in [1, 100], got {jpeg_quality!r}")


def run_convert(input: str, out_dir: str, fps: float | None = None, short_side: int | None = 128,
                max_frames: int = 300, num_shards: int = 1, beam_args: list[str] | None = None,
                jpeg_quality: int = 90, overwrite: bool = False) -> ConvertSummary:
    """Converts the videos named by ``input`` into ``out_dir`` (see the module docstring).

    Refuses (FileExistsError) to write over earlier outputs in ``out_dir`` unless ``overwrite``, which deletes
    them first: stale shards of another shard count would otherwise be read as part of this dataset."""
    if not isinstance(out_dir, str) or not out_dir:
        raise ValueError(f"out_dir must be a non-empty path string, got {out_dir!r}")
    _check_args(fps, short_side, max_frames, num_shards, beam_args, jpeg_quality)
    sources = list_videos(input)

    previous = _output_files(out_dir, RECORDS_PREFIX) + _output_files(out_dir, DEAD_LETTER_PREFIX)
    if previous and not overwrite:
        raise FileExistsError(f"out_dir={out_dir!r} already holds {len(previous)} converted files "
                              f"(e.g. {previous[0]}); pass overwrite=True or use a new folder")
    if previous:
        logger.info("convert: deleting %d files of an earlier run in %s", len(previous), out_dir)
        FileSystems.delete(previous)

    label_map = video_format.LabelMap(s.label for s in sources)
    label_map_path = label_map.save(out_dir)
    logger.info("convert: %d videos, %d labels from %s -> %s", len(sources), len(label_map), input, out_dir)

    settings = DecodeSettings(fps=fps, short_side=short_side, max_frames=max_frames, jpeg_quality=jpeg_quality)
    started = time.monotonic()
    pipeline = beam.Pipeline(options=PipelineOptions(list(beam_args or [])))
    outputs = (pipeline
               | "ListVideos" >> beam.Create(sources)
               | "Spread" >> beam.Reshuffle()   # one video per work item, whatever the runner fused
               | "Convert" >> beam.ParDo(ConvertVideoFn(label_map.labels, settings)).with_outputs(
                   _DEAD_LETTER_TAG, main="records"))
    _ = outputs.records | "WriteRecords" >> beam.io.WriteToTFRecord(
        FileSystems.join(out_dir, RECORDS_PREFIX), file_name_suffix=".tfrecord", num_shards=num_shards)
    _ = outputs[_DEAD_LETTER_TAG] | "WriteDeadLetter" >> beam.io.WriteToText(
        FileSystems.join(out_dir, DEAD_LETTER_PREFIX), file_name_suffix=".jsonl", num_shards=1)
    result = pipeline.run()
    result.wait_until_finish()
    seconds = time.monotonic() - started

    counts = _counter_values(result)
    verify_counts(len(sources), counts)
    summary = ConvertSummary(
        out_dir=out_dir, labels=label_map.labels, label_map_path=label_map_path,
        record_files=_output_files(out_dir, RECORDS_PREFIX),
        dead_letter_files=_output_files(out_dir, DEAD_LETTER_PREFIX),
        videos_in=counts["videos_in"], converted=counts["converted"], rejected=counts["rejected"],
        frames_written=counts["frames_written"], videos_truncated=counts["videos_truncated"], seconds=seconds)
    logger.info("convert: %d videos in, %d converted, %d rejected, %d frames in %.1f s (%.1f frames/s)",
                summary.videos_in, summary.converted, summary.rejected, summary.frames_written, seconds,
                summary.frames_per_second)
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="Other arguments are passed to Beam (e.g. --runner=DataflowRunner).")
    parser.add_argument("--input", required=True, help="class-folder tree or CSV path,label[,start_s,end_s]")
    parser.add_argument("--out_dir", required=True)
    parser.add_argument("--fps", type=float, default=None)
    parser.add_argument("--short_side", type=int, default=128, help="0 keeps the original size")
    parser.add_argument("--max_frames", type=int, default=300)
    parser.add_argument("--num_shards", type=int, default=1)
    parser.add_argument("--overwrite", action="store_true")
    args, beam_args = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    run_convert(args.input, args.out_dir, fps=args.fps, short_side=args.short_side or None,
                max_frames=args.max_frames, num_shards=args.num_shards, beam_args=beam_args,
                overwrite=args.overwrite)


if __name__ == "__main__":
    main()
