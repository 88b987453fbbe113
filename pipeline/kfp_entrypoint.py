"""``python -m pipeline.kfp_entrypoint``: TFX's KFP v2 container entrypoint, made to run on open-source Kubeflow
Pipelines. ``pipeline.kfp_caching.route_tfx_executors`` puts it in place of TFX's own in the compiled YAML; it
takes the same arguments and ends by running TFX's entrypoint unchanged (with ``--example-gen-driver`` first: TFX's
file-based ExampleGen driver, Vertex AI's ``preCacheCheck``, which has the same problems with custom types).

Two things TFX 1.16's ``kubeflow_v2_run_executor`` cannot handle there (both seen with ``kfp-local``):

1. Input artifacts without a type. The open-source driver resolves an upstream output from ML Metadata without
   its schema (kubeflow/pipelines backend/src/v2/metadata/client.go, ``GetOutputArtifactsByExecutionId``:
   ``Schema: "" // TODO(Bobgy): figure out how to get schema``), so the ExecutorInput carries
   ``"type": {"instanceSchema": ""}`` and TFX's ``_retrieve_class_path`` fails on it (tensorflow/tfx#7768, reported
   with TFX 1.16 and kfp 2.5). Vertex AI sends the type. Here each input artifact without one gets the type of its
   input definition, which TFX passes as ``--json_serialized_inputs_spec_args`` (pipeline spec schema 2.1).
2. Custom artifact types. TFX compiles a custom type's ``TYPE_NAME`` as its schema title and imports that title
   as a class path at run time, so ``bresnet.IngestDeadLetter`` fails with ImportError (on Vertex too). Every loaded
   ``Artifact`` subclass is registered under its ``TYPE_NAME`` in TFX's title-to-class table first.
3. The ``executor-logs`` output (``system.Artifact``) the open-source driver adds to every task when the server
   publishes logs (``PUBLISH_LOGS=true``, the default of its manifests): the launcher writes it, not the executor,
   and TFX would try to import ``system.Artifact``. It is taken out of the ExecutorInput TFX sees.
"""
from __future__ import annotations

import json
import sys

INVOCATION_FLAG = "--json_serialized_invocation_args"
INPUTS_SPEC_FLAG = "--json_serialized_inputs_spec_args"
EXECUTOR_FLAG = "--executor_class_path"
EXECUTOR_LOGS = "executor-logs"
DRIVER_MODE = "--example-gen-driver"


def _flag_value(argv: list[str], flag: str) -> tuple[int, str | None]:
    """(index of the value, value) of ``flag VALUE`` or ``flag=VALUE``; (-1, None) when absent."""
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return i + 1, argv[i + 1]
        if arg.startswith(flag + "="):
            return i, arg[len(flag) + 1:]
    return -1, None


def _has_type(artifact_type: dict | None) -> bool:
    t = artifact_type or {}
    return bool(t.get("instanceSchema") or t.get("instance_schema") or t.get("schemaTitle") or t.get("schema_title"))


def fill_input_artifact_types(executor_input: dict, inputs_spec: dict) -> list[str]:
    """Gives every input artifact without a type the type of its input definition (in place); the names fixed."""
    definitions = inputs_spec.get("artifacts", {})
    fixed = []
    for name, artifact_list in executor_input.get("inputs", {}).get("artifacts", {}).items():
        definition = definitions.get(name, {})
        artifact_type = definition.get("artifactType") or definition.get("artifact_type")
        if not _has_type(artifact_type):
            continue
        for artifact in artifact_list.get("artifacts", []):
            if not _has_type(artifact.get("type")):
                artifact["type"] = dict(artifact_type)
                fixed.append(name)
    return fixed


