"""Scheduled runs over spans, and warm start (issue #12): what a run with no new span and a run with a new span
cost, and how many steps a warm-started model needs to reach the gate, against a from-scratch run of the same window.

  python -m bench.warm_start [--out bench/out/warm_start] [--videos-per-class 100] [--steps-per-epoch 200]
                             [--epochs 6] [--gate 0.5] [--set section.field=value ...]

Not part of `make bench` (it runs the whole pipeline four times). The demo data (seed 0, two shards) becomes two
spans under ``<out>/videos`` (``span-N/train/``, ``span-N/eval/``: shard N-1 of each split). Scenario "scheduled"
(one pipeline root and serving dir): run 1 on span 1 (from scratch), run 2 on the same files (every step should
be cached and nothing pushed), then span 2 arrives and run 3 trains on the window [1, 2] with
``training.init_from: serving`` (run 1's pushed model). Scenario "scratch": a fresh root, both spans, window [1, 2],
from scratch. Each run goes through ``pipeline.local_runner.run_local`` with the demo preset; ``training.eval_steps``
covers its window's whole eval split once per epoch. "Steps to the gate": the first epoch whose Keras val_accuracy
(on that eval split) is >= ``--gate``, times steps per epoch; the Evaluator's gate is the same threshold on TFMA's
clip accuracy. Writes ``<out>/warm_start.json`` and prints it. Precision: the Trainer's (the Model artifact's
``training_precision``; ``auto`` picks bfloat16 on AVX512-BF16 CPUs); the CPU and ONEDNN_MAX_CPU_ISA are recorded.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import time

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PREP_COMPONENTS = ("Ingest", "ClipGen", "Transform")


def make_spans(out: str, videos_per_class: int, seed: int = 0) -> dict:
    """Demo data in ``<out>/source``; span 1 copied into ``<out>/videos``. Returns {span: {split: [files]}}."""
    from pipeline.demo_data import generate_demo_data
    from components.video_format import LABEL_MAP_FILENAME
    data = generate_demo_data(os.path.join(out, "source"), videos_per_class=videos_per_class, num_shards=2, seed=seed)
    videos = os.path.join(out, "videos")
    os.makedirs(videos)
    shutil.copy(data.label_map_path, os.path.join(videos, LABEL_MAP_FILENAME))   # the label map Ingest reads (ingest.label_map)
    shards = {"train": sorted(data.train_files), "eval": sorted(data.eval_files)}
    spans = {span: {split: [files[span - 1]] for split, files in shards.items()} for span in (1, 2)}
    add_span(videos, 1, spans[1])
    return spans


def add_span(videos: str, span: int, files: dict) -> None:
    for split, paths in files.items():
        target = os.path.join(videos, f"span-{span}", split)
        os.makedirs(target)
        for path in paths:
            shutil.copy(path, target)


def count_records(paths) -> int:
    import tensorflow as tf
    return sum(1 for path in paths for _ in tf.data.TFRecordDataset(path))


def demo_config(overrides: list, user_set: list, eval_videos: int):
    """The demo preset with ``overrides``, then the user's ``--set`` (``user_set``, which win). Unless those set
    training.eval_steps, validation covers the whole eval split once an epoch: ``eval_videos`` x the eval views."""
    from pipeline.config import load_config
    config = load_config("demo", overrides + user_set)
    if not any(s.startswith("training.eval_steps=") for s in user_set):
        clips = eval_videos * config.clips.eval_clips_per_video * config.clips.eval_crops
        batch = config.training["batch_size_per_worker"] * config.training["workers"]
        config = load_config("demo", overrides + [f"training.eval_steps={math.ceil(clips / batch)}"] + user_set)
    return config


def finish(out: str, name: str, report: dict) -> dict:
    """Writes ``<out>/<name>.json`` and prints it; exits naming the problems when ``report["problems"]`` has any."""
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(json.dumps(report, indent=1))
    if report["problems"]:
        raise SystemExit(f"{name}: " + "; ".join(report["problems"]))
    return report


def run_config(out: str, scenario: str, args, eval_videos: int, extra=()):
    """The demo preset on ``<out>/videos`` with this scenario's roots; ``--set`` overrides win."""
    base = os.path.join(out, scenario)
    overrides = [f"data_dir={os.path.join(out, 'videos')}", "ingest.train_pattern=span-{SPAN}/train/*",
                 "ingest.eval_pattern=span-{SPAN}/eval/*", "ingest.window_spans=2",
                 f"training.steps_per_epoch={args.steps_per_epoch}", f"training.epochs={args.epochs}",
                 f"gate.min_accuracy={args.gate}", f"pipeline_root={os.path.join(base, 'root')}",
                 f"metadata_path={os.path.join(base, 'metadata.sqlite')}",
                 f"serving_dir={os.path.join(base, 'serving')}", *extra]
    return demo_config(overrides, args.set, eval_videos)


