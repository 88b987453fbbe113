"""Kinetics-700 at scale, on paper: per-stage core-hours, bytes and wall time from the rates measured here.

  python -m bench.scale [--rates bench/beam_runners.json] [--results bench/results.json] [--runner flink]
                        [--out bench/SCALE.md]
  python -m bench.scale --check        # the arithmetic on embedded made-up inputs, with identities asserted

Reads the Beam runner rates (``--rates``, written by the Beam runner benchmark), the benchmark harness's
``bench/results.json`` (model GFLOPs per clip, JPEG decode rate, CPU training rate) and the ``cluster`` preset
(pipeline/config.py: clip shape, clips per video, workers), and writes ``bench/SCALE.md``: for Ingest, ClipGen,
Transform and the Trainer the core-hours, bytes read and written and wall time at a stated parallelism, for each
clip storage format, and the format decision those numbers give. Every figure is in the ledger at the end of the
file with the measured input or the assumption it came from; the assumptions are the ``Assumptions`` fields
below, and the figures copied from the prose of bench/README.md and README.md are ``CITED``. No TensorFlow, Beam
or NumPy: the standard library, the repo's config (pipeline/config.py) and its clip sampler
(components/clip_sampling.py).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys

from components import clip_sampling
from components.frame_formats import JPEG, RAW
from pipeline.config import PRESETS, load_config

FORMATS = ("raw", "jpeg_source", "jpeg_clip")
SHORT = {"raw": "raw clips", "jpeg_source": "source JPEG frames + crop", "jpeg_clip": "clip-size JPEG"}
FORMAT_NAMES = {
    "raw": "raw uint8 clips, gzip (today's contract)",
    "jpeg_source": "source JPEG frames + crop parameters",
    "jpeg_clip": "JPEG q90 re-encoded at clip size",
}


def why(value, reason: str):
    return dataclasses.field(default=value, metadata={"why": reason})


@dataclasses.dataclass(frozen=True)
class Assumptions:
    """Chosen, not measured: each with why (rendered into SCALE.md)."""
    videos: int = why(650_000,
        "the issue's Kinetics-700-sized job")
    eval_fraction: float = why(0.054,
        "Kinetics-700's validation split: 50 videos x 700 classes = 35k of ~650k")
    video_seconds: float = why(10.0,
        "Kinetics videos are ~10 s cuts of YouTube videos")
    fps: float = why(30.0,
        "sources are mostly 25-30 fps and convert keeps every frame by default: the upper end")
    source_short_side: int = why(128,
        "components/convert.py's default short_side for the stored JPEG frames")
    source_aspect: float = why(16 / 9,
        "YouTube's usual 16:9 (4:3 would give 25% fewer pixels)")
    pixel_exponent: float = why(1.0,
        "JPEG bytes, decode and resize time per frame go as pixels ** this, carried from the demo's frame size")
    gpu: str = why("H100 SXM",
        "a common cloud training GPU (the issue names none)")
    gpu_peak_flops: float = why(989e12,
        "NVIDIA H100 SXM datasheet: 989 TFLOP/s dense bf16 (1,979 with sparsity)")
    mfu: float = why(0.30,
        "assumed; the model reached 50% of a bf16 matmul on this CPU (bench/README)")
    train_flops_factor: float = why(3.0,
        "forward + backward ~ 3x the forward pass, as bench/model_speed.py counts MFU")
    gpu_workers: int = why(8,
        "one 8-GPU VM's worth of MWMS workers, one GPU each")
    cores_per_gpu_worker: int = why(26,
        "GCP a3-highgpu-8g: 208 vCPUs for 8 H100s")
    storage_bytes_s_per_gpu_worker: float = why(1.25e9,
        "assumed: 10 Gbit/s of object-store reads per GPU worker")
    beam_workers: int = why(64,
        "Flink TaskManagers or Dataflow workers for the Beam steps")
    cores_per_beam_worker: int = why(4,
        "pipeline/config.py DEFAULT_STEP_RESOURCES: ClipGen and Transform request 4 CPUs")
    storage_bytes_s_per_beam_worker: float = why(0.25e9,
        "assumed: 2 Gbit/s of object-store I/O per 4-core worker")
    passes: float = why(1.0,
        "the trainer's rows are one pass over the train clips (multiply for epochs)")
    ingest_gzip_ratio: float = why(1.0,
        "gzip does not shrink JPEG bytes")
    jpeg_encode_over_decode: float = why(1.5,
        "not measured here: JPEG encode per pixel taken as 1.5x decode")
    crop_param_bytes: int = why(16,
        "4 int32 per clip (top, left, height, width)")
    raw_margin: float = why(1.25,
        "policy: keep lossless raw clips unless another format is this much faster end to end")


# Measured, but only in bench/README.md's or README.md's prose (no machine-readable file): value, unit, where.
CITED = {
    "gzip_s_per_clip": (36e-6, "s per 8x32x32 clip",
                        "bench/README.md targets: ClipGen's gzip ~36 µs a clip (ISA-L, demo clips)"),
    "gzip_clip_shape": ((8, 32, 32, 3), "", "the demo's clip shape (ClipConfig defaults) that gzip figure is for"),
    "resize_over_decode": (20 / 25, "",
                           "bench/README.md targets: ClipGen's decode ~25 µs, INTER_AREA resize ~20 µs a frame"),
    "beam_s_per_element": (15e-6, "s per clip",
                           "bench/README.md levers: Beam's per-element cost ~10–15 µs a clip (the upper end)"),
    "study_shape": ((16, 112, 112, 3), "",
                    "README.md 'Clip storage format' (bench/clip_format.py), the 16x112x112 row"),
    "study_raw_bytes": (602e3, "B/clip", "README.md 'Clip storage format': 602 KB raw at 16x112x112"),
    "study_gz_bytes": (478e3, "B/clip", "README.md 'Clip storage format': 478 KB gzipped (zlib level 6 then)"),
    "study_jpeg_bytes": (41e3, "B/clip", "README.md 'Clip storage format': 41 KB JPEG q90 per frame"),
    "study_read_gz_s": (3.2e-3, "s/clip",
                        "README.md 'Clip storage format': read+decode through tf.data, gzipped"),
    "study_read_jpeg_s": (1.5e-3, "s/clip", "README.md 'Clip storage format': read+decode through tf.data, JPEG"),
    "study_cores": (2, "cores",
                    "the study's 2-core machine; its tf.data wall time per clip is counted on both cores"),
}


class Ledger:
    """Every number the report uses: name, value, unit, and what it came from."""

    def __init__(self):
        self.rows: list[tuple[str, float, str, str]] = []

    def __call__(self, name: str, value, unit: str, source: str):
        self.rows.append((name, value, unit, source))
        return value


def cited(ledger: Ledger, key: str):
    value, unit, source = CITED[key]
    if not any(row[0] == key for row in ledger.rows):
        ledger(key, value, unit, "cited: " + source)
    return value


def prod(shape) -> int:
    return math.prod(int(d) for d in shape)


# ---- the job --------------------------------------------------------------------------------------------

def decoded_frames(mode: str, num_frames: int, clip, seeds: int = 1000) -> float:
    """Mean distinct frames ClipGen decodes per video under ``mode``: the union of the clips' windows, from the
    repo's own sampler (components/clip_sampling.sample_windows), averaged over ``seeds`` train seeds."""
    count = clip.clips_per_video_train if mode == "train" else clip.eval_clips_per_video
    draws = range(seeds) if mode == "train" else [0]
    total = 0
    for seed in draws:
        windows = clip_sampling.sample_windows(mode, num_frames, clip.num_frames, clip.frame_stride, count, seed)
        total += len({f for w in windows for f in w.frames})
    return total / len(draws)


