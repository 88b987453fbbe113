"""kfp-local (pipeline/kfp_local/runner.py): a compiled KFP v2 PipelineSpec run as the open-source backend runs it.

Small hand-written PipelineSpecs whose executors are ``python -c`` one-liners. The real pipeline, compiled and run
on kfp-local with everything on gs:// (first run, all cache hits, a new file, a killed replica, a cancelled run), is
tests/kubeflow/test_kfp_local_gcs.py (slow)."""
import io
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import yaml

from pipeline.kfp_local.runner import RunOptions, SpecError, cache_key, fingerprint, go_json, run_pipeline

IMAGE = "registry.example/tiny:1"

# The executor every tiny task runs: records its invocation, writes each output artifact (a file named after the
# task holding its inputs), the output parameters (``value`` input, or the task name) and an ExecutorOutput with
# metadata; ``mode`` = fail | noparam | sleep changes that.
EXECUTOR = r"""
import json, os, sys, time
ei = json.loads(sys.argv[1])
task = sys.argv[2]
inputs = ei.get("inputs", {})
params = inputs.get("parameterValues", {})
with open(os.environ["TINY_CALLS"], "a") as f:
    f.write(task + "\n")
with open(os.path.join(os.environ["TINY_CALLS"] + ".d", task + ".json"), "w") as f:
    json.dump({"argv": sys.argv, "executor_input": ei, "env": {k: os.environ.get(k) for k in
               ("KFP_POD_NAME", "KUBECONFIG", "TF_USE_LEGACY_KERAS", "TINY_ENV")}, "cwd": os.getcwd()}, f)
mode = params.get("mode", "ok")
if mode == "fail":
    print("tiny executor failing on purpose", flush=True)
    sys.exit(3)
if mode == "sleep":
    print("sleeping", flush=True)
    time.sleep(600)
outputs = ei.get("outputs", {})
for key, lst in outputs.get("artifacts", {}).items():
    if key == "executor-logs":
        continue
    uri = lst["artifacts"][0]["uri"]
    os.makedirs(uri, exist_ok=True)
    with open(os.path.join(uri, "data.json"), "w") as f:
        json.dump({"task": task, "params": params}, f)
if mode != "noparam":
    for key, p in outputs.get("parameters", {}).items():
        with open(p["outputFile"], "w") as f:
            f.write(str(params.get("value", task)))
with open(outputs["outputFile"], "w") as f:
    json.dump({"artifacts": {k: {"artifacts": [{"metadata": {"rows": 3, "task": task}}]}
                             for k in outputs.get("artifacts", {}) if k != "executor-logs"}}, f)
print(task, "done", flush=True)
"""


def tiny_task(name, *, params=None, artifacts_in=None, params_in=None, out_artifacts=(), out_params=(), deps=(),
              cache=True, condition=None, strategy=None, args=None, command=None, param_types=None, lifecycle=None):
    """(task spec, component spec, executor spec) of one tiny task. ``artifacts_in``: {key: (producer, out key)};
    ``params_in``: {key: (producer, out key)}; ``params``: constants."""
    params, artifacts_in, params_in = params or {}, artifacts_in or {}, params_in or {}
    types = {"str": "STRING", "int": "NUMBER_INTEGER", "float": "NUMBER_DOUBLE", "bool": "BOOLEAN"}
    param_types = param_types or {}

    def ptype(key, value):
        if key in param_types:
            return param_types[key]
        return {bool: "BOOLEAN", int: "NUMBER_INTEGER", float: "NUMBER_DOUBLE"}.get(type(value), "STRING")

    task = {"taskInfo": {"name": name}, "componentRef": {"name": f"comp-{name}"},
            "cachingOptions": {"enableCache": cache}, "inputs": {}}
    if params or params_in:
        task["inputs"]["parameters"] = {k: {"runtimeValue": {"constant": v}} for k, v in params.items()}
        task["inputs"]["parameters"].update({k: {"taskOutputParameter": {"producerTask": p, "outputParameterKey": o}}
                                             for k, (p, o) in params_in.items()})
    if artifacts_in:
        task["inputs"]["artifacts"] = {k: {"taskOutputArtifact": {"producerTask": p, "outputArtifactKey": o}}
                                       for k, (p, o) in artifacts_in.items()}
    all_deps = sorted(set(deps) | {p for p, _ in artifacts_in.values()} | {p for p, _ in params_in.values()})
    if all_deps:
        task["dependentTasks"] = all_deps
    if condition or strategy:
        task["triggerPolicy"] = {k: v for k, v in (("condition", condition), ("strategy", strategy)) if v}
    component = {"executorLabel": f"exec-{name}", "inputDefinitions": {}, "outputDefinitions": {}}
    in_params = {k: {"parameterType": ptype(k, v)} for k, v in params.items()}
    in_params.update({k: {"parameterType": param_types.get(k, "STRING")} for k in params_in})
    if in_params:
        component["inputDefinitions"]["parameters"] = in_params
    if artifacts_in:
        component["inputDefinitions"]["artifacts"] = {
            k: {"artifactType": {"schemaTitle": "system.Dataset", "schemaVersion": "0.0.1"}} for k in artifacts_in}
    if out_artifacts:
        component["outputDefinitions"]["artifacts"] = {
            k: {"artifactType": {"schemaTitle": "system.Dataset", "schemaVersion": "0.0.1"}} for k in out_artifacts}
    if out_params:
        component["outputDefinitions"]["parameters"] = {k: {"parameterType": types.get("str")} for k in out_params}
    container = {"image": IMAGE, "command": command or ["python", "-c", EXECUTOR],
                 "args": args if args is not None else ["{{$}}", name]}
    if lifecycle:
        container["lifecycle"] = lifecycle
    return task, component, {"container": container}