def served_versions(config) -> list[str]:
    base = os.path.join(config.serving_dir, config.model_name)
    return sorted(d for d in os.listdir(base) if d.isdigit()) if os.path.isdir(base) else []


def node_outputs(metadata_path: str, node: str) -> tuple[str, dict]:
    """(state of the newest run's execution of ``node``, {output key: artifact}); cached executions link old outputs."""
    from ml_metadata.proto import metadata_store_pb2
    from tfx.orchestration import metadata
    from pipeline.local_runner import newest_run_executions
    with metadata.Metadata(metadata.sqlite_metadata_connection_config(metadata_path)) as m:
        execution = dict(newest_run_executions(m.store)[1])[node]
        outputs = {}
        for event in m.store.get_events_by_execution_ids([execution.id]):
            if event.type == metadata_store_pb2.Event.OUTPUT:
                outputs[event.path.steps[0].key] = m.store.get_artifacts_by_id([event.artifact_id])[0]
    return metadata_store_pb2.Execution.State.Name(execution.last_known_state), outputs


def ingest_spans(metadata_path: str) -> dict:
    """The spans this run's Ingest read, and those whose clips it reused from an earlier run (the clip store)."""
    from components.spans import INGESTED_PROPERTY, REUSED_PROPERTY
    state, outputs = node_outputs(metadata_path, "Ingest")
    props = outputs["examples"].custom_properties
    read = lambda key: json.loads(props[key].string_value) if key in props else None   # noqa: E731
    reused = read(REUSED_PROPERTY)
    return {"state": state, "ingested": read(INGESTED_PROPERTY), "reused": sorted(reused) if reused else []}


def steps_to_gate(val_accuracy: list[float], steps_per_epoch: int, gate: float):
    """Steps until the first epoch whose val_accuracy >= gate, or a sentence saying it was not reached."""
    for index, accuracy in enumerate(val_accuracy):
        if accuracy is not None and accuracy >= gate:
            return (index + 1) * steps_per_epoch
    return f"not reached in {len(val_accuracy) * steps_per_epoch} steps"


def run(name: str, config, args) -> dict:
    from components.trainer.history import HISTORY_FILENAME
    from pipeline.local_runner import run_local
    print(f"[warm-start] {name}: window spans {[s.span for s in config.resolve_window().spans]}, "
          f"init_from {config.training.get('init_from', 'none')}, eval_steps {config.training['eval_steps']}",
          flush=True)
    before = served_versions(config)
    started = time.perf_counter()
    summary = run_local(config)
    wall = time.perf_counter() - started
    state, outputs = node_outputs(config.metadata_path, "Trainer")
    model = outputs["model"].custom_properties
    prop = lambda key: model[key].string_value if key in model else None   # noqa: E731
    result = {"run": name, "wall_seconds": round(wall, 1), "pipeline_seconds": summary.seconds,
              "component_seconds": summary.component_seconds,
              "prep_seconds": round(sum(summary.component_seconds.get(c, 0.0) for c in PREP_COMPONENTS), 1),
              "ingest": ingest_spans(config.metadata_path),
              "new_versions": sorted(set(served_versions(config)) - set(before)),
              "blessed": summary.blessed, "metrics": summary.metrics, "trainer": state,
              "init_from": prop("init_from"), "training_precision": prop("training_precision")}
    if prop("reinitialized") is not None:   # warm-started: the variables that kept their fresh initialization
        result["reinitialized"] = json.loads(prop("reinitialized"))
    if state == "COMPLETE":   # trained in this run: its learning curve
        with open(os.path.join(outputs["model_run"].uri, HISTORY_FILENAME)) as f:
            epochs = json.load(f)["epochs"]
        result["val_accuracy"] = [round(e["val_accuracy"], 4) if "val_accuracy" in e else None for e in epochs]
        result["steps_to_gate"] = steps_to_gate(result["val_accuracy"], args.steps_per_epoch, args.gate)
    print(f"[warm-start] {name}: " + json.dumps({k: v for k, v in result.items() if k != "component_seconds"}),
          flush=True)
    return result


