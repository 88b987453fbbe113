"""Fine-tuning (``training.init_scope``, ``freeze_backbone_epochs``, ``backbone_learning_rate_multiplier``): the head
and the backbone, loading the backbone only, frozen epochs (in-process, across a BackupAndRestore resume, and in a
restarted 2-worker MultiWorkerMirroredStrategy run), the backbone's lower learning rate, and ``train()``'s wiring."""
import dataclasses
import json
import logging
import os

import numpy as np
import pytest

from bresnet._keras import keras
from components.trainer import warm_start
from components.trainer.config import TrainingConfig
from components.trainer.training import build_model, compile_model, train, weights_path
from trainer_test_data import CLIP_SHAPE, FAULT, LABELS, training_config, training_job

TINY = "tiny_model:build_tiny_classifier"
FINE_TUNE = {"init_from": "/models/pretrained", "warmup_cosine": False, "learning_rate": 0.01, "workers": 1,
             "precision": "float32"}


def fine_tune_config(**overrides) -> TrainingConfig:
    return training_config(**{**FINE_TUNE, **overrides})


def batches(n=4, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, *CLIP_SHAPE)).astype(np.float32),
            np.arange(n) % len(LABELS))


def split(model, weights):
    """(backbone, head) values of ``weights`` (model.get_weights() order), by the model's own head."""
    head = {id(v) for v in warm_start.head_variables(model)}
    is_head = [id(v) in head for v in model.weights]
    return ([w for w, h in zip(weights, is_head) if not h], [w for w, h in zip(weights, is_head) if h])


def same(a, b) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def random_source(config, builder=TINY, seed=0):
    """A model of ``config`` with random (not initializer) weights, as ``read_source_weights`` returns one."""
    model = build_model(config, builder)
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(size=w.shape).astype(w.dtype) for w in model.get_weights()])
    return model, [(v.name, v.numpy()) for v in model.weights]


class WeightsPerEpoch(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_train_begin(self, logs=None):
        self.start = self.model.get_weights()

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append((epoch, self.model.get_weights()))


# ---- config -------------------------------------------------------------------------------------------------

def test_fine_tuning_fields_round_trip_and_default_to_off():
    config = training_config()
    assert (config.init_scope, config.freeze_backbone_epochs, config.backbone_learning_rate_multiplier) == \
        ("all", 0, 1.0)
    assert not config.fine_tunes_backbone
    tuned = fine_tune_config(init_scope="backbone", freeze_backbone_epochs=3, epochs=3,
                             backbone_learning_rate_multiplier=0.1)
    assert TrainingConfig.from_json(tuned.to_json()) == tuned and tuned.fine_tunes_backbone


@pytest.mark.parametrize("overrides, error, message", [
    ({"init_scope": "head"}, ValueError, r"init_scope must be one of \('all', 'backbone'\).*got 'head'"),
    ({"freeze_backbone_epochs": -1}, ValueError, "freeze_backbone_epochs must be >= 0"),
    ({"freeze_backbone_epochs": 1.0}, TypeError, "freeze_backbone_epochs must be an int"),
    ({"freeze_backbone_epochs": 4, "epochs": 3}, ValueError, r"freeze_backbone_epochs must be <= epochs \(3"),
    ({"backbone_learning_rate_multiplier": 0.0}, ValueError, "backbone_learning_rate_multiplier must be > 0"),
    ({"backbone_learning_rate_multiplier": 1.5}, ValueError, "backbone_learning_rate_multiplier must be <= 1"),
    ({"backbone_learning_rate_multiplier": "0.5"}, TypeError, "backbone_learning_rate_multiplier must be a number"),
    # Without a source there is no pretrained backbone to load, freeze or slow down.
    ({"init_from": "none", "init_scope": "backbone"}, ValueError, "init_scope is 'backbone' but init_from is 'none'"),
    ({"init_from": "none", "freeze_backbone_epochs": 1}, ValueError,
     "freeze_backbone_epochs is 1 but init_from is 'none'"),
    ({"init_from": "none", "backbone_learning_rate_multiplier": 0.5}, ValueError,
     "backbone_learning_rate_multiplier is 0.5 but init_from is 'none'"),
])
def test_fine_tuning_config_errors_name_the_field(overrides, error, message):
    with pytest.raises(error, match=message):
        fine_tune_config(**overrides)


# ---- the head, and loading the backbone only ------------------------------------------------------------------

def test_the_head_is_the_layer_computing_the_logits():
    from bresnet import build_classifier

    bresnet = build_classifier(4, (4, 32, 32, 3))
    assert warm_start.head_layer(bresnet).name == "logits"
    assert [v.name for v in warm_start.head_variables(bresnet)] == [
        f"{bresnet.name}/logits/kernel:0", f"{bresnet.name}/logits/bias:0"]
    assert len(warm_start.backbone_variables(bresnet)) == len(bresnet.trainable_variables) - 2
    tiny = build_model(training_config(workers=1), TINY)                 # functional: its output layer
    assert warm_start.head_layer(tiny) is tiny.layers[-1]
    embedding = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.Activation("relu")])
    with pytest.raises(ValueError, match="cannot tell the head of model .* `head` layer attribute"):
        warm_start.head_layer(embedding)                               # its output layer has no weights


