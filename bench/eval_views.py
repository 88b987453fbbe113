"""Evaluation views (issue #15): video accuracy of one trained model with T windows x S crops per video.

  python -m bench.eval_views [--out bench/out/eval_views] [--model SERVING_BASE] [--views 1x1,3x1,3x3]
                             [--set section.field=value ...]

Without ``--model`` it first runs the demo pipeline (``pipeline.local_runner.run_local``, the demo preset, data
generated into ``<out>/data``, roots under ``<out>``; ``--set`` overrides apply) and takes the model it pushed. Then
every video of the eval split is cut with ``pipeline.predict``'s cut (ClipGen's eval policy: the same pixels) at each
``--views`` setting, the served model's ``serving_frames`` scores the clips, and the clip probabilities are averaged
per video, as the Evaluator's video metrics do; accuracy, top-5 and mean class accuracy come from
``components.video_metrics.score``, the Evaluator's own scoring. Not timing-critical (accuracies, plus each setting's
inference clips/s for scale), so the settings run one after another. Writes ``<out>/eval_views.json`` and prints it.
Not part of ``make bench``.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import time

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def demo_model(out: str, overrides: list[str]) -> tuple[str, str, dict]:
    """Runs the demo pipeline under ``out``; (serving base path, eval TFRecord glob, run summary)."""
    from pipeline.config import load_config
    from pipeline.demo_data import generate_demo_data
    from pipeline.local_runner import run_local
    for folder in ("data", "root", "serving"):
        shutil.rmtree(os.path.join(out, folder), ignore_errors=True)
    data = os.path.join(out, "data")
    generate_demo_data(data)
    config = load_config("demo", [f"data_dir={data}", f"pipeline_root={os.path.join(out, 'root')}",
                                  f"metadata_path={os.path.join(out, 'metadata.sqlite')}",
                                  f"serving_dir={os.path.join(out, 'serving')}", *overrides])
    started = time.perf_counter()
    summary = run_local(config)
    run = {"wall_seconds": round(time.perf_counter() - started, 1), "blessed": summary.blessed,
           "metrics": summary.metrics, "eval_views": config.clips.eval_views,
           "frame_stride": config.clips.frame_stride}
    return os.path.join(config.serving_dir, config.model_name), os.path.join(data, "eval", "*"), run


def score_views(model, paths: list[str], views: tuple[int, int], frame_stride: int, label_names) -> dict:
    """Video-level scores of ``model`` on every video record in ``paths`` at ``views`` (T, S)."""
    import numpy as np
    from components.video_format import LabelMap
    from components.video_metrics import score
    from pipeline.predict import BadVideo, SamplingSettings, cut_clips, read_videos

    settings = SamplingSettings(clips_per_video=views[0], crops=views[1], frame_stride=frame_stride,
                                decode_overrides={})
    label_map = LabelMap(label_names)
    scored, failed, clips_scored, seconds = [], 0, 0, 0.0
    for path in paths:
        for video in read_videos(path, settings):
            if isinstance(video, BadVideo) or video.label not in label_map:
                failed += 1
                continue
            clips = cut_clips(path, video, model.clip_shape, settings).clips
            started = time.perf_counter()
            probabilities = np.concatenate([model.probabilities(clips[i:i + model.max_clips])
                                            for i in range(0, len(clips), model.max_clips)])
            seconds += time.perf_counter() - started
            clips_scored += len(clips)
            scored.append((probabilities.mean(axis=0), label_names.index(video.label)))
    return {"views": f"{views[0]}x{views[1]}", "videos": len(scored), "failed": failed,
            "video_accuracy": round(score(scored, "accuracy"), 4),
            "video_top_5_accuracy": round(score(scored, "top_k_accuracy", 5), 4),
            "video_mean_class_accuracy": round(score(scored, "mean_class_accuracy"), 4),
            "inference_clips_per_s": round(clips_scored / seconds, 1) if seconds else None}


def main(argv=None) -> dict:
    from bench.warm_start import cpu_model
    from components.clip_sampling import parse_views
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/out/eval_views", help="work folder (a demo run's folders are replaced)")
    parser.add_argument("--model", help="serving model base path or SavedModel folder (default: train the demo)")
    parser.add_argument("--videos", help="glob of labelled video TFRecords (default: the demo's eval split)")
    parser.add_argument("--frame-stride", type=int, default=None, help="default: the demo run's clips.frame_stride")
    parser.add_argument("--views", default="1x1,3x1,3x3,5x3", help="comma-separated TxS settings")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="RunConfig override of the demo run (section.field=value)")
    args = parser.parse_args(argv)
    settings = [parse_views(v) for v in args.views.split(",")]
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    started = time.perf_counter()
    run = None
    model_path, videos = args.model, args.videos
    if model_path is None:
        model_path, demo_videos, run = demo_model(out, args.set)
        videos = videos or demo_videos
        print(f"[eval-views] demo run: {json.dumps(run)}", flush=True)
    if not videos:
        parser.error("--videos is needed with --model")
    paths = sorted(glob.glob(videos))
    if not paths:
        parser.error(f"--videos {videos!r} matches no file")

    from pipeline.predict import ServedModel
    model = ServedModel.load(model_path)
    stride = args.frame_stride or (run["frame_stride"] if run else 1)
    results = []
    for views in settings:
        results.append(score_views(model, paths, views, stride, list(model.labels)))
        print(f"[eval-views] {json.dumps(results[-1])}", flush=True)
    report = {
        "command": {"model": args.model, "videos": videos, "views": args.views, "set": args.set},
        "machine": {"cpu": cpu_model(), "cpus": os.cpu_count(),
                    "ONEDNN_MAX_CPU_ISA": os.environ.get("ONEDNN_MAX_CPU_ISA", "not set"),
                    "serving_precision": "the export's (float32 unless training.export_precision says otherwise)"},
        "model": model.path, "clip_shape": list(model.clip_shape), "frame_stride": stride, "demo_run": run,
        "results": results, "total_seconds": round(time.perf_counter() - started, 1),
    }
    with open(os.path.join(out, "eval_views.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