def make_spec(*tasks, name="tiny-pipeline", root=None, schema="2.1.0"):
    spec = {"pipelineInfo": {"name": name}, "schemaVersion": schema, "sdkVersion": "test",
            "root": {"dag": {"tasks": {}}}, "components": {}, "deploymentSpec": {"executors": {}}}
    if root:
        spec["defaultPipelineRoot"] = root
    for task, component, executor in tasks:
        name_ = task["taskInfo"]["name"]
        spec["root"]["dag"]["tasks"][name_] = task
        spec["components"][f"comp-{name_}"] = component
        spec["deploymentSpec"]["executors"][f"exec-{name_}"] = executor
    return spec


class Tiny:
    """A workdir, a pipeline root and an invocation log for tiny runs."""

    def __init__(self, tmp_path, monkeypatch):
        self.tmp = tmp_path
        self.root = str(tmp_path / "root")
        self.workdir = str(tmp_path / "work")
        self.calls = str(tmp_path / "calls.txt")
        os.makedirs(self.calls + ".d")
        monkeypatch.setenv("TINY_CALLS", self.calls)
        monkeypatch.setenv("TINY_ENV", "from-host")
        self.n = 0

    def run(self, spec, **kwargs):
        self.n += 1
        path = self.tmp / f"spec{self.n}.yaml"
        path.write_text(yaml.safe_dump(spec))
        self.output = io.StringIO()
        kwargs.setdefault("pipeline_root", self.root)
        kwargs.setdefault("kube_api", False)
        options = RunOptions(package=str(path), workdir=self.workdir, dockerfile=None, out=self.output, **kwargs)
        return run_pipeline(options)

    def calls_made(self):
        if not os.path.exists(self.calls):
            return []
        with open(self.calls) as f:
            return f.read().split()

    def seen(self, task):
        with open(os.path.join(self.calls + ".d", task + ".json")) as f:
            return json.load(f)

    def reset_calls(self):
        if os.path.exists(self.calls):
            os.remove(self.calls)


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    return Tiny(tmp_path, monkeypatch)


def three_task_spec(value=7):
    """A -> B (artifact + parameter), C independent."""
    return make_spec(
        tiny_task("producer", params={"value": value}, out_artifacts=["data"], out_params=["n"]),
        tiny_task("consumer", artifacts_in={"data": ("producer", "data")}, params_in={"n": ("producer", "n")},
                  out_artifacts=["result"]),
        tiny_task("aside", params={"label": "x"}, out_artifacts=["other"]))


# ---- the cache key, byte for byte ----------------------------------------------------------------------------

