"""Warm start (``training.init_from``): config, where the source is found, loading it by name and shape (the head
re-initialised when the class count changed), the executor's resolution and artifact properties, and ``train()``."""
import dataclasses
import json
import logging
import os

import numpy as np
import pytest
import tensorflow as tf

from bresnet._keras import keras  # noqa: F401  (Keras mode first)
from components.trainer import warm_start
from components.trainer.config import TrainingConfig, TrainingJob
from components.trainer.training import build_model, train
from components.trainer.warm_start import (WarmStartError, assign_initial_weights, load_initial_weights, match_key,
                                           read_source_weights, resolve_init_path, resolve_init_source)
from trainer_test_data import LABELS, training_config, training_job

TINY = "tiny_model:build_tiny_classifier"


# ---- config -------------------------------------------------------------------------------------------------

def test_init_from_config_validates_and_round_trips():
    assert training_config().init_from == "none"
    for value in ("none", "serving", "gs://bucket/serving/bresnet", "/models/w.h5"):
        config = training_config(init_from=value)
        assert TrainingConfig.from_json(config.to_json()) == config
        assert TrainingConfig.from_dict(config.to_dict()).init_from == value
    for bad in ("", "  ", " serving", "a\nb"):
        with pytest.raises(ValueError, match="init_from must be 'none'.*'serving'.*or a path"):
            training_config(init_from=bad)
    with pytest.raises(TypeError, match="init_from"):
        training_config(init_from=None)
    job = TrainingJob(config=training_config(init_from="serving"), train_uri="t", eval_uri="e",
                      transform_graph_uri="g", serving_model_dir="s", run_dir="r", scratch_dir="x",
                      init_weights_from="/serving/bresnet/3")
    assert TrainingJob.from_json(job.to_json()) == job
    assert dataclasses.replace(job, init_weights_from="").init_weights_from == ""   # "" = from scratch
    legacy = json.loads(job.to_json())
    del legacy["init_weights_from"], legacy["config"]["init_from"]                # a job written before this field
    assert TrainingJob.from_json(json.dumps(legacy)).init_weights_from == ""


# ---- resolution (file layout only: resolve looks at files, it loads nothing) ------------------------------------

def _saved_model_dir(path, complete=True):
    os.makedirs(path, exist_ok=True)
    if complete:
        open(os.path.join(path, "saved_model.pb"), "wb").close()
    return str(path)


def test_resolution_of_paths(tmp_path):
    version = _saved_model_dir(tmp_path / "pushed" / "7")
    assert resolve_init_path(version) == version

    base = tmp_path / "serving" / "bresnet"
    _saved_model_dir(base / "1")
    v3 = _saved_model_dir(base / "3")
    _saved_model_dir(base / "5", complete=False)          # a push in progress: no saved_model.pb yet
    _saved_model_dir(base / ".staging-9-abc")             # not a version (TF Serving only reads all-digit names)
    assert resolve_init_path(str(base)) == v3
    assert resolve_init_source(str(base)) == v3

    artifact = tmp_path / "Trainer" / "model" / "12"
    serving = _saved_model_dir(artifact / "Format-Serving")
    assert resolve_init_path(str(artifact)) == serving

    h5 = tmp_path / "weights.h5"
    h5.write_bytes(b"\x89HDF\r\n\x1a\n")
    assert resolve_init_path(str(h5)) == str(h5)
    no_suffix = tmp_path / "weights"
    no_suffix.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 8)   # an HDF5 file by its signature
    assert resolve_init_path(str(no_suffix)) == str(no_suffix)

    missing = str(tmp_path / "nowhere")
    with pytest.raises(WarmStartError, match=f"init_from '{missing}' does not exist; expected a SavedModel directory"):
        resolve_init_source(missing)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(WarmStartError, match="is a file but not a Keras .h5 weights file"):
        resolve_init_path(str(text))
    os.makedirs(tmp_path / "empty")
    with pytest.raises(WarmStartError, match="holds no SavedModel; expected .*Format-Serving.*numbered versions"):
        resolve_init_path(str(tmp_path / "empty"))
    _saved_model_dir(tmp_path / "half" / "4", complete=False)
    with pytest.raises(WarmStartError, match=r"holds version directories \[4\] but none is complete"):
        resolve_init_path(str(tmp_path / "half"))


def test_resolution_of_none_and_serving(tmp_path, caplog):
    assert resolve_init_source("none", str(tmp_path)) == ""
    base = str(tmp_path / "serving" / "bresnet")
    with caplog.at_level(logging.INFO, logger=warm_start.__name__):
        assert resolve_init_source("serving", base) == ""                  # nothing pushed yet: from scratch
    assert f"no model served yet under {base}: training from scratch" in caplog.text
    _saved_model_dir(os.path.join(base, "1700000000"))
    newest = _saved_model_dir(os.path.join(base, "1700000100"))
    assert resolve_init_source("serving", base) == newest
    with pytest.raises(ValueError, match="serving_model_base"):
        resolve_init_source("serving", "")