@pytest.mark.parametrize("labels", [LABELS, (*LABELS, "swim")], ids=["same classes", "one more class"])
def test_backbone_scope_loads_the_backbone_and_keeps_a_fresh_head(labels):
    source, source_weights = random_source(training_config(workers=1))
    model = build_model(training_config(workers=1, labels=labels), TINY)
    fresh = model.get_weights()
    report = warm_start.assign_initial_weights(model, source_weights, "src", scope="backbone")
    backbone, head = split(model, model.get_weights())
    assert same(backbone, split(source, source.get_weights())[0])            # the backbone: the source's
    assert same(head, split(model, fresh)[1])                                 # the head: as initialized
    head_names = [v.name[:-2] for v in warm_start.head_variables(model)]
    assert report["scope"] == "backbone" and report["head"] == head_names == report["reinitialized"]
    assert report["loaded"] == 2 and report["shape_mismatch"] == {} and report["unused_source"] == 2
    # Scope "all" with the same classes loads the head too: the scope alone decided above.
    if labels == LABELS:
        report = warm_start.assign_initial_weights(model, source_weights, "src")
        assert same(model.get_weights(), source.get_weights()) and report["reinitialized"] == []
        assert report["scope"] == "all" and report["head"] == []


# ---- frozen epochs and the backbone's learning rate (in-process Keras fit) ------------------------------------

def fine_tune_model(config, initial):
    model = build_model(config, TINY)
    model.set_weights(initial)
    compile_model(model, config, fine_tune=True)
    model.optimizer.build(model.trainable_variables)
    return model


def test_frozen_epochs_train_only_the_head_then_everything():
    config = fine_tune_config(epochs=3, steps_per_epoch=2, freeze_backbone_epochs=2, weight_decay=0.1)
    _, source = random_source(config)
    model = fine_tune_model(config, [w for _, w in source])
    recorder = WeightsPerEpoch()
    model.fit(*batches(), batch_size=2, epochs=3, shuffle=False, verbose=0, callbacks=[recorder])
    start_backbone, start_head = split(model, recorder.start)
    for epoch, weights in recorder.epochs:
        backbone, head = split(model, weights)
        assert not same(head, start_head)
        # Bit-identical while frozen, weight decay included; moved in the first epoch after.
        assert same(backbone, start_backbone) == (epoch < 2), epoch
    assert int(model.optimizer.iterations) == 6