def test_fingerprint_equals_kfp_golden_values():
    """backend/src/v2/cacheutils/cache_test.go TestGenerateFingerPrint (kubeflow/pipelines 2.17.0)."""
    key = {"inputArtifactNames": {"dataset_one": {"artifactNames": ["1"]}, "dataset_two": {"artifactNames": ["2"]}},
           "inputParameterValues": {"message": "Some string value", "num_steps": 5.0},
           "outputArtifactsSpec": {
               "model": {"name": "model", "type": {"instanceSchema": "title: kfp.Model\ntype: object\nproperties:\n"
                                                                     "  framework:\n    type: string\n  "
                                                                     "framework_version:\n    type: string\n"},
                         "metadata": {"name": "model"}},
               "metrics": {"name": "metrics", "type": {"schemaTitle": "kfp.Metrics"}, "metadata": {"name": "metrics"}}},
           "outputParametersSpec": {"output_parameter_one": "STRING", "output_parameter_two": "INT"},
           "containerSpec": {"image": "python:3.11", "cmdArgs": ["sh", "ec", "test"]}}
    assert fingerprint(key) == "b498530c9016917298999ec0b01f364a180f8a3862bea0fa672a383ca3f22e4e"
    other = {"inputArtifactNames": {"dataset": {"artifactNames": ["10"]}},
             "outputParametersSpec": {"output_parameter": "DOUBLE"},
             "containerSpec": {"cmdArgs": ["sh", "ec", "run"], "image": "python:3.11"}}
    assert fingerprint(other) == "3d9a2a778fa3174c6cfc6e639c507c265b5f21ef6e5b1dd70b236462cc6da464"


def test_go_json_is_encoding_json():
    assert go_json({"b": [1.0, 0.5, 1e21, 1e-7, 2.5e-6], "a": "<&>\u2028é"}) == \
        '{"a":"\\u003c\\u0026\\u003e\\u2028é","b":[1,0.5,1e+21,1e-7,0.0000025]}'


def _executor_input(names=("7",), uri="gs://b/x", value=1.0):
    return {"inputs": {"parameterValues": {"p": value},
                       "artifacts": {"data": {"artifacts": [{"name": n, "uri": uri, "type": {"instanceSchema": ""}}
                                                            for n in names]}}},
            "outputs": {"artifacts": {"out": {"artifacts": [{"name": "out", "uri": "gs://b/run1/out",
                                                             "type": {"schemaTitle": "system.Dataset"}}]}},
                        "parameters": {"n": {"outputFile": "/tmp/kfp/outputs/n"}}, "outputFile": "/tmp/x"}}


def test_cache_key_sees_names_values_outputs_and_command_but_not_uris():
    base = fingerprint(cache_key(_executor_input(), {"n": "STRING"}, ["python", "-c", "x"], IMAGE))
    same = _executor_input(uri="gs://elsewhere/y")                       # input and output URIs do not count
    same["outputs"]["artifacts"]["out"]["artifacts"][0]["uri"] = "gs://b/run2/out"
    assert fingerprint(cache_key(same, {"n": "STRING"}, ["python", "-c", "x"], IMAGE)) == base
    for changed in [cache_key(_executor_input(names=("8",)), {"n": "STRING"}, ["python", "-c", "x"], IMAGE),
                    cache_key(_executor_input(value=2.0), {"n": "STRING"}, ["python", "-c", "x"], IMAGE),
                    cache_key(_executor_input(), {"n": "NUMBER_INTEGER"}, ["python", "-c", "x"], IMAGE),
                    cache_key(_executor_input(), {"n": "STRING"}, ["python", "-c", "y"], IMAGE),
                    cache_key(_executor_input(), {"n": "STRING"}, ["python", "-c", "x"], IMAGE + "2")]:
        assert fingerprint(changed) != base


# ---- ExecutorInput, order, placeholders ---------------------------------------------------------------------

