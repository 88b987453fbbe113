"""``python -m pipeline predict``: video-level predictions of a served model, and the TF Serving request for them.

The model is what TF Serving loads (a SavedModel from ``components/trainer/export.py``), given as a serving model
base path (the newest complete numeric version is taken, as TF Serving does) or as a SavedModel folder. Its
``serving_frames`` signature fixes the clip shape [T, H, W, 3]; clips are cut exactly as evaluation cuts them
(ClipGen's eval policy: ``--views TxS``, T uniformly spaced windows, short videos loop, resize the short side, S
crops per window), the signature runs in batches within the model's request limit, and the probabilities of a
video's T x S clips are averaged.

Inputs are video files (mp4 or anything PyAV reads: decoded as ``convert`` decodes them, so the frames match what
the model was trained on) or video TFRecords (the SequenceExample format of ``components.video_format``, gzipped
or not; every record is one video). A bad input is reported and the others still get predictions.

This module's top level imports only the standard library: ``--help`` and argument errors stay instant.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from typing import Iterator

logger = logging.getLogger(__name__)

SIGNATURE = "serving_frames"       # components.trainer.export.SERVING_FRAMES (not imported: it pulls in TFT)
INPUT_KEY = "frames"
DEFAULT_BATCH_SIZE = 32
DEFAULT_TOP_K = 3
TFRECORD_SUFFIXES = (".tfrecord", ".tfrecords", ".tfr", ".tfrecord.gz", ".tfrecords.gz", ".tfr.gz", ".gz")
GZIP_MAGIC = b"\x1f\x8b"
REST_PORT, GRPC_PORT = 8501, 8500  # TF Serving's default ports


# ---- command line --------------------------------------------------------------------------------------

def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _views(text: str) -> tuple[int, int]:
    from components.clip_sampling import parse_views
    try:
        return parse_views(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _short_side(text: str) -> int:
    value = _positive_int(text)
    if value < 8:  # convert's own lower bound
        raise argparse.ArgumentTypeError(f"must be >= 8, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``predict`` subcommand's arguments (pipeline/cli.py registers the subcommand)."""
    parser.description = ("Video-level top-k predictions of a trained model on video files or video TFRecords; "
                          "or the TF Serving request (REST or gRPC) for a video's clips.")
    parser.add_argument("--model", required=True, metavar="PATH",
                        help="TF Serving model base path (<serving_dir>/<model_name>, with numeric version folders: "
                             "the newest complete version is used) or a SavedModel folder. Local paths; gs:// works "
                             "where Google credentials are configured (version listing uses the project's GCS "
                             "client, loading uses TensorFlow's GCS file system)")
    parser.add_argument("videos", nargs="+", metavar="VIDEO",
                        help="video files (mp4 or anything PyAV reads) or video TFRecords (.tfrecord[.gz], .gz: "
                             "components.video_format SequenceExamples, one video per record)")
    parser.add_argument("--top-k", type=_positive_int, default=None,
                        help=f"labels per video (default: {DEFAULT_TOP_K}, or the number of classes if fewer)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON only on stdout")
    parser.add_argument("--batch-size", type=_positive_int, default=None,
                        help=f"clips per signature call (default: {DEFAULT_BATCH_SIZE}, at most the model's request "
                             "limit, which export.max_clips_per_request derives from the clip shape)")
    parser.add_argument("--print-request", choices=("rest", "grpc"), default=None,
                        help="print the TF Serving request for the first readable video's clips instead of "
                             "predicting: rest = JSON body for POST /v1/models/<name>:predict; grpc = a "
                             "tensorflow_serving PredictRequest in protobuf text format")
    parser.add_argument("--request-out", metavar="FILE", default=None,
                        help="with --print-request: write the request to FILE (rest: JSON, grpc: binary protobuf) "
                             "and print the predictions as usual")
    parser.add_argument("--model-name", default=None,
                        help="model name in the request (default: the base path's folder name, e.g. bresnet)")
    sampling = parser.add_argument_group(
        "clip sampling", "must match the run that trained the model (pipeline config: clips.*); the clip size "
                         "comes from the model itself")
    sampling.add_argument("--views", type=_views, default=None, metavar="TxS",
                          help="T windows per video, each at S crops (1: centre; 3: left/centre/right or "
                               "top/centre/bottom) (default: clips.eval_views' default, 3x3)")
    sampling.add_argument("--frame-stride", type=_positive_int, default=None,
                          help="frames between a clip's frames (default: clips.frame_stride's default, 1)")
    decoding = parser.add_argument_group(
        "video file decoding", "as `convert` decodes (use the values the training data was converted with)")
    decoding.add_argument("--fps", type=_positive_float, default=None,
                          help="sample frames at this rate (default: native)")
    decoding.add_argument("--short-side", type=_short_side, default=None,
                          help="resize frames so the short side is this, never upscaling (default: convert's, 128)")
    decoding.add_argument("--max-frames", type=_positive_int, default=None,
                          help="cap per video (default: convert's, 300)")


