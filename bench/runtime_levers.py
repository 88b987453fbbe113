"""Process-wide runtime levers: TF's thread pools and oneDNN, each in its own process (they are fixed at start-up).

Every setting runs the project model (as the Trainer builds and compiles it, in float32: TF's Eigen kernels
have no fast bfloat16 path, so "oneDNN off" would only say that bfloat16 then falls back to emulation) in a
child process (``python -m bench.runtime_levers --child``) that times training steps and inference batches after
a warm-up and prints them as JSON. Settings alternate (A/B/C/A/B/C) and each one's median is divided by the default's, so a
load spike hits every side. What is varied:

* ``TF_NUM_INTEROP_THREADS=1``: one op at a time (the default runs as many ops at once as there are cores, each
  with an intra-op pool of all cores);
* ``TF_NUM_INTRAOP_THREADS=1``: one core per op;
* ``TF_ENABLE_ONEDNN_OPTS=0``: TF's Eigen kernels instead of oneDNN's.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

from bench.timing import json_child

SETTINGS = {
    "default": {},
    "inter_op=1": {"TF_NUM_INTEROP_THREADS": "1"},
    "intra_op=1": {"TF_NUM_INTRAOP_THREADS": "1"},
    "oneDNN off": {"TF_ENABLE_ONEDNN_OPTS": "0"},
}


def _child(clip_shape: tuple, batch: int, steps: int) -> dict:
    import numpy as np

    from bench.model_speed import ModelCase, training_config
    from components.trainer import precision, training
    case = ModelCase(clip_shape, batch, batch, ())
    config = training_config(case, precision="float32")
    model = training.build_model(config)
    training.compile_model(model, config)
    rng = np.random.default_rng(0)
    import tensorflow as tf
    x = tf.constant(rng.normal(size=(batch, *clip_shape)).astype("float32"))
    y = tf.constant(rng.integers(0, 8, batch))
    infer = tf.function(lambda v: model(v, training=False))
    model.train_on_batch(x, y)   # warm-up: tracing and oneDNN primitive creation
    infer(x).numpy()
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    train_s = (time.perf_counter() - start) / steps
    start = time.perf_counter()
    for _ in range(steps * 2):
        infer(x).numpy()
    infer_s = (time.perf_counter() - start) / (steps * 2)
    return {"train_clips_s": batch / train_s, "infer_clips_s": batch / infer_s,
            "precision": precision.compute_precision(config)}


def _run_child(env_changes: dict, clip_shape, batch: int, steps: int) -> dict:
    return json_child("bench.runtime_levers", ["--child", json.dumps(list(clip_shape)), str(batch), str(steps)],
                      f"runtime lever child {env_changes}", env_changes)


def bench_runtime_levers(clip_shape=(16, 112, 112, 3), batch: int = 8, steps: int = 4, repeats: int = 2,
                         settings: tuple[str, ...] | None = None) -> dict:
    """Each of ``settings`` (default: all of SETTINGS; "default" always) in its own child process per repeat."""
    chosen = {name: SETTINGS[name] for name in SETTINGS if settings is None or name in settings or name == "default"}
    runs: dict[str, list[dict]] = {name: [] for name in chosen}
    for _ in range(repeats):
        for name, env_changes in chosen.items():
            runs[name].append(_run_child(env_changes, clip_shape, batch, steps))
    t, h, w, _ = clip_shape
    result = {"clip": f"{t}x{h}x{w}", "batch": batch, "precision": runs["default"][0]["precision"], "settings": {}}
    for name, env_changes in chosen.items():
        medians = {mode: statistics.median(r[f"{mode}_clips_s"] for r in runs[name]) for mode in ("train", "infer")}
        result["settings"][name] = {"env": env_changes, **{f"{mode}_clips_s": v for mode, v in medians.items()}}
    default = result["settings"]["default"]
    for name, values in result["settings"].items():
        for mode in ("train", "infer"):
            values[f"{mode}_vs_default"] = values[f"{mode}_clips_s"] / default[f"{mode}_clips_s"]
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", nargs=3, metavar=("CLIP_SHAPE_JSON", "BATCH", "STEPS"), required=True)
    args = parser.parse_args()
    shape, batch_size, num_steps = json.loads(args.child[0]), int(args.child[1]), int(args.child[2])
    print(json.dumps(_child(tuple(shape), batch_size, num_steps)))