def test_dependency_order_executor_input_and_output_uris(tiny):
    run = tiny.run(three_task_spec(), run_id="run-1")
    assert run.state == "SUCCEEDED" and run.exit_code == 0, tiny.output.getvalue()
    assert tiny.calls_made() == ["aside", "producer", "consumer"]        # dependency order, ties by name
    produced = run.tasks["producer"].outputs
    data_uri = produced["artifacts"]["data"]["uri"]
    # metadata/client.go GetPipeline + driver.go provisionOutputs: <root>/<pipeline>/<run id>/<task>/<uuid>/<key>
    assert re.fullmatch(re.escape(tiny.root) + r"/tiny-pipeline/run-1/producer/[0-9a-f-]{36}/data", data_uri)
    assert json.load(open(os.path.join(data_uri, "data.json")))["task"] == "producer"

    seen = tiny.seen("consumer")
    ei = seen["executor_input"]
    data = ei["inputs"]["artifacts"]["data"]["artifacts"][0]
    assert data["name"] == str(produced["artifacts"]["data"]["id"])     # the ML Metadata artifact id
    assert data["uri"] == data_uri
    assert data["type"] == {"instanceSchema": ""}                        # what the open-source driver sends
    assert data["metadata"] == {"rows": 3.0, "task": "producer", "display_name": "data",
                                "store_session_info": "null"}
    assert ei["inputs"]["parameterValues"] == {"n": "7"}                 # the producer's output parameter
    out = ei["outputs"]
    assert out["artifacts"]["result"]["artifacts"][0]["name"] == "result"
    assert out["artifacts"]["result"]["artifacts"][0]["type"] == {"schemaTitle": "system.Dataset",
                                                                   "schemaVersion": "0.0.1"}
    logs = out["artifacts"]["executor-logs"]["artifacts"][0]
    assert logs["type"] == {"schemaTitle": "system.Artifact"} and logs["uri"].endswith("/executor-logs")
    pod = os.path.join(tiny.workdir, "runs", "run-1", "consumer", "pod")
    assert out["outputFile"] == pod + "/tmp/kfp_outputs/output_metadata.json"
    assert tiny.seen("producer")["executor_input"]["outputs"]["parameters"]["n"]["outputFile"] == \
        os.path.join(tiny.workdir, "runs", "run-1", "producer", "pod") + "/tmp/kfp/outputs/n"
    assert seen["cwd"] == pod + "/home"
    assert seen["env"]["KFP_POD_NAME"].startswith("tiny-pipeline-run-1") and seen["env"]["TINY_ENV"] == "from-host"
    # the executor-logs artifact holds the task's output; task.log too
    assert "consumer done" in open(run.tasks["consumer"].outputs["artifacts"]["executor-logs"]["uri"]).read()
    assert "consumer done" in open(run.tasks["consumer"].log).read()
    assert "[consumer] consumer done" in tiny.output.getvalue()
    saved = json.load(open(os.path.join(tiny.workdir, "runs", "run-1", "run.json")))
    assert saved["state"] == "SUCCEEDED" and saved["tasks"]["consumer"]["state"] == "COMPLETE"


def test_placeholders_are_substituted_as_the_launcher_does(tiny):
    args = ["{{$}}", "echo", "{{$.inputs.parameters['count']}}", "{{$.inputs.parameters['ratio']}}",
            "{{$.inputs.parameters['flag']}}", "{{$.inputs.parameters['items']}}",
            "{{$.inputs.artifacts['data'].uri}}", "{{$.inputs.artifacts['data'].path}}",
            "{{$.outputs.artifacts['out'].uri}}", "{{$.outputs.parameters['p'].output_file}}", "{{$.unknown}}"]
    spec = make_spec(
        tiny_task("producer", out_artifacts=["data"]),
        tiny_task("echo", params={"count": 5.0, "ratio": 0.25, "flag": True, "items": [1, "a"], "mode": "ok"},
                  artifacts_in={"data": ("producer", "data")}, out_artifacts=["out"], out_params=["p"], args=args,
                  param_types={"count": "NUMBER_INTEGER", "items": "LIST"}))
    spec["components"]["comp-echo"]["inputDefinitions"]["parameters"]["extra"] = {
        "parameterType": "STRING", "defaultValue": "dflt", "isOptional": True}
    run = tiny.run(spec)
    assert run.state == "SUCCEEDED", tiny.output.getvalue()
    seen = tiny.seen("echo")
    argv = seen["argv"][1:]
    ei = seen["executor_input"]
    assert argv[2:6] == ["5", "0.25", "true", '[1,"a"]']
    data_uri = run.tasks["producer"].outputs["artifacts"]["data"]["uri"]
    assert argv[6] == argv[7] == data_uri               # a local root is its own mount: .path is the URI
    assert argv[8] == run.tasks["echo"].outputs["artifacts"]["out"]["uri"]
    assert argv[9].endswith("/echo/pod/tmp/kfp/outputs/p")
    assert argv[10] == "{{$.unknown}}"                  # unknown placeholders stay as they are
    assert ei["inputs"]["parameterValues"]["extra"] == "dflt"   # {{$}} carries parameter defaults (addDefaultParams)
    stored = json.load(open(os.path.join(run.workdir, "runs", run.run_id, "echo", "executor_input.json")))
    assert "extra" not in stored["inputs"]["parameterValues"]  # ...the driver's ExecutorInput (cache key) does not