def run(args: argparse.Namespace) -> int:
    """The ``predict`` command. Usage errors raise pipeline.config.ConfigError (exit 2); returns 1 if any video
    failed, else 0."""
    from pipeline.config import ClipConfig, ConfigError

    if args.request_out and not args.print_request:
        raise ConfigError("--request-out needs --print-request rest|grpc")
    if args.request_out and not os.path.isdir(os.path.dirname(os.path.abspath(args.request_out))):
        raise ConfigError(f"--request-out {args.request_out!r}: its folder does not exist")
    defaults = ClipConfig()
    clips_per_video, crops = args.views or (defaults.eval_clips_per_video, defaults.eval_crops)
    settings = SamplingSettings(
        clips_per_video=clips_per_video, crops=crops,
        frame_stride=args.frame_stride or defaults.frame_stride,
        decode_overrides={k: v for k, v in (("fps", args.fps), ("short_side", args.short_side),
                                            ("max_frames", args.max_frames)) if v is not None})
    model = ServedModel.load(args.model, name=args.model_name)
    top_k = args.top_k if args.top_k is not None else min(DEFAULT_TOP_K, len(model.labels))
    if top_k > len(model.labels):
        raise ConfigError(f"--top-k {top_k} is more than the model's {len(model.labels)} classes {model.labels}")
    batch_size = args.batch_size if args.batch_size is not None else min(DEFAULT_BATCH_SIZE, model.max_clips)
    if batch_size > model.max_clips:
        raise ConfigError(f"--batch-size {batch_size} is above the model's request limit of {model.max_clips} clips "
                          f"of shape {list(model.clip_shape)}")

    if args.print_request:
        errors: list[dict] = []
        clips = _first_video_clips(args.videos, model, settings, errors, batch_size)
        if clips is None or not args.request_out:  # else the prediction pass below reports them
            for error in errors:
                _report_error(error)
        if clips is None:
            print(f"predict: error: no readable video among {len(args.videos)} input(s); no request built",
                  file=sys.stderr)
            return 1
        _emit_request(args.print_request, clips, model, args.request_out)
        if not args.request_out:
            return 1 if errors else 0

    report = predict_videos(args.videos, model, settings, batch_size, top_k)
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        print(format_table(report))
    for error in report.errors:
        _report_error(error)
    logger.info("%d videos in, %d predicted, %d failed", report.videos_in, len(report.predictions),
                len(report.errors))
    return 1 if report.errors else 0


def _report_error(error: dict) -> None:
    where = error["input"] + (f" (video {error['video_id']!r})" if error.get("video_id") else "")
    print(f"predict: error: {where}: {error['error']}", file=sys.stderr)


# ---- the model -----------------------------------------------------------------------------------------

