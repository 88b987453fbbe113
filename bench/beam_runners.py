"""ClipGen and Transform on Flink (parallelism 2) and on the DirectRunner, on the same data in the same run (#13).

  python -m bench.beam_runners [--out bench/out/beam_runners] [--videos-per-class 25] [--factor 16] [--repeats 3]
                               [--json bench/beam_runners.json]

Not part of `make bench` (minutes of Flink jobs). Runners, each with the arguments the project builds:
``direct``: DirectRunner, multi_processing with 2 workers (the default ``beam_args``); ``flink``: what
``--beam-runner flink`` compiles to (pipeline/config.py): an embedded Flink cluster in one job server for the whole
process (components/beam_workers.py), parallelism 2, SDK worker processes.

Jobs: ClipGen's Beam branch (both splits, components/clipgen/transforms.clip_split, the demo clip recipe) and
Transform's analysis (tft_beam.AnalyzeDataset of components/transform_module.preprocessing_fn over the clips ClipGen
wrote, as TFX's Transform runs it with ``materialize=False``), each on the demo data (seeded, ``--videos-per-class``)
and on ``--factor`` copies of it. Every job of a round runs in turn (runner x size), ``--repeats`` rounds; medians.
A job's seconds include a fixed start-up (job submission, Flink's job graph, SDK worker processes with their
imports); the steady-state rate is the difference of the two sizes, (items xF - items x1) / (seconds xF - seconds
x1), and start-up = seconds x1 - items x1 / steady rate. The Flink job server's own start (a JVM, once per process)
is timed apart: the first trivial Flink job minus the second. Writes ``--json`` (read by bench/scale.py) and prints
a table. The CPU, core count and ONEDNN_MAX_CPU_ISA are recorded; everything here is float32 CPU work (JPEG decode,
resize, gzip, TF reductions), no matmul-bound kernels.
"""
from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import shutil
import statistics
import time

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DIRECT = ["--runner=DirectRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2"]


def flink_args() -> list[str]:
    from components import beam_workers
    from pipeline.config import load_config
    args = load_config("demo", {"labels": ["a", "b"], "beam": {"runner": "flink"}}).beam_pipeline_args()
    beam_workers.prepare(args)
    return args


def trivial_job(beam_args: list[str]) -> float:
    import apache_beam as beam
    start = time.perf_counter()
    with beam.Pipeline(argv=list(beam_args)) as p:
        _ = p | beam.Create(list(range(10))) | beam.Map(lambda x: x * 2)
    return time.perf_counter() - start


def transform_job(clips_dir: str, out: str, beam_args: list[str], clip_shape: list[int]) -> dict:
    """Transform's analysis over every clip under ``clips_dir``; seconds and clips analyzed."""
    import apache_beam as beam
    import tensorflow_transform.beam as tft_beam
    from tfx_bsl.public import tfxio

    from components.clipgen.schema import write_clip_schema
    from components.transform_module import preprocessing_fn
    from tfx.utils import io_utils
    from tensorflow_metadata.proto.v0 import schema_pb2

    shutil.rmtree(out, ignore_errors=True)
    schema = io_utils.parse_pbtxt_file(write_clip_schema(os.path.join(out, "schema")), schema_pb2.Schema())
    files = sorted(glob.glob(os.path.join(clips_dir, "*", "*.gz")))
    source = tfxio.TFExampleRecord(file_pattern=files, schema=schema, telemetry_descriptors=["bench"])
    start = time.perf_counter()
    with beam.Pipeline(argv=list(beam_args)) as p:
        with tft_beam.Context(temp_dir=os.path.join(out, "tmp")):
            raw = p | "Read" >> source.BeamSource()
            transform_fn = ((raw, source.TensorAdapterConfig())
                            | tft_beam.AnalyzeDataset(lambda x: preprocessing_fn(x, {"clip_shape": clip_shape})))
            _ = transform_fn | tft_beam.WriteTransformFn(os.path.join(out, "transform_fn"))
    seconds = time.perf_counter() - start
    import tensorflow as tf
    clips = sum(1 for _ in tf.data.TFRecordDataset(files, compression_type="GZIP"))
    return {"seconds": seconds, "clips": clips}


def steady(small: dict, large: dict, t_small: float, t_large: float, key: str) -> tuple[float | None, float | None]:
    """(steady rate of ``key`` per second, start-up seconds) from the two sizes; None when the larger job was not
    slower (no steady state to tell)."""
    if t_large <= t_small:
        return None, None
    rate = (large[key] - small[key]) / (t_large - t_small)
    return rate, t_small - small[key] / rate


