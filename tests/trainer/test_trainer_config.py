"""TrainingConfig/TrainingJob validation and JSON, TF_CONFIG parsing, launcher registry, fault hook."""
import dataclasses
import json

import pytest

from components.trainer.config import TrainingConfig, TrainingJob
from components.trainer.launcher import LocalProcessLauncher, make_launcher
from components.trainer.cluster import cluster_info
from components.trainer.worker import parse_fault

LABELS = ("a", "b", "c")
SHAPE = (4, 16, 16, 3)


def test_config_round_trips_through_json_and_computes_global_batch():
    config = TrainingConfig(labels=list(LABELS), clip_shape=list(SHAPE), workers=3, batch_size_per_worker=5,
                            optimizer="sgd", epochs=4, steps_per_epoch=7)
    again = TrainingConfig.from_json(config.to_json())
    assert again == config
    assert again.labels == LABELS and again.clip_shape == SHAPE   # lists from JSON become tuples
    assert config.global_batch_size == 15
    assert config.total_steps == 28


@pytest.mark.parametrize("overrides, error, needle", [
    ({"labels": ["only"]}, ValueError, "labels"),
    ({"labels": ["a", "a"]}, ValueError, "unique"),
    ({"labels": "abc"}, TypeError, "labels"),
    ({"clip_shape": (4, 16, 16)}, ValueError, "clip_shape"),
    ({"clip_shape": (4, 16, 16, 1)}, ValueError, "clip_shape"),
    ({"workers": 0}, ValueError, "workers"),
    ({"workers": 2.0}, TypeError, "workers"),
    ({"batch_size_per_worker": True}, TypeError, "batch_size_per_worker"),
    ({"learning_rate": 0.0}, ValueError, "learning_rate"),
    ({"dropout": 1.0}, ValueError, "dropout"),
    ({"optimizer": "adam"}, ValueError, "optimizer"),
    ({"max_restarts": -1}, ValueError, "max_restarts"),
    ({"steps_per_execution": 0}, ValueError, "steps_per_execution"),
    ({"steps_per_execution": 2.0}, TypeError, "steps_per_execution"),
    ({"shuffle_buffer": 0}, ValueError, "shuffle_buffer"),
    ({"collective_timeout_s": float("inf")}, ValueError, "collective_timeout_s"),
    ({"warmup_epochs": 11.0, "epochs": 10}, ValueError, "warmup_epochs"),
    ({"precision": "float16"}, ValueError, "precision"),
    ({"jit_compile": "yes"}, TypeError, "jit_compile"),
    ({"learning_rate_reference_workers": -1}, ValueError, "learning_rate_reference_workers"),
])
def test_config_rejects_bad_values_naming_the_argument(overrides, error, needle):
    kwargs = dict(labels=LABELS, clip_shape=SHAPE)
    kwargs.update(overrides)
    with pytest.raises(error, match=needle):
        TrainingConfig(**kwargs)


def test_learning_rate_scales_linearly_with_workers_when_a_reference_is_set():
    from components.trainer.training import make_learning_rate
    fixed = TrainingConfig(labels=LABELS, clip_shape=SHAPE, workers=8, learning_rate=2e-3)
    assert fixed.scaled_learning_rate == 2e-3
    for workers, peak in [(4, 2e-3), (8, 4e-3), (2, 1e-3)]:
        config = TrainingConfig(labels=LABELS, clip_shape=SHAPE, workers=workers, learning_rate=2e-3,
                                learning_rate_reference_workers=4, epochs=2, steps_per_epoch=10, warmup_epochs=1.0)
        assert config.scaled_learning_rate == pytest.approx(peak)
        schedule = make_learning_rate(config)
        assert float(schedule(10)) == pytest.approx(peak)    # the end of the warm-up is the peak
        constant = dataclasses.replace(config, warmup_cosine=False)
        assert make_learning_rate(constant) == pytest.approx(peak)


def test_config_json_rejects_unknown_keys_and_bad_json():
    d = TrainingConfig(labels=LABELS, clip_shape=SHAPE).to_dict()
    d["epoch"] = 3  # typo of "epochs"
    with pytest.raises(ValueError, match="unknown training config keys \\['epoch'\\]"):
        TrainingConfig.from_json(json.dumps(d))
    with pytest.raises(ValueError, match="not valid JSON"):
        TrainingConfig.from_json("{epochs: 3")


