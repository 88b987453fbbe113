"""Building-block layers of BResNet162Plus1DD: the (2+1)D convolution and two activation layers.

Every public class here validates its arguments in ``__init__``, round-trips through ``get_config`` /
``from_config`` and is registered under the ``bresnet`` package, so saved models reload without
``custom_objects``.
"""
from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from bresnet._keras import keras

PACKAGE = "bresnet"

# The ``call`` methods of the composite layers here are marked ``@tf.autograph.experimental.do_not_convert``:
# Keras runs ``call`` through AutoGraph when tracing, and AutoGraph does not skip the ``tf_keras`` package, so
# it would transpile Keras internals on every trace (tens of seconds per model build). These calls branch only
# on Python configuration, never on tensors, so they need no conversion.

NORMALIZATIONS = (None, "batch_norm", "layer_norm")
ACTIVATIONS = (None, "relu", "leaky_relu", "hard_swish", "mish")
PADDINGS = ("same", "valid")


# Inference merges a 1x1x1 pair when a clip has at least this many positions per middle channel (see
# Conv2Plus1D._merge_pays_off).
MERGE_MIN_POSITIONS_PER_MIDDLE_WIDTH = 16

# Set by :func:`reference_ops`: Conv2Plus1D then computes with its Conv3D sub-layers as they are.
_REFERENCE_OPS = {"on": False}


@contextlib.contextmanager
def reference_ops():
    """Within this context, models traced compute the (2+1)D convolutions with their Conv3D sub-layers.

    The default path computes the same function with 2D kernels (and, for inference, folded batch norm and
    merged 1x1x1 pairs: fewer, differently counted ops); FLOP counts (``bresnet.flops``) trace the reference
    so that they state the architecture's cost, and tests compare both paths.
    """
    previous = _REFERENCE_OPS["on"]
    _REFERENCE_OPS["on"] = True
    try:
        yield
    finally:
        _REFERENCE_OPS["on"] = previous


def _dims(x: tf.Tensor) -> list:
    """The shape of ``x``: static sizes where known (so outputs keep them), dynamic ones elsewhere."""
    dynamic = tf.shape(x)
    return [d if d is not None else dynamic[i] for i, d in enumerate(x.shape.as_list())]


def _inference(norm: keras.layers.Layer, training) -> bool:
    """True when Keras' batch norm would use its moving statistics for this ``training`` value.

    Mirrors BatchNormalization: None means the learning phase, a frozen layer always infers. A symbolic
    ``training`` tensor answers False here, so the layer itself decides at run time.
    """
    if not norm.trainable:
        return True
    if training is None:
        training = keras.backend.learning_phase()
    if isinstance(training, (bool, int, np.bool_)):
        return not bool(training)
    return False


class StoredConfigMixin:
    """``get_config`` built from the constructor arguments a class names once in ``_config_fields``.

    Each class keeps its validated constructor arguments as attributes of the same name, so the config is
    those attributes plus the base class's (name, trainable and, for layers, dtype). Keras wraps tuples
    assigned to layer attributes in tracking proxies; they are turned back into plain tuples here so configs
    compare equal and serialize to JSON.
    """

    _config_fields: tuple[str, ...] = ()

    def get_config(self) -> dict:
        config = super().get_config()
        # keras.Layer's config carries name/trainable/dtype; a subclassed keras.Model's base config is empty.
        config.setdefault("name", self.name)
        config.setdefault("trainable", self.trainable)
        for field in self._config_fields:
            value = getattr(self, field)
            config[field] = tuple(value) if isinstance(value, (tuple, list)) else value
        return config


def triple(value: int | Sequence[int], arg: str) -> tuple[int, int, int]:
    """An int or a 3-sequence of positive ints as a (time, height, width) tuple; names ``arg`` on error."""
    if isinstance(value, bool):
        raise TypeError(f"{arg} must be an int or 3 ints, got {value!r}")
    if isinstance(value, int):
        value = (value, value, value)
    if not isinstance(value, (tuple, list)) or len(value) != 3:
        raise TypeError(f"{arg} must be an int or a sequence of 3 ints, got {value!r}")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise TypeError(f"{arg} must contain ints, got {value!r}")
    if any(v < 1 for v in value):
        raise ValueError(f"{arg} must be positive, got {value!r}")
    return tuple(int(v) for v in value)