def test_a_resumed_run_is_in_the_phase_of_its_restored_step(tmp_path):
    """BackupAndRestore restores the step counter the phase derives from: a run interrupted after its frozen epoch
    resumes unfrozen and ends bit-identical to an uninterrupted one (a phase kept outside the checkpoint would
    freeze the resumed epoch again)."""
    config = fine_tune_config(epochs=2, steps_per_epoch=2, freeze_backbone_epochs=1)
    _, source = random_source(config)
    initial = [w for _, w in source]
    x, y = batches()

    def fit(model, *callbacks):
        model.fit(x, y, batch_size=2, epochs=2, shuffle=False, verbose=0, callbacks=list(callbacks))

    uninterrupted = fine_tune_model(config, initial)
    fit(uninterrupted)

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt("worker lost")

    backup = str(tmp_path / "backup")
    first = fine_tune_model(config, initial)
    with pytest.raises(KeyboardInterrupt):
        fit(first, keras.callbacks.BackupAndRestore(backup), Interrupt())
    after_frozen_epoch = first.get_weights()
    resumed = fine_tune_model(config, initial)                 # a new process: built, warm-started, compiled again
    recorder = WeightsPerEpoch()
    fit(resumed, keras.callbacks.BackupAndRestore(backup), recorder)
    assert [epoch for epoch, _ in recorder.epochs] == [1]      # resumed at the second epoch
    assert same(split(first, after_frozen_epoch)[0], split(first, initial)[0])
    assert not same(split(resumed, resumed.get_weights())[0], split(first, after_frozen_epoch)[0])
    assert same(resumed.get_weights(), uninterrupted.get_weights())


@pytest.mark.parametrize("optimizer, precision", [
    ("adamw", "float32"), ("sgd", "float32"),
    pytest.param("adamw", "bfloat16", marks=pytest.mark.bfloat16),   # AutoCastVariables: the backbone still found
])
def test_the_multiplier_scales_the_backbone_update_only(optimizer, precision):
    """One step from the same weights on the same batch, multiplier 1 (Keras' own optimizer) against 0.25: the
    backbone's update (weight decay included) is 0.25 times as large, the head's is the same."""
    x, y = batches(2)
    settings = dict(optimizer=optimizer, precision=precision, weight_decay=0.5, steps_per_epoch=1, epochs=1)
    _, source = random_source(fine_tune_config(**settings), seed=3)
    updates = {}
    for multiplier in (1.0, 0.25):
        config = fine_tune_config(backbone_learning_rate_multiplier=multiplier, **settings)
        model = fine_tune_model(config, [w for _, w in source])
        before = model.get_weights()
        model.train_on_batch(x, y)
        deltas = [after - b for after, b in zip(model.get_weights(), before)]
        backbone, head = split(model, deltas)
        updates[multiplier] = (np.sqrt(sum(np.sum(d.astype(np.float64) ** 2) for d in backbone)),
                               np.sqrt(sum(np.sum(d.astype(np.float64) ** 2) for d in head)))
    (backbone_full, head_full), (backbone_low, head_low) = updates[1.0], updates[0.25]
    assert backbone_full > 0 and head_full > 0
    assert backbone_low / backbone_full == pytest.approx(0.25, rel=2e-3)
    assert head_low / head_full == pytest.approx(1.0, rel=1e-5)


# ---- train(): the Trainer's worker --------------------------------------------------------------------------------

