"""Fine-tuning (issue #15): steps to the gate on all 8 demo classes, from scratch against fine-tuned from a model
trained on 4 of them.

  python -m bench.fine_tune [--out bench/out/fine_tune] [--videos-per-class 100] [--steps-per-epoch 100]
                            [--epochs 8] [--gate 0.5] [--pretrain-classes grow,move_left,move_up,rotate_cw]
                            [--freeze-epochs 1] [--backbone-lr 0.5] [--set section.field=value ...]

Not part of `make bench` (it runs the whole pipeline three times). The demo data (seed 0) is written to
``<out>/source`` (all 8 classes); ``<out>/videos4`` holds its videos of ``--pretrain-classes`` only (both splits,
label indices renumbered for their own 4-class label map). Three runs through ``pipeline.local_runner.run_local`` with
the demo preset, each ``--epochs`` x ``--steps-per-epoch`` steps of the same recipe:
  1. ``pretrain4``: the 4 classes, from scratch (its own pipeline root);
  2. ``scratch8``: all 8 classes, from scratch;
  3. ``finetune8``: all 8 classes, ``training.init_from`` = run 1's Trainer Model artifact, ``init_scope: backbone``
     (the 4-class head is never loaded), the backbone frozen for ``--freeze-epochs`` epochs, then at ``--backbone-lr``
     times the head's learning rate. Runs 2 and 3 share one pipeline root, so run 3's Ingest, ClipGen and Transform
     are cache hits of run 2's (its wall time is not comparable; its Trainer's is).
"Steps to the gate": as in ``bench/warm_start.py``, the first epoch whose Keras val_accuracy (clip accuracy on the
run's whole eval split, evaluated after every epoch) is >= ``--gate`` (the demo gate's ``min_accuracy``, 0.5), times
steps per epoch. Writes ``<out>/fine_tune.json`` and prints it. Precision: the Trainer's (``training_precision`` on the
Model artifact; ``auto`` picks bfloat16 on AVX512-BF16 CPUs); the CPU and ONEDNN_MAX_CPU_ISA are recorded.
"""
from __future__ import annotations

import argparse
import os
import shutil
import time

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.warm_start import count_records, cpu_model, demo_config, finish, node_outputs, run   # noqa: E402,E501

DEFAULT_PRETRAIN_CLASSES = ("grow", "move_left", "move_up", "rotate_cw")   # one of each motion's two directions


def class_subset(source_dir: str, target_dir: str, classes) -> dict:
    """The videos of ``classes`` from a demo data folder (train/, eval/, label_map.txt) into ``target_dir``, with
    their own label map; label indices renumbered to it. Returns {split: videos written}."""
    import tensorflow as tf
    from components.video_format import DEFAULT_VIDEO_KEYS, LabelMap

    label_map = LabelMap(classes)
    if len(label_map) != len(set(classes)):
        raise ValueError(f"--pretrain-classes has duplicates: {classes}")
    known = LabelMap.load(source_dir)
    unknown = sorted(set(classes) - set(known.labels))
    if unknown:
        raise ValueError(f"--pretrain-classes {unknown} are not demo classes ({known.labels})")
    label_map.save(target_dir)
    keys = DEFAULT_VIDEO_KEYS
    written = {}
    for split in ("train", "eval"):
        os.makedirs(os.path.join(target_dir, split))
        written[split] = 0
        for path in sorted(tf.io.gfile.glob(os.path.join(source_dir, split, "*"))):
            with tf.io.TFRecordWriter(os.path.join(target_dir, split, os.path.basename(path))) as writer:
                for record in tf.data.TFRecordDataset(path):
                    example = tf.train.SequenceExample.FromString(record.numpy())
                    context = example.context.feature
                    label = context[keys.label_string].bytes_list.value[0].decode()
                    if label not in label_map:
                        continue
                    context[keys.label_index].int64_list.value[:] = [label_map.index(label)]
                    writer.write(example.SerializeToString(deterministic=True))
                    written[split] += 1
    return written