def job(L: Ledger, a: Assumptions, b: dict, clip) -> dict:
    j = {}
    j["train_videos"] = L("train videos", a.videos * (1 - a.eval_fraction), "", "videos x (1 - eval_fraction)")
    j["eval_videos"] = L("eval videos", a.videos * a.eval_fraction, "", "videos x eval_fraction")
    j["train_clips"] = L("train clips", j["train_videos"] * clip.clips_per_video_train, "",
                         "train videos x clips.clips_per_video_train (cluster preset)")
    j["eval_clips"] = L("eval clips", j["eval_videos"] * clip.eval_clips_per_video * clip.eval_crops, "",
                        "eval videos x clips.eval_views' T x S (cluster preset)")
    j["frames"] = L("frames per video", round(a.video_seconds * a.fps), "", "video_seconds x fps")
    long_side = round(a.source_short_side * a.source_aspect)
    j["src_px"] = L("source pixels per frame", a.source_short_side * long_side, "px",
                    f"source_short_side x round(short x aspect) = {a.source_short_side} x {long_side}")
    j["demo_px"] = L("demo source pixels per frame", b["source_frame_pixels"], "px", "rates: bytes.source_frame_pixels")
    j["px_ratio"] = L("source pixel scale Kinetics / demo", (j["src_px"] / j["demo_px"]) ** a.pixel_exponent, "x",
                      "(Kinetics / demo source pixels) ** pixel_exponent")
    demo_frame_bytes = L("demo JPEG bytes per source frame", b["video_record_bytes"] / b["frames_per_video"], "B",
                         "rates: bytes.video_record_bytes / bytes.frames_per_video (record overhead included)")
    j["src_frame_bytes"] = L("Kinetics JPEG bytes per source frame", demo_frame_bytes * j["px_ratio"], "B",
                             "demo bytes per frame x pixel scale")
    j["video_bytes"] = L("Kinetics bytes per video record", j["frames"] * j["src_frame_bytes"], "B",
                         "frames per video x JPEG bytes per frame")
    j["decoded_train"] = L("frames decoded per train video", decoded_frames("train", j["frames"], clip), "",
                           "union of the train windows, clip_sampling.sample_windows, mean of 1,000 seeds")
    j["decoded_eval"] = L("frames decoded per eval video", decoded_frames("eval", j["frames"], clip), "",
                          "union of the eval windows, clip_sampling.sample_windows")
    return j


def clip_bytes(L: Ledger, a: Assumptions, b: dict, clip, j: dict) -> dict:
    """Bytes per clip as stored, per format."""
    raw = L("raw bytes per cluster clip", prod(clip.shape), "B", f"T x H x W x 3 = {'x'.join(map(str, clip.shape))}")
    gz_ratio = L("gzip ratio of raw clips", b["clip_bytes"] / prod(b["clip_shape"]), "",
                 "rates: bytes.clip_bytes / prod(bytes.clip_shape) (demo clips as ClipGen writes them)")
    study_jpeg = cited(L, "study_jpeg_bytes") / cited(L, "study_raw_bytes")
    return {
        "raw": L("bytes per clip, raw", raw * gz_ratio, "B", "raw bytes x gzip ratio"),
        "jpeg_source": L("bytes per clip, source JPEG + crop",
                         clip.num_frames * j["src_frame_bytes"] + a.crop_param_bytes, "B",
                         "T x Kinetics JPEG bytes per frame + crop_param_bytes"),
        "jpeg_clip": L("bytes per clip, clip-size JPEG", raw * study_jpeg, "B",
                       "raw bytes x the study's JPEG / raw at 16x112x112"),
    }