# ---- loading -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_source(tmp_path_factory):
    """A tiny 3-class model with random (not initializer) weights, as a SavedModel and as an .h5 weights file."""
    root = tmp_path_factory.mktemp("warm_source")
    model = build_model(training_config(workers=1, precision="float32"), TINY)
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(size=w.shape).astype(w.dtype) for w in model.get_weights()])
    model.save(str(root / "sm"), save_format="tf", include_optimizer=False)
    model.save_weights(str(root / "w.h5"))
    return model.get_weights(), str(root / "sm"), str(root / "w.h5")


@pytest.mark.parametrize("kind", ["saved_model", "h5"])
def test_same_classes_load_every_variable(tiny_source, kind):
    weights, saved_model, h5 = tiny_source
    source = saved_model if kind == "saved_model" else h5
    model = build_model(training_config(workers=1, precision="float32"), TINY)   # its layers: dense_<n>, not dense
    report = load_initial_weights(model, source)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), weights))
    assert report["loaded"] == report["total"] == 4 and report["reinitialized"] == [] and report["source"] == source
    assert report["scope"] == "all" and report["head"] == []


@pytest.mark.parametrize("kind", ["saved_model", "h5"])
def test_a_changed_class_count_reinitializes_only_the_head(tiny_source, kind):
    weights, saved_model, h5 = tiny_source
    config = training_config(workers=1, labels=(*LABELS, "swim"))
    # bfloat16 mixed precision: the variables stay float32 (AutoCastVariable), so the float32 source loads as is.
    model = build_model(config, TINY, precision="bfloat16")
    assert all(v.dtype == tf.float32 for v in model.weights)
    report = load_initial_weights(model, saved_model if kind == "saved_model" else h5)
    new = model.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(new[:2], weights[:2]))       # the body: loaded
    assert new[2].shape == (8, 4) and new[3].shape == (4,)                         # the head: fresh, new shape
    head = [v.name[:-2] for v in model.weights[2:]]
    assert report["loaded"] == 2 and report["reinitialized"] == head and report["missing"] == []
    assert report["shape_mismatch"] == {head[0]: [[8, 3], [8, 4]], head[1]: [[3], [4]]}


def test_an_unrelated_source_is_refused(tiny_source, tiny_saved_model, tmp_path):
    model = build_model(training_config(workers=1, precision="float32"), TINY)
    with pytest.raises(WarmStartError, match="is not a source of this model: none of its 1 variables matches"):
        load_initial_weights(model, tiny_saved_model)           # a tf.Module computing 2x: one scalar variable
    other = keras.Sequential([keras.Input((5,)), keras.layers.Dense(2, name="embedding")])
    with pytest.raises(WarmStartError, match="not a source of this model"):
        load_initial_weights(other, tiny_source[1])
    # Matching ignores Keras' per-instance suffixes and the ':0' device suffix only.
    assert match_key("b_res_net162_plus1dd_1/stem/kernel:0") == "b_res_net162_plus1dd/stem/kernel"
    assert match_key("dense_12/bias") == "dense/bias" and match_key("block1/conv/kernel:0") == "block1/conv/kernel"
    # Reading a SavedModel creates variables: refused inside a strategy's scope (MWMS would broadcast them).
    with tf.distribute.OneDeviceStrategy("/cpu:0").scope(), pytest.raises(RuntimeError, match="outside"):
        read_source_weights(tiny_source[1])