def test_a_string_parameter_given_a_number_gets_its_text_and_bad_types_fail(tiny):
    spec = make_spec(tiny_task("t", params={"s": 3.0}, param_types={"s": "STRING"}))
    run = tiny.run(spec)
    assert tiny.seen("t")["executor_input"]["inputs"]["parameterValues"]["s"] == "3"
    bad = make_spec(tiny_task("t", params={"n": "three"}, param_types={"n": "NUMBER_INTEGER"}))
    run = tiny.run(bad)
    assert run.state == "FAILED" and "type mismatch" in run.tasks["t"].reason


# ---- caching -----------------------------------------------------------------------------------------------

def test_second_run_is_all_cache_hits_reusing_artifacts(tiny):
    first = tiny.run(three_task_spec())
    first_input = tiny.seen("consumer")["executor_input"]["inputs"]
    tiny.reset_calls()
    second = tiny.run(three_task_spec())
    assert second.state == "SUCCEEDED"
    assert tiny.calls_made() == []                                     # nothing ran
    for name in ("producer", "consumer", "aside"):
        assert second.tasks[name].state == "CACHED"
        assert second.tasks[name].cached_from == first.tasks[name].execution_id
        assert second.tasks[name].fingerprint == first.tasks[name].fingerprint
        assert second.tasks[name].outputs["artifacts"] == first.tasks[name].outputs["artifacts"]
    assert second.tasks["producer"].outputs["parameters"] == {"n": "7"}
    # the consumer's key saw the same artifact names: the producer's cached artifacts, not new ones
    stored = json.load(open(os.path.join(second.workdir, "runs", second.run_id, "run.json")))
    assert stored["tasks"]["consumer"]["state"] == "CACHED"
    assert first_input["artifacts"]["data"]["artifacts"][0]["name"] == \
        str(second.tasks["producer"].outputs["artifacts"]["data"]["id"])
    assert "cached (reuses execution" in tiny.output.getvalue()


def test_changed_parameter_reruns_the_task_and_downstream_but_not_the_rest(tiny):
    first = tiny.run(three_task_spec(value=7))
    tiny.reset_calls()
    second = tiny.run(three_task_spec(value=8))
    assert tiny.calls_made() == ["producer", "consumer"]
    assert second.tasks["aside"].state == "CACHED"
    assert second.tasks["producer"].fingerprint != first.tasks["producer"].fingerprint
    # the consumer's own spec is unchanged: its key differs only by the new input artifact name (and value)
    assert second.tasks["consumer"].fingerprint != first.tasks["consumer"].fingerprint
    assert tiny.seen("consumer")["executor_input"]["inputs"]["parameterValues"] == {"n": "8"}
    tiny.reset_calls()
    third = tiny.run(three_task_spec(value=7))                          # the first key again: its results
    assert tiny.calls_made() == [] and third.tasks["consumer"].cached_from == first.tasks["consumer"].execution_id


def test_enable_cache_false_and_no_cache_always_run(tiny):
    spec = make_spec(tiny_task("always", cache=False), tiny_task("sometimes"))
    tiny.run(spec)
    tiny.reset_calls()
    run = tiny.run(spec)
    assert tiny.calls_made() == ["always"] and run.tasks["sometimes"].state == "CACHED"
    assert run.tasks["always"].fingerprint is None
    tiny.reset_calls()
    run = tiny.run(spec, no_cache=True)
    assert sorted(tiny.calls_made()) == ["always", "sometimes"]


def test_cache_is_scoped_by_pipeline_name(tiny):
    tiny.run(make_spec(tiny_task("t"), name="one"))
    tiny.reset_calls()
    run = tiny.run(make_spec(tiny_task("t"), name="two"))
    assert tiny.calls_made() == ["t"] and run.tasks["t"].state == "COMPLETE"