def test_job_round_trips_and_requires_paths():
    config = TrainingConfig(labels=LABELS, clip_shape=SHAPE)
    job = TrainingJob(config, "gs://b/train", "gs://b/eval", "gs://b/tg", "gs://b/m/Format-Serving", "gs://b/run",
                      "gs://b/scratch")
    assert TrainingJob.from_json(job.to_json()) == job
    assert job.model_builder == "bresnet:build_classifier"
    with pytest.raises(ValueError, match="scratch_dir"):
        TrainingJob(config, "t", "e", "tg", "m", "r", "")


def test_cluster_info_reads_worker_and_chief_layouts():
    alone = cluster_info("")  # no TF_CONFIG: a one-worker cluster
    assert (alone.num_workers, alone.worker_index, alone.is_chief) == (1, 0, True)
    workers = {"cluster": {"worker": ["h:1", "h:2", "h:3"]}, "task": {"type": "worker", "index": 2}}
    info = cluster_info(json.dumps(workers))
    assert (info.num_workers, info.worker_index, info.is_chief) == (3, 2, False)
    info = cluster_info(json.dumps({**workers, "task": {"type": "worker", "index": 0}}))
    assert info.is_chief and info.worker_index == 0
    with_chief = {"cluster": {"chief": ["h:0"], "worker": ["h:1"]}, "task": {"type": "worker", "index": 0}}
    info = cluster_info(json.dumps(with_chief))
    assert (info.num_workers, info.worker_index, info.is_chief) == (2, 1, False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        cluster_info('{"cluster": {}}')
    with pytest.raises(ValueError, match="'ps'"):
        cluster_info(json.dumps({"cluster": {"ps": ["h:1"]}, "task": {"type": "ps", "index": 0}}))


def test_make_launcher_by_name_with_json_options():
    launcher = make_launcher("local", '{"timeout_s": 60, "env": {"A": "1"}}')
    assert isinstance(launcher, LocalProcessLauncher)
    assert launcher.timeout_s == 60 and launcher.env == {"A": "1"}
    with pytest.raises(ValueError, match="unknown launcher 'tfjob'"):
        make_launcher("tfjob")
    with pytest.raises(ValueError, match="bad options for launcher 'local'"):
        make_launcher("local", {"replicas": 3})
    with pytest.raises(ValueError, match="timeout_s"):
        make_launcher("local", {"timeout_s": -1})
    with pytest.raises(ValueError, match="JSON object"):
        make_launcher("local", "{not json")


def test_fault_injection_spec_is_validated():
    assert parse_fault('{"worker": 1, "epoch": 2}') == {"worker": 1, "epoch": 2, "exit_code": 17, "attempt": 0,
                                                        "action": "exit"}
    with pytest.raises(ValueError, match="TRAINER_FAULT_INJECTION"):
        parse_fault('{"epoch": 2}')
    with pytest.raises(ValueError, match="action"):
        parse_fault('{"worker": 0, "epoch": 0, "action": "explode"}')
    with pytest.raises(ValueError, match="exit_code"):
        parse_fault('{"worker": 0, "epoch": 0, "exit_code": 0}')


@pytest.mark.bfloat16
def test_bfloat16_precision_builds_a_mixed_model_with_float32_weights_and_outputs():
    from components.trainer.training import build_model, compute_precision
    config = TrainingConfig(labels=LABELS, clip_shape=(4, 16, 16, 3), precision="bfloat16")
    assert compute_precision(config) == "bfloat16"
    model = build_model(config)
    assert {w.dtype.name for w in model.weights} == {"float32"}       # weights stay float32
    assert any(layer.compute_dtype == "bfloat16" for layer in model.layers)
    import numpy as np
    logits = model(np.zeros((1, 4, 16, 16, 3), np.float32), training=False)
    assert logits.dtype.name == "float32" and logits.shape == (1, len(LABELS))   # logits/loss stay float32
    plain = build_model(TrainingConfig(labels=LABELS, clip_shape=(4, 16, 16, 3), precision="float32"))
    assert all(layer.compute_dtype == "float32" for layer in plain.layers)
    # The serving export is float32 unless asked otherwise, and the bfloat16-trained weights load into it.
    from components.trainer.precision import serving_precision
    assert config.export_precision == "float32" and serving_precision(config) == "float32"
    assert serving_precision(dataclasses.replace(config, export_precision="training")) == "bfloat16"
    served = build_model(config, precision=serving_precision(config))
    served.set_weights(model.get_weights())
    assert all(layer.compute_dtype == "float32" for layer in served.layers)
    np.testing.assert_allclose(served(np.ones((1, 4, 16, 16, 3), np.float32), training=False),
                               model(np.ones((1, 4, 16, 16, 3), np.float32), training=False), atol=0.05)
    with pytest.raises(ValueError, match="export_precision"):
        TrainingConfig(labels=LABELS, clip_shape=(4, 16, 16, 3), export_precision="float16")


def test_auto_precision_is_the_default_and_is_bfloat16_only_on_a_cpu_with_bfloat16(monkeypatch):
    from components.trainer import precision as training
    config = TrainingConfig(labels=LABELS, clip_shape=(4, 16, 16, 3))
    assert config.precision == "auto"
    flags = open("/proc/cpuinfo").read()
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert training.cpu_has_bfloat16() == (" avx512_bf16" in flags or " amx_bf16" in flags)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")          # oneDNN capped below native bfloat16
    assert training.cpu_has_bfloat16() is False
    monkeypatch.setattr(training, "cpu_has_bfloat16", lambda: True)
    assert training.compute_precision(config) == "bfloat16"      # no GPU on these machines
    monkeypatch.setattr(training, "cpu_has_bfloat16", lambda: False)
    assert training.compute_precision(config) == "float32"
    assert training.compute_precision(dataclasses.replace(config, precision="float32")) == "float32"


def test_auto_precision_follows_the_replicas_devices_as_the_launcher_declares_them(monkeypatch):
    from components.trainer import precision
    from components.trainer.component import resolve_precision_once
    from components.trainer.launcher import make_launcher
    auto = TrainingConfig(labels=LABELS, clip_shape=(4, 16, 16, 3))
    devices = precision.ReplicaDevices
    assert precision.compute_precision(auto, devices(gpus=1, compute_capability=(7, 0))) == "mixed_float16"  # V100
    assert precision.compute_precision(auto, devices(gpus=8, compute_capability=(9, 0))) == "mixed_float16"  # H100
    assert precision.compute_precision(auto, devices(gpus=1, compute_capability=(6, 0))) == "float32"   # P100
    assert precision.compute_precision(auto, devices(gpus=1)) == "mixed_float16"     # a GPU of unknown model
    for has_bf16, expected in ((True, "bfloat16"), (False, "float32")):            # CPU replicas
        monkeypatch.setattr(precision, "cpu_has_bfloat16", lambda: has_bf16)
        assert precision.compute_precision(auto, devices(gpus=0)) == expected
    # A configured precision is never second-guessed.
    assert precision.compute_precision(dataclasses.replace(auto, precision="float32"), devices(gpus=1)) == "float32"
    # The executor resolves "auto" once for what the launcher will request: a TFJob with GPUs gets mixed_float16
    # whatever this machine has; the local launcher looks at this machine (no GPU here).
    tfjob = make_launcher("kubeflow", {"image": "img", "worker_gpu": 2})
    assert tfjob.replica_devices() == devices(gpus=2)
    assert resolve_precision_once(auto, tfjob.replica_devices()).precision == "mixed_float16"
    assert make_launcher("local").replica_devices() is None
    assert resolve_precision_once(auto, None).precision == "float32"     # monkeypatched: no bfloat16 CPU here


def test_mixed_float16_trains_with_loss_scaling_float32_weights_and_logits():
    import numpy as np
    from components.trainer.training import build_model
    from bresnet._keras import keras
    config = TrainingConfig(labels=LABELS, clip_shape=(2, 8, 8, 3), precision="mixed_float16")
    model = build_model(config)
    assert {w.dtype.name for w in model.weights} == {"float32"}
    assert any(layer.compute_dtype == "float16" for layer in model.layers)
    assert keras.mixed_precision.global_policy().name == "float32"          # the global policy is put back
    # TF's CPU kernels have no float16 MaxPool3D (its GPU kernels do), so the step runs through XLA here.
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=True)
    assert isinstance(model.optimizer, keras.mixed_precision.LossScaleOptimizer)
    before = [w.copy() for w in model.get_weights()]
    x = np.random.default_rng(0).normal(size=(4, 2, 8, 8, 3)).astype(np.float32)
    loss = model.train_on_batch(x, np.array([0, 1, 2, 0]))
    assert np.isfinite(loss)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert model.predict_on_batch(x).dtype.name == "float32"


def test_all_reduce_is_nccl_with_gpus_and_rings_without():
    import tensorflow as tf
    from components.trainer.training import collective_implementation
    implementation = tf.distribute.experimental.CommunicationImplementation
    assert collective_implementation(1) == collective_implementation(8) == implementation.NCCL
    assert collective_implementation(0) == implementation.RING