# ---- stages ---------------------------------------------------------------------------------------------

def per_core(L: Ledger, rates: dict, section: str, runner: str, key: str) -> float:
    cores = rates["meta"]["cores"]
    value = rates[section][runner][key]
    if not value:
        raise SystemExit(f"rates: {section}.{runner}.{key} is {value!r} (no steady state measured): rerun the Beam "
                         "runner benchmark with a larger --factor, or pass --runner for the other runner")
    return L(f"{section} {runner} {key} per core", value / cores, "/s",
             f"rates: {section}.{runner}.{key} = {value:,.1f} / meta.cores = {cores}")


def clipgen(L: Ledger, a: Assumptions, rates: dict, runner: str, clip, j: dict, nbytes: dict, decode: dict) -> dict:
    """Core-seconds per format. Today's cost per clip at demo size is split into gzip (by bytes) and the rest,
    charged per decoded frame (decode, resize, crop, Beam) and scaled by source pixels."""
    b = rates["bytes"]
    clips_core = per_core(L, rates, "clipgen", runner, "steady_clips_s")
    frames_core = per_core(L, rates, "clipgen", runner, "steady_frames_decoded_s")
    t_clip = L("ClipGen core-s per demo clip", 1 / clips_core, "s", "1 / clips per core-second")
    gzip_s_byte = L("gzip core-s per byte", cited(L, "gzip_s_per_clip") / prod(cited(L, "gzip_clip_shape")), "s/B",
                    "cited gzip per clip / its raw bytes")
    t_gzip_demo = L("gzip core-s per demo clip", gzip_s_byte * prod(b["clip_shape"]), "s",
                    "gzip per byte x demo raw clip bytes")
    t_frame_demo = L("ClipGen core-s per decoded demo frame (decode, resize, Beam)",
                     (t_clip - t_gzip_demo) * clips_core / frames_core, "s",
                     "(core-s per clip - gzip per clip) x clips per decoded frame (Beam's per-clip work included)")
    if t_frame_demo <= 0:
        raise SystemExit("ClipGen's measured cost per clip is below the cited gzip cost: rates and citation disagree")
    t_frame = L("ClipGen core-s per Kinetics source frame", t_frame_demo * j["px_ratio"], "s",
                "demo per-frame cost x pixel scale (its fixed part scaled too: an upper bound)")
    raw = prod(clip.shape)
    beam = cited(L, "beam_s_per_element")

    def per_video(decoded: float, clips: int) -> dict:
        frame_work = decoded * t_frame
        return {
            "raw": frame_work + clips * gzip_s_byte * raw,
            "jpeg_source": clips * (beam + gzip_s_byte * nbytes["jpeg_source"]),
            "jpeg_clip": frame_work + clips * (clip.num_frames * decode["clip"] * a.jpeg_encode_over_decode
                                               + gzip_s_byte * nbytes["jpeg_clip"]),
        }

    train = per_video(j["decoded_train"], clip.clips_per_video_train)
    evals = per_video(j["decoded_eval"], clip.eval_clips_per_video * clip.eval_crops)
    out = {}
    for f in FORMATS:
        out[f] = L(f"ClipGen core-s, {f}", j["train_videos"] * train[f] + j["eval_videos"] * evals[f], "s",
                   {"raw": "videos x (decoded frames x per-frame cost + clips x gzip of raw bytes)",
                    "jpeg_source": "clips x (Beam per element + gzip of the clip's JPEG bytes): no decode",
                    "jpeg_clip": "raw's frame work + clips x (T encodes at clip size + gzip of JPEG bytes)"}[f])
    out["t_gzip_byte"] = gzip_s_byte
    out["t_frame_demo"], out["t_clip_demo"], out["t_gzip_demo"] = t_frame_demo, t_clip, t_gzip_demo
    out["clips_per_frame_demo"] = clips_core / frames_core
    return out


def trainer_cpu_per_clip(L: Ledger, a: Assumptions, results: dict, clip, j: dict, decode: dict) -> dict:
    """Input-pipeline core-seconds per clip, per format (read, gunzip, decode; the TFT layer is the same for all).

    Raw and clip-size JPEG come from the storage study, which timed both in one run at 16x112x112 (this machine's
    speed moved up to 2.5x between runs, so formats are compared within one run); source JPEG is the study's JPEG
    figure carried to source pixels plus the resize. The decode rate of results.json gives the cross-checks."""
    shape = cited(L, "study_shape")
    scale = prod(clip.shape) / prod(shape)
    cores = cited(L, "study_cores")
    study_jpeg = L("study core-s per clip-size JPEG clip", cited(L, "study_read_jpeg_s") * cores * scale, "s",
                   "study read+decode (JPEG) x its cores x clip size / study clip size")
    src_scale = L("source / clip-size frame pixel scale",
                  (j["src_px"] / (clip.height * clip.width)) ** a.pixel_exponent, "x",
                  "(source pixels / clip pixels) ** pixel_exponent")
    out = {
        "raw": L("trainer core-s per clip, raw", cited(L, "study_read_gz_s") * cores * scale, "s",
                 "study read+decode (gzipped) x its cores x clip bytes / study clip bytes"),
        "jpeg_source": L("trainer core-s per clip, source JPEG", study_jpeg * src_scale
                         * (1 + cited(L, "resize_over_decode")), "s",
                         "study clip-size JPEG x source pixel scale x (1 + resize / decode)"),
        "jpeg_clip": L("trainer core-s per clip, clip-size JPEG", study_jpeg, "s", "the study's figure"),
    }
    out["check_clip"] = L("cross-check: decode alone, clip-size JPEG", clip.num_frames * decode["clip"], "s",
                          "T x results.json decode per clip-size frame (another run)")
    out["check_source"] = L("cross-check: decode + resize alone, source JPEG",
                            clip.num_frames * decode["source"] * (1 + cited(L, "resize_over_decode")), "s",
                            "T x results.json decode per source frame x (1 + resize / decode)")
    inp = results["input"]
    input_clip = prod(map(int, inp["clip"].split("x"))) * 3
    out["check_raw"] = L("cross-check: raw clips through the Trainer's tf.data + Transform layer",
                         results["meta"]["cpus"] / inp["input_clips_s"] * prod(clip.shape) / input_clip, "s",
                         f"results.json meta.cpus / input.input_clips_s (at {inp['clip']}, another run) "
                         "x clip bytes ratio")
    return out