def data_bytes(data_dir: str, clips_dir: str, clips: int) -> dict:
    import tensorflow as tf

    from components.video_format import parse_video
    files = sorted(glob.glob(os.path.join(data_dir, "*", "*.tfrecord*")))
    records = [r.numpy() for r in tf.data.TFRecordDataset(files)]
    videos = [parse_video(r) for r in records]
    frames = sum(len(v.jpeg_frames) for v in videos)
    pixels = statistics.mean(int(tf.reduce_prod(tf.io.extract_jpeg_shape(v.jpeg_frames[0])[:2])) for v in videos)
    clip_bytes = sum(os.path.getsize(p) for p in glob.glob(os.path.join(clips_dir, "*", "*.gz")))
    return {"video_record_bytes": statistics.mean(len(r) for r in records), "frames_per_video": frames / len(videos),
            "source_frame_pixels": pixels, "clip_bytes": clip_bytes / clips}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/out/beam_runners")
    parser.add_argument("--json", default="bench/beam_runners.json")
    parser.add_argument("--videos-per-class", type=int, default=25)
    parser.add_argument("--factor", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    from bench.clipgen_speed import _record_digests, clip_config, demo_dataset, replicated, run_clipgen
    from bench.warm_start import cpu_model
    from components import beam_workers
    from pipeline.config import ClipConfig

    os.makedirs(args.out, exist_ok=True)
    data = demo_dataset(args.out, args.videos_per_class)
    sizes = {"x1": data, f"x{args.factor}": replicated(data, args.factor, args.out)}
    runners = {"direct": DIRECT, "flink": flink_args()}

    first = trivial_job(runners["flink"])        # starts the job server (once per process)
    second = trivial_job(runners["flink"])
    job_server_start_s = first - second
    print(f"Flink: first trivial job {first:.1f} s, second {second:.1f} s: "
          f"job server start ~{job_server_start_s:.1f} s",
          flush=True)

    clip_shape = list(ClipConfig().shape)
    times: dict[str, list[float]] = {}
    results: dict[str, dict] = {}
    for round_ in range(args.repeats):
        for runner, beam_args in runners.items():
            for size, path in sizes.items():
                clips_dir = os.path.join(args.out, f"clips_{runner}_{size}")
                result = run_clipgen(path, clips_dir, beam_args)
                times.setdefault(f"clipgen/{runner}/{size}", []).append(result["seconds"])
                results[f"clipgen/{runner}/{size}"] = result
                t = transform_job(os.path.join(clips_dir, "clips"), os.path.join(args.out, f"tft_{runner}_{size}"),
                                  beam_args, clip_shape)
                times.setdefault(f"transform/{runner}/{size}", []).append(t["seconds"])
                results[f"transform/{runner}/{size}"] = t
                print(f"round {round_ + 1}/{args.repeats} {runner:6s} {size:3s}: ClipGen {result['seconds']:6.1f} s "
                      f"({result['clips']} clips), Transform {t['seconds']:6.1f} s ({t['clips']} clips)", flush=True)
    beam_workers.stop_job_servers()

    big = f"x{args.factor}"
    median = {name: statistics.median(ts) for name, ts in times.items()}
    report = {"meta": {"cpu": cpu_model(), "cores": os.cpu_count(), "date": datetime.date.today().isoformat(),
                       "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
                       "videos_per_class": args.videos_per_class, "factor": args.factor, "repeats": args.repeats,
                       "clip_shape": clip_shape, "runner_args": runners},
              "job_server_start_s": job_server_start_s, "clipgen": {}, "transform": {}, "seconds": median}
    for runner in runners:
        small, large = results[f"clipgen/{runner}/x1"], results[f"clipgen/{runner}/{big}"]
        t_small, t_large = median[f"clipgen/{runner}/x1"], median[f"clipgen/{runner}/{big}"]
        clips_s, startup = steady(small, large, t_small, t_large, "clips")
        videos_s, _ = steady(small, large, t_small, t_large, "videos")
        frames_s, _ = steady(small, large, t_small, t_large, "frames_decoded")
        report["clipgen"][runner] = {"parallelism": 2, "startup_s": startup, "steady_clips_s": clips_s,
                                     "steady_videos_s": videos_s, "steady_frames_decoded_s": frames_s,
                                     "seconds_x1": t_small, f"seconds_{big}": t_large,
                                     "clips_x1": small["clips"], f"clips_{big}": large["clips"]}
        small, large = results[f"transform/{runner}/x1"], results[f"transform/{runner}/{big}"]
        t_small, t_large = median[f"transform/{runner}/x1"], median[f"transform/{runner}/{big}"]
        clips_s, startup = steady(small, large, t_small, t_large, "clips")
        report["transform"][runner] = {"parallelism": 2, "startup_s": startup, "steady_clips_s": clips_s,
                                       "seconds_x1": t_small, f"seconds_{big}": t_large}
    clips_dir = os.path.join(args.out, "clips_direct_x1", "clips")
    report["bytes"] = {**data_bytes(data, clips_dir, results["clipgen/direct/x1"]["clips"]), "clip_shape": clip_shape,
                       "clips_per_video_train": clip_config(data).clips_per_video_train}
    same = _record_digests(os.path.join(args.out, "clips_direct_x1")) == _record_digests(
        os.path.join(args.out, "clips_flink_x1"))
    report["same_clips"] = same
    with open(args.json, "w") as f:
        json.dump(report, f, indent=2, sort_keys=True)
    print(json.dumps({k: report[k] for k in ("job_server_start_s", "clipgen", "transform", "same_clips")}, indent=2))
    return report


if __name__ == "__main__":
    main()
