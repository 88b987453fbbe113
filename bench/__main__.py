"""`python -m bench`: the benchmark table (bench/README.md) and bench/results.json. `make bench` runs it.

  python -m bench [--tiny] [--out DIR] [--readme PATH|--no-readme] [--work DIR] [--only SECTION ...]
                  [--demo-metadata PATH]

Sections: clipgen (ClipGen vs decode limit), memory (ClipGen peak RSS 1x vs 4x data), input (tf.data +
Transform vs trainer consumption), multiworker (2 vs 1 MWMS workers), model (speed vs a plain reference, MFU,
levers), model_avx2 (the model rows again with oneDNN capped at AVX2: float32, as on a CPU without AVX-512),
runtime (thread pools and oneDNN, one process per setting), serving (float32 vs bfloat16 export served on this CPU
and as on an AVX2 CPU), demo (per-component times of the newest demo run).
``--tiny`` shrinks every shape and repeat count so that the whole harness runs in about two minutes (CI runs it so
it cannot rot; its numbers mean nothing).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import logging
import os
import platform
import sys
import time

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SECTIONS = ("clipgen", "memory", "input", "multiworker", "model", "model_avx2", "runtime", "serving", "demo")
logger = logging.getLogger("bench")


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    name: str
    videos_per_class: int            # demo data for ClipGen (100 = the demo's own dataset)
    clipgen_repeats: int
    clipgen_factor: int              # steady state from the demo data and this many copies of it
    beam_modes: tuple                # ClipGen's Beam modes timed (bench.clipgen_speed.BEAM_MODES)
    memory_factor: int
    input_batch: int
    input_batches: int
    input_repeats: int
    mwms_global_batch: int
    mwms_epochs: int
    mwms_steps: int
    mwms_repeats: int
    model_cases: tuple
    model_avx2_cases: tuple          # the model rows under ONEDNN_MAX_CPU_ISA=AVX2 (float32)
    model_repeats: int
    model_child_runs: int            # child processes per model lever, best rate kept (bench/model_speed.py)
    matmul_n: int
    runtime_clip: tuple             # bench.runtime_levers: clip shape, batch, timed steps, repeats
    runtime_batch: int
    runtime_steps: int
    runtime_repeats: int
    serving_cases: tuple = ()        # bench.serving_rate: (clip shape, batch) pairs
    serving_repeats: int = 1
    runtime_settings: tuple | None = None   # bench.runtime_levers.SETTINGS names (None: all)


def configs() -> dict[str, BenchConfig]:
    from bench.model_speed import ModelCase
    return {
        "full": BenchConfig("full", videos_per_class=100, clipgen_repeats=2, clipgen_factor=8, model_child_runs=3,
                            beam_modes=("in_memory_1", "multi_processing"), memory_factor=4, input_batch=8,
                            input_batches=40, input_repeats=3, mwms_global_batch=8, mwms_epochs=3, mwms_steps=25,
                            mwms_repeats=1, model_repeats=3, matmul_n=2048, runtime_clip=(16, 112, 112, 3),
                            runtime_batch=8, runtime_steps=4, runtime_repeats=2,
                            model_cases=(ModelCase((16, 112, 112, 3), 8, 8, ("float32", "bf16", "xla")),
                                         ModelCase((32, 256, 256, 3), 2, 2, ("float32", "bf16"))),
                            # The design size and the demo's clips (op-overhead bound), float32 under the cap.
                            model_avx2_cases=(ModelCase((16, 112, 112, 3), 8, 8, ()),
                                              ModelCase((8, 32, 32, 3), 8, 8, ())),
                            # Issue #11's own serving measurement (16x112x112, batch 4) and the demo's clips.
                            serving_cases=(((16, 112, 112, 3), 4), ((8, 32, 32, 3), 8)), serving_repeats=10),
        "tiny": BenchConfig("tiny", videos_per_class=4, clipgen_repeats=1, clipgen_factor=4, model_child_runs=1,
                            beam_modes=("in_memory_1",), memory_factor=4, input_batch=2,
                            input_batches=3, input_repeats=1, mwms_global_batch=2, mwms_epochs=2, mwms_steps=2,
                            mwms_repeats=1, model_repeats=1, matmul_n=256, runtime_clip=(4, 32, 32, 3),
                            runtime_batch=2, runtime_steps=1, runtime_repeats=1,
                            # Every setting runs the same child code: two of them prove the harness in CI.
                            runtime_settings=("default", "oneDNN off"),
                            model_cases=(ModelCase((4, 32, 32, 3), 2, 2, ("float32", "bf16", "xla")),),
                            model_avx2_cases=(ModelCase((4, 32, 32, 3), 2, 2, ()),),
                            serving_cases=(((4, 32, 32, 3), 2),), serving_repeats=1),
    }


def meta(config: BenchConfig, started: float) -> dict:
    import tensorflow as tf
    from components.trainer.precision import cpu_flags
    cpu = ", ".join(sorted({"avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16"} & cpu_flags())) \
        or platform.machine()
    return {"config": config.name, "cpus": os.cpu_count(), "cpu": cpu, "tensorflow": tf.__version__,
            "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
            "python": sys.version.split()[0],
            "started_utc": datetime.datetime.fromtimestamp(started, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny shapes and 1 repeat (CI: the harness runs)")
    parser.add_argument("--out", default="bench", help="where results.json goes (default: bench)")
    parser.add_argument("--readme", default="bench/README.md", help="markdown file whose table is rewritten")
    parser.add_argument("--no-readme", action="store_true", help="write results.json only")
    parser.add_argument("--work", default="bench/out/work", help="scratch space (datasets, clips, models)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run these sections only")
    parser.add_argument("--demo-metadata", default="runs/demo/metadata.sqlite",
                        help="ML Metadata store of a demo run, for the per-component times")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", force=True)

    from bench import (clipgen_speed, demo_times, input_speed, model_speed, multiworker, report, runtime_levers,
                       serving_rate)
    from components.video_format import LabelMap
    from pipeline.config import ClipConfig

    config = configs()["tiny" if args.tiny else "full"]
    sections = args.only or SECTIONS
    started = time.time()
    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    results: dict = {}

    def timed(name, fn):
        t0 = time.perf_counter()
        results[name] = fn()
        logger.info("section %s done in %.1fs", name, time.perf_counter() - t0)
        results.setdefault("section_seconds", {})[name] = round(time.perf_counter() - t0, 1)

    # The demo's own dataset when it is there (make demo made it), else generated into the work directory.
    data_dir = ("demo_data" if not args.tiny and os.path.exists("demo_data/label_map.txt")
                else clipgen_speed.demo_dataset(work, config.videos_per_class))
    labels = LabelMap.load(data_dir).labels
    clip_shape = ClipConfig().shape
    clips_root = os.path.join(work, f"clipgen_{config.beam_modes[-1]}_x1", "clips")
    needs_clips = {"input", "multiworker"} & set(sections)
    if "clipgen" in sections:
        timed("clipgen", lambda: clipgen_speed.bench_rate(data_dir, work, config.clipgen_repeats, config.beam_modes,
                                                                        config.clipgen_factor))
    elif needs_clips and not os.path.isdir(os.path.join(clips_root, "train")):
        clipgen_speed.run_clipgen(data_dir, os.path.dirname(clips_root), clipgen_speed.BEAM_MODES[config.beam_modes[-1]])
    if "memory" in sections:
        timed("memory", lambda: clipgen_speed.bench_memory(data_dir, work, config.memory_factor, config.beam_modes[-1]))
    graph = os.path.join(work, "transform_graph")
    if "input" in sections:
        timed("input", lambda: input_speed.bench_input(os.path.join(clips_root, "train"), labels, clip_shape, work,
                                                       config.input_batch, config.input_batches, config.input_repeats))
    if "multiworker" in sections:
        import glob
        input_speed.build_transform_graph(sorted(glob.glob(os.path.join(clips_root, "train", "*.gz"))), labels,
                                          clip_shape, graph, os.path.join(work, "tft_tmp"))
        timed("multiworker", lambda: multiworker.bench_multiworker(
            os.path.join(clips_root, "train"), os.path.join(clips_root, "eval"), graph, labels, clip_shape, work,
            config.mwms_global_batch, config.mwms_epochs, config.mwms_steps, config.mwms_repeats))
    if "model" in sections:
        timed("model", lambda: model_speed.run(config.model_cases, config.model_repeats, config.matmul_n,
                                                            config.model_child_runs))
    if "model_avx2" in sections:
        timed("model_avx2", lambda: model_speed.run_capped(config.model_avx2_cases, config.model_repeats,
                                                           config.matmul_n, config.model_child_runs))
    if "runtime" in sections:
        timed("runtime", lambda: runtime_levers.bench_runtime_levers(config.runtime_clip, config.runtime_batch,
                                                                     config.runtime_steps, config.runtime_repeats,
                                                                     config.runtime_settings))
    if "serving" in sections:
        timed("serving", lambda: serving_rate.bench_serving(config.serving_cases, work, config.serving_repeats))
    if "demo" in sections:
        timed("demo", lambda: demo_times.component_seconds(args.demo_metadata))
    results["meta"] = {**meta(config, started), "seconds": time.time() - started}
    table = report.write(results, args.out, None if args.no_readme else args.readme)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