def trainer(L: Ledger, a: Assumptions, results: dict, shape_key: str, cpu_worker_cores: float, j: dict,
            nbytes: dict, cpu: dict) -> dict:
    model = results["model"][shape_key]
    gflops = L("GFLOPs per clip (forward)", model["gflops_per_clip"], "GFLOP",
               f"results.json model.{shape_key}.gflops_per_clip (bresnet/flops.py profiler)")
    gpu_rate = L("GPU training clips/s per worker", a.gpu_peak_flops * a.mfu / (gflops * 1e9 * a.train_flops_factor),
                 "clips/s", "gpu_peak_flops x mfu / (GFLOPs x train_flops_factor)")
    cpu_model_s = L("CPU model core-s per training clip", results["meta"]["cpus"] / model["train_fast_clips_s"], "s",
                    f"results.json meta.cpus / model.{shape_key}.train_fast_clips_s (project defaults)")
    cpu_rate = L("CPU worker training clips/s, model only", cpu_worker_cores / cpu_model_s, "clips/s",
                 "kubeflow.worker_cpu (cluster preset) / core-s per clip")
    out = {"gpu_rate": gpu_rate, "cpu_rate": cpu_rate}
    for f in FORMATS:
        bounds = {"GPU": gpu_rate, "input CPU": a.cores_per_gpu_worker / cpu[f],
                  "storage": a.storage_bytes_s_per_gpu_worker / nbytes[f]}
        bound = min(bounds, key=bounds.get)
        achieved = L(f"GPU worker clips/s, {f}", bounds[bound], "clips/s",
                     f"min(GPU rate, cores_per_gpu_worker / input core-s, storage / bytes): {bound}")
        clips = j["train_clips"] * a.passes
        out[f] = {
            "bandwidth": L(f"input bandwidth per GPU worker at GPU rate, {f}", gpu_rate * nbytes[f], "B/s",
                           "GPU clips/s x bytes per clip"),
            "cores": L(f"input cores per GPU worker at GPU rate, {f}", gpu_rate * cpu[f], "cores",
                       "GPU clips/s x input core-s per clip"),
            "achieved": achieved, "bound": bound,
            "wall": L(f"trainer wall per pass, {f}", clips / (a.gpu_workers * achieved), "s",
                      "train clips x passes / (gpu_workers x achieved clips/s)"),
            "input_core_s": L(f"trainer input core-s per pass, {f}", clips * cpu[f], "s", "train clips x input core-s"),
            "gpu_s": L(f"trainer GPU-s per pass, {f}", clips / achieved, "s", "train clips / achieved clips/s"),
            "read": L(f"trainer bytes read per pass, {f}", clips * nbytes[f], "B", "train clips x bytes per clip"),
            "cpu_worker": L(f"CPU worker clips/s with input, {f}", cpu_worker_cores / (cpu_model_s + cpu[f]), "clips/s",
                            "worker cores / (model + input core-s per clip)"),
        }
    return out


def worker_cores(quantity: str) -> float:
    """A Kubernetes CPU quantity ('4', '500m') in cores."""
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def beam_wall(a: Assumptions, core_s: float, io_bytes: float, startup_s: float) -> tuple[float, str]:
    cpu_s = core_s / (a.beam_workers * a.cores_per_beam_worker)
    io_s = io_bytes / (a.beam_workers * a.storage_bytes_s_per_beam_worker)
    return startup_s + max(cpu_s, io_s), ("CPU" if cpu_s >= io_s else "storage")