def positive_int(value: int, arg: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{arg} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{arg} must be positive, got {value!r}")
    return value


def choice(value, options: tuple, arg: str):
    if value not in options:
        raise ValueError(f"{arg} must be one of {options}, got {value!r}")
    return value


def conv_output_length(length: int | None, kernel: int, stride: int, padding: str) -> int | None:
    """Output length of a convolution/pooling along one axis (None stays None)."""
    if length is None:
        return None
    if padding == "same":
        return -(-length // stride)
    return -(-(length - kernel + 1) // stride)


def middle_width(in_channels: int, filters: int, kernel_size: tuple[int, int, int]) -> int:
    """Width M between the spatial and temporal convolutions (Tran et al. 2018, §3.5).

    Chosen so the (2+1)D pair has (about) the parameters of the full t×h×w convolution:
    kh·kw·Cin·M + kt·M·F ≈ kt·kh·kw·Cin·F  ⇒  M = ceil(kt·kh·kw·Cin·F / (kh·kw·Cin + kt·F)).
    """
    kt, kh, kw = kernel_size
    numerator = kt * kh * kw * in_channels * filters
    return -(-numerator // (kh * kw * in_channels + kt * filters))   # exact integer ceil


@keras.saving.register_keras_serializable(package=PACKAGE)
class HardSwish(keras.layers.Layer):
    """x · relu6(x + 3) / 6 (Howard et al. 2019)."""

    def call(self, inputs):
        return inputs * tf.nn.relu6(inputs + 3.0) * (1.0 / 6.0)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)


@keras.saving.register_keras_serializable(package=PACKAGE)
class Mish(keras.layers.Layer):
    """x · tanh(softplus(x)) (Misra 2019)."""

    def call(self, inputs):
        return inputs * tf.math.tanh(tf.math.softplus(inputs))

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)


def make_activation(activation: str | None, name: str) -> keras.layers.Layer | None:
    if activation is None:
        return None
    if activation == "relu":
        return keras.layers.ReLU(name=name)
    if activation == "leaky_relu":
        return keras.layers.LeakyReLU(name=name)
    if activation == "hard_swish":
        return HardSwish(name=name)
    return Mish(name=name)


def make_normalization(normalization: str | None, name: str, zero_gamma: bool = False) -> keras.layers.Layer | None:
    """The normalization layer; ``zero_gamma`` starts its scale at 0 (its output is then ``beta``, 0 at first)."""
    if normalization is None:
        return None
    gamma = "zeros" if zero_gamma else "ones"
    if normalization == "batch_norm":
        # fused=None lets Keras pick the fused kernel, which it supports for rank-5 channels-last inputs.
        return keras.layers.BatchNormalization(axis=-1, gamma_initializer=gamma, name=name)
    return keras.layers.LayerNormalization(axis=-1, gamma_initializer=gamma, name=name)


@keras.saving.register_keras_serializable(package=PACKAGE)
class Conv2Plus1D(StoredConfigMixin, keras.layers.Layer):
    """(2+1)D convolution: spatial Conv3D (1,kh,kw) then temporal Conv3D (kt,1,1), then norm and activation.

    The spatial convolution carries the height/width strides and the temporal one the time stride. The
    middle width follows :func:`middle_width`; it depends on the input channels, so the sub-layers are
    created in ``build``. Inputs are channels-last ``[B, T, H, W, C]``. ``zero_init_norm`` starts the
    normalization's scale (gamma) at 0, so the layer first outputs its shift alone (a residual block's last
    convolution: the block starts as its shortcut).
    """

    _config_fields = ("filters", "kernel_size", "strides", "padding", "use_bias", "normalization", "activation",
                      "zero_init_norm")

    def __init__(self, filters: int, kernel_size: int | Sequence[int], strides: int | Sequence[int] = (1, 1, 1),
                 padding: str = "same", use_bias: bool = True, normalization: str | None = None,
                 activation: str | None = None, zero_init_norm: bool = False, **kwargs):
        filters = positive_int(filters, "filters")
        kernel_size = triple(kernel_size, "kernel_size")
        strides = triple(strides, "strides")
        padding = choice(padding, PADDINGS, "padding")
        if not isinstance(use_bias, bool):
            raise TypeError(f"use_bias must be a bool, got {use_bias!r}")
        normalization = choice(normalization, NORMALIZATIONS, "normalization")
        activation = choice(activation, ACTIVATIONS, "activation")
        if not isinstance(zero_init_norm, bool):
            raise TypeError(f"zero_init_norm must be a bool, got {zero_init_norm!r}")
        if zero_init_norm and normalization is None:
            raise ValueError("zero_init_norm needs a normalization to initialize, got normalization=None")
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        self.padding = padding
        self.use_bias = use_bias
        self.normalization = normalization
        self.activation = activation
        self.zero_init_norm = zero_init_norm
        self.middle_filters: int | None = None

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        if input_shape.rank != 5 or input_shape[-1] is None:
            raise ValueError(f"{self.name}: input must be [B, T, H, W, C] with known C, got {input_shape}")
        kt, kh, kw = self.kernel_size
        st, sh, sw = self.strides
        self.middle_filters = middle_width(int(input_shape[-1]), self.filters, self.kernel_size)
        self.spatial = keras.layers.Conv3D(self.middle_filters, (1, kh, kw), strides=(1, sh, sw),
                                           padding=self.padding, use_bias=self.use_bias, name="spatial")
        self.temporal = keras.layers.Conv3D(self.filters, (kt, 1, 1), strides=(st, 1, 1),
                                            padding=self.padding, use_bias=self.use_bias, name="temporal")
        self.norm = make_normalization(self.normalization, "norm", zero_gamma=self.zero_init_norm)
        self.act = make_activation(self.activation, "act")
        # Build the sub-layers now so all weights exist once this layer is built (saving/loading need that).
        self.spatial.build(input_shape)
        middle_shape = self.spatial.compute_output_shape(input_shape)
        self.temporal.build(middle_shape)
        if self.norm is not None:
            self.norm.build(self.temporal.compute_output_shape(middle_shape))
        super().build(input_shape)

    @tf.autograph.experimental.do_not_convert
    def call(self, inputs, training=None):
        if self.normalization == "batch_norm" and not _REFERENCE_OPS["on"] and _inference(self.norm, training):
            return self._folded(inputs)
        if self.compute_dtype == "bfloat16" and not _REFERENCE_OPS["on"]:
            x = self._convolve_2d(inputs)
        else:
            x = self.temporal(self.spatial(inputs))
        if self.norm is not None:
            x = self.norm(x, training=training)
        if self.act is not None:
            x = self.act(x)
        return x

    # The sub-layers' variables computed with oneDNN 2D kernels (bench/README.md): the spatial (1,kh,kw)
    # convolution runs on [B*T, H, W, C] and the temporal (kt,1,1) one on [B, T, H*W, M]. Used for bfloat16
    # training, where it is the only correct way: oneDNN's bfloat16 Conv3DBackpropFilter returned NaN gradients
    # in about a third of the steps on an AVX512-BF16 CPU, its 2D kernels never did. Float32 training keeps
    # Conv3D: 2D kernels measured 0.7-1.1x its speed there.

    def _spatial_2d(self, inputs):
        """The spatial (1,kh,kw) convolution (+ its bias) on [B*T, H, W, C]; returns it as [B*T, H', W', M]."""
        dtype = inputs.dtype
        b, t, h, w, c = _dims(inputs)
        _, sh, sw = self.strides
        y = tf.nn.conv2d(tf.reshape(inputs, [b * t, h, w, c]), tf.cast(self.spatial.kernel, dtype)[0],
                         [1, sh, sw, 1], self.padding.upper())
        if self.use_bias:
            y = tf.nn.bias_add(y, tf.cast(self.spatial.bias, dtype))
        return y

    def _convolve_2d(self, inputs):
        dtype = inputs.dtype
        b, t = _dims(inputs)[:2]
        y = self._spatial_2d(inputs)
        _, h2, w2, m = _dims(y)
        y = tf.nn.conv2d(tf.reshape(y, [b, t, h2 * w2, m]), tf.cast(self.temporal.kernel, dtype)[:, 0],
                         [1, self.strides[0], 1, 1], self.padding.upper())
        if self.use_bias:
            y = tf.nn.bias_add(y, tf.cast(self.temporal.bias, dtype))
        return tf.reshape(y, [b, _dims(y)[1], h2, w2, self.filters])

    def _folded(self, inputs):
        """Inference with batch norm: the moving statistics folded into the temporal kernel and a bias, so that
        oneDNN runs convolution + bias + activation as one fused op; a 1x1x1 pair (nothing between its two
        convolutions) becomes one Cin x Cout matrix W1 @ W2 where :meth:`_merge_pays_off`: one pass over memory."""
        dtype = inputs.dtype
        b, t, h, w, c = _dims(inputs)
        kt, st = self.kernel_size[0], self.strides[0]
        temporal = tf.cast(self.temporal.kernel, dtype)[:, 0]      # (kt, 1, M, F)
        if self._merge_pays_off(t, h, w):
            spatial = tf.cast(self.spatial.kernel, dtype)[0, 0, 0]     # (C, M)
            kernel = tf.matmul(spatial, temporal[0, 0])[None, None]     # (1, 1, C, F)
            bias = None
            if self.use_bias:
                bias = (tf.matmul(tf.cast(self.spatial.bias, dtype)[None], temporal[0, 0])[0]
                        + tf.cast(self.temporal.bias, dtype))
            kernel, bias = self._fold(kernel, bias, dtype)
            y = tf.nn.conv2d(tf.reshape(inputs, [b * t, h, w, c]), kernel, 1, "VALID")
            t2, h2, w2 = t, h, w
        else:
            y = self._spatial_2d(inputs)
            _, h2, w2, m = _dims(y)
            bias = tf.cast(self.temporal.bias, dtype) if self.use_bias else None
            kernel, bias = self._fold(temporal, bias, dtype)
            if kt == 1 and st == 1:
                y = tf.nn.conv2d(y, kernel, 1, "VALID")
                t2 = t
            else:
                y = tf.nn.conv2d(tf.reshape(y, [b, t, h2 * w2, m]), kernel, [1, st, 1, 1], self.padding.upper())
                t2 = _dims(y)[1]
        y = tf.nn.bias_add(y, bias)
        if self.act is not None:   # on the 4D tensor, next to the convolution: oneDNN fuses the two
            y = self.act(y)
        return tf.reshape(y, [b, t2, h2, w2, self.filters])

    def _merge_pays_off(self, t, h, w) -> bool:
        """Merge a 1x1x1 pair into one C x F matrix only where the clip has far more positions than the pair's
        middle width: the merged product W1 @ W2 costs C*M*F multiply-adds on every call, about M / positions
        of the pair's own work per clip (their FLOPs are equal by construction, ``middle_width``), and only
        saves a pass over the middle tensor. At block3's 4x4x4 positions the product cost more than it saved."""
        if self.kernel_size != (1, 1, 1) or self.strides != (1, 1, 1):
            return False
        if not all(isinstance(d, int) for d in (t, h, w)):
            return False
        return t * h * w >= MERGE_MIN_POSITIONS_PER_MIDDLE_WIDTH * self.middle_filters

    def _fold(self, kernel, bias, dtype):
        """Batch norm folded into the convolution: kernel * s and (bias - mean) * s + beta, s = gamma/std."""
        norm = self.norm
        scale = norm.gamma * tf.math.rsqrt(norm.moving_variance + norm.epsilon)     # float32 statistics
        shift = norm.beta - norm.moving_mean * scale
        if bias is not None:
            shift = shift + tf.cast(bias, scale.dtype) * scale
        return kernel * tf.cast(scale, dtype), tf.cast(shift, dtype)

    def compute_output_shape(self, input_shape):
        b, t, h, w, _ = tf.TensorShape(input_shape).as_list()
        lengths = [conv_output_length(n, k, s, self.padding) for n, k, s in zip((t, h, w), self.kernel_size,
                                                                               self.strides)]
        return tf.TensorShape([b, *lengths, self.filters])


Conv2Plus1DLayer = Conv2Plus1D