def cpu_model() -> str:
    with open("/proc/cpuinfo") as f:
        return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "unknown")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/out/warm_start", help="work folder (its old runs are removed)")
    parser.add_argument("--videos-per-class", type=int, default=100)
    parser.add_argument("--steps-per-epoch", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--gate", type=float, default=0.5, help="gate.min_accuracy, and the steps-to-gate threshold")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="RunConfig override (section.field=value, value as YAML), after the script's own")
    args = parser.parse_args(argv)
    out = os.path.abspath(args.out)
    for folder in ("source", "videos", "scheduled", "scratch"):   # a stale root would serve runs from its cache
        shutil.rmtree(os.path.join(out, folder), ignore_errors=True)
    started = time.perf_counter()
    spans = make_spans(out, args.videos_per_class)
    eval_1 = count_records(spans[1]["eval"])
    eval_12 = eval_1 + count_records(spans[2]["eval"])

    scheduled = run_config(out, "scheduled", args, eval_1)
    runs = [run("run1_span1_scratch", scheduled, args), run("run2_no_new_span", scheduled, args)]
    add_span(os.path.join(out, "videos"), 2, spans[2])
    runs.append(run("run3_new_span_warm", run_config(out, "scheduled", args, eval_12, ["training.init_from=serving"]),
                    args))
    runs.append(run("scratch_window_1_2", run_config(out, "scratch", args, eval_12), args))
    run1, run2, run3, scratch = runs

    problems = []
    if not run1["new_versions"]:
        problems.append("run 1 pushed nothing: run 3 had no served model to warm-start from")
    if run2["new_versions"]:
        problems.append(f"run 2 (no new span) pushed {run2['new_versions']}")
    if run1["new_versions"] and run3["init_from"] in (None, "scratch"):
        problems.append(f"run 3 did not warm-start (init_from {run3['init_from']!r})")
    report = {
        "command": {"videos_per_class": args.videos_per_class, "steps_per_epoch": args.steps_per_epoch,
                    "epochs": args.epochs, "gate": args.gate, "set": args.set},
        "machine": {"cpu": cpu_model(), "cpus": os.cpu_count(),
                    "ONEDNN_MAX_CPU_ISA": os.environ.get("ONEDNN_MAX_CPU_ISA", "not set"),
                    "training_precision": run1["training_precision"]},
        "eval_videos": {"span 1": eval_1, "spans 1-2": eval_12},
        "runs": runs,
        "steps_to_gate": {"warm (run 3)": run3.get("steps_to_gate"), "scratch": scratch.get("steps_to_gate")},
        "run2_wall_vs_run1": round(run2["wall_seconds"] / run1["wall_seconds"], 3),
        "run3_prep_vs_scratch": (round(run3["prep_seconds"] / scratch["prep_seconds"], 3)
                                 if scratch["prep_seconds"] else None),
        "prep_components": list(PREP_COMPONENTS),
        "problems": problems,
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    return finish(out, "warm_start", report)


if __name__ == "__main__":
    main()