def compute(rates: dict, results: dict, a: Assumptions, runner: str) -> tuple[dict, Ledger]:
    L = Ledger()
    cluster = load_config("cluster")
    clip = cluster.clips
    shape_key = f"{clip.num_frames}x{clip.height}x{clip.width}"
    if shape_key not in results["model"]:
        raise SystemExit(f"results.json has no model row for the cluster clip {shape_key}")
    b = rates["bytes"]
    j = job(L, a, b, clip)
    nbytes = clip_bytes(L, a, b, clip, j)
    decode_demo = L("JPEG decode core-s per demo frame",
                    results["meta"]["cpus"] / results["clipgen"]["decode_frames_s"], "s",
                    "results.json meta.cpus / clipgen.decode_frames_s (tf.io.decode_jpeg in tf.data, demo frames)")
    decode = {
        "source": L("JPEG decode core-s per Kinetics source frame", decode_demo * j["px_ratio"], "s",
                    "per demo frame x pixel scale"),
        "clip": L("JPEG decode core-s per clip-size frame", decode_demo * (clip.height * clip.width / j["demo_px"])
                  ** a.pixel_exponent, "s", "per demo frame x (clip pixels / demo pixels) ** pixel_exponent"),
    }
    cg = clipgen(L, a, rates, runner, clip, j, nbytes, decode)
    cpu = trainer_cpu_per_clip(L, a, results, clip, j, decode)
    tr = trainer(L, a, results, shape_key, worker_cores(cluster.kubeflow.worker_cpu), j, nbytes, cpu)

    job_server = rates.get("job_server_start_s", 0.0) if runner == "flink" else 0.0
    startup = L("Beam start-up per job", rates["clipgen"][runner]["startup_s"] + job_server, "s",
                f"rates: clipgen.{runner}.startup_s" + (" + job_server_start_s" if runner == "flink" else "")
                + " (this machine; a cluster's start-up is not measured)")
    tf_startup = rates["transform"][runner]["startup_s"]

    videos = a.videos
    stages = {}
    # Ingest: no rate measured; its floor is gzip of every byte it writes.
    in_bytes = L("Ingest bytes read", videos * j["video_bytes"], "B", "videos x bytes per video record")
    out_bytes = L("Ingest bytes written", in_bytes * a.ingest_gzip_ratio, "B", "bytes read x ingest_gzip_ratio")
    core_s = L("Ingest core-s (lower bound)", out_bytes * cg["t_gzip_byte"], "s",
               "bytes written x gzip core-s per byte; not measured (it also checks CRCs, parses and hashes records)")
    wall, bound = beam_wall(a, core_s, in_bytes + out_bytes, startup)
    stages["Ingest"] = {f: dict(core_s=core_s, read=in_bytes, written=out_bytes, wall=wall, bound=bound)
                        for f in FORMATS}

    clips_total = j["train_clips"] + j["eval_clips"]
    stages["ClipGen"] = {}
    for f in FORMATS:
        written = L(f"ClipGen bytes written, {f}", clips_total * nbytes[f], "B", "train + eval clips x bytes per clip")
        wall, bound = beam_wall(a, cg[f], out_bytes + written, startup)
        stages["ClipGen"][f] = dict(core_s=cg[f], read=out_bytes, written=written, wall=wall, bound=bound)

    tf_core = per_core(L, rates, "transform", runner, "steady_clips_s")
    tf_scale = L("Transform cost scale, cluster clip / demo clip", prod(clip.shape) / prod(b["clip_shape"]), "x",
                 "raw clip bytes ratio: its analyzers read every clip")
    stages["Transform"] = {}
    for f in FORMATS:
        core_s = L(f"Transform core-s, {f}", j["train_clips"] * tf_scale / tf_core
                   + (0 if f == "raw" else j["train_clips"] * cpu[f]), "s",
                   "train clips x scale / per-core clips/s (per-clip overheads scaled too: an upper bound)"
                   + ("" if f == "raw" else " + the trainer's input cost per clip (the analyzers need pixels)"))
        read = j["train_clips"] * nbytes[f]
        wall, bound = beam_wall(a, core_s, read, tf_startup)
        stages["Transform"][f] = dict(core_s=core_s, read=read, written=None, wall=wall, bound=bound)

    stages["Trainer"] = {f: dict(core_s=tr[f]["input_core_s"], read=tr[f]["read"], written=None, wall=tr[f]["wall"],
                                 bound=tr[f]["bound"], gpu_s=tr[f]["gpu_s"]) for f in FORMATS}
    t = cluster.training
    preset_clips = L("cluster preset's training clips", t["epochs"] * t["steps_per_epoch"] * t["workers"]
                     * t["batch_size_per_worker"], "", "epochs x steps_per_epoch x workers x batch_size_per_worker")
    return dict(job=j, bytes=nbytes, clipgen=cg, cpu=cpu, trainer=tr, stages=stages, clip=clip, shape_key=shape_key,
                preset_clips=preset_clips, cluster=cluster, rates=rates, results=results, runner=runner,
                cpu_presets=[name for name in PRESETS if load_config(name).kubeflow.worker_gpu == 0]), L


# ---- the decision ---------------------------------------------------------------------------------------

def choose(a: Assumptions, rate: dict) -> str:
    """The format with the highest rate, unless it beats lossless raw clips by less than ``raw_margin``."""
    best = max(FORMATS, key=rate.get)
    return "raw" if rate[best] < a.raw_margin * rate["raw"] else best


def decision(a: Assumptions, r: dict) -> tuple[str, str]:
    """(format for CPU workers, format for GPU workers), each by clips/s a worker trains end to end."""
    tr = r["trainer"]
    return (choose(a, {f: tr[f]["cpu_worker"] for f in FORMATS}),
            choose(a, {f: tr[f]["achieved"] for f in FORMATS}))


# The formats above that ClipGen can store, by their clips.frame_format name (components/frame_formats.py).
BUILT = {"raw": RAW, "jpeg_clip": JPEG}


def setting_text(on_cpu: str, on_gpu: str) -> str:
    """What clips.frame_format's "auto" picks (read from pipeline/config.py, not restated) against the decision."""
    picks = {"CPU": load_config("cluster").clip_frame_format,
             "GPU": load_config("cluster", ["kubeflow.worker_gpu=1"]).clip_frame_format}
    wanted = {"CPU": BUILT.get(on_cpu), "GPU": BUILT.get(on_gpu)}
    if picks == wanted:
        return (f"Built: `clips.frame_format` (raw | jpeg | auto); its default `auto` stores {picks['CPU']} clips "
                f"when the replicas have no GPU (`kubeflow.worker_gpu: 0`) and {picks['GPU']} (a JPEG per frame at "
                "the clip's size) when they have GPUs, as decided here.")
    return (f"NOT as decided: `clips.frame_format: auto` stores {picks['CPU']} on CPU workers and {picks['GPU']} on "
            f"GPU workers, where these numbers pick {SHORT[on_cpu]} and {SHORT[on_gpu]}"
            + (" (a format ClipGen cannot store)" if None in wanted.values() else "") + ".")


