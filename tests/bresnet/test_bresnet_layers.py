"""Conv2Plus1D, HardSwish and Mish: widths, shapes, options, validation, serialization, FLOPs."""
import math

import numpy as np
import pytest
import tensorflow as tf

from bresnet import Conv2Plus1D, Conv2Plus1DLayer, HardSwish, Mish
from bresnet._keras import keras
from bresnet.flops import count_flops
from bresnet.layers import middle_width


def _weights(layer):
    return sum(int(np.prod(w.shape)) for w in layer.weights)


@pytest.mark.parametrize("cin, filters, kernel, middle, params", [
    (3, 32, 3, 22, 2_706),       # the seed's stem: ceil(27·3·32 / (27 + 96)) = 22
    (32, 32, 3, 72, 27_648),
    (32, 64, 3, 116, 55_680),
    (64, 16, 1, 13, 1_040),      # a 1×1×1 (2+1)D conv: ceil(64·16 / 80) = 13
    (8, 16, (3, 5, 1), math.ceil(3 * 5 * 8 * 16 / (5 * 8 + 3 * 16)), None),
])
def test_middle_width_and_parameters(cin, filters, kernel, middle, params):
    layer = Conv2Plus1D(filters, kernel, use_bias=False)
    layer.build((None, 4, 8, 8, cin))
    assert layer.middle_filters == middle
    kt, kh, kw = (kernel,) * 3 if isinstance(kernel, int) else kernel
    assert layer.spatial.kernel.shape == (1, kh, kw, cin, middle)
    assert layer.temporal.kernel.shape == (kt, 1, 1, middle, filters)
    if params is not None:
        assert _weights(layer) == params


def test_middle_width_matches_full_conv_parameters_when_exact():
    # Tran et al.: the (2+1)D pair has the parameters of the full t×h×w conv when M comes out whole.
    m = middle_width(32, 32, (3, 3, 3))
    assert 3 * 3 * 32 * m + 3 * m * 32 == 3 * 3 * 3 * 32 * 32


def test_bias_and_normalization_weights():
    plain = Conv2Plus1D(8, 3)
    plain.build((None, 2, 6, 6, 4))
    m = plain.middle_filters
    assert _weights(plain) == 9 * 4 * m + m + 3 * m * 8 + 8
    batch_norm = Conv2Plus1D(8, 3, use_bias=False, normalization="batch_norm")
    batch_norm.build((None, 2, 6, 6, 4))
    assert _weights(batch_norm) == 9 * 4 * m + 3 * m * 8 + 4 * 8   # gamma, beta, moving mean, moving var
    layer_norm = Conv2Plus1D(8, 3, use_bias=False, normalization="layer_norm")
    layer_norm.build((None, 2, 6, 6, 4))
    assert _weights(layer_norm) == 9 * 4 * m + 3 * m * 8 + 2 * 8


@pytest.mark.parametrize("kernel, strides, padding, in_shape, out_shape", [
    (3, (2, 2, 2), "same", (2, 5, 9, 7, 3), (2, 3, 5, 4, 6)),
    (3, 1, "valid", (2, 5, 9, 7, 3), (2, 3, 7, 5, 6)),
    ((1, 3, 3), (1, 2, 2), "same", (1, 1, 8, 8, 3), (1, 1, 4, 4, 6)),
    ((3, 1, 1), (2, 1, 1), "valid", (1, 7, 4, 4, 3), (1, 3, 4, 4, 6)),
])
def test_output_shape_matches_compute_output_shape(kernel, strides, padding, in_shape, out_shape):
    layer = Conv2Plus1D(6, kernel, strides=strides, padding=padding)
    y = layer(tf.random.normal(in_shape))
    assert tuple(y.shape) == out_shape
    assert tuple(layer.compute_output_shape((None, *in_shape[1:])).as_list()) == (None, *out_shape[1:])


@pytest.mark.parametrize("normalization", [None, "batch_norm", "layer_norm"])
@pytest.mark.parametrize("activation", [None, "relu", "leaky_relu", "hard_swish", "mish"])
def test_every_normalization_and_activation_runs(normalization, activation):
    layer = Conv2Plus1D(4, 3, normalization=normalization, activation=activation)
    y = layer(tf.random.normal((2, 3, 5, 5, 2)), training=True)
    assert y.shape == (2, 3, 5, 5, 4)
    assert np.all(np.isfinite(y.numpy()))
    if activation == "relu":
        assert float(tf.reduce_min(y)) >= 0.0