# ---- trigger policies, failures ------------------------------------------------------------------------------

def test_condition_false_skips_the_task_and_its_downstream(tiny):
    spec = make_spec(
        tiny_task("coin", params={"value": "tails"}, out_params=["side"]),
        tiny_task("heads", params_in={"side": ("coin", "side")}, out_artifacts=["a"],
                  condition="inputs.parameter_values['side'] == 'heads'"),
        tiny_task("tails", params_in={"side": ("coin", "side")},
                  condition="!(inputs.parameter_values['side'] == 'heads')"),
        tiny_task("after_heads", artifacts_in={"a": ("heads", "a")}))
    run = tiny.run(spec)
    assert run.state == "SUCCEEDED"
    assert run.tasks["heads"].state == "SKIPPED" and run.tasks["tails"].state == "COMPLETE"
    assert run.tasks["after_heads"].state == "NOT_RUN" and "heads skipped" in run.tasks["after_heads"].reason
    assert sorted(tiny.calls_made()) == ["coin", "tails"]


def test_failure_stops_downstream_fails_fast_runs_exit_handler_and_is_not_cached(tiny):
    def spec(mode):
        return make_spec(
            tiny_task("a_first", params={"mode": mode}, out_artifacts=["x"]),
            tiny_task("b_down", artifacts_in={"x": ("a_first", "x")}),
            tiny_task("c_independent"),
            tiny_task("z_exit", deps=["a_first", "b_down", "c_independent"], strategy="ALL_UPSTREAM_TASKS_COMPLETED",
                      cache=False))
    run = tiny.run(spec("fail"))
    assert run.state == "FAILED" and run.exit_code == 1
    assert run.tasks["a_first"].state == "FAILED" and "exited with code 3" in run.tasks["a_first"].reason
    assert run.tasks["b_down"].state == "NOT_RUN" and "a_first failed" in run.tasks["b_down"].reason
    assert run.tasks["c_independent"].state == "NOT_RUN" and "fail fast" in run.tasks["c_independent"].reason
    assert run.tasks["z_exit"].state == "COMPLETE"                      # an exit handler runs whatever happened
    assert tiny.calls_made() == ["a_first", "z_exit"]
    assert "tiny executor failing on purpose" in open(run.tasks["a_first"].log).read()
    tiny.reset_calls()
    again = tiny.run(spec("fail"))                                      # a failed execution is never a cache hit
    assert tiny.calls_made() == ["a_first", "z_exit"] and again.tasks["a_first"].state == "FAILED"


def test_missing_output_parameter_fails_the_task(tiny):
    run = tiny.run(make_spec(tiny_task("t", params={"mode": "noparam"}, out_params=["p"])))
    assert run.state == "FAILED" and "failed to read output parameter name='p'" in run.tasks["t"].reason


def test_packages_the_api_server_refuses(tiny, tmp_path):
    with pytest.raises(SpecError, match="KFP only supports schema version 2.1.0, but the pipeline spec has version "
                                        "2.0.0"):
        tiny.run(make_spec(tiny_task("t"), schema="2.0.0"))
    resolver = make_spec(tiny_task("t"))
    resolver["deploymentSpec"]["executors"]["exec-t"] = {"resolver": {"outputArtifactQueries": {}}}
    with pytest.raises(SpecError, match="resolver executors not implemented"):
        tiny.run(resolver)
    legacy = make_spec(tiny_task("t", params={"v": "x"}))
    legacy["root"]["dag"]["tasks"]["t"]["inputs"]["parameters"]["v"] = {
        "runtimeValue": {"constantValue": {"stringValue": "x"}}}
    run = tiny.run(legacy)                                              # the driver cannot read schema 2.0 constants
    assert run.state == "FAILED" and "not implemented" in run.tasks["t"].reason


