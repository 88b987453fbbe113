"""Caching that is right for scheduled runs on open-source Kubeflow Pipelines, and the compiled-spec fixes it needs.

The problem. Open-source KFP v2 computes a task's cache key from its input artifact *names*, its input parameter
values, its output specs, image, command and args (backend/src/v2/cacheutils/cache.go, mirrored by
pipeline/kfp_local/runner.py). TFX's file-based ExampleGen relies on a driver that fingerprints the input files
before the cache lookup, but TFX compiles that driver as ``lifecycle.preCacheCheck``, a Vertex AI hook the
open-source backend never runs. So Ingest's key is a set of constants: every scheduled run after the first is
served from the cache at every step, new videos or not.

The fix, in the compiled spec (``add_input_fingerprint``): a task ``input-fingerprint`` with caching disabled runs
``python -m pipeline.kfp_caching fingerprint`` on Ingest's ``input_base`` and ``input_config``, and writes a digest of
every input file's split, relative name, size and CRC32C (GCS object metadata on gs://, computed locally
otherwise; the same bytes give the same digest in a local folder and in its ``stage``d copy) to the output
parameter KFP gives it. Ingest's parameter ``input_fingerprint`` (components/ingest.py) takes that output, so
Ingest's cache key is the files': same files, a cached run; a new or changed file, Ingest runs, its output
artifacts get new names and every step downstream runs too. Files are matched with Beam's glob rules (``*`` stops
at ``/``, ``**`` does not), which is how Ingest matches them.

``prepare_for_kfp`` also routes TFX's executors through ``pipeline.kfp_entrypoint`` (see there: open-source KFP
hands TFX input artifacts without their type, and TFX cannot import this project's custom artifact types by
their type names); ``compile_pipeline`` applies it to the KFP YAML.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import sys
import time

from components.spans import (DEFAULT_LABEL_MAP, files_digest, label_map_files, list_input_files,  # noqa: F401
                              resolve_from_config, translate_pattern)

log = logging.getLogger(__name__)

FINGERPRINT_TASK = "input-fingerprint"
FINGERPRINT_COMPONENT = "input-fingerprint"
FINGERPRINT_EXECUTOR = "input-fingerprint_executor"
FINGERPRINT_PARAMETER = "input_fingerprint"     # Ingest's parameter, and the task's output parameter
SPAN_CONFIG_PARAMETER = "span_config"           # Ingest's parameter: patterns with span specs and the window
INGEST_TASK = "Ingest"
TFX_ENTRYPOINT = "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"
TFX_DRIVER = "tfx.orchestration.kubeflow.v2.file_based_example_gen.driver"   # Vertex's preCacheCheck for Ingest
OUR_ENTRYPOINT = "pipeline.kfp_entrypoint"


# ---- the fingerprint ---------------------------------------------------------------------------------------

def input_fingerprint(input_base: str, splits: list[tuple[str, str]],
                      span_config: str | None = None) -> tuple[str, dict]:
    """The digest Ingest's cache key gets, and a summary (files and bytes per split).

    With Ingest's ``span_config`` (components/ingest.py) the digest covers the files of the window the run would
    train on, resolved as Ingest resolves it, and the window's spans: a missing newest span fails here under
    ``on_missing_span: fail``; under ``skip`` the window ends at the newest span present, so an unchanged window
    gives the last run's digest and every step is served from the cache."""
    window = resolve_from_config(input_base, span_config, checksum=True) if span_config else None
    if window is None:
        rows = list_input_files(input_base, splits)
    else:
        config = json.loads(span_config)
        splits = list(config["patterns"].items())
        rows = [(split, *row) for s in window.spans for split in sorted(s.files) for row in s.files[split]]
        # The label maps the run reads (components/label_maps.py): a new class changes the key too.
        rows += list_input_files(input_base, [("label_map", rel) for rel in
                                              label_map_files(config.get("label_map", DEFAULT_LABEL_MAP),
                                                              [s.span for s in window.spans])])
    digest = files_digest(rows + ([("window", json.dumps([[s.span, s.version] for s in window.spans]), 0, "")]
                                  if window is not None and window.kind is not None else []))
    summary = {"input_base": input_base, "splits": {}}
    if window is not None:
        summary["window"] = [s.span for s in window.spans]
        summary["skipped"] = window.skipped
    for split, pattern in splits:
        mine = [r for r in rows if r[0] == split]
        summary["splits"][split] = {"pattern": pattern, "files": len(mine), "bytes": sum(r[2] for r in mine)}
    return digest, summary


def splits_from_input_config(input_config: str) -> list[tuple[str, str]]:
    """``[(name, pattern)]`` of an ExampleGen ``Input`` proto in JSON (Ingest's ``input_config`` parameter)."""
    data = json.loads(input_config)
    splits = [(s["name"], s["pattern"]) for s in data.get("splits", [])]
    if not splits:
        raise ValueError(f"input_config has no splits: {input_config!r}")
    return splits


# ---- the spec rewrite --------------------------------------------------------------------------------------

def _container(spec: dict, task_name: str) -> dict:
    component = spec["components"][spec["root"]["dag"]["tasks"][task_name]["componentRef"]["name"]]
    return spec["deploymentSpec"]["executors"][component["executorLabel"]]["container"]