def resolve_model_dir(path: str) -> tuple[str, str]:
    """(SavedModel folder, default model name) for ``--model``: a SavedModel folder, or a serving base path whose
    newest complete version is taken. Raises ConfigError naming the path and what is missing."""
    from pipeline.config import ConfigError

    stripped = path.rstrip("/") or path
    if not stripped.startswith("gs://") and not os.path.exists(stripped):
        raise ConfigError(f"--model {path!r} does not exist")
    import tensorflow as tf
    if tf.io.gfile.exists(stripped + "/saved_model.pb"):
        parent, leaf = os.path.split(stripped)
        # A version folder of a base path (…/bresnet/1700000000) is named after its base.
        return stripped, (os.path.basename(parent) if leaf.isdigit() and parent else leaf)
    from components.pusher import existing_versions, latest_version_path
    latest = latest_version_path(stripped)
    if latest is None:   # the listing is repeated only to say why
        versions = existing_versions(stripped)
        if not versions:
            raise ConfigError(f"--model {path!r} is neither a SavedModel folder (no saved_model.pb) nor a TF "
                              "Serving model base path (no numeric version folders)")
        raise ConfigError(f"--model {path!r}: none of its versions {versions} is complete (no saved_model.pb)")
    return latest, os.path.basename(stripped)


@dataclasses.dataclass
class ServedModel:
    path: str                         # the SavedModel folder
    name: str                         # TF Serving model name (requests)
    clip_shape: tuple[int, int, int, int]
    max_clips: int                    # request limit of serving_frames
    labels: tuple[str, ...]           # class names in output order
    signature: object                 # the concrete function

    @classmethod
    def load(cls, path: str, name: str | None = None) -> "ServedModel":
        from pipeline.config import ConfigError

        model_dir, default_name = resolve_model_dir(path)
        import numpy as np
        import tensorflow as tf
        try:
            loaded = tf.saved_model.load(model_dir)
        except Exception as exc:  # TF raises several types for a broken or foreign SavedModel
            raise ConfigError(f"--model {path!r}: cannot load the SavedModel at {model_dir}: "
                              f"{type(exc).__name__}: {exc}") from None
        if SIGNATURE not in loaded.signatures:
            raise ConfigError(f"--model {path!r}: the SavedModel at {model_dir} has no {SIGNATURE!r} signature "
                              f"(it has {sorted(loaded.signatures)}); export it with components/trainer/export.py")
        signature = loaded.signatures[SIGNATURE]
        clip_shape = clip_shape_of(signature)
        if clip_shape is None:
            raise ConfigError(f"--model {path!r}: {SIGNATURE} input is "
                              f"{signature.structured_input_signature[1]}, not uint8 {INPUT_KEY} [batch, T, H, W, 3]")
        # One blank clip gives the class names (the export stores them only inside the graph) and proves the
        # signature runs before any video is decoded.
        probe = signature(**{INPUT_KEY: tf.zeros([1, *clip_shape], tf.uint8)})
        labels = tuple(c.decode() for c in np.asarray(probe["classes"])[0])
        from components.trainer.export import max_clips_per_request  # the export's own rule
        model = cls(model_dir, name or default_name, clip_shape, max_clips_per_request(clip_shape), labels,
                    signature)
        model._loaded = loaded  # keeps the variables alive as long as the signature
        return model

    def probabilities(self, clips) -> "np.ndarray":
        """uint8 [B, T, H, W, 3] -> float [B, K], B at most max_clips."""
        import tensorflow as tf
        return self.signature(**{INPUT_KEY: tf.constant(clips, tf.uint8)})["probabilities"].numpy()


def clip_shape_of(signature) -> tuple[int, int, int, int] | None:
    """[T, H, W, 3] from a serving_frames-style signature's input spec, or None if it is not one."""
    import tensorflow as tf
    _, inputs = signature.structured_input_signature
    spec = inputs.get(INPUT_KEY)
    if spec is None or spec.dtype != tf.uint8 or spec.shape.rank != 5:
        return None
    dims = spec.shape.as_list()[1:]
    if any(d is None or d < 1 for d in dims) or dims[3] != 3:
        return None
    return tuple(int(d) for d in dims)