def _titles(executor_input: dict, inputs_spec: dict) -> set[str]:
    import yaml
    titles = set()
    types = [a.get("type") for side in ("inputs", "outputs")
             for lst in executor_input.get(side, {}).get("artifacts", {}).values() for a in lst.get("artifacts", [])]
    types += [d.get("artifactType") for d in inputs_spec.get("artifacts", {}).values()]
    for t in types:
        t = t or {}
        schema = t.get("instanceSchema") or t.get("instance_schema")
        title = t.get("schemaTitle") or t.get("schema_title")
        if schema:
            title = (yaml.safe_load(schema) or {}).get("title")
        if title:
            titles.add(title)
    return titles


def register_custom_artifact_types(titles: set[str], executor_class_path: str | None) -> dict[str, str]:
    """Maps every title TFX could not import to the loaded Artifact subclass with that ``TYPE_NAME``."""
    import importlib

    from tfx.orchestration.kubeflow.v2 import compiler_utils
    from tfx.types import artifact
    table = compiler_utils.TITLE_TO_CLASS_PATH

    def importable(path: str) -> bool:
        module, _, name = path.rpartition(".")
        try:
            return bool(module) and hasattr(importlib.import_module(module), name)
        except ImportError:
            return False

    missing = {t for t in titles if t not in table and not importable(t)}
    if not missing:
        return {}
    if executor_class_path:
        importlib.import_module(executor_class_path.rpartition(".")[0])
    import pipeline.pipeline  # noqa: F401  (loads every component module, hence every custom artifact type)

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    added = {}
    for cls in subclasses(artifact.Artifact):
        name = getattr(cls, "TYPE_NAME", None)
        if name in missing and name not in added:
            added[name] = f"{cls.__module__}.{cls.__qualname__}"
    table.update(added)
    return added


def prepare_argv(argv: list[str]) -> list[str]:
    """The arguments for TFX's entrypoint, with input artifact types filled in (and custom types registered)."""
    argv = list(argv)
    index, invocation = _flag_value(argv, INVOCATION_FLAG)
    if invocation is None:
        return argv
    _, spec_json = _flag_value(argv, INPUTS_SPEC_FLAG)
    _, executor_class_path = _flag_value(argv, EXECUTOR_FLAG)
    executor_input = json.loads(invocation)
    inputs_spec = json.loads(spec_json) if spec_json else {}
    fixed = fill_input_artifact_types(executor_input, inputs_spec)
    if fixed:
        print(f"kfp_entrypoint: input artifact types taken from the component's input definitions: "
              f"{sorted(set(fixed))}", file=sys.stderr, flush=True)
    dropped = executor_input.get("outputs", {}).get("artifacts", {}).pop(EXECUTOR_LOGS, None)
    if fixed or dropped:
        value = json.dumps(executor_input)
        argv[index] = value if argv[index].startswith("{") else f"{INVOCATION_FLAG}={value}"
    added = register_custom_artifact_types(_titles(executor_input, inputs_spec), executor_class_path)
    if added:
        print(f"kfp_entrypoint: custom artifact types registered: {added}", file=sys.stderr, flush=True)
    return argv


def main(argv: list[str] | None = None) -> None:
    """TFX's executor entrypoint, or (first argument ``--example-gen-driver``) TFX's file-based ExampleGen driver,
    the ``lifecycle.preCacheCheck`` Vertex AI runs, which parses the same outputs."""
    from absl import app
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == [DRIVER_MODE]:
        from tfx.orchestration.kubeflow.v2.file_based_example_gen import driver as target
        args = args[1:]
    else:
        from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_run_executor as target
    args = prepare_argv(args)
    # The Beam step's arguments sit inside the executor input; loopback process workers (beam.runner flink with
    # --allow-local-beam, as kfp-local runs it) need this interpreter first on PATH (components/beam_workers.py).
    from components.beam_workers import put_interpreter_first_on_path
    put_interpreter_first_on_path()
    app.run(target.main, argv=[sys.argv[0], *args], flags_parser=target._parse_flags)


if __name__ == "__main__":
    main()