def test_vertex_runs_the_pre_cache_check_and_its_parameters_join_the_inputs(tiny):
    hook = {"preCacheCheck": {"command": ["python", "-c",
            "import json,sys; ei=json.loads(sys.argv[1]); "
            "json.dump({'parameterValues': {'input_fingerprint': 'fp-1', 'span': 0}}, "
            "open(ei['outputs']['outputFile'], 'w'))",
            "{{$}}"]}}
    spec = make_spec(tiny_task("gen", params={"input_base": "/data"}, out_artifacts=["examples"], lifecycle=hook))
    run = tiny.run(spec)
    assert "input_fingerprint" not in tiny.seen("gen")["executor_input"]["inputs"]["parameterValues"]
    run = tiny.run(spec, vertex=True, no_cache=True)
    assert run.state == "SUCCEEDED", tiny.output.getvalue()
    assert tiny.seen("gen")["executor_input"]["inputs"]["parameterValues"]["input_fingerprint"] == "fp-1"


def test_tasks_get_the_kubernetes_stand_in_or_the_given_kubeconfig_never_the_hosts(tiny, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", "/host/.kube/config")
    spec = make_spec(tiny_task("t", cache=False))
    run = tiny.run(spec, kube_api=True)
    kubeconfig = tiny.seen("t")["env"]["KUBECONFIG"]
    assert kubeconfig.startswith(os.path.join(tiny.workdir, "runs", run.run_id))
    server = yaml.safe_load(open(kubeconfig))["clusters"][0]["cluster"]["server"]
    assert "127.0.0.1" in server and "Kubernetes API stand-in at" in tiny.output.getvalue()
    import urllib.request
    with pytest.raises(OSError):                                        # stopped with the run
        urllib.request.urlopen(server + "/version", timeout=2)
    tiny.run(spec, kubeconfig="/elsewhere/config")
    assert tiny.seen("t")["env"]["KUBECONFIG"] == "/elsewhere/config"
    tiny.run(spec)                                                      # no stand-in, no --kubeconfig
    assert tiny.seen("t")["env"]["KUBECONFIG"] is None


# ---- cancelling --------------------------------------------------------------------------------------------

STUBBORN = r"""
import json, os, signal, subprocess, sys, time
ei = json.loads(sys.argv[1])
signal.signal(signal.SIGTERM, lambda *a: print("ignoring SIGTERM", flush=True))
# a grandchild in its own session, as the local training launcher starts its workers
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
with open(os.environ["TINY_PIDS"], "w") as f:
    f.write(f"{os.getpid()} {child.pid}")
print("started", flush=True)
time.sleep(600)
"""


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


def test_sigterm_cancels_the_task_kills_its_processes_and_caches_nothing(tmp_path):
    spec = make_spec(tiny_task("first", command=["python", "-c", "print('quick')"], args=[]),
                     tiny_task("stubborn", deps=["first"], command=["python", "-c", STUBBORN], args=["{{$}}"]),
                     tiny_task("later", deps=["stubborn"]))
    package = tmp_path / "spec.yaml"
    package.write_text(yaml.safe_dump(spec))
    pids = tmp_path / "pids"
    env = dict(os.environ, TINY_PIDS=str(pids), TINY_CALLS=str(tmp_path / "calls"))
    cmd = [sys.executable, "-m", "pipeline", "kfp-local", "--package", str(package), "--pipeline-root",
           str(tmp_path / "root"), "--workdir", str(tmp_path / "work"), "--grace-period", "1", "--run-id", "r1",
           "--kubeconfig", str(tmp_path / "no-cluster")]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 60
    while not pids.exists() or not pids.read_text():
        assert time.time() < deadline and proc.poll() is None, proc.stdout.read() if proc.poll() is not None else ""
        time.sleep(0.1)
    time.sleep(0.3)
    task_pid, grandchild = map(int, pids.read_text().split())
    assert _alive(task_pid) and _alive(grandchild)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert "ignoring SIGTERM" in out and "SIGKILL" in out
    time.sleep(0.2)
    assert not _alive(task_pid) and not _alive(grandchild), out
    run = json.load(open(tmp_path / "work" / "runs" / "r1" / "run.json"))
    assert run["state"] == "CANCELED"
    assert [run["tasks"][t]["state"] for t in ("first", "stubborn", "later")] == ["COMPLETE", "CANCELED", "NOT_RUN"]
    # nothing of the cancelled task was cached: a new run would run it again (and 'first' is a cache hit)
    import sqlite3
    db = sqlite3.connect(tmp_path / "work" / "kfp-local.sqlite")
    cached = {task for (task,) in db.execute(
        "SELECT e.task FROM cache c JOIN executions e ON e.id = c.execution_id")}
    assert cached == {"first"}