# ---- videos -> clips -----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class SamplingSettings:
    clips_per_video: int              # T: windows per video
    crops: int                        # S: crops per window
    frame_stride: int
    decode_overrides: dict  # DecodeSettings fields given on the command line; the rest keep convert's defaults


@dataclasses.dataclass
class VideoClips:
    input: str
    video_id: str
    num_frames: int
    starts: list[int]                 # of the windows
    clips: "np.ndarray"               # uint8 [windows x crops, T, H, W, 3], window-major
    looped: bool                      # shorter than one window: frame indices wrapped around (eval policy)


class BadVideo(Exception):
    """One input (or one record of a TFRecord input) that gives no clips; the message says why."""

    def __init__(self, input: str, message: str, video_id: str | None = None):
        super().__init__(message)
        self.input, self.video_id = input, video_id

    def to_dict(self) -> dict:
        return {"input": self.input, **({"video_id": self.video_id} if self.video_id else {}), "error": str(self)}


def is_tfrecord(path: str) -> bool:
    name = os.path.basename(path).lower()
    return name.endswith(TFRECORD_SUFFIXES) or ".tfrecord" in name


def read_videos(path: str, settings: SamplingSettings) -> Iterator["Video | BadVideo"]:
    """The videos of one VIDEO argument (one for a video file, one per record for a TFRecord); failures are
    yielded as BadVideo so that the caller carries on with the next."""
    from components.video_format import Video, VideoRecordError, parse_video

    if not path.startswith("gs://"):
        if not os.path.exists(path):
            yield BadVideo(path, "no such file")
            return
        if os.path.isdir(path):
            yield BadVideo(path, "is a directory, not a video file or TFRecord")
            return
    if not is_tfrecord(path):
        from components.convert import DecodeSettings, UnreadableVideo, decode_video
        try:
            decoded = decode_video(path, DecodeSettings(**settings.decode_overrides))
        except UnreadableVideo as exc:
            yield BadVideo(path, f"not a readable video: {exc}")
            return
        yield Video(video_id=path, jpeg_frames=decoded.jpeg_frames, height=decoded.height, width=decoded.width,
                    frame_rate=decoded.frame_rate)
        return

    import tensorflow as tf
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            compression = "GZIP" if f.read(2) == GZIP_MAGIC else ""
    except (OSError, tf.errors.OpError) as exc:
        yield BadVideo(path, f"cannot open: {exc}")
        return
    index = -1
    try:
        for index, record in enumerate(tf.data.TFRecordDataset(path, compression_type=compression).as_numpy_iterator()):
            try:
                yield parse_video(record, source=f"record {index}")
            except VideoRecordError as exc:
                yield BadVideo(path, str(exc), video_id=f"record {index}")
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError, tf.errors.OutOfRangeError) as exc:
        where = f"after record {index}" if index >= 0 else "at the first record"
        yield BadVideo(path, f"not a readable {'gzipped ' if compression else ''}TFRecord file ({where}): "
                             f"{exc.message.splitlines()[0]}")
        return
    if index < 0:
        yield BadVideo(path, "TFRecord file holds no records")


