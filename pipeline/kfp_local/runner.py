"""``kfp-local``: run a compiled KFP v2 PipelineSpec on this machine as the open-source KFP v2 backend would.

``python -m pipeline kfp-local --package pipeline.yaml`` answers "does my compiled pipeline run?" before it goes to
a cluster: the package is checked as the KFP API server checks it, every task's ExecutorInput is built as the
driver builds it, its command runs as the launcher runs it, outputs are recorded as ML Metadata records them, and
the cache decides as the KFP cache does. Mirrored from kubeflow/pipelines at tag 2.17.0
(4a3592cb2dd0a91a4652ab93893ec8beda1f3158, July 2026), files under ``backend/src/``:

- ``apiserver/template/v2_template.go``: a package must be a PipelineSpec of schema version 2.1.0 (TFX's
  KubeflowV2DagRunner writes 2.0.0 unless ``use_pipeline_spec_2_1=True``: the server refuses it with "KFP only
  supports schema version 2.1.0") with a pipeline name and a root.
- ``v2/compiler/argocompiler/dag.go``, ``container.go``: a task starts when every task in ``dependentTasks``
  Succeeded (Argo enhanced ``depends``; cached counts as succeeded); a task whose upstream failed or was skipped is
  not run; after a failure no new task starts (Argo's DAG ``failFast``, on by default); tasks with
  ``triggerPolicy.strategy: ALL_UPSTREAM_TASKS_COMPLETED`` are exit hooks and run once their upstream tasks finished
  whatever the outcome. Resolver executors are refused ("resolver executors not implemented"), as are Google-only
  custom jobs.
- ``v2/driver/container.go``, ``resolve.go``, ``driver.go`` (``provisionOutputs``), ``util.go``: the ExecutorInput.
  Parameters: ``runtimeValue.constant`` (with the ``{{$.pipeline_job_name}}``-style run placeholders),
  ``taskOutputParameter``, ``componentInputParameter`` (the root's defaults), ``taskFinalStatus``; then the type
  check and conversion (a STRING parameter given a number gets its text). Input artifacts from the producer's
  recorded outputs: ``name`` is the ML Metadata artifact id, ``uri``, ``metadata`` (the recorded custom properties:
  executor metadata plus ``display_name`` and ``store_session_info``) and a type whose ``instanceSchema`` is ""
  (``metadata/client.go GetOutputArtifactsByExecutionId``: "TODO: figure out how to get schema"; TFX 1.16 cannot
  parse that, see pipeline/kfp_entrypoint.py). ``triggerPolicy.condition`` is evaluated (CEL, on the ExecutorInput)
  before outputs are provisioned. Outputs: artifact URIs ``<root>/<pipeline name>/<run id>/<task>/<uuid>/<key>``
  (``metadata/client.go GetPipeline`` + ``GenerateOutputURI``; before backend 2.4 there was no ``<uuid>`` level),
  output parameters at ``/tmp/kfp/outputs/<key>``, ``outputs.outputFile`` at the task root's local path
  (``/gcs/<bucket>/...`` for gs://) or ``/tmp/kfp_outputs/output_metadata.json``; with the default
  ``PUBLISH_LOGS=true`` of the server manifest an ``executor-logs`` output (``system.Artifact``, URI suffix
  ``-0``: retry index) the launcher tees the task's output into.
- ``v2/cacheutils/cache.go``, ``v2/driver/cache.go``: the cache key (input artifact names, input parameter values,
  output artifact name+type+metadata without URI, output parameter types, image, command+args as compiled, PVC
  names), serialized with protojson then Go's encoding/json (sorted keys, HTML-escaped), sha256 hex: the same
  fingerprint KFP computes (checked against the golden values of cacheutils/cache_test.go). Lookup: newest
  execution with that fingerprint, pipeline ``pipeline/<name>`` and namespace; a hit reuses the cached execution's
  output parameters and its artifacts (same ids, so downstream keys stay equal) and runs nothing. Only with
  ``cachingOptions.enableCache`` and no ``--no-cache``. Only successful executions are cached
  (``component/launcher_v2.go``).
- ``v2/component/launcher_v2.go``: placeholders (``{{$}}`` = the ExecutorInput JSON with parameter defaults,
  ``{{$.inputs.parameters['k']}}``, ``{{$.inputs.artifacts['k'].uri|path}}``, ``{{$.outputs.artifacts['k'].uri|
  path}}``, ``{{$.outputs.parameters['k'].output_file}}``), the command runs without a shell, then the
  ExecutorOutput at ``outputFile`` (if any) is merged into the output artifacts (uri, metadata) and output
  parameters are its ``parameterValues`` or, missing there, the parameter files read by type (a missing file fails
  the task).

How it runs here, and what is not emulated:

- Tasks run one at a time, in dependency order (ties by name); KFP runs independent tasks in parallel, so with
  fail-fast a real run may finish a few more tasks than kfp-local does. No retries (``retryPolicy``), no
  ParallelFor, no nested DAGs, no importer tasks, no IfPresent/Concat placeholders: refused with a message.
- No pods, images, node pools or resource requests/limits: each task is a process of THIS checkout with this
  venv's Python in place of the image's ``python``, this machine's environment plus the image's ``ENV`` lines
  (parsed from the Dockerfile), the container's ``env``, ``KFP_POD_NAME``/``KFP_POD_UID`` and ``KUBECONFIG``. Paths
  the backend gives inside the container (``/tmp/kfp/outputs/...``, ``/gcs/...``, ``/tmp/kfp_outputs/...``) live
  under ``<workdir>/runs/<run id>/<task>/pod``. When the task's main process exits (or is cancelled) every process
  it left behind is killed, as the container runtime does.
- Object store: gs:// pipeline roots are used as they are (credentials from the environment;
  ``STORAGE_EMULATOR_HOST`` works). A local folder is accepted as a stand-in bucket (the real backend needs gs://,
  s3:// or minio://): artifacts' ``.path`` is then the URI itself. The launcher's download of every gs:// input
  artifact into the pod (a disk cost on the cluster: a Trainer pod gets all clip records) and the upload of files
  written under ``/gcs/...`` are done only when a command uses ``.path`` placeholders; TFX uses URIs only.
- ML Metadata and the KFP API server's task table are one sqlite file, ``<workdir>/kfp-local.sqlite``: runs,
  executions (state, fingerprint, ExecutorInput, output parameters), artifacts (URI, schema, custom properties)
  and events, and the cache table (fingerprint, pipeline, namespace, execution). Nothing else (no UI, no
  lineage API, no run artifacts in a real MLMD). ``<workdir>/runs/<run id>/run.json`` summarizes a run.
- Training replicas: unless ``--kubeconfig`` names a cluster, the Kubernetes API stand-in
  ``pipeline.kfp_local.kube_api.KubeApiServer`` is started (at the first task that runs) and stopped with the run,
  and every task gets its kubeconfig; this machine's own ``KUBECONFIG`` is never passed on.
- Cancelling (SIGTERM, Ctrl-C): the running task's process group gets SIGTERM, then SIGKILL after the grace period
  (30 s, like ``terminationGracePeriodSeconds``); its leftovers are killed, the stand-in is stopped, nothing of the
  task is cached, and kfp-local exits with 128 + the signal number.
- ``--vertex``: Vertex AI runs a container's ``lifecycle.preCacheCheck`` (TFX: the file-based ExampleGen driver,
  which computes span, version and the input files' fingerprint) before its cache lookup, with the same
  ExecutorInput; the ``parameterValues`` it writes to ``outputFile`` are merged into the task's input parameters
  (so the cache key sees the fingerprint), and the file stays for the executor, which reads it too. The open-source
  backend ignores the hook; kfp-local does too unless ``--vertex``. Vertex's own cache key is not public: the KFP
  key above is used.
"""
from __future__ import annotations

import argparse
import copy
import ctypes
import dataclasses
import datetime
import decimal
import hashlib
import json
import math
import os
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid

import yaml

from pipeline.config import ConfigError

