"""BResNet162Plus1DD and its builders: the seed table, cost constants, heads, validation, saving, training."""
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from bresnet import BottleneckResidual2Plus1DD, BResNet162Plus1DD, Conv2Plus1D, bresnet162plus1dd, build_classifier
from bresnet._keras import keras
from bresnet.flops import count_flops, summary_rows
from bresnet.model import BLOCK_NAMES
from bresnet.summary import main as summary_main

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
SEED_SHAPE = (32, 256, 256, 3)

# The seed's summary at (None, 32, 256, 256, 3): output shape and conv/dense parameters (no BatchNorm).
SEED_TABLE = [
    ("stem", (None, 16, 128, 128, 32), 2_706),
    ("stem1", (None, 16, 128, 128, 32), 27_648),
    ("stem2", (None, 16, 128, 128, 64), 55_680),
    ("maxpool", (None, 8, 64, 64, 64), 0),
    ("block", (None, 8, 64, 64, 256), 28_944),
    ("block1", (None, 8, 32, 32, 512), 184_192),
    ("block2", (None, 8, 16, 16, 1024), 735_104),
    ("block3", (None, 8, 8, 8, 2048), 2_935_168),
    ("gap", (None, 2048), 0),
    ("dense", (None, 256), 524_544),
]
SEED_TABLE_TOTAL = 4_493_986

# Cost of the seed model (embedding head, units=256), torchvision style: parameters include BatchNorm
# (gamma, beta, moving mean and variance); GFLOPs per clip as the TF profiler measures them.
SEED_PARAMS = 4_527_138
SEED_GFLOPS = {(16, 112, 112, 3): 5.596, (32, 256, 256, 3): 57.585}


@pytest.fixture(scope="module")
def seed_model():
    model = BResNet162Plus1DD(units=256)
    model.build((None, *SEED_SHAPE))
    return model


def test_every_row_of_the_seed_table(seed_model):
    rows = summary_rows(seed_model, SEED_SHAPE)
    assert [(r.name, r.output_shape, r.params) for r in rows] == SEED_TABLE
    assert sum(r.params for r in rows) == SEED_TABLE_TOTAL


def test_true_parameter_total_includes_batch_norm(seed_model):
    assert seed_model.count_params() == SEED_PARAMS
    assert sum(r.true_params for r in summary_rows(seed_model, SEED_SHAPE)) == SEED_PARAMS
    batch_norms = [m for m in seed_model.submodules if isinstance(m, keras.layers.BatchNormalization)]
    assert SEED_PARAMS - SEED_TABLE_TOTAL == sum(4 * bn.gamma.shape[0] for bn in batch_norms)


