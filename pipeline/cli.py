"""``python -m pipeline <command>``: the one command-line interface (also installed as ``bresnet-pipeline``).

Every run-like command accepts ``--config`` (a YAML file or a preset: demo, smoke) and ``--set section.key=value``
overrides; the few flags below are shortcuts for the most used settings and win over both.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

DEMO_DATA_DIR = "demo_data"


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="YAML config file or preset name (demo, smoke, cluster, "
                                                        "ucf101). Default: demo; cluster for compile, submit and "
                                                        "schedule")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set training.epochs=3 (repeatable)")
    parser.add_argument("--data-dir", help="video TFRecords (train/, eval/, label_map.txt)")
    parser.add_argument("--pipeline-root", help="where TFX writes artifacts")
    parser.add_argument("--serving-dir", help="TF Serving model base path (local or gs://)")
    parser.add_argument("--workers", type=int, help="training worker processes")
    parser.add_argument("--beam-runner", choices=("direct", "flink", "dataflow"),
                        help="where the Beam steps run (beam.runner): flink runs them on an embedded Flink "
                             "cluster (beam.flink_master, beam.job_endpoint for a cluster's); dataflow needs "
                             "--project, --region, --temp-location and the image")
    parser.add_argument("--project", help="Google Cloud project of the Dataflow jobs and Vertex AI training "
                                          "(beam.project, vertex.project)")
    parser.add_argument("--region", help="Dataflow and Vertex AI region (beam.region, vertex.region)")
    parser.add_argument("--temp-location", help="gs:// staging folder of the Dataflow jobs (beam.temp_location)")


def _load(args) -> "RunConfig":
    from pipeline.config import load_config
    overrides = list(args.overrides)
    for flag, key in [("data_dir", "data_dir"), ("pipeline_root", "pipeline_root"),
                      ("serving_dir", "serving_dir"), ("workers", "training.workers"), ("image", "kubeflow.image"),
                      ("beam_runner", "beam.runner"), ("project", "beam.project"), ("project", "vertex.project"),
                      ("region", "beam.region"), ("region", "vertex.region"), ("launcher", "launcher"),
                      ("temp_location", "beam.temp_location"),
                      ("namespace", "kubeflow.namespace"), ("worker_cpu", "kubeflow.worker_cpu"),
                      ("worker_memory", "kubeflow.worker_memory"), ("service_account", "kubeflow.service_account")]:
        value = getattr(args, flag, None)
        if value is not None:
            overrides.append(f"{key}={value}")
    if getattr(args, "pipeline_root", None) and not any(o.startswith("metadata_path=") for o in overrides):
        overrides.append(f"metadata_path={os.path.join(args.pipeline_root, 'metadata.sqlite')}")
    source = args.config if args.config is not None else getattr(args, "config_default", "demo")
    return load_config(source, overrides)


def cmd_demo_data(args) -> int:
    from pipeline.demo_data import generate_demo_data
    from pipeline.config import ConfigError
    kwargs = {"videos_per_class": args.videos_per_class} if args.videos_per_class else {}
    try:
        summary = generate_demo_data(args.out, seed=args.seed, **kwargs)
    except ValueError as exc:  # argument validation: a usage error
        raise ConfigError(str(exc)) from None
    print(json.dumps(summary.to_dict(), indent=2, default=str))
    return 0


def cmd_convert(args) -> int:
    from components.convert import run_convert
    from pipeline.config import ConfigError
    if not os.path.exists(args.input) and not args.input.startswith("gs://"):
        raise ConfigError(f"--input {args.input!r} does not exist")
    summary = run_convert(args.input, args.out, fps=args.fps, short_side=args.short_side, max_frames=args.max_frames,
                          num_shards=args.shards, beam_args=args.beam_args, overwrite=args.overwrite)
    print(json.dumps(summary.to_dict(), indent=2, default=str))
    return 0


def _print_summary(summary, config) -> None:
    print("\n=== run summary ===")
    if summary.skipped:
        print(f"  skipped: {summary.skipped}")
        return
    for name, seconds in summary.component_seconds.items():
        print(f"  {name:<12} {seconds:>7.1f}s")
    print(f"  total        {summary.seconds:>7.1f}s")
    for name, value in sorted(summary.metrics.items()):
        print(f"  eval {name}: {value}")
    if summary.new_classes:
        print(f"  new classes (not in the model served before this run): {', '.join(summary.new_classes)}")
    if summary.blessed is not None:
        print(f"  blessed: {summary.blessed}")
    for failure in summary.gate_failures:
        print(f"  NOT BLESSED: {failure['metric']} = {failure['value']} (threshold {failure['threshold']})")
    if summary.pushed_path:
        print(f"  pushed model: {summary.pushed_path} (version {summary.pushed_version})")
    else:
        print(f"  no new model pushed; serving base path: {os.path.join(config.serving_dir, config.model_name)}")


def cmd_run_local(args) -> int:
    from pipeline.local_runner import run_local
    config = _load(args)
    summary = run_local(config)
    _print_summary(summary, config)
    return 0


def cmd_demo(args) -> int:
    """Demo data (generated once) + the whole pipeline on it with the demo preset."""
    from pipeline.local_runner import run_local
    config = _load(args)
    if not os.path.exists(os.path.join(config.data_dir, "label_map.txt")):
        from pipeline.demo_data import generate_demo_data
        print(f"[demo] generating demo data in {config.data_dir}", flush=True)
        generate_demo_data(config.data_dir)
    summary = run_local(config)
    _print_summary(summary, config)
    return 0


def cmd_compile(args) -> int:
    from pipeline.kubeflow_runner import compile_pipeline
    print(compile_pipeline(_load(args), args.out, allow_local_beam=args.allow_local_beam))
    return 0


def cmd_submit(args) -> int:
    from pipeline.kubeflow_runner import compile_pipeline, submit
    package = args.package or compile_pipeline(_load(args), args.out, allow_local_beam=args.allow_local_beam)
    print(submit(package, args.host, args.experiment, args.run_name))
    return 0


def cmd_schedule(args) -> int:
    from pipeline.kubeflow_runner import compile_pipeline, schedule
    package = args.package or compile_pipeline(_load(args), args.out, allow_local_beam=args.allow_local_beam)
    print(schedule(package, args.host, args.experiment, args.cron, args.job_name, cache=not args.no_cache))
    return 0


def cmd_kfp_local(args) -> int:
    from pipeline.kfp_local.runner import main_from_args
    return main_from_args(args)


def cmd_stage(args) -> int:
    from components.gcs import stage_directory
    summary = stage_directory(args.src, args.dst)
    print(json.dumps(summary.__dict__, indent=2))
    return 0


def cmd_report(args) -> int:
    from pipeline.report import build_report
    print(build_report(args.run, args.out))
    return 0


def cmd_predict(args) -> int:
    from pipeline.predict import run
    return run(args)


def cmd_show_config(args) -> int:
    from pipeline.config import dump_yaml
    print(dump_yaml(_load(args)), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("demo", help="generate demo data if needed and run the whole pipeline locally")
    _add_config_args(p)
    p.set_defaults(func=cmd_demo)

    p = commands.add_parser("demo-data", help="generate the synthetic motion demo dataset")
    p.add_argument("--out", default=DEMO_DATA_DIR, help=f"output folder (default {DEMO_DATA_DIR})")
    p.add_argument("--videos-per-class", type=int, default=None, help="videos per class (train+eval)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo_data)

    p = commands.add_parser("convert", help="convert mp4 folders / a CSV into video TFRecords (Apache Beam)")
    p.add_argument("--input", required=True, help="folder with one subfolder per class, or CSV path,label[,start_s,end_s]")
    p.add_argument("--out", required=True, help="output folder (TFRecords, label_map.txt, dead_letter-*.jsonl)")
    p.add_argument("--fps", type=float, default=None, help="sample frames at this rate (default: native)")
    p.add_argument("--short-side", type=int, default=128, help="resize frames so the short side is this (never upscales)")
    p.add_argument("--max-frames", type=int, default=300, help="cap per video (bounds memory for long videos)")
    p.add_argument("--shards", type=int, default=1)
    p.add_argument("--overwrite", action="store_true", help="replace earlier output in --out")
    p.add_argument("beam_args", nargs=argparse.REMAINDER,
                   help="after --: Beam pipeline args, e.g. -- --runner=DataflowRunner --project=...")
    p.set_defaults(func=cmd_convert)

    p = commands.add_parser("run-local", help="run the pipeline with LocalDagRunner on your data")
    _add_config_args(p)
    p.set_defaults(func=cmd_run_local)

    for name, func, help_text in [
            ("compile", cmd_compile, "compile for Kubeflow Pipelines v2 (.yaml) or Vertex AI (.json)"),
            ("submit", cmd_submit, "compile (or take --package) and start one run with kfp.Client"),
            ("schedule", cmd_schedule, "compile (or take --package) and create a recurring run (max concurrency 1)")]:
        p = commands.add_parser(name, help=help_text)
        _add_config_args(p)
        p.add_argument("--image",
                       help="container image of every step and training worker (built from the Dockerfile)")
        p.add_argument("--out", default="pipeline.yaml", help="compiled file: .yaml (KFP v2) or .json (Vertex)")
        p.add_argument("--launcher", choices=("kubeflow", "k8s-job", "vertex"),  # config.CLUSTER_LAUNCHERS
                       help="where the Trainer's replicas run (launcher): kubeflow, a TFJob (kubeflow.*); k8s-job, an "
                            "Indexed Job and a headless Service, no operator (kubeflow.*); vertex, a Vertex AI "
                            "CustomJob (vertex.*: --project, --region, machine and accelerator)")
        p.add_argument("--namespace", help="namespace of the training TFJob (kubeflow.namespace; default: the "
                                          "Trainer step pod's own namespace)")
        p.add_argument("--worker-cpu", help="CPU request of each training worker (kubeflow.worker_cpu)")
        p.add_argument("--worker-memory", help="memory request of each training worker (kubeflow.worker_memory)")
        p.add_argument("--service-account", help="service account of the training pods (kubeflow.service_account)")
        p.add_argument("--allow-local-beam", action="store_true",
                       help="keep Beam settings for one machine in the spec (the DirectRunner's --direct_running_mode "
                            "and --direct_num_workers, Flink's embedded cluster and loopback workers): for kfp-local "
                            "on this machine, not for a cluster")
        p.set_defaults(config_default="cluster")
        if name != "compile":
            p.add_argument("--host", required=True, help="KFP API endpoint, e.g. http://ml-pipeline-ui.kubeflow")
            p.add_argument("--experiment", default="bresnet-video")
            p.add_argument("--package", help="an already compiled pipeline.yaml (skips compiling)")
        if name == "submit":
            p.add_argument("--run-name", default=None)
        if name == "schedule":
            p.add_argument("--cron", required=True, help='6-field cron, seconds first, e.g. "0 0 3 * * *"')
            p.add_argument("--job-name", default="bresnet-video-nightly")
            p.add_argument("--no-cache", action="store_true",
                           help="run every step of every scheduled run (KFP's enable_caching=False); by default "
                                "a run with no new data is all cache hits. Missed intervals are never backfilled")
        p.set_defaults(func=func)

    p = commands.add_parser("kfp-local", help="run a compiled pipeline (.yaml) on this machine as the open-source "
                            "KFP v2 backend would: ExecutorInputs, placeholders, caching, trigger policies")
    from pipeline.kfp_local.runner import add_arguments as add_kfp_local_arguments  # no TFX import: cheap
    add_kfp_local_arguments(p)
    p.set_defaults(func=cmd_kfp_local)

    p = commands.add_parser("stage", help="upload a data folder to gs:// (resumable, checksummed, skips unchanged)")
    p.add_argument("--src", required=True, help="local folder (demo data or converted videos)")
    p.add_argument("--dst", required=True, help="gs://bucket/prefix")
    p.set_defaults(func=cmd_stage)

    p = commands.add_parser("report", help="HTML report of the newest run in a run folder: curves, confusion matrix, "
                            "gate, push, throughput, dead letters")
    p.add_argument("--run", required=True, metavar="DIR", help="run folder holding metadata.sqlite, e.g. runs/demo")
    p.add_argument("--out", help="HTML file (default <pipeline_root>/report/report.html); its PNGs go next to it")
    p.set_defaults(func=cmd_report)

    p = commands.add_parser("predict", help="video-level top-k predictions of a served model on video files or "
                            "TFRecords, or the TF Serving request for them")
    from pipeline.predict import add_arguments as add_predict_arguments  # standard library only: cheap
    add_predict_arguments(p)
    p.set_defaults(func=cmd_predict)

    p = commands.add_parser("show-config", help="print the effective config (after presets, file and overrides)")
    _add_config_args(p)
    p.set_defaults(func=cmd_show_config)
    return parser


OUR_LOGGERS = ("bresnet", "components", "pipeline", "bench")


class _OursOrWarnings(logging.Filter):
    """Console shows this project's INFO progress and everyone's warnings; TFX/Beam INFO goes to the run log."""

    def filter(self, record):
        return record.levelno >= logging.WARNING or record.name.split(".")[0] in OUR_LOGGERS


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not verbose:
        for handler in logging.getLogger().handlers:
            handler.addFilter(_OursOrWarnings())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    if getattr(args, "beam_args", None) and args.beam_args[:1] == ["--"]:
        args.beam_args = args.beam_args[1:]
    from components.spans import MissingSpanError
    from pipeline.config import ConfigError
    try:
        return args.func(args)
    except ConfigError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    except MissingSpanError as exc:   # the data is not there yet: not a usage error, but no traceback either
        parser.exit(1, f"{parser.prog}: error: {exc}\n")


if __name__ == "__main__":
    sys.exit(main())
