"""BottleneckResidual2Plus1DD: widths, shortcut choice, shapes, validation, serialization."""
import numpy as np
import pytest
import tensorflow as tf

from bresnet import BottleneckResidual2Plus1DD
from bresnet._keras import keras
from bresnet.flops import counted_params


def test_widths_and_projection_parameters_match_the_seed_table():
    block = BottleneckResidual2Plus1DD(64, (1, 1, 1))
    block.build((None, 8, 64, 64, 64))
    assert (block.reduce.filters, block.conv.filters, block.expand.filters) == (16, 16, 256)
    # reduce 64→13→16, conv 16→36→16 (3×3×3), expand 16→16→256, projection 64→52→256
    assert [counted_params(l) for l in (block.reduce, block.conv, block.expand, block.projection)] == [
        1_040, 6_912, 4_352, 16_640]
    assert counted_params(block) == 28_944
    assert block.pool is None   # stride 1: nothing to downsample


def test_identity_shortcut_when_shapes_agree():
    block = BottleneckResidual2Plus1DD(16, 1)
    x = tf.random.normal((2, 2, 4, 4, 64))
    y = block(x)
    assert block.projection is None and block.pool is None
    assert y.shape == x.shape
    # With the residual path zeroed the block is relu(x): the shortcut really is the identity.
    block.expand.norm.gamma.assign(tf.zeros_like(block.expand.norm.gamma))
    np.testing.assert_allclose(block(x, training=False).numpy(), np.maximum(x.numpy(), 0.0), atol=1e-6)


def test_strided_shortcut_average_pools_before_projecting():
    block = BottleneckResidual2Plus1DD(8, (1, 2, 2))
    x = tf.random.normal((1, 3, 6, 6, 4))
    block(x)
    assert tuple(block.pool.pool_size) == (1, 2, 2) and tuple(block.pool.strides) == (1, 2, 2)
    block.expand.norm.gamma.assign(tf.zeros_like(block.expand.norm.gamma))
    block.expand.norm.beta.assign(tf.zeros_like(block.expand.norm.beta))
    pooled = tf.nn.avg_pool3d(x, (1, 1, 2, 2, 1), (1, 1, 2, 2, 1), "SAME")
    expected = tf.nn.relu(block.projection(pooled, training=False))
    np.testing.assert_allclose(block(x, training=False).numpy(), expected.numpy(), atol=1e-5)


@pytest.mark.parametrize("strides, in_shape", [
    ((1, 2, 2), (1, 3, 7, 5, 8)),
    ((2, 2, 2), (2, 5, 9, 9, 8)),
    ((1, 1, 1), (1, 1, 3, 3, 8)),
    ((1, 2, 2), (1, 1, 1, 1, 8)),
])
def test_output_shape_matches_compute_output_shape(strides, in_shape):
    block = BottleneckResidual2Plus1DD(8, strides)
    y = block(tf.random.normal(in_shape))
    assert tuple(block.compute_output_shape((None, *in_shape[1:])).as_list()) == (None, *y.shape[1:])
    assert y.shape[-1] == 32 and float(tf.reduce_min(y)) >= 0.0


@pytest.mark.parametrize("filters", [1, 2, 3])
def test_filters_below_four_behave_as_the_seed(filters):
    # The seed's bottleneck width is max(filters // 4, 1); its output still has filters * 4 channels.
    block = BottleneckResidual2Plus1DD(filters=filters, strides=(1, 1, 1))
    y = block(tf.random.normal((1, 2, 4, 4, 3)))
    assert y.shape == (1, 2, 4, 4, 4 * filters)
    assert block.reduce.filters == 1 and block.conv.filters == 1 and block.expand.filters == 4 * filters


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(filters=0), ValueError, ["filters", "0"]),
    (dict(filters=-8), ValueError, ["filters", "-8"]),
    (dict(filters=8.0), TypeError, ["filters", "8.0"]),
    (dict(filters=8, strides=(1, 2)), TypeError, ["strides", "(1, 2)"]),
    (dict(filters=8, strides=0), ValueError, ["strides", "0"]),
    (dict(filters=8, zero_init_residual=1), TypeError, ["zero_init_residual", "1"]),
])
def test_validates_arguments(kwargs, error, words):
    with pytest.raises(error) as info:
        BottleneckResidual2Plus1DD(**kwargs)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("strides, channels", [((1, 1, 1), 64), ((1, 2, 2), 32)])
def test_zero_init_residual_starts_the_block_as_its_shortcut(strides, channels):
    x = tf.random.normal((2, 2, 4, 4, channels), seed=1)
    block = BottleneckResidual2Plus1DD(16, strides, zero_init_residual=True)
    plain = BottleneckResidual2Plus1DD(16, strides)
    block(x), plain(x)   # build both
    for training in (True, False):
        shortcut = x
        if block.pool is not None:
            shortcut = block.pool(shortcut)
        if block.projection is not None:
            shortcut = block.projection(shortcut, training=training)
        np.testing.assert_allclose(block(x, training=training).numpy(), np.maximum(shortcut.numpy(), 0.0), atol=1e-5)
    # Only the main path's last scale starts at 0; the seed's initialization (plain) has it at 1.
    assert np.all(block.expand.norm.gamma.numpy() == 0.0)
    for layer in (block.reduce, block.conv) + ((block.projection,) if block.projection else ()):
        assert np.all(layer.norm.gamma.numpy() == 1.0)
    assert np.all(plain.expand.norm.gamma.numpy() == 1.0)
    # The zero scale still learns: its gradient is not zero.
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(block(x, training=True) - 1.0))
    assert float(tf.reduce_max(tf.abs(tape.gradient(loss, block.expand.norm.gamma)))) > 0.0


def test_config_round_trip_and_registered_deserialization():
    block = BottleneckResidual2Plus1DD(32, [1, 2, 2], zero_init_residual=True, name="b")
    config = block.get_config()
    assert config["strides"] == (1, 2, 2) and config["filters"] == 32 and config["zero_init_residual"] is True
    assert BottleneckResidual2Plus1DD.from_config(config).get_config() == config
    revived = keras.layers.deserialize(keras.layers.serialize(block))
    assert isinstance(revived, BottleneckResidual2Plus1DD) and revived.get_config() == config