KFP_SOURCE = "kubeflow/pipelines 2.17.0 (4a3592cb2dd0a91a4652ab93893ec8beda1f3158)"
SCHEMA_VERSION = "2.1.0"
EXECUTOR_LOGS = "executor-logs"
DEFAULT_NAMESPACE = "kubeflow-user"
DEFAULT_GRACE_S = 30.0
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Task states (ML Metadata's execution states where they exist).
COMPLETE, CACHED, FAILED, CANCELED, SKIPPED, NOT_RUN = "COMPLETE", "CACHED", "FAILED", "CANCELED", "SKIPPED", "NOT_RUN"
SUCCEEDED = (COMPLETE, CACHED)


class SpecError(ConfigError):
    """The package would be refused by the KFP API server or compiler (or uses what kfp-local cannot run)."""


class TaskError(RuntimeError):
    """A task failed in its driver or launcher (bad inputs, missing output parameter, ...)."""


# ---- Go's JSON, for the cache fingerprint -------------------------------------------------------------------

def _go_float_f(x: float) -> str:
    """strconv.FormatFloat(x, 'f', -1, 64): the shortest round-tripping digits, never an exponent."""
    if x == 0:
        return "-0" if math.copysign(1.0, x) < 0 else "0"
    text = repr(x)
    if "e" in text or "E" in text:
        text = format(decimal.Decimal(text), "f")
    return text[:-2] if text.endswith(".0") else text


def _go_json_float(x: float) -> str:
    """encoding/json's float64: 'f' format for 1e-6 <= |x| < 1e21, else 'e' (shortest digits, 'e-07' -> 'e-7')."""
    if math.isnan(x) or math.isinf(x):
        raise ValueError(f"Go's encoding/json cannot encode {x!r}")
    a = abs(x)
    if a != 0 and (a < 1e-6 or a >= 1e21):
        mantissa, _, exponent = repr(x).partition("e")    # always an exponent in these ranges
        e = int(exponent)
        return f"{mantissa}e-{-e}" if -10 < e < 0 else f"{mantissa}e{'-' if e < 0 else '+'}{abs(e):02d}"
    return _go_float_f(x)


def go_json(value) -> str:
    """``json.Marshal`` of Go's encoding/json on the value protojson produced: compact, map keys sorted, ``<>&``
    escaped as \\u003c \\u003e \\u0026, U+2028/2029 escaped."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, (int, float)):
        return _go_json_float(float(value))
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                             ("\u2029", "\\u2029")):
            text = text.replace(raw, escaped)
        return text
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(go_json(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(go_json(str(k)) + ":" + go_json(value[k]) for k in sorted(value)) + "}"
    raise TypeError(f"cannot encode {type(value).__name__}")


# ---- the cache key (backend/src/v2/cacheutils/cache.go GenerateCacheKey, GenerateFingerPrint) --------------

def _artifact_type_json(artifact_type: dict | None) -> dict:
    t = artifact_type or {}
    out = {}
    for key in ("instanceSchema", "schemaTitle", "schemaUri", "schemaVersion"):
        if key in t and (t[key] or key in ("instanceSchema", "schemaTitle", "schemaUri")):
            out[key] = t[key]   # a oneof member is emitted even when empty; schemaVersion only when set
    return out


def cache_key(executor_input: dict, output_parameter_types: dict[str, str], command_args: list[str], image: str,
              pvc_names: list[str] | None = None) -> dict:
    """The CacheKey message as protojson emits it (empty fields omitted)."""
    inputs, outputs = executor_input.get("inputs", {}), executor_input.get("outputs", {})
    key: dict = {}
    names = {name: ({"artifactNames": [a.get("name", "") for a in lst.get("artifacts", [])]}
                    if lst.get("artifacts") else {})
             for name, lst in inputs.get("artifacts", {}).items()}
    if names:
        key["inputArtifactNames"] = names
    if inputs.get("parameterValues"):
        key["inputParameterValues"] = dict(inputs["parameterValues"])
    specs = {}
    for name, lst in outputs.get("artifacts", {}).items():
        if not lst.get("artifacts"):
            continue
        artifact = lst["artifacts"][0]
        spec = {}
        if artifact.get("name"):
            spec["name"] = artifact["name"]
        if artifact.get("type") is not None:
            spec["type"] = _artifact_type_json(artifact["type"])
        if artifact.get("metadata") is not None:
            spec["metadata"] = artifact["metadata"]
        specs[name] = spec
    if specs:
        key["outputArtifactsSpec"] = specs
    parameters = {}
    for name in outputs.get("parameters", {}):
        if name not in output_parameter_types:
            raise TaskError(f"unknown parameter {name!r} found in ExecutorInput_Outputs")
        parameters[name] = output_parameter_types[name]
    if parameters:
        key["outputParametersSpec"] = parameters
    container = {}
    if image:
        container["image"] = image
    if command_args:
        container["cmdArgs"] = list(command_args)
    if pvc_names:
        container["pvcNames"] = sorted(set(pvc_names))
    key["containerSpec"] = container
    return key


def fingerprint(key: dict) -> str:
    return hashlib.sha256(go_json(key).encode()).hexdigest()


# ---- a small CEL evaluator for triggerPolicy.condition (backend/src/v2/expression/expression.go) ------------

_CEL_TOKEN = re.compile(r"""\s*(?:
    (?P<num>\d+\.\d*(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+|\d+u?)
    |(?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
    |(?P<op>&&|\|\||==|!=|<=|>=|[<>!+\-*/%?:.,\[\](){}])
    |(?P<id>[A-Za-z_][A-Za-z_0-9]*))""", re.X)


class _Cel:
    """CEL's expression subset that KFP's SDK compiles conditions into: literals, ``inputs.parameter_values['k']``
    (proto field names), ``== != < <= > >= in``, ``! && || ?:``, arithmetic, ``int() double() string() size()
    parseJson()``."""

    def __init__(self, text: str):
        self.tokens, pos = [], 0
        text = text.strip()
        while pos < len(text):
            m = _CEL_TOKEN.match(text, pos)
            if not m or m.end() == pos:
                raise SpecError(f"cannot parse condition {text!r} at {pos}")
            self.tokens.append((m.lastgroup, m.group(m.lastgroup)))
            pos = m.end()
        self.i = 0

    def peek(self):
        return self.tokens[self.i] if self.i < len(self.tokens) else (None, None)

    def take(self, value=None):
        kind, tok = self.peek()
        if value is not None and tok != value:
            raise SpecError(f"condition: expected {value!r}, got {tok!r}")
        self.i += 1
        return kind, tok

    def parse(self):
        node = self.ternary()
        if self.i != len(self.tokens):
            raise SpecError(f"condition: unexpected {self.peek()[1]!r}")
        return node

    def ternary(self):
        cond = self.binary(0)
        if self.peek()[1] == "?":
            self.take("?")
            a = self.ternary()
            self.take(":")
            b = self.ternary()
            return ("?:", cond, a, b)
        return cond

    LEVELS = [("||",), ("&&",), ("==", "!=", "<", "<=", ">", ">=", "in"), ("+", "-"), ("*", "/", "%")]

    def binary(self, level):
        if level == len(self.LEVELS):
            return self.unary()
        node = self.binary(level + 1)
        while self.peek()[1] in self.LEVELS[level]:
            _, op = self.take()
            node = (op, node, self.binary(level + 1))
        return node

    def unary(self):
        if self.peek()[1] in ("!", "-"):
            _, op = self.take()
            return ("u" + op, self.unary())
        return self.member()

    def member(self):
        node = self.primary()
        while self.peek()[1] in (".", "["):
            if self.take()[1] == ".":
                _, name = self.take()
                node = ("field", node, name)
            else:
                index = self.ternary()
                self.take("]")
                node = ("index", node, index)
        return node

    def primary(self):
        kind, tok = self.take()
        if kind == "num":
            return ("lit", float(tok) if any(c in tok for c in ".eE") else int(tok.rstrip("u")))
        if kind == "str":
            return ("lit", json.loads('"' + tok[1:-1].replace('"', '\\"').replace("\\'", "'") + '"')
                    if tok[0] == "'" else json.loads(tok))
        if tok == "(":
            node = self.ternary()
            self.take(")")
            return node
        if tok == "[":
            items = []
            while self.peek()[1] != "]":
                items.append(self.ternary())
                if self.peek()[1] == ",":
                    self.take(",")
            self.take("]")
            return ("list", items)
        if kind == "id":
            if tok in ("true", "false", "null"):
                return ("lit", {"true": True, "false": False, "null": None}[tok])
            if self.peek()[1] == "(":
                self.take("(")
                args = []
                while self.peek()[1] != ")":
                    args.append(self.ternary())
                    if self.peek()[1] == ",":
                        self.take(",")
                self.take(")")
                return ("call", tok, args)
            return ("var", tok)
        raise SpecError(f"condition: unexpected {tok!r}")

    @classmethod
    def evaluate(cls, text: str, variables: dict):
        return cls._eval(cls(text).parse(), variables)

    @classmethod
    def _eval(cls, node, env):
        op = node[0]
        ev = lambda n: cls._eval(n, env)  # noqa: E731
        if op == "lit":
            return node[1]
        if op == "var":
            if node[1] not in env:
                raise TaskError(f"condition: undeclared reference to {node[1]!r}")
            return env[node[1]]
        if op == "list":
            return [ev(n) for n in node[1]]
        if op == "field":
            base = ev(node[1])
            if not isinstance(base, dict) or node[2] not in base:
                raise TaskError(f"condition: no such key: {node[2]}")
            return base[node[2]]
        if op == "index":
            base, index = ev(node[1]), ev(node[2])
            try:
                return base[int(index) if isinstance(base, list) else index]
            except (KeyError, IndexError, TypeError):
                raise TaskError(f"condition: no such key: {index!r}") from None
        if op == "call":
            name, args = node[1], [ev(a) for a in node[2]]
            functions = {"int": lambda v: int(float(v)) if isinstance(v, str) else int(v), "double": float,
                         "string": lambda v: v if isinstance(v, str) else json.dumps(v), "size": len,
                         "parseJson": json.loads, "bool": lambda v: v if isinstance(v, bool) else v == "true"}
            if name not in functions or len(args) != 1:
                raise TaskError(f"condition: unsupported function {name}()")
            return functions[name](args[0])
        if op == "u!":
            return not ev(node[1])
        if op == "u-":
            return -ev(node[1])
        if op == "?:":
            return ev(node[2]) if ev(node[1]) else ev(node[3])
        if op == "&&":
            return bool(ev(node[1])) and bool(ev(node[2]))
        if op == "||":
            return bool(ev(node[1])) or bool(ev(node[2]))
        a, b = ev(node[1]), ev(node[2])
        return {"==": lambda: a == b, "!=": lambda: a != b, "<": lambda: a < b, "<=": lambda: a <= b,
                "in": lambda: a in b, ">": lambda: a > b, ">=": lambda: a >= b, "+": lambda: a + b,
                "-": lambda: a - b, "*": lambda: a * b, "/": lambda: a / b, "%": lambda: a % b}[op]()


def evaluate_condition(condition: str, executor_input: dict) -> bool:
    """``triggerPolicy.condition`` on the ExecutorInput (CEL sees proto field names: ``inputs.parameter_values``)."""
    inputs = executor_input.get("inputs", {})
    variables = {"inputs": {"parameter_values": inputs.get("parameterValues", {}),
                            "artifacts": inputs.get("artifacts", {})},
                 "outputs": {}}
    result = _Cel.evaluate(condition, variables)
    if not isinstance(result, bool):
        raise TaskError(f"evaluation error: return type is not bool, got {result!r}")
    return result


# ---- the package ---------------------------------------------------------------------------------------------

_NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def load_package(path: str) -> tuple[dict, str | None]:
    """(PipelineSpec, pipeline root of a Vertex PipelineJob or None) from a .yaml/.json package."""
    with open(path) as f:
        documents = [d for d in yaml.safe_load_all(f) if d is not None]
    spec = next((d for d in documents if isinstance(d, dict) and ("pipelineInfo" in d or "pipelineSpec" in d)), None)
    if spec is None:
        raise SpecError(f"{path}: no pipeline spec in the package")
    root = None
    if "pipelineSpec" in spec:   # a Vertex PipelineJob (what `compile --out x.json` writes)
        root = spec.get("runtimeConfig", {}).get("gcsOutputDirectory")
        spec = spec["pipelineSpec"]
    return spec, root


def validate_spec(spec: dict) -> list[str]:
    """Refuses what the API server / Argo compiler refuse (and what kfp-local cannot run); the tasks in order."""
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2
    try:
        json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec())
    except json_format.ParseError as exc:
        raise SpecError(f"invalid v2 pipeline spec: {exc}") from None
    if spec.get("schemaVersion") != SCHEMA_VERSION:
        raise SpecError(f"KFP only supports schema version {SCHEMA_VERSION}, but the pipeline spec has version "
                        f"{spec.get('schemaVersion')} (compile with KubeflowV2DagRunnerConfig(use_pipeline_spec_2_1="
                        f"True))")
    name = spec.get("pipelineInfo", {}).get("name", "")
    if not name:
        raise SpecError("invalid v2 pipeline spec: name is empty")
    if not _NAME_RE.search(name):
        raise SpecError("invalid v2 pipeline spec: name should consist of lower case alphanumeric characters, '-' "
                        "or '.', and must start and end with an alphanumeric character")
    tasks = spec.get("root", {}).get("dag", {}).get("tasks")
    if not tasks:
        raise SpecError("invalid v2 pipeline spec: root component is empty")
    executors = spec.get("deploymentSpec", {}).get("executors", {})
    for task_name, task in sorted(tasks.items()):
        if task.get("parameterIterator") or task.get("artifactIterator"):
            raise SpecError(f"task {task_name!r}: ParallelFor is not supported by kfp-local")
        component = spec.get("components", {}).get(task.get("componentRef", {}).get("name", ""))
        if component is None:
            raise SpecError(f"task {task_name!r}: component {task.get('componentRef')} not found")
        if "dag" in component:
            raise SpecError(f"task {task_name!r}: nested pipelines (DAG components) are not supported by kfp-local")
        executor = executors.get(component.get("executorLabel", ""))
        if executor is None:
            raise SpecError(f"task {task_name!r}: executor with label {component.get('executorLabel')!r} not found")
        if "resolver" in executor:
            raise SpecError(f"task {task_name!r}: resolver executors not implemented (open-source KFP cannot run "
                            f"TFX Resolver nodes)")
        if "customJob" in executor:
            raise SpecError(f"task {task_name!r}: custom job executors is Google Cloud only, it's not supported")
        if "importer" in executor:
            raise SpecError(f"task {task_name!r}: importer tasks are not supported by kfp-local")
        for arg in executor["container"].get("command", []) + executor["container"].get("args", []):
            if arg.lstrip().startswith(('{"IfPresent"', '{"Concat"')):
                raise SpecError(f"task {task_name!r}: IfPresent/Concat placeholders are not supported by kfp-local")
        for dep in task.get("dependentTasks", []):
            if dep not in tasks:
                raise SpecError(f"task {task_name!r} depends on unknown task {dep!r}")
    return topological_order(tasks)


def _producers(task: dict) -> set[str]:
    inputs = task.get("inputs", {})
    found = {p["taskOutputParameter"]["producerTask"] for p in inputs.get("parameters", {}).values()
             if "taskOutputParameter" in p}
    found |= {a["taskOutputArtifact"]["producerTask"] for a in inputs.get("artifacts", {}).values()
              if "taskOutputArtifact" in a}
    return found


def topological_order(tasks: dict) -> list[str]:
    deps = {name: set(task.get("dependentTasks", [])) | _producers(task) for name, task in tasks.items()}
    order, done = [], set()
    while len(order) < len(tasks):
        ready = sorted(n for n in tasks if n not in done and deps[n] <= done)
        if not ready:
            raise SpecError(f"dependency cycle among {sorted(set(tasks) - done)}")
        order.append(ready[0])
        done.add(ready[0])
    return order


def dockerfile_env(path: str) -> dict[str, str]:
    """The ``ENV`` instructions of a Dockerfile (both ``ENV K=V ...`` and ``ENV K V``), in order."""
    env: dict[str, str] = {}
    if not path or not os.path.exists(path):
        return env
    with open(path) as f:
        text = re.sub(r"\\\n", " ", f.read())
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped.upper().startswith("ENV "):
            continue
        rest = stripped[4:].strip()
        tokens = shlex.split(rest, comments=False)
        if tokens and all("=" in t for t in tokens):
            env.update(t.split("=", 1) for t in tokens)
        elif tokens:
            key, _, value = rest.partition(" ")
            env[key] = value.strip()
    return env


# ---- ML Metadata and the cache table -----------------------------------------------------------------------

class Store:
    """ML Metadata + the API server's task table (the cache), in one sqlite file."""

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS runs(run_id TEXT PRIMARY KEY, pipeline TEXT, namespace TEXT, package TEXT,
        pipeline_root TEXT, state TEXT, created REAL, finished REAL);
    CREATE TABLE IF NOT EXISTS executions(id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT, task TEXT, state TEXT,
        fingerprint TEXT, cached_from INTEGER, executor_input TEXT, output_parameters TEXT, created REAL,
        finished REAL, seconds REAL, log TEXT, error TEXT);
    CREATE TABLE IF NOT EXISTS artifacts(id INTEGER PRIMARY KEY AUTOINCREMENT, uri TEXT, schema TEXT,
        custom_properties TEXT, created REAL);
    CREATE TABLE IF NOT EXISTS events(execution_id INTEGER, artifact_id INTEGER, type TEXT, name TEXT);
    CREATE TABLE IF NOT EXISTS cache(fingerprint TEXT, pipeline TEXT, namespace TEXT, execution_id INTEGER,
        created REAL);
    CREATE INDEX IF NOT EXISTS cache_fp ON cache(fingerprint, pipeline, namespace);
    """

    def __init__(self, path: str):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
        self.db.executescript(self.SCHEMA)

    def close(self):
        self.db.close()

    def begin_run(self, run_id, pipeline, namespace, package, pipeline_root):
        self.db.execute("INSERT INTO runs VALUES (?,?,?,?,?,?,?,NULL)",
                        (run_id, pipeline, namespace, package, pipeline_root, "RUNNING", time.time()))

    def end_run(self, run_id, state):
        self.db.execute("UPDATE runs SET state=?, finished=? WHERE run_id=?", (state, time.time(), run_id))

    def create_execution(self, run_id, task, state, executor_input, fingerprint_=None) -> int:
        cur = self.db.execute(
            "INSERT INTO executions(run_id, task, state, fingerprint, executor_input, created) VALUES (?,?,?,?,?,?)",
            (run_id, task, state, fingerprint_, json.dumps(executor_input), time.time()))
        return cur.lastrowid

    def finish_execution(self, execution_id, state, output_parameters=None, seconds=None, log=None, error=None,
                         cached_from=None):
        self.db.execute("UPDATE executions SET state=?, output_parameters=?, finished=?, seconds=?, log=?, error=?, "
                        "cached_from=? WHERE id=?",
                        (state, json.dumps(output_parameters or {}), time.time(), seconds, log, error, cached_from,
                         execution_id))

    def record_artifact(self, uri, schema, custom_properties) -> int:
        cur = self.db.execute("INSERT INTO artifacts(uri, schema, custom_properties, created) VALUES (?,?,?,?)",
                              (uri, schema, json.dumps(custom_properties), time.time()))
        return cur.lastrowid

    def add_event(self, execution_id, artifact_id, kind, name):
        self.db.execute("INSERT INTO events VALUES (?,?,?,?)", (execution_id, artifact_id, kind, name))

    def output_artifacts(self, execution_id) -> dict[str, dict]:
        rows = self.db.execute(
            "SELECT e.name, a.id, a.uri, a.schema, a.custom_properties FROM events e JOIN artifacts a "
            "ON a.id = e.artifact_id WHERE e.execution_id=? AND e.type='OUTPUT'", (execution_id,)).fetchall()
        return {name: {"id": aid, "uri": uri, "schema": schema, "custom_properties": json.loads(props)}
                for name, aid, uri, schema, props in rows}

    def output_parameters(self, execution_id) -> dict:
        row = self.db.execute("SELECT output_parameters FROM executions WHERE id=?", (execution_id,)).fetchone()
        return json.loads(row[0] or "{}") if row else {}

    def add_cache_entry(self, fingerprint_, pipeline, namespace, execution_id):
        self.db.execute("INSERT INTO cache VALUES (?,?,?,?,?)",
                        (fingerprint_, pipeline, namespace, execution_id, time.time()))

    def lookup_cache(self, fingerprint_, pipeline, namespace) -> int | None:
        row = self.db.execute("SELECT execution_id FROM cache WHERE fingerprint=? AND pipeline=? AND namespace=? "
                              "ORDER BY created DESC, rowid DESC LIMIT 1", (fingerprint_, pipeline, namespace)
                              ).fetchone()
        return row[0] if row else None


def _to_mlmd_value(value):
    """metadata/converter.go StructValueToMLMDValue: bool -> int, list -> {"list": ...}, struct -> {"struct": ...}."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, list):
        return {"list": value}
    if isinstance(value, dict):
        return {"struct": value}
    return value


def _runtime_artifact(record: dict) -> dict:
    """metadata/client.go OutputArtifact.ToRuntimeArtifact of an upstream output: name = id, schema lost."""
    metadata = {k: (float(v) if isinstance(v, int) and not isinstance(v, bool) else v)
                for k, v in record["custom_properties"].items()}
    return {"name": str(record["id"]), "type": {"instanceSchema": ""}, "uri": record["uri"], "metadata": metadata}


# ---- processes ---------------------------------------------------------------------------------------------

def _set_child_subreaper() -> None:
    """Orphans of a task become our children (not init's), so they can be found and killed (Linux only)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)   # PR_SET_CHILD_SUBREAPER
    except Exception:
        pass


def _proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, start time) of every process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if fields[0] == "Z":
            continue
        table[int(entry)] = (int(fields[1]), fields[19])
    return table


class PodProcesses:
    """Every process a task started (its tree, including orphans it left), tracked while it runs, so that when
    the main process exits the rest can be killed, as a container runtime kills a container's processes."""

    def __init__(self, root_pid: int, poll_s: float = 0.2):
        self.root, self._poll_s = root_pid, poll_s
        self.members: dict[int, str] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.poll()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self):
        while not self._stop.wait(self._poll_s):
            self.poll()

    def poll(self):
        table = _proc_table()
        with self._lock:
            if self.root in table:
                self.members.setdefault(self.root, table[self.root][1])
            children: dict[int, list[int]] = {}
            for pid, (ppid, _) in table.items():
                children.setdefault(ppid, []).append(pid)
            frontier = [p for p, start in self.members.items() if table.get(p, (0, None))[1] == start]
            while frontier:
                pid = frontier.pop()
                for child in children.get(pid, []):
                    if child not in self.members:
                        self.members[child] = table[child][1]
                        frontier.append(child)

    def alive(self) -> list[int]:
        table = _proc_table()
        with self._lock:
            return [p for p, start in self.members.items() if table.get(p, (0, None))[1] == start]

    def signal_all(self, sig) -> None:
        self.poll()
        for pid in self.alive():
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def kill_leftovers(self, timeout_s: float = 10.0) -> None:
        self.signal_all(signal.SIGKILL)
        deadline = time.monotonic() + timeout_s
        while self.alive() and time.monotonic() < deadline:
            for pid in self.alive():
                try:
                    os.waitpid(pid, os.WNOHANG)   # reap the ones reparented to us
                except ChildProcessError:
                    pass
            time.sleep(0.05)
        self.stop()

    def stop(self):
        self._stop.set()


# ---- the run ---------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class RunOptions:
    package: str
    pipeline_root: str | None = None
    run_id: str | None = None
    vertex: bool = False
    kubeconfig: str | None = None
    no_cache: bool = False
    workdir: str = ".kfp-local"
    namespace: str = DEFAULT_NAMESPACE
    grace_period_s: float = DEFAULT_GRACE_S
    dockerfile: str | None = os.path.join(REPO_ROOT, "Dockerfile")
    python: str = sys.executable
    publish_logs: bool = True
    kube_api: bool = True          # start the Kubernetes API stand-in when no --kubeconfig is given
    out: object = None             # where progress and task output go (default: sys.stdout)


@dataclasses.dataclass
class TaskResult:
    name: str
    state: str = NOT_RUN
    seconds: float = 0.0
    execution_id: int | None = None
    cached_from: int | None = None
    fingerprint: str | None = None
    reason: str = ""
    log: str | None = None
    outputs: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class RunResult:
    run_id: str
    pipeline: str
    state: str
    pipeline_root: str
    workdir: str
    seconds: float
    tasks: dict[str, TaskResult]
    signal: int | None = None

    @property
    def exit_code(self) -> int:
        if self.signal:
            return 128 + self.signal
        return 0 if self.state == "SUCCEEDED" else 1

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["exit_code"] = self.exit_code
        return d


class Cancelled(Exception):
    pass


def _local_path_for_uri(uri: str) -> str | None:
    """component/launcher_v2.go LocalPathForURI: where an object-store URI is in the container."""
    for scheme, mount in (("gs://", "/gcs/"), ("minio://", "/minio/"), ("s3://", "/s3/")):
        if uri.startswith(scheme):
            return mount + uri[len(scheme):]
    return None


def _join_uri(root: str, *parts: str) -> str:
    return root.rstrip("/") + "/" + "/".join(p.strip("/") for p in parts if p)


def _text_of(value) -> str:
    """metadata/converter.go PbValueToText, and the launcher's placeholder text of a parameter."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return _go_float_f(float(value))
    if isinstance(value, str):
        return value
    return go_json(value)


def _text_to_value(text: str, parameter_type: str):
    """metadata/converter.go TextToPbValue."""
    try:
        if parameter_type == "STRING":
            return text
        if parameter_type == "NUMBER_INTEGER":
            return float(int(text.strip()))
        if parameter_type == "NUMBER_DOUBLE":
            return float(text.strip())
        if parameter_type == "BOOLEAN":
            v = text.strip()
            if v in ("1", "t", "T", "TRUE", "true", "True"):
                return True
            if v in ("0", "f", "F", "FALSE", "false", "False"):
                return False
            raise ValueError(f"invalid syntax {v!r}")
        if parameter_type in ("LIST", "STRUCT"):
            value = json.loads(text)
            if not isinstance(value, list if parameter_type == "LIST" else dict):
                raise ValueError("unexpected type")
            return value
    except ValueError as exc:
        raise TaskError(f"TextToPbValue(text={text!r}, type={parameter_type!r}) failed: {exc}") from None
    raise TaskError(f"TextToPbValue(text={text!r}, type={parameter_type!r}) failed: unknown type")


class LocalRun:
    """One run of a package (see the module docstring)."""

    def __init__(self, options: RunOptions):
        self.o = options
        self.out = options.out or sys.stdout
        self.spec, job_root = load_package(options.package)
        self.order = validate_spec(self.spec)
        self.tasks = self.spec["root"]["dag"]["tasks"]
        self.pipeline = self.spec["pipelineInfo"]["name"]
        root = options.pipeline_root or job_root or self.spec.get("defaultPipelineRoot")
        if not root:
            raise SpecError("no pipeline root: the package has no defaultPipelineRoot; pass --pipeline-root")
        if "://" not in root:
            root = os.path.abspath(root)
        self.root = root
        self.run_id = options.run_id or str(uuid.uuid4())
        self.run_root = _join_uri(root, self.pipeline, self.run_id)   # metadata/client.go GetPipeline
        self.workdir = os.path.abspath(options.workdir)
        self.run_dir = os.path.join(self.workdir, "runs", self.run_id)
        if os.path.exists(self.run_dir):
            raise SpecError(f"run id {self.run_id!r} was used before ({self.run_dir})")
        self.created = datetime.datetime.now(datetime.timezone.utc)
        self.results = {name: TaskResult(name) for name in self.order}
        self.base_env = self._base_env()
        self.kube = None
        self.kubeconfig = options.kubeconfig
        self._current: subprocess.Popen | None = None
        self._pod: PodProcesses | None = None
        self._cancel_signal: int | None = None
        self._lock = threading.RLock()   # also taken by the signal handler

    # -- output ---------------------------------------------------------------------------------------------
    def say(self, text: str):
        with self._lock:
            print(f"[kfp-local] {text}", file=self.out, flush=True)

    def _base_env(self) -> dict:
        env = dict(os.environ)
        env.update(dockerfile_env(self.o.dockerfile))
        return env

    # -- the run ----------------------------------------------------------------------------------------------
    def run(self) -> RunResult:
        os.makedirs(self.run_dir)
        self.store = Store(os.path.join(self.workdir, "kfp-local.sqlite"))
        self.store.begin_run(self.run_id, self.pipeline, self.o.namespace, os.path.abspath(self.o.package),
                             self.run_root)
        self.say(f"run {self.run_id} of pipeline {self.pipeline!r}: {len(self.order)} tasks, one at a time; "
                 f"artifacts under {self.run_root}; cache {'off' if self.o.no_cache else 'on'}"
                 f"{'; Vertex preCacheCheck on' if self.o.vertex else ''}")
        previous = self._install_signal_handlers()
        started = time.monotonic()
        failed = None
        try:
            for name in self.order:
                result = self.results[name]
                task = self.tasks[name]
                strategy = task.get("triggerPolicy", {}).get("strategy", "ALL_UPSTREAM_TASKS_SUCCEEDED")
                deps = sorted(set(task.get("dependentTasks", [])) | _producers(task))
                if self._cancel_signal:
                    result.state, result.reason = NOT_RUN, "run cancelled"
                    continue
                if strategy != "ALL_UPSTREAM_TASKS_COMPLETED":
                    if failed:
                        result.state, result.reason = NOT_RUN, f"not started: {failed} failed (fail fast)"
                        self.say(f"{name}: {result.reason}")
                        continue
                    bad = [d for d in deps if self.results[d].state not in SUCCEEDED]
                    if bad:
                        result.state = NOT_RUN
                        result.reason = "upstream " + ", ".join(f"{d} {self.results[d].state.lower()}" for d in bad)
                        self.say(f"{name}: not run ({result.reason})")
                        continue
                self._run_task(name, task, result)
                if result.state == FAILED:
                    failed = failed or name
        except Cancelled:
            pass
        finally:
            self._restore_signal_handlers(previous)
            self._stop_kube()
        for result in self.results.values():
            if self._cancel_signal and result.state == NOT_RUN and not result.reason:
                result.reason = "run cancelled"
        if self._cancel_signal:
            state = "CANCELED"
        elif any(r.state == FAILED for r in self.results.values()):
            state = "FAILED"
        else:
            state = "SUCCEEDED"
        self.store.end_run(self.run_id, state)
        self.store.close()
        run = RunResult(self.run_id, self.pipeline, state, self.run_root, self.workdir,
                        round(time.monotonic() - started, 1), self.results, self._cancel_signal)
        with open(os.path.join(self.run_dir, "run.json"), "w") as f:
            json.dump(run.to_dict(), f, indent=2, default=str)
        self._summary(run)
        return run

    def _summary(self, run: RunResult):
        self.say(f"run {run.run_id} {run.state} in {run.seconds:.1f} s")
        for name in self.order:
            r = self.results[name]
            extra = f"(execution {r.cached_from})" if r.state == CACHED else r.reason
            self.say(f"  {name:<20} {r.state:<9} {r.seconds:7.1f} s  {extra}")
        self.say(f"details: {os.path.join(self.run_dir, 'run.json')}")

    # -- signals -----------------------------------------------------------------------------------------------
    def _install_signal_handlers(self):
        if threading.current_thread() is not threading.main_thread():
            return None
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in previous:
            signal.signal(s, self._on_signal)
        return previous

    def _restore_signal_handlers(self, previous):
        for s, handler in (previous or {}).items():
            signal.signal(s, handler)

    def _on_signal(self, signum, frame):
        if self._cancel_signal:
            return
        self._cancel_signal = signum
        self.say(f"received {signal.Signals(signum).name}: cancelling the run")
        self._terminate_current()

    def cancel(self, signum: int = signal.SIGTERM):
        """Cancels from another thread (tests); the signal handlers do the same."""
        self._on_signal(signum, None)

    def _terminate_current(self):
        proc, pod = self._current, self._pod
        if proc is None or proc.poll() is not None:
            return
        self.say(f"SIGTERM to the running task (process group {proc.pid}); SIGKILL after "
                 f"{self.o.grace_period_s:g} s")
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

        def kill_later():
            deadline = time.monotonic() + self.o.grace_period_s
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    return
                time.sleep(0.05)
            self.say(f"grace period over: SIGKILL to the task's processes")
            if pod:
                pod.signal_all(signal.SIGKILL)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        threading.Thread(target=kill_later, daemon=True).start()

    # -- the Kubernetes API stand-in ---------------------------------------------------------------------------
    def _ensure_kube(self):
        if self.kubeconfig or not self.o.kube_api or self.kube is not None:
            return
        try:
            from pipeline.kfp_local.kube_api import KubeApiServer
        except ImportError as exc:
            self.say(f"no Kubernetes API stand-in ({exc}); tasks get no KUBECONFIG")
            self.kube = False
            return
        env = {k: v for k, v in self.base_env.items()}
        self.kube = KubeApiServer(os.path.join(self.run_dir, "kube"), namespace=self.o.namespace,
                                  python=self.o.python, env=env).start()
        self.kubeconfig = self.kube.kubeconfig
        self.say(f"Kubernetes API stand-in at {self.kube.url} (namespace {self.o.namespace})")

    def _stop_kube(self):
        if self.kube:
            try:
                self.kube.stop()
            finally:
                self.kube = None
                self.kubeconfig = self.o.kubeconfig

    # -- one task ----------------------------------------------------------------------------------------------
    def _component(self, task: dict) -> tuple[dict, dict]:
        component = self.spec["components"][task["componentRef"]["name"]]
        executor = self.spec["deploymentSpec"]["executors"][component["executorLabel"]]
        return component, executor["container"]

    def _run_task(self, name: str, task: dict, result: TaskResult):
        component, container = self._component(task)
        task_dir = os.path.join(self.run_dir, name)
        pod_root = os.path.join(task_dir, "pod")
        os.makedirs(pod_root, exist_ok=True)
        result.log = os.path.join(task_dir, "task.log")
        started = time.monotonic()
        execution_id, executor_input = None, {}
        try:
            executor_input = {"inputs": self.resolve_inputs(name, task, component)}
            condition = task.get("triggerPolicy", {}).get("condition", "")
            if condition and not evaluate_condition(condition, executor_input):
                result.execution_id = self.store.create_execution(self.run_id, name, SKIPPED, executor_input)
                self.store.finish_execution(result.execution_id, SKIPPED)
                result.state, result.reason = SKIPPED, f"condition false: {condition}"
                self.say(f"{name}: skipped ({result.reason})")
                return
            executor_input["outputs"] = self.provision_outputs(name, component, pod_root)
            if self.o.vertex and container.get("lifecycle", {}).get("preCacheCheck"):
                self._pre_cache_check(name, container, component, executor_input, pod_root, result)
            caching = bool(task.get("cachingOptions", {}).get("enableCache")) and not self.o.no_cache
            if caching:
                output_types = {k: v.get("parameterType", "PARAMETER_TYPE_ENUM_UNSPECIFIED")
                                for k, v in component.get("outputDefinitions", {}).get("parameters", {}).items()}
                result.fingerprint = fingerprint(cache_key(
                    executor_input, output_types, list(container.get("command", [])) + list(container.get("args", [])),
                    container.get("image", "")))
                hit = self.store.lookup_cache(result.fingerprint, "pipeline/" + self.pipeline, self.o.namespace)
                if hit is not None:
                    self._reuse(name, executor_input, hit, result, started)
                    return
            execution_id = self.store.create_execution(self.run_id, name, "RUNNING", executor_input,
                                                       result.fingerprint)
            result.execution_id = execution_id
            for record in executor_input["inputs"].get("artifacts", {}).items():
                for artifact in record[1].get("artifacts", []):
                    self.store.add_event(execution_id, int(artifact["name"]), "INPUT", record[0])
            self.say(f"{name}: started (execution {execution_id}"
                     f"{', cache miss' if caching else ', caching disabled'})")
            self._ensure_kube()
            returncode = self.launch(name, container, component, executor_input, pod_root, result.log,
                                     prefix=name)
            if self._cancel_signal:
                raise Cancelled()
            if returncode != 0:
                raise TaskError(f"the task's command exited with code {returncode}")
            outputs = self.collect_outputs(name, component, executor_input, result.log)
            self.store.finish_execution(execution_id, COMPLETE, outputs["parameters"],
                                        round(time.monotonic() - started, 2), result.log)
            if result.fingerprint:
                self.store.add_cache_entry(result.fingerprint, "pipeline/" + self.pipeline, self.o.namespace,
                                           execution_id)
            result.state, result.outputs = COMPLETE, outputs
            result.seconds = round(time.monotonic() - started, 1)
            self.say(f"{name}: succeeded in {result.seconds:.1f} s")
        except Cancelled:
            result.state, result.reason = CANCELED, f"cancelled ({signal.Signals(self._cancel_signal).name})"
            result.seconds = round(time.monotonic() - started, 1)
            if execution_id:
                self.store.finish_execution(execution_id, CANCELED, seconds=result.seconds, log=result.log,
                                            error=result.reason)
            self.say(f"{name}: {result.reason} after {result.seconds:.1f} s; nothing of it is cached")
            raise
        except Exception as exc:   # a driver or launcher error fails the task, as its pod would
            if self._cancel_signal:
                result.state, result.reason = CANCELED, "cancelled"
                raise Cancelled() from None
            result.state, result.reason = FAILED, str(exc)
            result.seconds = round(time.monotonic() - started, 1)
            if execution_id is None:
                execution_id = self.store.create_execution(self.run_id, name, FAILED, {}, None)
                result.execution_id = execution_id
            else:   # uploadOutputArtifacts(componentSucceeded=false): only the executor-logs artifact
                self._record_logs_only(name, executor_input, result)
            self.store.finish_execution(execution_id, FAILED, seconds=result.seconds, log=result.log, error=str(exc))
            self.say(f"{name}: FAILED after {result.seconds:.1f} s: {exc} (log: {result.log})")

    def _record_logs_only(self, name, executor_input, result):
        logs = executor_input.get("outputs", {}).get("artifacts", {}).get(EXECUTOR_LOGS)
        if not logs or not os.path.exists(result.log):
            return
        uri = logs["artifacts"][0]["uri"] + "-0"
        _store_log(result.log, uri)
        artifact_id = self.store.record_artifact(uri, "title: system.Artifact", {"display_name": EXECUTOR_LOGS})
        self.store.add_event(result.execution_id, artifact_id, "OUTPUT", EXECUTOR_LOGS)

    def _reuse(self, name, executor_input, cached_execution, result, started):
        """driver/cache.go reuseCachedOutputs: the cached execution's parameters and artifacts, nothing runs."""
        artifacts = self.store.output_artifacts(cached_execution)
        parameters = self.store.output_parameters(cached_execution)
        execution_id = self.store.create_execution(self.run_id, name, CACHED, executor_input, result.fingerprint)
        for key, record in artifacts.items():
            self.store.add_event(execution_id, record["id"], "OUTPUT", key)
        self.store.finish_execution(execution_id, CACHED, parameters, 0.0, None, cached_from=cached_execution)
        result.execution_id, result.cached_from = execution_id, cached_execution
        result.state, result.seconds = CACHED, round(time.monotonic() - started, 1)
        result.outputs = {"parameters": parameters,
                          "artifacts": {k: {"id": r["id"], "uri": r["uri"]} for k, r in artifacts.items()}}
        self.say(f"{name}: cached (reuses execution {cached_execution}, fingerprint {result.fingerprint[:12]})")

    # -- the driver --------------------------------------------------------------------------------------------
    def _run_placeholder(self, text: str, task_name: str):
        values = {"{{$.pipeline_job_name}}": f"{self.pipeline}-{self.run_id[:8]}",
                  "{{$.pipeline_job_resource_name}}": f"{self.pipeline}-{self.run_id[:8]}",
                  "{{$.pipeline_job_uuid}}": self.run_id,
                  "{{$.pipeline_task_name}}": task_name,
                  "{{$.pipeline_task_uuid}}": "0",
                  "{{$.pipeline_job_create_time_utc}}": self.created.isoformat().replace("+00:00", "Z"),
                  "{{$.pipeline_job_schedule_time_utc}}": ""}
        return values.get(text)

    def resolve_inputs(self, name: str, task: dict, component: dict) -> dict:
        """driver/resolve.go resolveInputs for a container task of the root DAG."""
        definitions = component.get("inputDefinitions", {})
        root_definitions = self.spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
        inputs = {"parameterValues": {}, "artifacts": {}}
        for key, spec in task.get("inputs", {}).get("parameters", {}).items():
            if "runtimeValue" in spec:
                runtime = spec["runtimeValue"]
                if "constant" not in runtime:
                    kind = next(iter(runtime), "?")
                    raise TaskError(f"resolving input parameter {key!r}: param runtime value spec of type "
                                    f"{kind!r} not implemented (schema 2.0's constantValue)")
                value = runtime["constant"]
                if isinstance(value, str):
                    if "{{$.workspace_path}}" in value:
                        raise TaskError(f"{key}: workspaces are not supported by kfp-local")
                    special = self._run_placeholder(value, name)
                    value = special if special is not None else value
                inputs["parameterValues"][key] = value
            elif "taskOutputParameter" in spec:
                ref = spec["taskOutputParameter"]
                producer = self.results.get(ref["producerTask"])
                if producer is None or producer.state not in SUCCEEDED:
                    raise TaskError(f"resolving input parameter {key!r}: cannot find producer task "
                                    f"{ref['producerTask']!r}")
                params = self.store.output_parameters(producer.execution_id)
                if ref["outputParameterKey"] not in params:
                    raise TaskError(f"resolving input parameter {key!r}: producer {ref['producerTask']!r} has no "
                                    f"output parameter {ref['outputParameterKey']!r}")
                inputs["parameterValues"][key] = params[ref["outputParameterKey"]]
            elif "componentInputParameter" in spec:
                source = root_definitions.get(spec["componentInputParameter"])
                if source is None or "defaultValue" not in source:
                    raise TaskError(f"parent DAG does not have input parameter {spec['componentInputParameter']} "
                                    f"(kfp-local passes no runtime parameters; give the pipeline input a default)")
                inputs["parameterValues"][key] = source["defaultValue"]
            elif "taskFinalStatus" in spec:
                deps = task.get("dependentTasks", [])
                if not deps:
                    raise TaskError(f"task {name} has no dependent tasks")
                producer = self.results[deps[0]]
                state = {NOT_RUN: "NEW", SKIPPED: "COMPLETE"}.get(producer.state, producer.state)
                inputs["parameterValues"][key] = {"state": state, "pipelineTaskName": deps[0],
                                                  "pipelineJobResourceName": f"{self.pipeline}-{self.run_id[:8]}",
                                                  "error": {}}
            else:
                raise TaskError(f"parameter spec of {key!r} not implemented yet: {spec}")
        for key, spec in task.get("inputs", {}).get("artifacts", {}).items():
            if "taskOutputArtifact" not in spec:
                raise TaskError(f"artifact spec of {key!r} not implemented by kfp-local: {spec}")
            ref = spec["taskOutputArtifact"]
            producer = self.results.get(ref["producerTask"])
            if producer is None or producer.state not in SUCCEEDED:
                raise TaskError(f"failed to resolve input artifact {key}: cannot find producer task "
                                f"{ref['producerTask']!r}")
            records = self.store.output_artifacts(producer.execution_id)
            if ref["outputArtifactKey"] not in records:
                raise TaskError(f"cannot find output artifact key {ref['outputArtifactKey']!r} in producer task "
                                f"{ref['producerTask']!r}")
            inputs["artifacts"][key] = {"artifacts": [_runtime_artifact(records[ref["outputArtifactKey"]])]}
        # handleParamTypeValidationAndConversion
        for key, spec in definitions.get("parameters", {}).items():
            value = inputs["parameterValues"].get(key, None)
            if key not in inputs["parameterValues"]:
                if spec.get("isOptional"):
                    continue
                if spec.get("defaultValue") is None:
                    raise TaskError(f"neither value nor default value provided for non-optional parameter {key!r}")
                continue
            kind = spec.get("parameterType", "")
            if kind == "STRING":
                if not isinstance(value, str):
                    inputs["parameterValues"][key] = _text_of(value)
                continue
            expected = {"NUMBER_DOUBLE": (int, float), "NUMBER_INTEGER": (int, float), "BOOLEAN": (bool,),
                        "LIST": (list,), "STRUCT": (dict,), "TASK_FINAL_STATUS": (dict,)}.get(kind)
            if value is None:
                raise TaskError(f"got null for input parameter {key!r}")
            if expected and (not isinstance(value, expected) or (bool not in expected and isinstance(value, bool))):
                raise TaskError(f"input parameter {key!r} type mismatch: expect {kind}, got "
                                f"{type(value).__name__}")
        if not inputs["artifacts"]:
            del inputs["artifacts"]
        if not inputs["parameterValues"]:
            del inputs["parameterValues"]
        return inputs

    def provision_outputs(self, name: str, component: dict, pod_root: str) -> dict:
        """driver/driver.go provisionOutputs."""
        definitions = component.get("outputDefinitions", {})
        artifacts = dict(definitions.get("artifacts", {}))
        if self.o.publish_logs:
            artifacts[EXECUTOR_LOGS] = {"artifactType": {"schemaTitle": "system.Artifact"}}
        task_root = _join_uri(self.run_root, name, str(uuid.uuid4()))
        outputs: dict = {"artifacts": {}, "parameters": {}}
        for key, spec in artifacts.items():
            artifact = {"name": key, "type": spec.get("artifactType", {}), "uri": _join_uri(task_root, key)}
            if spec.get("metadata") is not None:
                artifact["metadata"] = spec["metadata"]
            outputs["artifacts"][key] = {"artifacts": [artifact]}
        for key in definitions.get("parameters", {}):
            outputs["parameters"][key] = {"outputFile": pod_root + f"/tmp/kfp/outputs/{key}"}
        local = _local_path_for_uri(task_root)
        outputs["outputFile"] = pod_root + (local + "/output_metadata.json" if local
                                            else "/tmp/kfp_outputs/output_metadata.json")
        if not outputs["artifacts"]:
            del outputs["artifacts"]
        if not outputs["parameters"]:
            del outputs["parameters"]
        return outputs

    def _pre_cache_check(self, name, container, component, executor_input, pod_root, result):
        """Vertex AI's lifecycle.preCacheCheck: same ExecutorInput; its parameterValues join the inputs."""
        hook = container["lifecycle"]["preCacheCheck"]
        self.say(f"{name}: preCacheCheck ({' '.join(hook.get('command', []))})")
        hook_container = {"image": container.get("image"), "command": hook.get("command", []),
                          "args": hook.get("args", []), "env": container.get("env", [])}
        log = os.path.join(os.path.dirname(pod_root), "pre_cache_check.log")
        code = self.launch(name, hook_container, component, executor_input, pod_root, log, prefix=f"{name}/pre")
        if self._cancel_signal:
            raise Cancelled()
        if code != 0:
            raise TaskError(f"preCacheCheck exited with code {code} (see {os.path.basename(log)})")
        output_file = executor_input["outputs"]["outputFile"]
        if os.path.exists(output_file):
            with open(output_file) as f:
                produced = json.load(f)
            values = produced.get("parameterValues", {})
            executor_input["inputs"].setdefault("parameterValues", {}).update(values)
            self.say(f"{name}: preCacheCheck set {sorted(values)}")

    # -- the launcher ------------------------------------------------------------------------------------------
    def _artifact_path(self, artifact: dict, pod_root: str) -> str | None:
        if artifact.get("customPath"):
            return artifact["customPath"]
        local = _local_path_for_uri(artifact.get("uri", ""))
        if local:
            return pod_root + local
        uri = artifact.get("uri", "")
        return uri if uri.startswith("/") else None   # kfp-local: a local pipeline root is its own mount

    def placeholders(self, executor_input: dict, pod_root: str) -> dict[str, str]:
        """component/launcher_v2.go getPlaceholders."""
        values = {}
        for key, lst in executor_input.get("inputs", {}).get("artifacts", {}).items():
            if lst.get("artifacts"):
                a = lst["artifacts"][0]
                values[f"{{{{$.inputs.artifacts['{key}'].uri}}}}"] = a.get("uri", "")
                path = self._artifact_path(a, pod_root)
                if path:
                    values[f"{{{{$.inputs.artifacts['{key}'].path}}}}"] = path
        for key, lst in executor_input.get("outputs", {}).get("artifacts", {}).items():
            if lst.get("artifacts"):
                a = lst["artifacts"][0]
                values[f"{{{{$.outputs.artifacts['{key}'].uri}}}}"] = a.get("uri", "")
                path = self._artifact_path(a, pod_root)
                if path:
                    values[f"{{{{$.outputs.artifacts['{key}'].path}}}}"] = path
        for key, value in executor_input.get("inputs", {}).get("parameterValues", {}).items():
            values[f"{{{{$.inputs.parameters['{key}']}}}}"] = _text_of(value)
        for key, parameter in executor_input.get("outputs", {}).get("parameters", {}).items():
            values[f"{{{{$.outputs.parameters['{key}'].output_file}}}}"] = parameter["outputFile"]
        return values

    def compile_command(self, container: dict, component: dict, executor_input: dict, pod_root: str) -> list[str]:
        """addDefaultParams + compileCmdAndArgs: ``{{$}}`` is the ExecutorInput with parameter defaults."""
        with_defaults = copy.deepcopy(executor_input)
        values = with_defaults.setdefault("inputs", {}).setdefault("parameterValues", {})
        for key, spec in component.get("inputDefinitions", {}).get("parameters", {}).items():
            if key not in values and spec.get("defaultValue") is not None:
                values[key] = spec["defaultValue"]
        if not values:
            del with_defaults["inputs"]["parameterValues"]
        executor_json = json.dumps(with_defaults, separators=(",", ":"))
        replacements = self.placeholders(with_defaults, pod_root)
        argv = []
        for arg in list(container.get("command", [])) + list(container.get("args", [])):
            arg = arg.replace("{{$}}", executor_json)
            for placeholder, value in replacements.items():
                arg = arg.replace(placeholder, value)
            argv.append(arg)
        if argv and argv[0] in ("python", "python3"):
            argv[0] = self.o.python    # this venv stands in for the image's interpreter
        return argv

    def _env(self, name: str, container: dict) -> dict:
        env = dict(self.base_env)
        for item in container.get("env", []):
            env[item["name"]] = item.get("value", "")
        env["KFP_POD_NAME"] = f"{self.pipeline}-{self.run_id[:8]}-{name.lower()}"[:63]
        env["KFP_POD_UID"] = str(uuid.uuid4())
        env["PYTHONUNBUFFERED"] = "1"
        env.pop("KUBECONFIG", None)    # never this machine's own cluster by accident
        if self.kubeconfig:
            env["KUBECONFIG"] = self.kubeconfig
        return env

    def launch(self, name, container, component, executor_input, pod_root, log_path, prefix) -> int:
        """Runs the container's command as a process (own process group), streams its output; the exit code."""
        # prepareOutputFolders
        for parameter in executor_input.get("outputs", {}).get("parameters", {}).values():
            os.makedirs(os.path.dirname(parameter["outputFile"]), exist_ok=True)
        for lst in executor_input.get("outputs", {}).get("artifacts", {}).values():
            for artifact in lst.get("artifacts", []):
                path = self._artifact_path(artifact, pod_root)
                if path:
                    os.makedirs(os.path.dirname(path), exist_ok=True)
        os.makedirs(os.path.dirname(executor_input["outputs"]["outputFile"]), exist_ok=True)
        argv = self.compile_command(container, component, executor_input, pod_root)
        with open(os.path.join(os.path.dirname(log_path), "executor_input.json"), "w") as f:
            json.dump(executor_input, f, indent=2)
        self._download_inputs(container, executor_input, pod_root)
        cwd = os.path.join(pod_root, "home")
        os.makedirs(cwd, exist_ok=True)
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(argv, cwd=cwd, env=self._env(name, container), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
            self._current, self._pod = proc, PodProcesses(proc.pid)
            if self._cancel_signal:
                self._terminate_current()
            pump = threading.Thread(target=self._pump, args=(proc.stdout, log, prefix), daemon=True)
            pump.start()
            try:
                while proc.poll() is None:
                    time.sleep(0.1)
            finally:
                self._pod.kill_leftovers()     # the container's other processes die with its main process
                pump.join(timeout=10)
                self._current, self._pod = None, None
        return proc.returncode

    def _pump(self, stream, log, prefix):
        for line in iter(stream.readline, b""):
            log.write(line)
            log.flush()
            with self._lock:
                self.out.write(f"[{prefix}] " + line.decode("utf-8", "replace"))
                if not line.endswith(b"\n"):
                    self.out.write("\n")
                self.out.flush()
        stream.close()

    def _download_inputs(self, container, executor_input, pod_root):
        """The launcher downloads gs:// input artifacts into the pod; kfp-local only when ``.path`` is used."""
        text = " ".join(container.get("command", []) + container.get("args", []))
        for key, lst in executor_input.get("inputs", {}).get("artifacts", {}).items():
            if f"{{{{$.inputs.artifacts['{key}'].path}}}}" not in text:
                continue
            for artifact in lst.get("artifacts", []):
                uri = artifact.get("uri", "")
                if uri.startswith("gs://"):
                    _gcs_copy_down(uri, pod_root + _local_path_for_uri(uri))

    def collect_outputs(self, name, component, executor_input, log_path) -> dict:
        """getExecutorOutputFile + collectOutputParameters + uploadOutputArtifacts (+ RecordArtifact)."""
        output_file = executor_input["outputs"]["outputFile"]
        produced = {}
        if os.path.exists(output_file):
            with open(output_file) as f:
                try:
                    produced = json.load(f)
                except ValueError as exc:
                    raise TaskError(f"failed to unmarshall ExecutorOutput in file {output_file!r}: {exc}") from None
        parameters = dict(produced.get("parameterValues", {}))
        types = component.get("outputDefinitions", {}).get("parameters", {})
        for key, parameter in executor_input["outputs"].get("parameters", {}).items():
            if key in parameters:
                continue
            kind = types.get(key, {}).get("parameterType", "")
            try:
                with open(parameter["outputFile"]) as f:
                    text = f.read()
            except OSError as exc:
                raise TaskError(f"failed to read output parameter name={key!r} type={kind!r} "
                                f"path={parameter['outputFile']!r}: {exc.strerror}") from None
            parameters[key] = _text_to_value(text, kind)
        artifacts = {}
        pod_root = os.path.join(os.path.dirname(log_path), "pod")
        session = '{"Provider":"gs","Params":{"fromEnv":"true"}}' if self.root.startswith("gs://") else "null"
        for key, lst in executor_input["outputs"].get("artifacts", {}).items():
            artifact = copy.deepcopy(lst["artifacts"][0])
            if key == EXECUTOR_LOGS:
                artifact["uri"] += "-0"          # qualifyExecutorLogsURI: the retry index
                _store_log(log_path, artifact["uri"])
            else:
                merged = produced.get("artifacts", {}).get(key, {}).get("artifacts", [])
                if merged:
                    source = merged[0]
                    if source.get("uri"):
                        artifact["uri"] = source["uri"]
                    if source.get("metadata"):
                        artifact.setdefault("metadata", {}).update(source["metadata"])
                local = self._artifact_path(artifact, pod_root)
                if artifact["uri"].startswith("gs://") and local and os.path.exists(local):
                    _gcs_copy_up(local, artifact["uri"])
            props = {k: _to_mlmd_value(v) for k, v in (artifact.get("metadata") or {}).items()
                     if k != "_kfp_workspace"}
            props.setdefault("display_name", key)
            props.setdefault("store_session_info", session)
            t = artifact.get("type", {})
            schema = t.get("instanceSchema") or ("title: " + t["schemaTitle"] if t.get("schemaTitle") else "")
            artifact_id = self.store.record_artifact(artifact["uri"], schema, props)
            self.store.add_event(self.results[name].execution_id, artifact_id, "OUTPUT", key)
            artifacts[key] = {"id": artifact_id, "uri": artifact["uri"]}
        return {"parameters": parameters, "artifacts": artifacts}


def _store_log(log_path: str, uri: str):
    """The executor-logs artifact: the task's output, at its URI (local root) or uploaded (gs://)."""
    if not os.path.exists(log_path):
        return
    if uri.startswith("gs://"):
        _gcs_copy_up(log_path, uri)
    elif uri.startswith("/"):
        os.makedirs(os.path.dirname(uri), exist_ok=True)
        with open(log_path, "rb") as src, open(uri, "wb") as dst:
            dst.write(src.read())


def _gcs_copy_up(local: str, uri: str):
    from components import gcs
    bucket_name, prefix = gcs.split_gcs(uri)
    bucket = gcs.client().bucket(bucket_name)
    files = [local] if os.path.isfile(local) else [os.path.join(d, f) for d, _, fs in os.walk(local) for f in fs]
    for path in files:
        name = prefix if path == local else prefix.rstrip("/") + "/" + os.path.relpath(path, local)
        bucket.blob(name).upload_from_filename(path)


def _gcs_copy_down(uri: str, local: str):
    from components import gcs
    bucket_name, prefix = gcs.split_gcs(uri)
    for blob in gcs.client().list_blobs(bucket_name, prefix=prefix):
        rel = blob.name[len(prefix):].lstrip("/")
        path = os.path.join(local, rel) if rel else local
        os.makedirs(os.path.dirname(path), exist_ok=True)
        blob.download_to_filename(path)


def run_pipeline(options: RunOptions) -> RunResult:
    return LocalRun(options).run()


# ---- the command line ------------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--package", required=True, help="compiled pipeline: .yaml (KFP PipelineSpec) or .json")
    parser.add_argument("--pipeline-root", help="artifacts root (folder or gs://...); default: the package's")
    parser.add_argument("--run-id", help="run id (default: a new UUID); artifacts go under <root>/<pipeline>/<run id>")
    parser.add_argument("--vertex", action="store_true",
                        help="run lifecycle.preCacheCheck hooks before the cache lookup, as Vertex AI does")
    parser.add_argument("--kubeconfig", help="give every task this KUBECONFIG instead of starting the Kubernetes "
                                             "API stand-in")
    parser.add_argument("--no-cache", action="store_true", help="disable caching for the run (as the server flag)")
    parser.add_argument("--workdir", default=".kfp-local",
                        help="ML Metadata + cache (kfp-local.sqlite), per-task logs and pod folders "
                             "(default: .kfp-local)")
    parser.add_argument("--namespace", default=DEFAULT_NAMESPACE, help="the run's namespace (cache scope, stand-in)")
    parser.add_argument("--grace-period", type=float, default=DEFAULT_GRACE_S,
                        help="seconds between SIGTERM and SIGKILL of a cancelled task (default 30)")
    parser.add_argument("--dockerfile", default=os.path.join(REPO_ROOT, "Dockerfile"),
                        help="the image's Dockerfile, for its ENV lines")
    parser.add_argument("--no-publish-logs", action="store_true",
                        help="no executor-logs output artifact (the server's PUBLISH_LOGS=false)")


def main_from_args(args) -> int:
    _set_child_subreaper()
    options = RunOptions(package=args.package, pipeline_root=args.pipeline_root, run_id=args.run_id,
                         vertex=args.vertex, kubeconfig=args.kubeconfig, no_cache=args.no_cache,
                         workdir=args.workdir, namespace=args.namespace, grace_period_s=args.grace_period,
                         dockerfile=args.dockerfile, publish_logs=not args.no_publish_logs)
    return run_pipeline(options).exit_code