def add_input_fingerprint(spec: dict, ingest_task: str = INGEST_TASK) -> dict:
    """A copy of the PipelineSpec (schema 2.1.0, as a dict) with the ``input-fingerprint`` task wired into
    ``ingest_task``'s ``input_fingerprint`` parameter (module docstring)."""
    if spec.get("schemaVersion") != "2.1.0":
        raise ValueError(f"expected a PipelineSpec of schema 2.1.0 (KubeflowV2DagRunnerConfig(use_pipeline_spec_2_1="
                         f"True)), got {spec.get('schemaVersion')!r}")
    spec = copy.deepcopy(spec)
    tasks = spec["root"]["dag"]["tasks"]
    if ingest_task not in tasks:
        raise ValueError(f"no task {ingest_task!r} in the pipeline (tasks: {sorted(tasks)})")
    if FINGERPRINT_TASK in tasks:
        raise ValueError(f"the pipeline already has a task {FINGERPRINT_TASK!r}")
    ingest = tasks[ingest_task]
    component = spec["components"][ingest["componentRef"]["name"]]
    for name in (FINGERPRINT_PARAMETER, SPAN_CONFIG_PARAMETER):
        if name not in component.get("inputDefinitions", {}).get("parameters", {}):
            raise ValueError(f"{ingest_task} has no {name!r} parameter (components/ingest.py)")
    parameters = ingest["inputs"]["parameters"]
    image = _container(spec, ingest_task)["image"]

    spec["components"][FINGERPRINT_COMPONENT] = {
        "executorLabel": FINGERPRINT_EXECUTOR,
        "inputDefinitions": {"parameters": {"input_base": {"parameterType": "STRING"},
                                            "input_config": {"parameterType": "STRING"},
                                            SPAN_CONFIG_PARAMETER: {"parameterType": "STRING"}}},
        "outputDefinitions": {"parameters": {FINGERPRINT_PARAMETER: {"parameterType": "STRING"}}},
    }
    spec["deploymentSpec"]["executors"][FINGERPRINT_EXECUTOR] = {"container": {
        "image": image,
        "command": ["python", "-m", "pipeline.kfp_caching"],
        "args": ["fingerprint", "--input-base", "{{$.inputs.parameters['input_base']}}",
                 "--input-config", "{{$.inputs.parameters['input_config']}}",
                 "--span-config", "{{$.inputs.parameters['%s']}}" % SPAN_CONFIG_PARAMETER,
                 "--output", "{{$.outputs.parameters['%s'].output_file}}" % FINGERPRINT_PARAMETER],
        "resources": {"cpuLimit": 1.0, "memoryLimit": 1.0},
    }}
    tasks[FINGERPRINT_TASK] = {
        "taskInfo": {"name": FINGERPRINT_TASK},
        "componentRef": {"name": FINGERPRINT_COMPONENT},
        "inputs": {"parameters": {"input_base": copy.deepcopy(parameters["input_base"]),
                                  "input_config": copy.deepcopy(parameters["input_config"]),
                                  SPAN_CONFIG_PARAMETER: copy.deepcopy(parameters[SPAN_CONFIG_PARAMETER])}},
        "cachingOptions": {"enableCache": False},   # it must look at the files on every run
    }
    parameters[FINGERPRINT_PARAMETER] = {"taskOutputParameter": {
        "producerTask": FINGERPRINT_TASK, "outputParameterKey": FINGERPRINT_PARAMETER}}
    ingest["dependentTasks"] = sorted(set(ingest.get("dependentTasks", [])) | {FINGERPRINT_TASK})
    return spec


def route_tfx_executors(spec: dict) -> dict:
    """A copy whose TFX executor containers run ``python -m pipeline.kfp_entrypoint`` (same args) instead of TFX's
    ``kubeflow_v2_run_executor``, and whose ``preCacheCheck`` hooks (used by Vertex AI only) run it with
    ``--example-gen-driver`` instead of TFX's file-based ExampleGen driver."""
    spec = copy.deepcopy(spec)
    for executor in spec["deploymentSpec"]["executors"].values():
        container = executor.get("container")
        if container and container.get("command") == ["python", "-m", TFX_ENTRYPOINT]:
            container["command"] = ["python", "-m", OUR_ENTRYPOINT]
        hook = (container or {}).get("lifecycle", {}).get("preCacheCheck")
        if hook and hook.get("command") == ["python", "-m", TFX_DRIVER]:
            hook["command"] = ["python", "-m", OUR_ENTRYPOINT, "--example-gen-driver"]
    return spec


def prepare_for_kfp(spec: dict) -> dict:
    """What ``compile_pipeline`` applies to the KFP YAML: TFX executors through our entrypoint, and Ingest's cache
    key fed by the input files' fingerprint."""
    return add_input_fingerprint(route_tfx_executors(spec))


# ---- the task's command line -------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.kfp_caching", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("fingerprint", help="digest of the input files (names, sizes, CRC32C) to --output")
    p.add_argument("--input-base", required=True, help="folder or gs:// prefix the patterns are relative to")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--input-config", help="ExampleGen Input proto as JSON (Ingest's input_config)")
    group.add_argument("--patterns", nargs="+", metavar="[SPLIT=]PATTERN", help="globs relative to --input-base")
    p.add_argument("--span-config", default="", help="Ingest's span_config (JSON): digest the window's files only")
    p.add_argument("--output", help="file for the digest (KFP's output parameter file); default: stdout only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.input_config:
        splits = splits_from_input_config(args.input_config)
    else:
        splits = [tuple(p.split("=", 1)) if "=" in p else (p, p) for p in args.patterns]
    started = time.monotonic()
    digest, summary = input_fingerprint(args.input_base, splits, args.span_config or None)
    summary["seconds"] = round(time.monotonic() - started, 3)
    summary["fingerprint"] = digest
    log.info("input fingerprint %s", json.dumps(summary, sort_keys=True))
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as f:
            f.write(digest)    # no newline: KFP reads a STRING output parameter file verbatim
    print(digest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
