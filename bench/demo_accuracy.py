"""The accuracy check of a speed lever on the demo task (not part of `make bench`: it trains for minutes).

  python -m bench.demo_accuracy --set precision='"bfloat16"' [--root runs/demo/root] [--out bench/out/acc]
  python -m bench.demo_accuracy --evaluate runs/demo/root/Trainer/model/<id>/Format-Serving

Trains the demo preset's Trainer (pipeline.config.DEMO_TRAINING, LocalProcessLauncher) on the clips
and Transform graph of the newest demo run, with training-config overrides, then measures clip and video accuracy of
the exported serving model on the whole eval split (video accuracy: clip probabilities averaged per video, as the
Evaluator does) through its ``serving_default`` signature; ``--evaluate``
measures an existing export the same way (e.g. the float32 model `make demo` trained).
"""
from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import time

from bresnet._keras import keras  # noqa: F401  (Keras mode first)
import tensorflow as tf

from components.trainer.config import DEFAULT_MODEL_BUILDER


def newest(pattern: str) -> str:
    paths = sorted(glob.glob(pattern), key=lambda p: int(p.rstrip("/").rsplit("/", 1)[-1]))
    if not paths:
        raise FileNotFoundError(f"nothing matches {pattern!r}: run `make demo` first")
    return paths[-1]


def evaluate(serving_dir: str, eval_dir: str) -> dict:
    """Clip and video accuracy of a serving export over every clip record in ``eval_dir``.

    Video accuracy as the Evaluator computes it: a video's class is the argmax of its clips' mean probabilities.
    """
    import numpy as np
    from components.video_format import ClipKeys
    signature = tf.saved_model.load(serving_dir).signatures["serving_default"]
    files = sorted(glob.glob(os.path.join(eval_dir, "*.gz")))
    spec = {ClipKeys.LABEL: tf.io.FixedLenFeature([], tf.string), ClipKeys.VIDEO_ID: tf.io.FixedLenFeature([], tf.string)}
    correct = total = 0
    videos: dict[bytes, list] = {}   # video id -> [sum of probabilities, label]
    for batch in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(64):
        parsed = tf.io.parse_example(batch, spec)
        out = signature(examples=batch)
        correct += int(tf.reduce_sum(tf.cast(tf.equal(out["top_class"], parsed[ClipKeys.LABEL]), tf.int32)))
        total += int(batch.shape[0])
        names = out["classes"].numpy()[0]
        for vid, label, probs in zip(parsed[ClipKeys.VIDEO_ID].numpy(), parsed[ClipKeys.LABEL].numpy(),
                                     out["probabilities"].numpy()):
            entry = videos.setdefault(vid, [np.zeros_like(probs), label])
            entry[0] = entry[0] + probs
    video_correct = sum(names[int(np.argmax(p))] == label for p, label in videos.values())
    return {"serving_dir": serving_dir, "eval_clips": total, "clip_accuracy": correct / total,
            "eval_videos": len(videos), "video_accuracy": video_correct / max(len(videos), 1)}


def main(argv=None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="runs/demo/root", help="pipeline root of a finished demo run")
    parser.add_argument("--out", default="bench/out/demo_accuracy")
    parser.add_argument("--data-dir", default="demo_data", help="the demo run's data (its label_map.txt)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="training config override; VALUE is JSON (a string in double quotes)")
    parser.add_argument("--model-builder", default=DEFAULT_MODEL_BUILDER, metavar="MODULE:FUNCTION",
                        help=f"TrainingJob.model_builder (default: {DEFAULT_MODEL_BUILDER})")
    parser.add_argument("--evaluate", metavar="SERVING_DIR", help="only evaluate this serving export")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    clips = newest(os.path.join(args.root, "ClipGen", "clips", "*"))
    eval_dir = os.path.join(clips, "Split-eval")
    if args.evaluate:
        print(json.dumps(evaluate(args.evaluate, eval_dir)))
        return

    from components.trainer.config import TrainingConfig, TrainingJob
    from components.trainer.launcher import LocalProcessLauncher
    from components.video_format import LabelMap
    from pipeline.config import ClipConfig, DEMO_TRAINING

    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set needs KEY=VALUE, got {item!r}")
        overrides[key] = json.loads(value)
    labels = LabelMap.load(args.data_dir).labels
    config = TrainingConfig(labels=tuple(labels), clip_shape=ClipConfig().shape, **{**DEMO_TRAINING, **overrides})
    job = TrainingJob(config=config, train_uri=os.path.join(clips, "Split-train"), eval_uri=eval_dir,
                      transform_graph_uri=newest(os.path.join(args.root, "Transform", "transform_graph", "*")),
                      serving_model_dir=os.path.join(args.out, "model"), run_dir=os.path.join(args.out, "run"),
                      scratch_dir=os.path.join(args.out, "scratch"), model_builder=args.model_builder)
    started = time.perf_counter()
    LocalProcessLauncher().launch(job)
    from components.trainer import history
    curve = [(e["epoch"], round(e.get("val_accuracy", float("nan")), 3))
             for e in history.load_progress(job.scratch_dir, 0)["epochs"]]
    result = {"overrides": overrides, "train_seconds": time.perf_counter() - started,
              "val_accuracy_by_epoch": curve, **evaluate(job.serving_model_dir, eval_dir)}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "result.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