def run_config(out: str, scenario: str, data_dir: str, args, eval_videos: int, extra=()):
    """The demo preset on ``data_dir`` with this scenario's roots; validation covers the whole eval split once an
    epoch (unless --set says otherwise); ``--set`` overrides win."""
    base = os.path.join(out, scenario)
    overrides = [f"data_dir={data_dir}", f"training.steps_per_epoch={args.steps_per_epoch}",
                 f"training.epochs={args.epochs}", f"gate.min_accuracy={args.gate}",
                 f"pipeline_root={os.path.join(base, 'root')}",
                 f"metadata_path={os.path.join(base, 'metadata.sqlite')}",
                 f"serving_dir={os.path.join(base, 'serving')}", *extra]
    return demo_config(overrides, args.set, eval_videos)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/out/fine_tune", help="work folder (its old runs are removed)")
    parser.add_argument("--videos-per-class", type=int, default=100)
    parser.add_argument("--steps-per-epoch", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--gate", type=float, default=0.5, help="gate.min_accuracy, and the steps-to-gate threshold")
    parser.add_argument("--pretrain-classes", default=",".join(DEFAULT_PRETRAIN_CLASSES),
                        help="comma-separated demo classes the pretrained model learns")
    parser.add_argument("--freeze-epochs", type=int, default=1, help="training.freeze_backbone_epochs of run 3")
    parser.add_argument("--backbone-lr", type=float, default=0.5,
                        help="training.backbone_learning_rate_multiplier of run 3")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="RunConfig override of every run (section.field=value, value as YAML), after the "
                             "script's own")
    args = parser.parse_args(argv)
    from pipeline.demo_data import generate_demo_data

    out = os.path.abspath(args.out)
    for folder in ("source", "videos4", "pretrain4", "all8"):   # a stale root would serve runs from its cache
        shutil.rmtree(os.path.join(out, folder), ignore_errors=True)
    started = time.perf_counter()
    classes = tuple(c.strip() for c in args.pretrain_classes.split(",") if c.strip())
    data = generate_demo_data(os.path.join(out, "source"), videos_per_class=args.videos_per_class, seed=0)
    videos4 = os.path.join(out, "videos4")
    subset = class_subset(data.out_dir, videos4, classes)
    eval8 = count_records(data.eval_files)

    pretrain = run("pretrain4", run_config(out, "pretrain4", videos4, args, subset["eval"]), args)
    _, outputs = node_outputs(os.path.join(out, "pretrain4", "metadata.sqlite"), "Trainer")
    pretrained = outputs["model"].uri                       # a Model artifact dir: init_from reads Format-Serving/
    scratch = run("scratch8", run_config(out, "all8", data.out_dir, args, eval8), args)
    fine_tune_settings = [f"training.init_from={pretrained}", "training.init_scope=backbone",
                          f"training.freeze_backbone_epochs={args.freeze_epochs}",
                          f"training.backbone_learning_rate_multiplier={args.backbone_lr}"]
    fine = run("finetune8", run_config(out, "all8", data.out_dir, args, eval8, fine_tune_settings), args)

    problems = []
    if fine["init_from"] in (None, "scratch"):
        problems.append(f"run 3 did not start from the 4-class model (init_from {fine['init_from']!r})")
    if not any("logits" in name for name in fine.get("reinitialized", [])):
        problems.append(f"run 3 loaded the head (reinitialized: {fine.get('reinitialized')})")
    if "steps_to_gate" not in scratch or "steps_to_gate" not in fine:
        problems.append("a run trained nothing (its Trainer was cached): no learning curve")
    report = {
        "command": {"videos_per_class": args.videos_per_class, "steps_per_epoch": args.steps_per_epoch,
                    "epochs": args.epochs, "gate": args.gate, "pretrain_classes": list(classes),
                    "freeze_epochs": args.freeze_epochs, "backbone_lr": args.backbone_lr, "set": args.set},
        "machine": {"cpu": cpu_model(), "cpus": os.cpu_count(),
                    "ONEDNN_MAX_CPU_ISA": os.environ.get("ONEDNN_MAX_CPU_ISA", "not set"),
                    "training_precision": scratch["training_precision"]},
        "videos": {"pretrain4": subset, "all8": {"eval": eval8}},
        "runs": [pretrain, scratch, fine],
        "steps_to_gate": {"scratch (8 classes)": scratch.get("steps_to_gate"),
                          "fine-tuned from the 4-class model": fine.get("steps_to_gate")},
        "trainer_seconds": {r["run"]: r["component_seconds"].get("Trainer") for r in (pretrain, scratch, fine)},
        "problems": problems,
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    return finish(out, "fine_tune", report)


if __name__ == "__main__":
    main()
