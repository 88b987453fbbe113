"""Ingest's cache key on open-source KFP (pipeline/kfp_caching.py) and the TFX entrypoint fix-ups
(pipeline/kfp_entrypoint.py)."""
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

from pipeline import kfp_caching, kfp_entrypoint

# The GCS emulator fixtures of tests/gcs (a conftest there is not visible here).
_spec = importlib.util.spec_from_file_location("_gcs_fixtures",
                                               pathlib.Path(__file__).parents[1] / "gcs" / "conftest.py")
_gcs_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_gcs_fixtures)
gcs_emulator, bucket = _gcs_fixtures.gcs_emulator, _gcs_fixtures.bucket

SPLITS = [("train", "train/*"), ("eval", "eval/*")]


def _write(path, data: bytes):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "data"
    _write(str(root / "train" / "a.tfrecord"), b"a" * 3000)
    _write(str(root / "train" / "b.tfrecord.gz"), b"b" * 10)
    _write(str(root / "eval" / "c.tfrecord"), b"c" * 7)
    _write(str(root / "label_map.txt"), b"x\ny\n")
    return root


def test_translate_pattern_is_beams():
    from apache_beam.io.filesystem import FileSystem
    for pattern in ["train/*", "eval/*.tfrecord*", "**/videos-?.tfrecord", "a/[!b]c/[^x]*", "x[", "lit.eral+(1)"]:
        assert kfp_caching.translate_pattern(pattern) == FileSystem.translate_pattern(pattern), pattern


def test_fingerprint_follows_names_sizes_and_contents_of_the_matched_files(dataset):
    base, summary = kfp_caching.input_fingerprint(str(dataset), SPLITS)
    assert base.startswith("sha256:") and len(base) == 7 + 64
    assert summary["splits"] == {"train": {"pattern": "train/*", "files": 2, "bytes": 3010},
                                 "eval": {"pattern": "eval/*", "files": 1, "bytes": 7}}
    assert kfp_caching.input_fingerprint(str(dataset), SPLITS)[0] == base          # stable
    _write(str(dataset / "label_map.txt"), b"changed\n")                           # not matched: no change
    _write(str(dataset / "train" / "sub" / "deep.tfrecord"), b"d")                 # '*' stops at '/'
    assert kfp_caching.input_fingerprint(str(dataset), SPLITS)[0] == base
    os.utime(dataset / "train" / "a.tfrecord", (1, 1))                             # mtime alone: no change
    assert kfp_caching.input_fingerprint(str(dataset), SPLITS)[0] == base

    seen = {base}
    for change in [lambda: _write(str(dataset / "train" / "new.tfrecord"), b"n"),          # a new file
                   lambda: _write(str(dataset / "train" / "a.tfrecord"), b"A" + b"a" * 2999),  # same size, new bytes
                   lambda: os.rename(dataset / "eval" / "c.tfrecord", dataset / "eval" / "d.tfrecord"),
                   lambda: os.remove(dataset / "train" / "new.tfrecord")]:
        change()
        digest = kfp_caching.input_fingerprint(str(dataset), SPLITS)[0]
        assert digest not in seen
        seen.add(digest)
    # the same file moved from one split to the other changes it too
    swapped = kfp_caching.input_fingerprint(str(dataset), [("train", "eval/*"), ("eval", "train/*")])[0]
    assert swapped not in seen


def test_fingerprint_of_a_staged_copy_on_gcs_equals_the_local_one(dataset, bucket):
    from components import gcs
    dst = f"gs://{bucket.name}/datasets/demo"
    gcs.stage_directory(str(dataset), dst)
    local, _ = kfp_caching.input_fingerprint(str(dataset), SPLITS)
    remote, summary = kfp_caching.input_fingerprint(dst, SPLITS)
    assert remote == local                                      # names, sizes and CRC32C from object metadata
    assert summary["splits"]["train"]["files"] == 2
    bucket.blob("datasets/demo/train/new.tfrecord").upload_from_string(b"new")
    assert kfp_caching.input_fingerprint(dst, SPLITS)[0] != local
    bucket.blob("datasets/demo/train/new.tfrecord").delete()
    bucket.blob("datasets/demo/eval/c.tfrecord").upload_from_string(b"C" * 7)   # changed content, same size
    assert kfp_caching.input_fingerprint(dst, SPLITS)[0] != local