def _conv_flops(conv, shape):
    """2·MACs of a built Conv2Plus1D on a (T, H, W, C) input; returns (flops, output shape)."""
    t, h, w, c = shape
    (kt, kh, kw), (st, sh, sw) = conv.kernel_size, conv.strides
    h, w = -(-h // sh), -(-w // sw)
    spatial = t * h * w * conv.middle_filters * kh * kw * c
    t = -(-t // st)
    temporal = t * h * w * conv.filters * kt * conv.middle_filters
    return 2 * (spatial + temporal), (t, h, w, conv.filters)


def _analytic_conv_and_dense_flops(model, shape):
    """Independent count of the multiply-adds the architecture implies (convolutions and the head)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, Conv2Plus1D):
            flops, shape = _conv_flops(layer, shape)
            total += flops
        elif isinstance(layer, keras.layers.MaxPool3D):
            shape = (*(-(-n // 2) for n in shape[:3]), shape[3])
        elif isinstance(layer, BottleneckResidual2Plus1DD):
            block_input = shape
            for conv in (layer.reduce, layer.conv, layer.expand):
                flops, shape = _conv_flops(conv, shape)
                total += flops
            if layer.projection is not None:
                pooled = (*(-(-n // s) for n, s in zip(block_input[:3], layer.strides)), block_input[3])
                total += _conv_flops(layer.projection, pooled)[0]
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * shape[-1] * layer.units
    return total


@pytest.mark.parametrize("clip_shape", sorted(SEED_GFLOPS))
def test_params_and_gflops_per_clip(clip_shape):
    model = bresnet162plus1dd(input_shape=clip_shape)
    assert model.count_params() == SEED_PARAMS
    flops = count_flops(model, clip_shape)
    assert flops / 1e9 == pytest.approx(SEED_GFLOPS[clip_shape], rel=0.01)
    # The profiler's count is the convolutions and head plus small element-wise work (adds, pooling mean).
    analytic = _analytic_conv_and_dense_flops(model, clip_shape)
    assert analytic <= flops <= analytic * 1.005


def test_flops_scale_with_clip_volume():
    model = bresnet162plus1dd(input_shape=(None, None, None, 3))
    small, large = count_flops(model, (8, 64, 64, 3)), count_flops(model, (16, 128, 128, 3))
    assert large == pytest.approx(8 * small, rel=0.01)


def test_classifier_is_built_and_returns_logits():
    model = build_classifier(7, (2, 32, 32, 3), dropout=0.3)
    assert model.built and isinstance(model, BResNet162Plus1DD)
    assert [l.name for l in model.layers][-3:] == ["gap", "dropout", "logits"]
    assert model.get_layer("dropout").rate == pytest.approx(0.3)
    x = np.random.default_rng(0).normal(size=(3, 2, 32, 32, 3)).astype("float32")
    logits = model(x, training=False)
    assert logits.shape == (3, 7) and logits.dtype == tf.float32
    assert model.save_spec()[0][0].shape.as_list() == [None, 2, 32, 32, 3]
    # Head replaces the seed's embedding: 2048·7 + 7 weights instead of 2048·256 + 256.
    assert model.count_params() == SEED_PARAMS - 524_544 + 2048 * 7 + 7


def test_classifier_starts_residual_blocks_as_shortcuts_and_the_plain_builder_as_the_seed():
    def scales(model):
        return {(block.name, conv): float(np.abs(getattr(block, conv).norm.gamma.numpy()).max())
                for block in model.blocks for conv in ("reduce", "conv", "expand")}
    zero = scales(build_classifier(3, (2, 32, 32, 3)))
    assert {k: v for k, v in zero.items() if k[1] == "expand"} == {(b, "expand"): 0.0 for b in BLOCK_NAMES}
    assert all(v == 1.0 for k, v in zero.items() if k[1] != "expand")
    assert set(scales(bresnet162plus1dd(num_classes=3, input_shape=(2, 32, 32, 3))).values()) == {1.0}


def test_embedding_head_without_num_classes():
    model = bresnet162plus1dd(units=64, input_shape=(1, 32, 32, 3))
    assert model.layers[-1].name == "dense"
    assert model(tf.zeros((2, 1, 32, 32, 3))).shape == (2, 64)


@pytest.mark.parametrize("clip", [(1, 1, 32, 32, 3), (2, 3, 33, 47, 3), (1, 5, 16, 24, 3)])
def test_any_clip_size_including_one_frame(clip):
    model = bresnet162plus1dd(num_classes=3, input_shape=(None, None, None, 3))
    y = model(tf.random.normal(clip), training=False)
    assert y.shape == (clip[0], 3)
    assert np.all(np.isfinite(y.numpy()))


@pytest.mark.parametrize("call, error, words", [
    (lambda: BResNet162Plus1DD(units=0), ValueError, ["units", "0"]),
    (lambda: BResNet162Plus1DD(num_classes="5"), TypeError, ["num_classes", "'5'"]),
    (lambda: BResNet162Plus1DD(dropout=1.0), ValueError, ["dropout", "1.0"]),
    (lambda: BResNet162Plus1DD(dropout="0.1"), TypeError, ["dropout", "'0.1'"]),
    (lambda: BResNet162Plus1DD(zero_init_residual="yes"), TypeError, ["zero_init_residual", "'yes'"]),
    (lambda: build_classifier(0, (8, 64, 64, 3)), ValueError, ["num_classes", "0"]),
    (lambda: build_classifier(5, (8, 64, 64)), ValueError, ["clip_shape", "(8, 64, 64)"]),
    (lambda: build_classifier(5, (8, None, 64, 3)), TypeError, ["clip_shape", "None"]),
    (lambda: build_classifier(5, (8, 64, 64, 1)), ValueError, ["clip_shape", "(8, 64, 64, 1)"]),
    (lambda: build_classifier(5, (8, 64, 64, 3), dropout=-0.1), ValueError, ["dropout", "-0.1"]),
    (lambda: bresnet162plus1dd(input_shape=(8, 0, 64, 3)), ValueError, ["input_shape", "(8, 0, 64, 3)"]),
    (lambda: count_flops(BResNet162Plus1DD(), (8, 64, 64)), ValueError, ["input_shape", "(8, 64, 64)"]),
])
def test_validates_arguments(call, error, words):
    with pytest.raises(error) as info:
        call()
    for word in words:
        assert word in str(info.value)


def test_config_round_trip():
    model = BResNet162Plus1DD(units=128, num_classes=9, dropout=0.25, zero_init_residual=True, name="video")
    config = model.get_config()
    assert config["units"] == 128 and config["num_classes"] == 9 and config["dropout"] == 0.25
    assert config["zero_init_residual"] is True
    clone = BResNet162Plus1DD.from_config(config)
    assert clone.get_config() == config and clone.name == "video"


def test_saved_model_and_keras_format_reload_with_identical_outputs(tmp_path):
    model = build_classifier(4, (2, 32, 32, 3), dropout=0.5)
    x = np.random.default_rng(1).normal(size=(2, 2, 32, 32, 3)).astype("float32")
    # Move the BatchNorm statistics and scales off their initial values (some scales start at 0) so that reloading
    # them is tested too.
    rng = np.random.default_rng(3)
    for bn in (m for m in model.submodules if isinstance(m, keras.layers.BatchNormalization)):
        bn.gamma.assign(rng.uniform(0.5, 1.5, bn.gamma.shape))
        bn.moving_mean.assign(rng.normal(0.0, 0.1, bn.moving_mean.shape))
        bn.moving_variance.assign(rng.uniform(0.5, 2.0, bn.moving_variance.shape))
    expected = model(x, training=False).numpy()

    keras_path = str(tmp_path / "model.keras")
    model.save(keras_path)
    reloaded = keras.models.load_model(keras_path)   # no custom_objects: the classes are registered
    assert isinstance(reloaded, BResNet162Plus1DD)
    np.testing.assert_array_equal(reloaded(x, training=False).numpy(), expected)

    saved_model_dir = str(tmp_path / "saved_model")
    tf.saved_model.save(model, saved_model_dir)
    serving = tf.saved_model.load(saved_model_dir).signatures["serving_default"]
    (outputs,) = serving(tf.constant(x)).values()
    np.testing.assert_array_equal(outputs.numpy(), expected)


def test_training_steps_decrease_the_loss_on_a_fixed_batch():
    keras.utils.set_random_seed(0)
    model = build_classifier(3, (2, 32, 32, 3))
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(2).normal(size=(6, 2, 32, 32, 3)).astype("float32")
    y = np.array([0, 1, 2, 0, 1, 2])
    losses = model.fit(x, y, batch_size=6, epochs=6, verbose=0, shuffle=False).history["loss"]
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0]


def test_summary_table_in_process(capsys):
    assert summary_main(["--input-shape", "16,112,112,3", "--num-classes", "10"]) == 0
    out = capsys.readouterr().out
    assert "stem2" in out and "(None, 4, 4, 4, 2048)" in out and "logits" in out
    assert f"{SEED_TABLE_TOTAL - 524_544 + 2048 * 10 + 10:,}" in out       # conv/dense total
    assert "GFLOPs per clip: 5.59" in out


def test_summary_is_runnable_as_a_module():
    result = subprocess.run([sys.executable, "-m", "bresnet.summary", "--input-shape", "32,256,256,3"],
                            capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
                            env={**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr
    for name, shape, params in SEED_TABLE:
        assert any(line.startswith(name + " ") and str(shape) in line and f"{params:,}" in line
                   for line in result.stdout.splitlines()), name
    assert f"{SEED_TABLE_TOTAL:,}" in result.stdout and f"{SEED_PARAMS:,}" in result.stdout
    assert "GFLOPs per clip: 57.58" in result.stdout
