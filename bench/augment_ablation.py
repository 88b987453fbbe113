"""Which training augmentations help the demo task (issue #15): the demo recipe trained once per setting on the same
clips, each augmentation alone, then the two that gained most together.

  python -m bench.augment_ablation --root RUN_ROOT --data-dir DATA [--out bench/out/augment_ablation]
                                   [--only name,name] [--seed 0]

Every setting is ``bench/demo_accuracy.py``'s run: the demo preset's Trainer (pipeline.config.DEMO_TRAINING, one
worker, 2,400 steps of 16 clips) on the clips and Transform graph of a finished demo run (``--root``: its pipeline
root, e.g. the one ``bench/eval_views.py`` leaves under bench/out/eval_views/root), then clip and video accuracy of
the exported model on the whole eval split (its 3x1 views). The settings run one after another on the same files
with the same seed, so they differ only by the augmentation (and the random draws it adds). One seed per setting:
the seed alone moves the demo's accuracy by ~3.5 points (bench/README.md, bfloat16 row), so only larger gaps say
something. Writes ``<out>/augment_ablation.json`` and prints a table. Not part of ``make bench``.
"""
from __future__ import annotations

import argparse
import json
import os
import time

SETTINGS = {
    "none": {},
    "crop 0.4": {"augment_crop_area_min": 0.4},
    "flip": {"augment_flip": True},
    "brightness 0.3 + contrast 0.3": {"augment_brightness": 0.3, "augment_contrast": 0.3},
    "speed 0.7": {"augment_speed_min": 0.7},
    "label smoothing 0.1": {"label_smoothing": 0.1},
    "mixup 0.2": {"augment_mixup_alpha": 0.2},
    "cutmix 1.0": {"augment_cutmix_alpha": 1.0},
    # The two that gained most alone (2026-12-03, bench/README.md), together.
    "brightness + contrast + label smoothing": {"augment_brightness": 0.3, "augment_contrast": 0.3,
                                                "label_smoothing": 0.1},
}


def main(argv=None) -> dict:
    from bench import demo_accuracy
    from bench.warm_start import cpu_model
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="pipeline root of a finished demo run")
    parser.add_argument("--data-dir", required=True, help="that run's data (its label_map.txt)")
    parser.add_argument("--out", default="bench/out/augment_ablation")
    parser.add_argument("--only", default="", help=f"comma-separated settings (default: all of {list(SETTINGS)})")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(SETTINGS)
    unknown = sorted(set(names) - set(SETTINGS))
    if unknown:
        parser.error(f"unknown settings {unknown}; known: {list(SETTINGS)}")
    started = time.perf_counter()
    rows = []
    for name in names:
        sets = [f"{k}={json.dumps(v)}" for k, v in {**SETTINGS[name], "seed": args.seed}.items()]
        result = demo_accuracy.main(["--root", args.root, "--data-dir", args.data_dir,
                                     "--out", os.path.join(args.out, name.replace(" ", "_").replace("+", "and")),
                                     *sum((["--set", s] for s in sets), [])])
        rows.append({"setting": name, "clip_accuracy": round(result["clip_accuracy"], 4),
                     "video_accuracy": round(result["video_accuracy"], 4),
                     "val_accuracy_by_epoch": [a for _, a in result["val_accuracy_by_epoch"]],
                     "train_seconds": round(result["train_seconds"], 1)})
        print(f"[augment-ablation] {json.dumps(rows[-1])}", flush=True)
    report = {"machine": {"cpu": cpu_model(), "cpus": os.cpu_count(),
                          "ONEDNN_MAX_CPU_ISA": os.environ.get("ONEDNN_MAX_CPU_ISA", "not set"),
                          "precision": "training.precision auto (bfloat16 on AVX512-BF16, else float32)"},
              "root": args.root, "seed": args.seed, "rows": rows,
              "total_seconds": round(time.perf_counter() - started, 1)}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "augment_ablation.json"), "w") as f:
        json.dump(report, f, indent=1)
    base = next((r for r in rows if r["setting"] == "none"), None)
    print("| setting | clip accuracy | video accuracy | video vs none |")
    for r in rows:
        delta = f"{(r['video_accuracy'] - base['video_accuracy']) * 100:+.1f} points" if base else ""
        print(f"| {r['setting']} | {r['clip_accuracy']:.3f} | {r['video_accuracy']:.3f} | {delta} |")
    return report


if __name__ == "__main__":
    main()
