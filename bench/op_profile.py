"""Where a training step's time goes, per op type, from TensorFlow's profiler (not part of `make bench`).

  python -m bench.op_profile [--clip 8x32x32] [--batch 8] [--steps 5] [--precision auto]
  ONEDNN_MAX_CPU_ISA=AVX2 python -m bench.op_profile ...     # oneDNN dispatching as on a CPU without AVX-512

The model and optimizer are the Trainer's (``training.build_model`` + ``compile_model``), one process, no
distribution, ``train_on_batch`` on a fixed random batch after 3 warm-up steps. The profiler's host trace is read
straight from its XSpace file: every TensorFlow op event ("scope/name:OpType") is summed by op type. Ops run in
parallel on several threads, so the sum exceeds the wall time; the shares are what to read.
"""
from __future__ import annotations

import argparse
import collections
import glob
import os
import tempfile

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import numpy as np  # noqa: E402

from bresnet._keras import keras  # noqa: E402,F401  (Keras mode first)
import tensorflow as tf  # noqa: E402

WRAPPERS = ("Process", "Run", "Start")   # executor and function-call events that contain op events


def op_type_times(xplane_path: str) -> tuple[collections.Counter, collections.Counter]:
    """(picoseconds, occurrences) per op type over the host plane of a profiler XSpace file."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2
    space = xplane_pb2.XSpace()
    with open(xplane_path, "rb") as f:
        space.ParseFromString(f.read())
    times, counts = collections.Counter(), collections.Counter()
    for plane in space.planes:
        if plane.name != "/host:CPU":
            continue
        for line in plane.lines:
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if ":" not in name or name.startswith(("__inference", "EagerExecute", "FunctionRun")):
                    continue
                op_type = name.rsplit(":", 1)[1]
                if not op_type or " " in op_type or op_type in WRAPPERS:
                    continue
                times[op_type] += event.duration_ps
                counts[op_type] += 1
    return times, counts


def profile(clip_shape: tuple[int, int, int, int], batch: int, steps: int, precision: str = "auto") -> dict:
    from components.trainer import precision as precisions, training
    from components.trainer.config import TrainingConfig
    config = TrainingConfig(labels=tuple(f"class{i}" for i in range(8)), clip_shape=clip_shape,
                            batch_size_per_worker=batch, warmup_cosine=False, precision=precision)
    model = training.build_model(config)
    training.compile_model(model, config)
    x = tf.random.stateless_normal((batch, *clip_shape), seed=(1, 2))
    y = tf.constant(np.arange(batch) % 8)
    for _ in range(3):
        model.train_on_batch(x, y)
    logdir = tempfile.mkdtemp(prefix="op_profile_")
    tf.profiler.experimental.start(logdir)
    for _ in range(steps):
        model.train_on_batch(x, y)
    tf.profiler.experimental.stop()
    [xplane] = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
    times, counts = op_type_times(xplane)
    total = sum(times.values())
    return {"clip": "x".join(map(str, clip_shape[:3])), "batch": batch, "steps": steps,
            "precision": precisions.compute_precision(config),
            "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
            "op_ms_per_step": total / steps / 1e9, "ops_per_step": sum(counts.values()) // steps,
            "by_type": [(op, ps / steps / 1e9, ps / total, counts[op] // steps) for op, ps in times.most_common()]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", default="8x32x32", help="T x H x W (default: the demo's clips)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--precision", default="auto", choices=("auto", "float32", "bfloat16"))
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args(argv)
    clip = tuple(int(d) for d in args.clip.split("x")) + (3,)
    result = profile(clip, args.batch, args.steps, args.precision)
    cap = f", ONEDNN_MAX_CPU_ISA={result['onednn_max_cpu_isa']}" if result["onednn_max_cpu_isa"] else ""
    print(f"train step {result['clip']} batch {result['batch']}, {result['precision']}{cap}: ops sum to "
          f"{result['op_ms_per_step']:.1f} ms a step ({result['ops_per_step']} ops)")
    print("| op type | ms a step | share | ops a step |\n|---|---|---|---|")
    for op, ms, share, count in result["by_type"][:args.top]:
        print(f"| {op} | {ms:.2f} | {share:.1%} | {count} |")


if __name__ == "__main__":
    main()