def test_train_fine_tunes_a_loaded_backbone(clip_data, tmp_path, monkeypatch, caplog):
    """In-process one-worker runs of the tiny model: init_scope backbone from a SavedModel of a model with other
    classes, the backbone frozen for the first of two epochs at half the head's learning rate after."""
    monkeypatch.delenv("TF_CONFIG", raising=False)
    pretrained = build_model(training_config(workers=1, precision="float32", labels=("a", "b")), TINY)
    pretrained.set_weights([w + 0.5 for w in pretrained.get_weights()])
    pretrained.save(str(tmp_path / "pretrained"), save_format="tf", include_optimizer=False)
    config = training_config(workers=1, epochs=2, steps_per_epoch=2, eval_steps=0, precision="float32",
                             init_from=str(tmp_path / "pretrained"), init_scope="backbone", freeze_backbone_epochs=1,
                             backbone_learning_rate_multiplier=0.5, warmup_cosine=False)
    job = dataclasses.replace(training_job(clip_data, tmp_path / "fine", config), model_builder=TINY,
                              init_weights_from=str(tmp_path / "pretrained"))
    recorder = WeightsPerEpoch()
    with caplog.at_level(logging.INFO):
        digest = train(job, extra_callbacks=[recorder])
    report = digest["warm_start"]
    assert report["scope"] == "backbone" and report["loaded"] == 2 and len(report["reinitialized"]) == 2
    assert report == warm_start.read_report(job.run_dir)
    assert "(init_scope backbone): 2 variables loaded" in caplog.text
    assert "worker 0: fine-tuning: the backbone (all but dense_" in caplog.text
    assert "frozen for the first 1 epoch(s), then at 0.5 x the head's learning rate" in caplog.text
    pretrained_backbone = split(pretrained, pretrained.get_weights())[0]
    model = recorder.model
    assert same(split(model, recorder.start)[0], pretrained_backbone)             # loaded
    (_, frozen), (_, unfrozen) = recorder.epochs
    assert same(split(model, frozen)[0], pretrained_backbone)                     # epoch 1: frozen
    assert not same(split(model, frozen)[1], split(model, recorder.start)[1])     # ... the head trains
    assert not same(split(model, unfrozen)[0], pretrained_backbone)               # epoch 2: the backbone too

    # No source found (init_from "serving" with nothing served): from scratch, and the backbone is not held back.
    caplog.clear()
    scratch = WeightsPerEpoch()
    with caplog.at_level(logging.INFO):
        train(dataclasses.replace(job, run_dir=str(tmp_path / "scratch_run"), scratch_dir=str(tmp_path / "scratch"),
                                  serving_model_dir=str(tmp_path / "scratch_model"), init_weights_from=""),
              extra_callbacks=[scratch])
    assert "training from scratch, so freeze_backbone_epochs and backbone_learning_rate_multiplier do not apply" \
        in caplog.text
    assert not same(split(scratch.model, scratch.epochs[0][1])[0], split(scratch.model, scratch.start)[0])


def test_a_frozen_backbone_stays_frozen_across_a_restart_of_two_mwms_workers(clip_data, tmp_path):
    """Two MultiWorkerMirroredStrategy workers, worker 1 crashes as epoch 2 begins, the cluster restarts and resumes
    from the backup: the backbone frozen for every epoch is exported exactly as loaded, the head trained, and the
    workers ended identical."""
    from components.trainer.launcher import LocalProcessLauncher
    from components.trainer.worker import FAULT_ENV

    source_model, _ = random_source(training_config(workers=1, precision="float32"), seed=5)
    source_model.save_weights(str(tmp_path / "source.h5"))
    config = training_config(workers=2, max_restarts=1, epochs=2, steps_per_epoch=2, eval_steps=0,
                             precision="float32", init_from=str(tmp_path / "source.h5"), freeze_backbone_epochs=2)
    job = dataclasses.replace(training_job(clip_data, tmp_path, config), model_builder=TINY,
                              init_weights_from=str(tmp_path / "source.h5"))
    pythonpath = os.pathsep.join(filter(None, [os.path.dirname(__file__), os.environ.get("PYTHONPATH")]))
    result = LocalProcessLauncher(env={FAULT_ENV: json.dumps(FAULT), "PYTHONPATH": pythonpath}).launch(job)
    assert result.attempts == 2 and result.history["resumed_from_epoch"] == [0, 1]
    digests = []
    for worker in range(2):
        with open(weights_path(job.scratch_dir, worker)) as f:
            digests.append(json.load(f)["sha256"])
    assert digests[0] == digests[1]
    exported = build_model(config, TINY)
    warm_start.load_initial_weights(exported, job.serving_model_dir)
    backbone, head = split(exported, exported.get_weights())
    source_backbone, source_head = split(source_model, source_model.get_weights())
    assert same(backbone, source_backbone)
    assert not any(np.array_equal(a, b) for a, b in zip(head, source_head))
