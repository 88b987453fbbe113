"""A killed worker's run lands in the training-accuracy band of an undisturbed run: a 2-worker job whose worker 1
is killed when epoch 2 begins (the cluster restarts from the BackupAndRestore checkpoint) against the same job.

The shared ``restarted_run`` trains 9 steps, too few to leave chance, so a band around it would prove nothing;
these runs train 80 steps. The band is on the training history (accuracy and loss over each epoch's 80 clips),
not on the exported model: after so few steps the BatchNorm moving statistics are still far from the data, and
the exported models' accuracy on the 30 clips swings between runs (measured, 4 pairs, undisturbed vs
killed: 0.93/0.67, 0.67/0.33, 0.60/0.37, 0.33/1.00 at 36-80 steps; chance 0.33), so it is printed, not
asserted. Epoch 1 of the two runs is bit-identical (same seed, same data order), which makes the comparison one
of the restart alone."""
import json
import time

import numpy as np
import pytest
import tensorflow as tf

from trainer_test_data import FAULT, LABELS, FinishedRun, synthetic_clips, training_config, training_job

pytestmark = pytest.mark.slow

# Final-epoch training accuracy of the two runs may differ by this much. Measured with the seed's initialization:
# 0.54 vs 0.53, 0.54 vs 0.50; since the classifier's blocks start as their shortcuts it learns faster here and the
# two trajectories part more after the restart: 0.75 vs 0.525, then 0.525 vs 0.75 (2026-12-02, under the AVX2 cap,
# undisturbed vs killed). Each figure is an epoch's 80 clips, so sampling alone moves it by ~0.05 (s.d.) at these
# accuracies. A restart from scratch or from broken weights would also show in the loss, which must fall below
# epoch 1's; epoch 1 must be bit-identical.
ACCURACY_BAND = 0.3


def _config():
    return training_config(workers=2, max_restarts=1, epochs=4, steps_per_epoch=20, learning_rate=5e-3,
                           warmup_epochs=0.5)


def _launch(clip_data, root, env) -> FinishedRun:
    from components.trainer.launcher import LocalProcessLauncher

    job = training_job(clip_data, root, _config())
    started = time.perf_counter()
    result = LocalProcessLauncher(env=env).launch(job)
    return FinishedRun(job, result, time.perf_counter() - started)


@pytest.fixture(scope="module")
def undisturbed_run(clip_data, tmp_path_factory) -> FinishedRun:
    return _launch(clip_data, tmp_path_factory.mktemp("undisturbed_run"), env={})


@pytest.fixture(scope="module")
def killed_run(clip_data, tmp_path_factory) -> FinishedRun:
    from components.trainer.worker import FAULT_ENV
    return _launch(clip_data, tmp_path_factory.mktemp("killed_run"), env={FAULT_ENV: json.dumps(FAULT)})


def _accuracy(run: FinishedRun, frames: np.ndarray, labels: list[str]) -> float:
    served = tf.saved_model.load(run.job.serving_model_dir)
    top = served.signatures["serving_frames"](frames=tf.constant(frames))["top_class"].numpy().astype(str)
    return float(np.mean(top == np.array(labels)))


def test_killed_run_resumes_and_lands_in_the_accuracy_band_of_an_undisturbed_run(killed_run, undisturbed_run,
                                                                                   clip_data):
    restarted_run = killed_run
    assert undisturbed_run.result.attempts == 1 and undisturbed_run.result.history["resumed_from_epoch"] == [0]
    assert restarted_run.result.attempts == 2 and restarted_run.result.history["resumed_from_epoch"] == [0, 1]
    assert restarted_run.result.failures[0].worker_index == FAULT["worker"]
    # Same job config apart from the fault: same data, epochs and steps.
    assert restarted_run.job.config == undisturbed_run.job.config
    first = [run.result.history["epochs"][0] for run in (undisturbed_run, restarted_run)]
    assert first[0]["loss"] == first[1]["loss"] and first[0]["accuracy"] == first[1]["accuracy"]
    last = [run.result.history["epochs"][-1] for run in (undisturbed_run, restarted_run)]
    assert [e["epoch"] for e in last] == [4, 4] and last[1]["attempt"] == 1
    train_frames, train_labels = synthetic_clips(24, seed=1)     # the clips clip_data was written from
    frames = np.concatenate([train_frames, clip_data.eval_frames])
    labels = list(train_labels) + list(clip_data.eval_labels)
    exported = [_accuracy(run, frames, labels) for run in (undisturbed_run, restarted_run)]
    print(f"\nlast epoch training accuracy / loss: undisturbed {last[0]['accuracy']:.3f} / {last[0]['loss']:.3f}, "
          f"killed+restarted {last[1]['accuracy']:.3f} / {last[1]['loss']:.3f}; exported models on {len(labels)} "
          f"clips: {exported[0]:.3f} vs {exported[1]:.3f} (chance {1 / len(LABELS):.3f}); "
          f"run times {undisturbed_run.seconds:.0f}s vs {restarted_run.seconds:.0f}s")
    for run_first, run_last in zip(first, last):
        assert run_last["loss"] < run_first["loss"]
    assert abs(last[0]["accuracy"] - last[1]["accuracy"]) <= ACCURACY_BAND