def decision_text(a: Assumptions, r: dict) -> str:
    tr, nb = r["trainer"], r["bytes"]
    on_cpu, on_gpu = decision(a, r)
    raw = tr["raw"]
    written = {f: nbytes_text(r["stages"]["ClipGen"][f]["written"]) for f in FORMATS}
    if on_cpu == on_gpu == "raw":
        verdict = "Clips stay raw uint8."
    elif on_cpu == on_gpu:
        verdict = f"Clips become {SHORT[on_cpu]}."
    else:
        verdict = "It depends on a setting."
    cpu_rates = ", ".join(f"{SHORT[f]} {tr[f]['cpu_worker']:.1f}" for f in FORMATS)
    shares = [tr[f]["cpu_worker"] / tr["cpu_rate"] for f in FORMATS]
    text = [f"**{verdict}** On CPU workers (`kubeflow.worker_gpu` is 0 in the presets "
            f"{', '.join(r['cpu_presets'])}) the model "
            f"takes {min(shares):.0%} to {max(shares):.0%} of a worker's core time: a "
            f"{r['cluster'].kubeflow.worker_cpu}-core worker trains {cpu_rates} clips/s (model alone "
            f"{tr['cpu_rate']:.1f}), so "
            + (f"raw clips win: lossless, no JPEG decode per epoch, and no format is {a.raw_margin:g}x faster."
               if on_cpu == "raw" else f"{SHORT[on_cpu]} wins by at least {a.raw_margin:g}x.")]
    text.append(f"On a GPU worker at the assumed {tr['gpu_rate']:,.0f} clips/s, raw clips would need "
                f"{nbytes_text(raw['bandwidth'])}/s and {raw['cores']:,.0f} cores of input against the "
                f"{nbytes_text(a.storage_bytes_s_per_gpu_worker)}/s and {a.cores_per_gpu_worker} cores assumed; "
                f"raw reaches {raw['achieved']:,.0f} clips/s ({raw['bound']}-bound, "
                f"{raw['achieved'] / tr['gpu_rate']:.0%} of the GPU).")
    for f in ("jpeg_source", "jpeg_clip"):
        t = tr[f]
        text.append(f"{SHORT[f][0].upper() + SHORT[f][1:]}: {nbytes_text(nb[f])} a clip ({written[f]} of clips "
                    f"against raw's {written['raw']}), {r['cpu'][f] * 1e3:.3g} core-ms of input a clip against "
                    f"raw's {r['cpu']['raw'] * 1e3:.3g}, so {t['achieved']:,.0f} clips/s ({t['bound']}-bound, "
                    f"{t['achieved'] / raw['achieved']:.2g}x raw).")
    if on_gpu == "raw":
        text.append(f"No format is {a.raw_margin:g}x faster than raw on a GPU worker either.")
    else:
        text.append(f"So on GPU workers {SHORT[on_gpu]} wins.")
    if on_cpu != on_gpu:
        text.append(f"The clip format should therefore be a setting: {SHORT[on_cpu]} by default and "
                    f"for the presets {', '.join(r['cpu_presets'])}, {SHORT[on_gpu]} for GPU workers.")
    text.append(setting_text(on_cpu, on_gpu))
    if on_gpu == "jpeg_clip" or on_cpu == "jpeg_clip":
        text.append("The clip-size JPEG is a second lossy round (the study measured 32 dB PSNR at q90).")
    if all(tr[f]["bound"] != "GPU" for f in FORMATS):
        lo, hi = min(FORMATS, key=lambda f: tr[f]["cores"]), max(FORMATS, key=lambda f: tr[f]["cores"])
        text.append(f"No format feeds the GPU from {a.cores_per_gpu_worker} cores: at the GPU rate the input needs "
                    f"{tr[lo]['cores']:,.0f} ({SHORT[lo]}) to {tr[hi]['cores']:,.0f} ({SHORT[hi]}) cores per worker, "
                    "so a GPU cluster at that rate needs decoding off the CPU (not in this repo).")
    return " ".join(text)


# ---- rendering ------------------------------------------------------------------------------------------