def cut_clips(input: str, video, clip_shape, settings: SamplingSettings) -> VideoClips:
    """The eval clips of ``video`` (a components.video_format.Video), exactly as ClipGen cuts an eval split."""
    import numpy as np
    from components import clip_sampling
    # ClipGen's own cut (header check, decode + resize, eval windows and crop): verdicts and pixels match exactly.
    from components.clipgen.extract import ClipGenConfig, Rejected, cut_clip_frames

    num_frames = len(video.jpeg_frames)
    if num_frames == 0:
        raise BadVideo(input, "the video has no frames", video_id=_record_id(input, video))
    t, h, w, _ = clip_shape
    # labels only satisfy ClipGenConfig's validation: no label is read when cutting unlabelled clips.
    config = ClipGenConfig(num_frames=t, frame_stride=settings.frame_stride, height=h, width=w,
                           labels=("unlabelled",), clips_per_video_eval=settings.clips_per_video,
                           eval_crops=settings.crops)
    try:
        cut = cut_clip_frames(video, clip_sampling.EVAL, settings.clips_per_video, config, crops=settings.crops)
    except Rejected as exc:
        raise BadVideo(input, exc.detail, video_id=_record_id(input, video)) from None
    return VideoClips(input, video.video_id, num_frames, [window.start for window in cut.windows[::settings.crops]],
                      np.stack(cut.clips), looped=num_frames < clip_sampling.window_span(t, settings.frame_stride))


def _record_id(input: str, video) -> str | None:
    return None if video.video_id == input else video.video_id


def iter_clips(paths, model: ServedModel, settings: SamplingSettings) -> Iterator["VideoClips | BadVideo"]:
    for path in paths:
        for video in read_videos(path, settings):
            if isinstance(video, BadVideo):
                yield video
                continue
            try:
                yield cut_clips(path, video, model.clip_shape, settings)
            except BadVideo as exc:
                yield exc
            except Exception as exc:  # an unforeseen failure on one video must not cost the others their results
                logger.exception("unexpected error on %s", path)
                yield BadVideo(path, f"unexpected {type(exc).__name__}: {exc}", video_id=_record_id(path, video))


# ---- predictions ---------------------------------------------------------------------------------------

@dataclasses.dataclass
class Report:
    model: ServedModel
    settings: SamplingSettings
    top_k: int
    predictions: list[dict]
    errors: list[dict]

    @property
    def videos_in(self) -> int:
        return len(self.predictions) + len(self.errors)

    def to_dict(self) -> dict:
        return {
            "model": self.model.path, "model_name": self.model.name, "signature": SIGNATURE,
            "clip_shape": list(self.model.clip_shape), "labels": list(self.model.labels),
            "views": f"{self.settings.clips_per_video}x{self.settings.crops}",
            "clips_per_video": self.settings.clips_per_video * self.settings.crops,
            "frame_stride": self.settings.frame_stride,
            "predictions": self.predictions, "errors": self.errors,
            "counts": {"videos_in": self.videos_in, "predicted": len(self.predictions), "failed": len(self.errors)},
        }


def predict_videos(paths, model: ServedModel, settings: SamplingSettings, batch_size: int, top_k: int) -> Report:
    """Every video's clip probabilities averaged into a video-level top-k. Clips of consecutive videos share
    signature calls (``batch_size`` clips each), so many short videos cost few calls."""
    import numpy as np

    predictions: list[dict] = []
    errors: list[dict] = []
    sums: list = []                   # per prediction: summed clip probabilities
    pending_clips: list = []          # clips not yet run, with the index of their prediction
    pending_owner: list[int] = []

    def run_batch(n: int) -> None:
        probabilities = model.probabilities(np.stack(pending_clips[:n]))
        for owner, p in zip(pending_owner[:n], probabilities):
            sums[owner] += p
        del pending_clips[:n], pending_owner[:n]

    for item in iter_clips(paths, model, settings):
        if isinstance(item, BadVideo):
            errors.append(item.to_dict())
            continue
        predictions.append({"input": item.input, "video_id": item.video_id, "frames": item.num_frames,
                            "clips": len(item.clips), "clip_starts": item.starts, "looped": item.looped})
        sums.append(np.zeros(len(model.labels), np.float64))
        pending_clips.extend(item.clips)
        pending_owner.extend([len(predictions) - 1] * len(item.clips))
        while len(pending_clips) >= batch_size:
            run_batch(batch_size)
    if pending_clips:
        run_batch(len(pending_clips))

    looped = sum(entry["looped"] for entry in predictions)
    if looped:
        logger.info("%d of %d videos are shorter than one clip window; their frame indices loop, as in "
                    "evaluation (\"looped\" in --json)", looped, len(predictions))
    for entry, total in zip(predictions, sums):
        mean = total / entry["clips"]
        order = np.argsort(-mean, kind="stable")[:top_k]
        entry["top_k"] = [{"label": model.labels[i], "probability": float(mean[i])} for i in order]
        entry["probabilities"] = {label: float(p) for label, p in zip(model.labels, mean)}
    return Report(model, settings, top_k, predictions, errors)