def test_relu_output_after_batch_norm_is_normalized_then_rectified():
    layer = Conv2Plus1D(4, 1, normalization="batch_norm", activation="relu")
    x = tf.random.normal((4, 2, 3, 3, 5))
    y = layer(x, training=True).numpy()
    pre = layer.temporal(layer.spatial(x)).numpy()
    mean, var = pre.mean(axis=(0, 1, 2, 3)), pre.var(axis=(0, 1, 2, 3))
    expected = np.maximum((pre - mean) / np.sqrt(var + 1e-3), 0.0)
    np.testing.assert_allclose(y, expected, atol=1e-4)


def test_activation_layers_compute_their_formulas():
    x = tf.constant([-4.0, -3.0, -1.0, 0.0, 1.0, 3.0, 5.0])
    np.testing.assert_allclose(HardSwish()(x).numpy(), [0.0, 0.0, -1 / 3, 0.0, 2 / 3, 3.0, 5.0], atol=1e-6)
    softplus = np.log1p(np.exp(x.numpy()))
    np.testing.assert_allclose(Mish()(x).numpy(), x.numpy() * np.tanh(softplus), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(filters=0, kernel_size=3), ValueError, ["filters", "0"]),
    (dict(filters="8", kernel_size=3), TypeError, ["filters", "'8'"]),
    (dict(filters=8, kernel_size=(3, 3)), TypeError, ["kernel_size", "(3, 3)"]),
    (dict(filters=8, kernel_size=(3, 0, 3)), ValueError, ["kernel_size", "(3, 0, 3)"]),
    (dict(filters=8, kernel_size=True), TypeError, ["kernel_size", "True"]),
    (dict(filters=8, kernel_size=3, strides=(1, 2.0, 2)), TypeError, ["strides", "2.0"]),
    (dict(filters=8, kernel_size=3, padding="causal"), ValueError, ["padding", "'causal'"]),
    (dict(filters=8, kernel_size=3, use_bias=1), TypeError, ["use_bias", "1"]),
    (dict(filters=8, kernel_size=3, normalization="group_norm"), ValueError, ["normalization", "'group_norm'"]),
    (dict(filters=8, kernel_size=3, activation="gelu"), ValueError, ["activation", "'gelu'"]),
    (dict(filters=8, kernel_size=3, normalization="batch_norm", zero_init_norm=1), TypeError, ["zero_init_norm", "1"]),
    (dict(filters=8, kernel_size=3, zero_init_norm=True), ValueError, ["zero_init_norm", "normalization=None"]),
])
def test_conv2plus1d_validates_arguments(kwargs, error, words):
    with pytest.raises(error) as info:
        Conv2Plus1D(**kwargs)
    for word in words:
        assert word in str(info.value)


def test_conv2plus1d_rejects_non_video_input():
    with pytest.raises(ValueError, match="T, H, W, C"):
        Conv2Plus1D(4, 3).build((None, 8, 8, 3))


def test_alias_is_the_same_class():
    assert Conv2Plus1DLayer is Conv2Plus1D


@pytest.mark.parametrize("layer", [
    Conv2Plus1D(16, (3, 1, 5), strides=(2, 1, 2), padding="valid", use_bias=False, normalization="layer_norm",
                activation="mish", zero_init_norm=True, name="c"),
    HardSwish(name="hs"),
    Mish(name="mish"),
])
def test_config_round_trip_and_registered_deserialization(layer):
    config = layer.get_config()
    assert type(layer).from_config(config).get_config() == config
    # Registered under the "bresnet" package: deserializes without custom_objects.
    revived = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(revived) is type(layer)
    assert revived.get_config() == config


def test_conv2plus1d_weights_survive_keras_format(tmp_path):
    inputs = keras.Input((3, 6, 6, 2))
    outputs = Conv2Plus1D(4, 3, strides=(1, 2, 2), normalization="batch_norm", activation="hard_swish")(inputs)
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(0).normal(size=(2, 3, 6, 6, 2)).astype("float32")
    path = str(tmp_path / "conv.keras")
    model.save(path)
    np.testing.assert_array_equal(keras.models.load_model(path)(x).numpy(), model(x).numpy())


def test_flops_of_one_layer_are_exact():
    # Spatial (1,3,3) conv 3→22 stride (1,2,2) over 8×32×32 then temporal (3,1,1) conv 22→32 stride (2,1,1),
    # bias-free, no norm/activation: FLOPs = 2·MACs of the two convolutions and nothing else.
    layer = Conv2Plus1D(32, 3, strides=2, use_bias=False)
    model = keras.Sequential([keras.Input((8, 32, 32, 3)), layer])
    spatial = 8 * 16 * 16 * 22 * (3 * 3 * 3)
    temporal = 4 * 16 * 16 * 32 * (3 * 22)
    assert count_flops(model, (8, 32, 32, 3)) == 2 * (spatial + temporal)