def nbytes_text(x: float) -> str:
    for unit, scale in (("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.0f} B"


def num(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def duration(s: float) -> str:
    return f"{s / 3600:.3g} h" if s >= 3600 else f"{s / 60:.3g} min" if s >= 60 else f"{s:.3g} s"


def value_text(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def render(r: dict, L: Ledger, a: Assumptions, rates_path: str, results_path: str, fake: bool,
           other: dict | None = None) -> str:
    j, nb, tr, clip, cpu = r["job"], r["bytes"], r["trainer"], r["clip"], r["cpu"]
    meta = r["rates"]["meta"]
    shape = "x".join(map(str, clip.shape[:3]))
    lines = []
    if fake:
        lines += ["**NOT YET GENERATED FROM MEASUREMENTS**: the rates file holds made-up numbers; rerun "
                  "`python -m bench.scale` once bench/beam_runners.json exists.", ""]
    lines += [
        "# A Kinetics-700-sized job, on paper",
        "",
        f"Written by `python -m bench.scale --rates {rates_path} --runner {r['runner']}` from `{rates_path}` "
        f"({meta['cpu']}, {meta['cores']} cores, {meta['date']}; demo data {meta.get('videos_per_class', '?')} videos "
        f"per class and {meta.get('factor', '?')}x it, {meta.get('repeats', '?')} rounds), `{results_path}` (run of "
        f"{r['results']['meta']['started_utc']} UTC), the `cluster` preset (pipeline/config.py) and figures quoted "
        "in bench/README.md and README.md. Nothing ran at this scale: each figure is a rate measured on this "
        "2-core machine, carried to the job by the assumptions and arithmetic listed at the end (the ledger names "
        "the source of every number).",
        "",
        f"The job: {a.videos:,} videos of {a.video_seconds:g} s at {a.fps:g} fps ({j['frames']} frames) as JPEG "
        f"frames of {j['src_px']:,} pixels ({nbytes_text(j['src_frame_bytes'])} a frame, "
        f"{nbytes_text(j['video_bytes'])} a video); {j['train_videos']:,.0f} train videos x "
        f"{clip.clips_per_video_train} = {j['train_clips']:,.0f} train clips and {j['eval_videos']:,.0f} eval videos "
        f"x {clip.eval_views} views = {j['eval_clips']:,.0f} eval clips of {shape} (the `cluster` preset). "
        f"ClipGen decodes {j['decoded_train']:.0f} of a train video's {j['frames']} frames and "
        f"{j['decoded_eval']:.0f} of an eval video's. Beam steps: {a.beam_workers} workers x "
        f"{a.cores_per_beam_worker} cores at the measured `{r['runner']}` rates. Trainer: {a.gpu_workers} workers, "
        f"one {a.gpu} each, {a.cores_per_gpu_worker} cores and {nbytes_text(a.storage_bytes_s_per_gpu_worker)}/s "
        "of storage reads each.",
        "",
        "## Per stage",
        "",
        "Wall = the measured Beam start-up + the larger of core-seconds / cores and bytes / storage bandwidth "
        "(perfect scaling, so a lower bound). Trainer rows: one pass over the train clips; core-hours are its "
        "input pipeline's. Not counted: Transform's output (`materialize=False`: only the transform graph) and "
        "the Trainer's checkpoints. Transform with JPEG clips: its measured rate plus the trainer's input cost "
        "per clip (its analyzers need pixels).",
        "",
        "| stage | clip format | core-hours | bytes read | bytes written | wall | bound by |",
        "|---|---|---|---|---|---|---|",
    ]
    for stage, per_format in r["stages"].items():
        for f in (("raw",) if stage == "Ingest" else FORMATS):
            s = per_format[f]
            hours = num(s["core_s"] / 3600)
            if stage == "Ingest":
                hours += " (lower bound: not measured)"
            if "gpu_s" in s:
                hours += f" + {s['gpu_s'] / 3600:.3g} GPU-hours"
            written = "-" if s["written"] is None else nbytes_text(s["written"])
            lines.append(f"| {stage} | {'any' if stage == 'Ingest' else SHORT[f]} | {hours} | {nbytes_text(s['read'])} "
                         f"| {written} | {duration(s['wall'])} | {s['bound']} |")
    if other:
        lines += ["", f"With the `{other['runner']}` runner's rates from the same file instead (`--runner "
                  f"{other['runner']}`): ClipGen {other['clipgen_h']:.3g} core-hours (raw clips), Transform "
                  f"{other['transform_h']:.3g}."]
    lines += [
        "",
        f"The `cluster` preset as written trains on {r['preset_clips']:,.0f} clips in all "
        f"({r['preset_clips'] / j['train_clips']:.1%} of one pass over these train clips).",
        "",
        "## Clip storage format and the trainer's input",
        "",
        f"GPU rate per worker: {r['results']['model'][r['shape_key']]['gflops_per_clip']:.2f} GFLOPs per {shape} "
        f"clip (results.json) x {a.train_flops_factor:g} for training, at {a.mfu:.0%} MFU of "
        f"{a.gpu_peak_flops / 1e12:,.0f} TFLOP/s = **{tr['gpu_rate']:,.0f} clips/s**: an assumption, not a "
        f"measurement (no GPU here). A CPU worker of the preset ({r['cluster'].kubeflow.worker_cpu} cores) trains "
        f"{tr['cpu_rate']:.1f} clips/s (this machine's rate per core, model only).",
        "",
        "| format | bytes per clip | all clips | trainer input core-ms per clip | GPU worker at the GPU rate: "
        "input bandwidth | and input cores | GPU worker achieves | wall per pass | CPU worker clips/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for f in FORMATS:
        t = tr[f]
        lines.append(
            f"| {FORMAT_NAMES[f]} | {nbytes_text(nb[f])} | {nbytes_text(r['stages']['ClipGen'][f]['written'])} | "
            f"{cpu[f] * 1e3:.3g} | {nbytes_text(t['bandwidth'])}/s | {t['cores']:,.0f} | {t['achieved']:,.0f} "
            f"clips/s ({t['achieved'] / tr['gpu_rate']:.0%} of the GPU; {t['bound']}-bound) | {duration(t['wall'])} "
            f"| {t['cpu_worker']:.1f} |")
    lines += [
        "",
        f"Raw clips are {nb['raw'] / nb['jpeg_clip']:.1f}x the clip-size JPEG (the storage study measured "
        f"{CITED['study_gz_bytes'][0] / CITED['study_jpeg_bytes'][0]:.1f}x with its zlib-6 files) and "
        f"{nb['raw'] / nb['jpeg_source']:.1f}x the source JPEG frames of a clip. Input core-ms per clip: raw and "
        "clip-size JPEG as the storage study timed them in one run; source JPEG from the study's JPEG figure "
        "carried to source pixels plus the resize. Cross-checks from results.json (another run, scaled from the "
        f"demo's sizes): {cpu['check_clip'] * 1e3:.3g} core-ms for clip-size JPEG and {cpu['check_source'] * 1e3:.3g} "
        "for source JPEG from its JPEG decode rate, "
        f"{cpu['check_raw'] * 1e3:.3g} for raw clips from its input rate (Transform layer included). CPU worker "
        "clips/s: the preset's cores shared by the model and the input.",
        "",
        "## Decision",
        "",
        decision_text(a, r),
        "",
        "## Assumptions (`Assumptions` in bench/scale.py)",
        "",
        "| name | value | why |",
        "|---|---|---|",
    ]
    for field in dataclasses.fields(Assumptions):
        lines.append(f"| `{field.name}` | {value_text(getattr(a, field.name))} | {field.metadata['why']} |")
    lines += ["", "## Ledger: every number and where it came from", "", "| quantity | value | unit | from |",
              "|---|---|---|---|"]
    lines += [f"| {name} | {value_text(value)} | {unit} | {source} |" for name, value, unit, source in L.rows]
    return "\n".join(lines) + "\n"


# ---- entry points ---------------------------------------------------------------------------------------

FAKE_RATES = {
    "meta": {"cpu": "FAKE (--check)", "cores": 2, "date": "FAKE", "videos_per_class": 100, "factor": 8, "repeats": 1},
    "clipgen": {r: {"startup_s": 20.0, "steady_clips_s": 5000.0, "steady_videos_s": 740.0,
                    "steady_frames_decoded_s": 12500.0, "parallelism": 2} for r in ("direct", "flink")},
    "transform": {r: {"startup_s": 10.0, "steady_clips_s": 2500.0, "parallelism": 2} for r in ("direct", "flink")},
    "job_server_start_s": 5.0,
    "bytes": {"clip_bytes": 12288.0, "clip_shape": [8, 32, 32, 3], "video_record_bytes": 36000.0,
              "frames_per_video": 18.0, "source_frame_pixels": 6400.0, "clips_per_video_train": 8},
}
FAKE_RESULTS = {
    "meta": {"cpus": 2, "started_utc": "FAKE"},
    "clipgen": {"decode_frames_s": 16000.0},
    "input": {"clip": "8x32x32", "input_clips_s": 4000.0},
    "model": {"16x112x112": {"gflops_per_clip": 5.6, "train_fast_clips_s": 10.0}},
}


def check() -> None:
    a = Assumptions()
    r, L = compute(FAKE_RATES, FAKE_RESULTS, a, "flink")
    j, cg, clip = r["job"], r["clipgen"], r["clip"]
    close = lambda x, y: math.isclose(x, y, rel_tol=1e-9)  # noqa: E731
    # The ClipGen cost model, applied to the demo's own clips, gives back the measured cost per clip.
    demo = cg["t_frame_demo"] / cg["clips_per_frame_demo"] + cg["t_gzip_demo"]
    assert close(demo, 2 / 5000), demo
    # Transform: core-hours = clips / per-core rate / 3600, the rate scaled by clip bytes.
    per_core = 2500 / 2 / (prod(clip.shape) / prod(FAKE_RATES["bytes"]["clip_shape"]))
    assert close(r["stages"]["Transform"]["raw"]["core_s"] / 3600, j["train_clips"] / per_core / 3600)
    # Bytes and bandwidth are products of counts and sizes.
    for f in FORMATS:
        assert close(r["stages"]["ClipGen"][f]["written"], (j["train_clips"] + j["eval_clips"]) * r["bytes"][f])
        assert close(r["trainer"][f]["bandwidth"], r["trainer"]["gpu_rate"] * r["bytes"][f])
        assert r["trainer"][f]["achieved"] <= r["trainer"]["gpu_rate"] * (1 + 1e-12)
    # The GPU rate: peak x MFU / training FLOPs.
    assert close(r["trainer"]["gpu_rate"], 989e12 * 0.3 / (5.6e9 * 3))
    # Decoded frames: eval windows of a 300-frame video are disjoint; train windows decode at most all clips' frames.
    assert j["decoded_eval"] == 3 * 16 and 16 < j["decoded_train"] <= 8 * 16
    assert all(isinstance(row[3], str) and row[3] for row in L.rows)
    render(r, L, a, "(embedded)", "(embedded)", fake=True)
    print(f"bench.scale --check: ok ({len(L.rows)} ledger rows)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rates", default=os.path.join("bench", "beam_runners.json"))
    parser.add_argument("--results", default=os.path.join("bench", "results.json"))
    parser.add_argument("--runner", default="flink", choices=("flink", "direct"))
    parser.add_argument("--out", default=os.path.join("bench", "SCALE.md"))
    parser.add_argument("--check", action="store_true",
                        help="recompute on embedded made-up inputs and assert identities")
    args = parser.parse_args(argv)
    if args.check:
        check()
        return
    if not os.path.exists(args.rates):
        raise SystemExit(f"{args.rates} not found: run the Beam runner benchmark first, or pass --rates")
    with open(args.rates) as f:
        rates = json.load(f)
    with open(args.results) as f:
        results = json.load(f)
    a = Assumptions()
    r, L = compute(rates, results, a, args.runner)
    fake = "FAKE" in str(rates["meta"].get("cpu", "")) + str(rates["meta"].get("date", ""))
    other = None
    other_runner = "direct" if args.runner == "flink" else "flink"
    try:
        o, _ = compute(rates, results, a, other_runner)
    except (KeyError, SystemExit):   # that runner not measured, or no steady state
        o = None
    if o:
        other = {"runner": other_runner, "clipgen_h": o["stages"]["ClipGen"]["raw"]["core_s"] / 3600,
                 "transform_h": o["stages"]["Transform"]["raw"]["core_s"] / 3600}
    text = render(r, L, a, args.rates, args.results, fake, other)
    with open(args.out, "w") as f:
        f.write(text)
    for name, value, unit, source in L.rows:
        print(f"{name}: {value if isinstance(value, tuple) else format(value, '.4g')} {unit}  <- {source}")
    print(f"wrote {args.out}" + (" (NOT from measurements)" if fake else ""), file=sys.stderr)


if __name__ == "__main__":
    main()