def test_fingerprint_command_writes_the_output_parameter_file(dataset, tmp_path):
    out = tmp_path / "kfp" / "outputs" / "input_fingerprint"
    config = json.dumps({"splits": [{"name": "train", "pattern": "train/*"}, {"name": "eval", "pattern": "eval/*"}]})
    result = subprocess.run([sys.executable, "-m", "pipeline.kfp_caching", "fingerprint", "--input-base", str(dataset),
                             "--input-config", config, "--output", str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    digest = out.read_text()
    assert digest == kfp_caching.input_fingerprint(str(dataset), SPLITS)[0]   # verbatim: no newline
    assert result.stdout.strip() == digest and '"files": 2' in result.stderr


def _tfx_like_spec(schema="2.1.0"):
    """The parts of a KubeflowV2DagRunner spec the rewrite touches: Ingest (with input_fingerprint) and one more."""
    tfx_command = ["python", "-m", kfp_caching.TFX_ENTRYPOINT]
    return {
        "schemaVersion": schema, "pipelineInfo": {"name": "p"},
        "components": {
            "Ingest": {"executorLabel": "Ingest_executor", "inputDefinitions": {"parameters": {
                "input_base": {"parameterType": "STRING"}, "input_config": {"parameterType": "STRING"},
                "input_fingerprint": {"parameterType": "STRING"}, "span_config": {"parameterType": "STRING"}}}},
            "ClipGen": {"executorLabel": "ClipGen_executor"}},
        "deploymentSpec": {"executors": {
            "Ingest_executor": {"container": {"image": "img:1", "command": tfx_command, "args": ["x"],
                                              "lifecycle": {"preCacheCheck": {
                                                  "command": ["python", "-m", kfp_caching.TFX_DRIVER]}}}},
            "ClipGen_executor": {"container": {"image": "img:1", "command": tfx_command, "args": ["y"]}}}},
        "root": {"dag": {"tasks": {
            "Ingest": {"taskInfo": {"name": "Ingest"}, "componentRef": {"name": "Ingest"},
                       "cachingOptions": {"enableCache": True},
                       "inputs": {"parameters": {
                           "input_base": {"runtimeValue": {"constant": "gs://b/videos"}},
                           "input_config": {"runtimeValue": {"constant": '{"splits": []}'}},
                           "input_fingerprint": {"runtimeValue": {"constant": ""}},
                           "span_config": {"runtimeValue": {"constant": "{}"}}}}},
            "ClipGen": {"taskInfo": {"name": "ClipGen"}, "componentRef": {"name": "ClipGen"},
                        "dependentTasks": ["Ingest"]}}}}}


def test_spec_rewrite_wires_the_fingerprint_task_into_ingest():
    spec = _tfx_like_spec()
    out = kfp_caching.prepare_for_kfp(spec)
    assert spec == _tfx_like_spec()                                          # the input is not modified
    tasks = out["root"]["dag"]["tasks"]
    task = tasks["input-fingerprint"]
    assert task["cachingOptions"] == {"enableCache": False}
    assert task["inputs"]["parameters"] == {"input_base": {"runtimeValue": {"constant": "gs://b/videos"}},
                                            "input_config": {"runtimeValue": {"constant": '{"splits": []}'}},
                                            "span_config": {"runtimeValue": {"constant": "{}"}}}
    container = out["deploymentSpec"]["executors"]["input-fingerprint_executor"]["container"]
    assert container["image"] == "img:1" and container["command"] == ["python", "-m", "pipeline.kfp_caching"]
    assert "{{$.outputs.parameters['input_fingerprint'].output_file}}" in container["args"]
    assert out["components"]["input-fingerprint"]["outputDefinitions"] == {
        "parameters": {"input_fingerprint": {"parameterType": "STRING"}}}
    assert tasks["Ingest"]["inputs"]["parameters"]["input_fingerprint"] == {"taskOutputParameter": {
        "producerTask": "input-fingerprint", "outputParameterKey": "input_fingerprint"}}
    assert tasks["Ingest"]["dependentTasks"] == ["input-fingerprint"]
    executors = out["deploymentSpec"]["executors"]
    for executor in ("Ingest_executor", "ClipGen_executor"):                  # TFX executors via our entrypoint
        assert executors[executor]["container"]["command"] == ["python", "-m", "pipeline.kfp_entrypoint"]
    assert executors["Ingest_executor"]["container"]["lifecycle"]["preCacheCheck"]["command"] == \
        ["python", "-m", "pipeline.kfp_entrypoint", "--example-gen-driver"]
    with pytest.raises(ValueError, match="already has a task"):
        kfp_caching.add_input_fingerprint(out)
    with pytest.raises(ValueError, match="schema 2.1.0"):
        kfp_caching.add_input_fingerprint(_tfx_like_spec(schema="2.0.0"))
    no_param = _tfx_like_spec()
    del no_param["components"]["Ingest"]["inputDefinitions"]["parameters"]["input_fingerprint"]
    with pytest.raises(ValueError, match="no 'input_fingerprint' parameter"):
        kfp_caching.add_input_fingerprint(no_param)


def test_ingest_declares_and_records_input_fingerprint():
    from components.ingest import VideoIngestSpec, make_video_example_gen
    assert "input_fingerprint" in VideoIngestSpec.PARAMETERS
    assert make_video_example_gen("/data").exec_properties["input_fingerprint"] == ""


def test_entrypoint_fills_input_types_drops_executor_logs_and_registers_custom_types():
    schema = "title: tfx.Examples\ntype: object\n"
    executor_input = {
        "inputs": {"artifacts": {"examples": {"artifacts": [{"name": "12", "uri": "/r/x",
                                                              "type": {"instanceSchema": ""}}]}}},
        "outputs": {"artifacts": {
            "dead_letter": {"artifacts": [{"name": "dead_letter", "uri": "/r/d",
                                           "type": {"instanceSchema": "title: bresnet.IngestDeadLetter\n"}}]},
            "executor-logs": {"artifacts": [{"name": "executor-logs", "type": {"schemaTitle": "system.Artifact"}}]}},
            "outputFile": "/tmp/out.json"}}
    inputs_spec = {"artifacts": {"examples": {"artifactType": {"instanceSchema": schema}}}}
    argv = ["--executor_class_path", "components.ingest.Executor", "--json_serialized_invocation_args",
            json.dumps(executor_input), "--json_serialized_inputs_spec_args", json.dumps(inputs_spec), "--beam"]
    fixed = kfp_entrypoint.prepare_argv(argv)
    assert fixed[0:3] == argv[0:3] and fixed[4:] == argv[4:]
    seen = json.loads(fixed[3])
    assert seen["inputs"]["artifacts"]["examples"]["artifacts"][0]["type"] == {"instanceSchema": schema}
    assert "executor-logs" not in seen["outputs"]["artifacts"]
    from tfx.orchestration.kubeflow.v2 import compiler_utils
    from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_entrypoint_utils as tfx_utils
    assert compiler_utils.TITLE_TO_CLASS_PATH["bresnet.IngestDeadLetter"] == "components.ingest.IngestDeadLetter"
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2
    parsed = json_format.ParseDict(seen, pipeline_spec_pb2.ExecutorInput())
    artifacts = tfx_utils.parse_raw_artifact_dict(parsed.outputs.artifacts)   # what TFX does with them
    assert type(artifacts["dead_letter"][0]).__name__ == "IngestDeadLetter"
    assert type(tfx_utils.parse_raw_artifact_dict(parsed.inputs.artifacts)["examples"][0]).__name__ == "Examples"