def _label(entry) -> str:
    input, video_id = (entry["input"], entry["video_id"]) if isinstance(entry, dict) else (entry.input, entry.video_id)
    return input if video_id == input else f"{input}#{video_id}"


def format_table(report: Report) -> str:
    rows = [(_label(p), str(p["clips"]), ", ".join(f"{t['label']} {t['probability']:.3f}" for t in p["top_k"]))
            for p in report.predictions]
    header = ("video", "clips", f"top-{report.top_k} (mean clip probability)")
    width = max([len(header[0])] + [len(r[0]) for r in rows])
    lines = [f"{header[0]:<{width}}  {header[1]:>5}  {header[2]}"]
    lines += [f"{v:<{width}}  {c:>5}  {t}" for v, c, t in rows]
    lines.append(f"{len(report.predictions)} of {report.videos_in} videos predicted with {report.model.path} "
                 f"({report.settings.clips_per_video}x{report.settings.crops} views of {list(report.model.clip_shape)} "
                 "per video)"
                 + (f"; {len(report.errors)} failed (see stderr)" if report.errors else ""))
    return "\n".join(lines)


# ---- TF Serving requests -------------------------------------------------------------------------------

def _first_video_clips(paths, model: ServedModel, settings: SamplingSettings, errors: list[dict],
                       batch_size: int) -> VideoClips | None:
    for item in iter_clips(paths, model, settings):
        if isinstance(item, BadVideo):
            errors.append(item.to_dict())
            continue
        if len(item.clips) > batch_size:
            print(f"predict: note: {_label(item)} has {len(item.clips)} clips; the request holds the first "
                  f"{batch_size} (--batch-size, request limit {model.max_clips})", file=sys.stderr)
            item.clips = item.clips[:batch_size]
        return item
    return None


def rest_request(clips) -> dict:
    """TF Serving's REST predict body, row ("instances") format: one [T, H, W, 3] nested list of ints per clip,
    which TF Serving converts to the signature's uint8 input (its only input, so rows need no input name)."""
    return {"signature_name": SIGNATURE, "instances": clips.tolist()}


def grpc_request(clips, model_name: str):
    """A tensorflow_serving.apis.predict_pb2.PredictRequest for the clips (PredictionService.Predict)."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = SIGNATURE
    request.inputs[INPUT_KEY].CopyFrom(tf.make_tensor_proto(clips, dtype=tf.uint8))
    return request


def _emit_request(kind: str, item: VideoClips, model: ServedModel, out_path: str | None) -> None:
    what = f"{len(item.clips)} clips {list(item.clips.shape[1:])} of {_label(item)}"
    if kind == "rest":
        body = json.dumps(rest_request(item.clips), separators=(",", ":"))
        how = (f"POST it to http://HOST:{REST_PORT}/v1/models/{model.name}:predict "
               f"(Content-Type: application/json)")
    else:
        from google.protobuf import text_format
        request = grpc_request(item.clips, model.name)
        body = request.SerializeToString() if out_path else text_format.MessageToString(request)
        how = f"send it with PredictionService/Predict to HOST:{GRPC_PORT}"
    if out_path:
        mode = "wb" if isinstance(body, bytes) else "w"
        with open(out_path, mode) as f:
            f.write(body)
        print(f"predict: wrote the {kind} request ({what}) to {out_path}; {how}", file=sys.stderr)
    else:
        print(body)
        print(f"predict: printed the {kind} request ({what}); {how}", file=sys.stderr)