class _Pair(keras.layers.Layer):
    """Two inner layers of one name: their variables share names, as BResNet's (2+1)D convolutions' do."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.first, self.second = keras.layers.Dense(3, name="conv"), keras.layers.Dense(3, name="conv")

    def call(self, x):
        return self.second(self.first(x))


def test_repeated_names_are_matched_in_order():
    def pair_model():
        return keras.Sequential([keras.Input((3,)), _Pair()])   # auto-named: ..._pair, then ..._pair_1

    source, target = pair_model(), pair_model()
    source.set_weights([np.full(w.shape, i, np.float32) for i, w in enumerate(source.get_weights())])
    names = [v.name[:-2] for v in target.weights]
    assert names[0] == names[2] != source.weights[0].name[:-2]    # '..._pair_1/conv/kernel' twice
    report = assign_initial_weights(target, [(v.name, v.numpy()) for v in source.weights], "pair source")
    assert all(np.array_equal(a, b) for a, b in zip(target.get_weights(), source.get_weights()))
    assert report["loaded"] == 4 and report["reinitialized"] == []
    # Without the second layer's variables in the source, those re-initialised are named with their occurrence.
    third = pair_model()
    report = assign_initial_weights(third, [(v.name, v.numpy()) for v in source.weights[:2]], "partial")
    names = [v.name[:-2] for v in third.weights]
    assert report["missing"] == [f"{names[2]}#1", f"{names[3]}#1"] == report["reinitialized"]


# ---- the executor ----------------------------------------------------------------------------------------------

def test_component_requires_serving_model_base_for_serving():
    from tfx.types import Channel, standard_artifacts

    from components.trainer.component import MultiWorkerTrainer

    examples, graph = Channel(type=standard_artifacts.Examples), Channel(type=standard_artifacts.TransformGraph)
    with pytest.raises(ValueError, match="init_from 'serving' needs serving_model_base"):
        MultiWorkerTrainer(examples, graph, training_config(init_from="serving"))
    trainer = MultiWorkerTrainer(examples, graph, training_config(init_from="serving"),
                                 serving_model_base="/serving/bresnet")
    assert trainer.exec_properties["serving_model_base"] == "/serving/bresnet"
    assert MultiWorkerTrainer(examples, graph, training_config()).exec_properties["serving_model_base"] == ""


class _FakeLauncher:
    """Records the job; like the chief, writes the warm-start report when there is a source."""
    jobs = []

    def replica_devices(self):
        return None       # the replicas run on this machine, as the local launcher's

    def launch(self, job):
        from components.trainer.launcher import LaunchResult
        from components.trainer.training import write_json

        self.jobs.append(job)
        if job.init_weights_from:
            write_json(warm_start.report_path(job.run_dir), {"reinitialized": ["logits/kernel", "logits/bias"]})
        return LaunchResult(attempts=1, failures=(), history={"epochs": []}, worker_logs=(), seconds=0.0)


@pytest.mark.parametrize("served", [False, True])
def test_executor_resolves_serving_and_records_the_source(tmp_path, monkeypatch, served):
    from tfx.types import standard_artifacts

    from components.trainer import component

    base = str(tmp_path / "serving" / "bresnet")
    if served:
        _saved_model_dir(os.path.join(base, "3"))
    monkeypatch.setattr(component, "make_launcher", lambda name, options: _FakeLauncher())
    examples = standard_artifacts.Examples()
    examples.uri, examples.split_names = str(tmp_path / "examples"), json.dumps(["train", "eval"])
    graph, model, run = standard_artifacts.TransformGraph(), standard_artifacts.Model(), standard_artifacts.ModelRun()
    graph.uri, model.uri, run.uri = str(tmp_path / "graph"), str(tmp_path / "model"), str(tmp_path / "run")
    component.Executor().Do(
        {"examples": [examples], "transform_graph": [graph]}, {"model": [model], "model_run": [run]},
        {"config": training_config(init_from="serving", precision="float32").to_json(), "launcher": "local",
         "serving_model_base": base})
    job = _FakeLauncher.jobs[-1]
    if served:
        assert job.init_weights_from == os.path.join(base, "3")
        assert model.get_string_custom_property("init_from") == os.path.join(base, "3")
        assert json.loads(model.get_string_custom_property("reinitialized")) == ["logits/kernel", "logits/bias"]
    else:
        assert job.init_weights_from == ""
        assert model.get_string_custom_property("init_from") == "scratch"
        assert not model.has_custom_property("reinitialized")


# ---- train() ---------------------------------------------------------------------------------------------------

def test_train_starts_from_the_source_weights(clip_data, tmp_path, monkeypatch, caplog):
    """Two in-process one-worker runs of the tiny model: the second starts from the first's exported SavedModel."""
    monkeypatch.delenv("TF_CONFIG", raising=False)
    config = training_config(workers=1, epochs=1, steps_per_epoch=2, eval_steps=0, precision="float32")

    def job(name, init=""):
        return dataclasses.replace(training_job(clip_data, tmp_path / name, config), model_builder=TINY,
                                   init_weights_from=init)

    scratch = train(job("first"))
    source = resolve_init_path(str(tmp_path / "first" / "model"))     # the Model artifact dir -> Format-Serving
    assert source.endswith("Format-Serving")
    with caplog.at_level(logging.INFO):
        warm = train(job("second", source))
    # The second run starts exactly where the first ended (its exported weights), not from a fresh initialization.
    assert warm["initial"]["sha256"] == scratch["sha256"] != scratch["initial"]["sha256"]
    assert warm["initial"]["sha256"] != warm["sha256"]                  # and then trains
    assert scratch["warm_start"] is None
    assert warm["warm_start"]["loaded"] == 4 and warm["warm_start"]["reinitialized"] == []
    assert warm_start.read_report(str(tmp_path / "second" / "model_run")) == warm["warm_start"]
    assert f"worker 0: warm start from {source} (init_scope all): 4 variables loaded, reinitialized: []" in caplog.text
