"""Session fixtures of the Trainer tests (the data and one restarted 2-worker run are shared)."""
import json
import os
import time

import pytest

from trainer_test_data import (FAULT, ClipData, FinishedRun, build_transform_graph, synthetic_clips,
                               training_config, training_job, write_split)


@pytest.fixture(scope="session")
def clip_data(tmp_path_factory) -> ClipData:
    root = tmp_path_factory.mktemp("clips")
    examples_uri = str(root / "examples")
    train_frames, train_labels = synthetic_clips(24, seed=1)
    eval_frames, eval_labels = synthetic_clips(6, seed=2)
    # One train file for two workers: the reason for element-wise (DATA) sharding.
    write_split(os.path.join(examples_uri, "Split-train"), train_frames, train_labels, "train")
    write_split(os.path.join(examples_uri, "Split-eval"), eval_frames, eval_labels, "eval")
    transform_graph_uri = str(root / "transform_graph")
    build_transform_graph(transform_graph_uri, train_frames, train_labels, str(root / "tft_tmp"))
    return ClipData(examples_uri, transform_graph_uri, eval_frames, tuple(eval_labels))


@pytest.fixture(scope="session")
def restarted_run(clip_data, tmp_path_factory) -> FinishedRun:
    """Two workers, worker 1 crashes in epoch 2 of the first attempt, the cluster restarts once. Every training
    augmentation and label smoothing are on (components/trainer/augment.py): the export tests then show that
    the serving signatures of a model trained on augmented clips do not augment (same input, same output).

    Shared by the launcher tests (lock-step training, restart) and the export tests (its SavedModel):
    one cluster run is the expensive part of these tests."""
    from components.trainer.launcher import LocalProcessLauncher
    from components.trainer.worker import FAULT_ENV

    root = tmp_path_factory.mktemp("restarted_run")
    augmentation = {"augment_speed_min": 0.5, "augment_crop_area_min": 0.5, "augment_flip": True,
                    "augment_brightness": 0.2, "augment_contrast": 0.2, "label_smoothing": 0.1}
    job = training_job(clip_data, root, training_config(workers=2, max_restarts=1, **augmentation))
    started = time.perf_counter()
    result = LocalProcessLauncher(env={FAULT_ENV: json.dumps(FAULT)}).launch(job)
    return FinishedRun(job, result, time.perf_counter() - started)
