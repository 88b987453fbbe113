"""Training-clip augmentation (components/trainer/augment.py): each op changes training clips, as it says, and
evaluation input and the serving signatures never augment; label smoothing changes the loss, not the accuracy."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft

from bresnet._keras import keras
from components.trainer import augment
from components.trainer.config import TrainingConfig
from components.trainer.training import make_dataset, make_loss, split_files
from trainer_test_data import training_config

ON = {"augment_speed_min": 0.5, "augment_crop_area_min": 0.3, "augment_flip": True, "augment_brightness": 0.5,
      "augment_contrast": 0.5}


def _clips(batch=8, length=8, size=12):
    """A batch of one clip whose every pixel says where it is: value = t * 1000 + y * 10 + x / 10 (channels equal)."""
    t, y, x = np.meshgrid(np.arange(length), np.arange(size), np.arange(size), indexing="ij")
    clip = (t * 1000 + y * 10 + x / 10).astype(np.float32)[..., None].repeat(3, axis=-1)
    return tf.constant(np.stack([clip] * batch))


def test_config_fields_are_off_by_default_and_checked():
    config = TrainingConfig(labels=("a", "b"), clip_shape=(4, 8, 8, 3))
    assert augment.enabled(config) == [] and config.label_smoothing == 0
    assert augment.augment(frames := _clips(), config) is frames       # nothing on: the same tensor
    on = dataclasses.replace(config, **ON)
    assert augment.enabled(on) == list(ON)
    for bad in ({"augment_crop_area_min": 0.0}, {"augment_crop_area_min": 1.5}, {"augment_speed_min": 0},
                {"augment_brightness": -1.0}, {"augment_contrast": 1.0}, {"label_smoothing": 1.0},
                {"augment_flip": 1}):
        with pytest.raises((ValueError, TypeError)):
            dataclasses.replace(config, **bad)


def test_speed_jitter_plays_a_shorter_run_of_the_clips_own_frames_in_order():
    tf.random.set_seed(1)
    frames = _clips(batch=32)
    out = augment.speed_jitter(frames, 0.5).numpy()
    times = np.round(out[:, :, 0, 0, 0] / 1000).astype(int)          # which source frame each output frame is
    assert (np.diff(times, axis=1) >= 0).all() and times.min() >= 0 and times.max() <= 7
    spans = times[:, -1] - times[:, 0] + 1
    assert spans.min() >= 4 and (spans < 8).any()                    # n in [ceil(0.5 * 8), 8], not always 8
    assert out.shape == frames.shape


def test_random_resized_crop_uses_one_box_for_all_frames_and_keeps_the_size():
    tf.random.set_seed(2)
    frames = _clips(batch=16)
    out = augment.random_resized_crop(frames, 0.3).numpy()
    assert out.shape == frames.shape
    # every frame of a clip is the same crop: the spatial part (the value less t * 1000) is equal across time
    time_part = (np.arange(8) * 1000.0)[None, :, None, None, None]
    within, source = out - time_part, frames.numpy() - time_part
    assert np.allclose(within, within[:, :1], atol=0.05)
    # and the crops are zooms into the clip: its (y, x) grid changed, its values stay inside the clip's range
    assert not np.allclose(within, source, atol=0.05)
    assert within.min() >= source.min() - 0.05 and within.max() <= source.max() + 0.05


def test_flip_mirrors_whole_clips_brightness_and_contrast_shift_and_scale_each_clip():
    tf.random.set_seed(3)
    frames = _clips(batch=32)
    flipped = augment.flip(frames).numpy()
    mirrored = [np.allclose(f, frames.numpy()[i][:, :, ::-1]) for i, f in enumerate(flipped)]
    same = [np.allclose(f, frames.numpy()[i]) for i, f in enumerate(flipped)]
    assert all(m or s for m, s in zip(mirrored, same)) and any(mirrored) and any(same)
    shifted = augment.brightness(frames, 0.5).numpy() - frames.numpy()
    per_clip = shifted.reshape(32, -1)
    assert np.allclose(per_clip, per_clip[:, :1], atol=1e-3) and np.abs(per_clip).max() <= 0.5
    assert per_clip[:, 0].std() > 0.05                                   # clips get different shifts
    scaled = augment.contrast(frames, 0.5).numpy()
    mean = frames.numpy().mean(axis=(1, 2, 3), keepdims=True)
    ratio = (scaled - mean) / (frames.numpy() - mean)
    assert np.allclose(ratio.reshape(32, -1), ratio.reshape(32, -1)[:, :1], atol=1e-3)
    assert 0.5 - 1e-6 <= ratio.min() and ratio.max() <= 1.5 + 1e-6


@pytest.mark.parametrize("field", list(ON))
def test_each_augmentation_changes_training_clips_and_never_evaluation_clips(clip_data, field):
    tft_output = tft.TFTransformOutput(clip_data.transform_graph_uri)
    files = split_files(clip_data.train_uri)
    plain, augmented = training_config(workers=1, batch_size_per_worker=6), \
        training_config(workers=1, batch_size_per_worker=6, **{field: ON[field]})

    def first(config, training):
        tf.random.set_seed(0)
        ds = make_dataset(files, tft_output, config, training=training)
        return next(iter(ds))

    frames, labels = first(plain, training=True)
    changed, changed_labels = first(augmented, training=True)   # same shuffle seed: the same clips, augmented
    assert (labels.numpy() == changed_labels.numpy()).all()
    assert not np.allclose(frames.numpy(), changed.numpy()), field
    assert np.allclose(first(plain, training=False)[0].numpy(), first(augmented, training=False)[0].numpy())


def test_label_smoothing_spreads_the_target_and_keeps_sparse_labels():
    logits = tf.constant([[4.0, 0.0, 0.0], [0.0, 0.0, 4.0]])
    labels = tf.constant([0, 1])
    config = TrainingConfig(labels=("a", "b", "c"), clip_shape=(4, 8, 8, 3))
    plain = make_loss(config)(labels, logits).numpy()
    smoothed = make_loss(dataclasses.replace(config, label_smoothing=0.3))(labels, logits)
    targets = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1]])              # 1 - 0.3 + 0.3/3 and 0.3/3
    expected = -(targets * tf.nn.log_softmax(logits).numpy()).sum(axis=1)
    assert np.allclose(smoothed.numpy(), expected, atol=1e-5)
    assert float(np.mean(plain)) == pytest.approx(float(keras.losses.SparseCategoricalCrossentropy(
        from_logits=True)(labels, logits)), abs=1e-6)


# ---- mixup and CutMix ---------------------------------------------------------------------------------------

def _targets(labels, classes=4):
    return tf.one_hot(labels, classes)


def test_mixup_blends_each_clip_with_its_partner_by_the_targets_share():
    tf.random.set_seed(3)
    rng = np.random.default_rng(0)
    frames = tf.constant(rng.normal(size=(6, 2, 4, 4, 3)).astype(np.float32))
    labels = [0, 1, 2, 3, 0, 1]
    mixed, targets = augment.mixup(frames, _targets(labels), alpha=0.4)
    targets = targets.numpy()
    assert np.allclose(targets.sum(axis=1), 1.0, atol=1e-6)
    lam = targets[0, labels[0]]                           # clip 0's partner is clip 5 (label 1): lam on label 0
    assert 0.0 <= lam <= 1.0 and targets[0, labels[5]] == pytest.approx(1 - lam, abs=1e-6)
    partner = frames.numpy()[::-1]
    assert np.allclose(mixed.numpy(), lam * frames.numpy() + (1 - lam) * partner, atol=1e-5)


def test_cutmix_pastes_one_box_into_every_frame_and_mixes_targets_by_its_area():
    tf.random.set_seed(4)
    batch, length, size = 4, 3, 16
    frames = tf.constant(np.arange(batch, dtype=np.float32)[:, None, None, None, None]
                         * np.ones((batch, length, size, size, 3), np.float32))    # clip i: every value is i
    shares = []
    for _ in range(20):
        pasted, targets = augment.cutmix(frames, _targets([0, 1, 2, 3]), alpha=1.0)
        pasted, targets = pasted.numpy(), targets.numpy()
        from_partner = pasted[0] == 3.0                                   # clip 0's partner is clip 3
        assert ((pasted[0] == 0.0) | from_partner).all()                 # every pixel is its own or the partner's
        assert (from_partner == from_partner[:1]).all()                  # the same box in every frame and channel
        share = from_partner[0, :, :, 0].mean()
        assert targets[0, 3] == pytest.approx(share, abs=1e-6) and targets[0, 0] == pytest.approx(1 - share, abs=1e-6)
        shares.append(share)
    assert 0.0 < np.mean(shares) < 1.0 and len(set(shares)) > 3        # boxes of varying size, not all or nothing


def test_with_mixing_the_dataset_gives_soft_training_targets_and_exact_one_hot_validation_targets(clip_data):
    tft_output = tft.TFTransformOutput(clip_data.transform_graph_uri)
    files = split_files(clip_data.train_uri)
    plain = training_config(workers=1, batch_size_per_worker=6)
    mixing = training_config(workers=1, batch_size_per_worker=6, augment_mixup_alpha=0.4, augment_cutmix_alpha=1.0)

    def first(config, training):
        tf.random.set_seed(0)
        return next(iter(make_dataset(files, tft_output, config, training=training)))

    frames, labels = first(plain, training=True)
    mixed, targets = first(mixing, training=True)
    classes = len(plain.labels)
    assert targets.shape == (6, classes) and np.allclose(targets.numpy().sum(axis=1), 1.0, atol=1e-5)
    assert not np.allclose(mixed.numpy(), frames.numpy())
    assert (targets.numpy().max(axis=1) < 1.0).any()                   # some clips really are mixtures
    eval_frames, eval_labels = first(plain, training=False)
    eval_mixed, eval_targets = first(mixing, training=False)
    assert np.array_equal(eval_targets.numpy(), np.eye(classes)[eval_labels.numpy()])
    assert np.allclose(eval_mixed.numpy(), eval_frames.numpy())


def test_with_mixing_the_loss_and_accuracy_read_one_hot_targets():
    from components.trainer.training import compile_model
    config = TrainingConfig(labels=("a", "b", "c"), clip_shape=(4, 8, 8, 3), augment_mixup_alpha=0.2,
                            label_smoothing=0.3)
    logits = tf.constant([[4.0, 0.0, 0.0], [0.0, 0.0, 4.0]])
    targets = tf.constant([[0.6, 0.4, 0.0], [0.0, 1.0, 0.0]])
    smoothed = targets.numpy() * 0.7 + 0.1
    expected = -(smoothed * tf.nn.log_softmax(logits).numpy()).sum(axis=1).mean()
    assert float(make_loss(config)(targets, logits)) == pytest.approx(expected, abs=1e-5)
    model = keras.Sequential([keras.layers.Input((4, 8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(3)])
    compile_model(model, config)
    x = np.zeros((2, 4, 8, 8, 3), np.float32)
    logs = model.train_on_batch(x, targets.numpy(), return_dict=True)
    assert np.isfinite(logs["loss"]) and "accuracy" in logs
    # Validation with one-hot targets scores exactly as the sparse labels would.
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 4, 8, 8, 3)).astype(np.float32)
    labels = rng.integers(0, 3, 40)
    one_hot = model.evaluate(x, np.eye(3)[labels], verbose=0, return_dict=True)["accuracy"]
    sparse = keras.models.clone_model(model)
    sparse.set_weights(model.get_weights())
    compile_model(sparse, dataclasses.replace(config, augment_mixup_alpha=0.0))
    expected = float(np.mean(np.argmax(model.predict(x, verbose=0), axis=1) == labels))
    assert one_hot == pytest.approx(expected) == sparse.evaluate(x, labels, verbose=0, return_dict=True)["accuracy"]
    for bad in ({"augment_mixup_alpha": -0.1}, {"augment_cutmix_alpha": float("nan")}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            dataclasses.replace(config, **bad)
