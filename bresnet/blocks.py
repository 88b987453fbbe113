"""The residual block of BResNet162Plus1DD: a (2+1)D bottleneck with ResNet-B and ResNet-D tweaks."""
from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from bresnet._keras import keras
from bresnet.layers import PACKAGE, Conv2Plus1D, StoredConfigMixin, conv_output_length, positive_int, triple

EXPANSION = 4  # output width = filters * EXPANSION
REDUCTION = 4  # bottleneck width = max(filters // REDUCTION, 1), as in the seed


@keras.saving.register_keras_serializable(package=PACKAGE)
class BottleneckResidual2Plus1DD(StoredConfigMixin, keras.layers.Layer):
    """Bottleneck residual block built from :class:`Conv2Plus1D` convolutions.

    Widths (they follow the seed's parameter table, which is the ground truth): with ``filters = F`` the
    main path is 1×1×1 → F//4, 3×3×3 → F//4, 1×1×1 → 4F, so the bottleneck is 16× narrower than the
    output (e.g. F=64: 16 → 16 → 256). As in the seed, F of 1 to 3 gives a bottleneck of width 1
    (``max(F // 4, 1)``) and still 4F output channels. Every convolution, the 1×1×1 ones included, is a ``Conv2Plus1D``:
    a 1×1×1 one is then two stacked 1×1×1 convolutions with a middle width of ceil(Cin·Cout/(Cin+Cout)),
    which is what makes the table's counts (block: 1,040 + 6,912 + 4,352 + 16,640 = 28,944) come out.

    ResNet-B: the stride sits on the 3×3×3 convolution, not the first 1×1×1.
    ResNet-D: when the shapes differ the shortcut average-pools (window 2, ``strides``) before its 1×1×1
    projection. The window is 2 only along strided axes: along an axis with stride 1 a 2-wide window would
    only blur, not downsample, so there (and for an all-ones stride) no pooling happens.
    All convolutions are bias-free and batch-normalized; ReLU after the addition.
    ``zero_init_residual`` starts the last batch norm's scale of the main path at 0, so the block starts as its
    shortcut (Goyal et al. 2017, "Accurate, Large Minibatch SGD", section 5.1; torchvision's option of the same
    name); only the initial values differ, the architecture and weights are the same.
    """

    _config_fields = ("filters", "strides", "zero_init_residual")

    def __init__(self, filters: int, strides: int | Sequence[int] = (1, 1, 1), zero_init_residual: bool = False,
                 **kwargs):
        filters = positive_int(filters, "filters")
        strides = triple(strides, "strides")
        if not isinstance(zero_init_residual, bool):
            raise TypeError(f"zero_init_residual must be a bool, got {zero_init_residual!r}")
        super().__init__(**kwargs)
        self.filters = filters
        self.strides = strides
        self.zero_init_residual = zero_init_residual

    @property
    def output_filters(self) -> int:
        return self.filters * EXPANSION

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        if input_shape.rank != 5 or input_shape[-1] is None:
            raise ValueError(f"{self.name}: input must be [B, T, H, W, C] with known C, got {input_shape}")
        width = max(self.filters // REDUCTION, 1)
        conv = dict(use_bias=False, normalization="batch_norm")
        self.reduce = Conv2Plus1D(width, 1, activation="relu", name="reduce", **conv)
        self.conv = Conv2Plus1D(width, 3, strides=self.strides, activation="relu", name="conv", **conv)
        self.expand = Conv2Plus1D(self.output_filters, 1, name="expand", zero_init_norm=self.zero_init_residual,
                                  **conv)
        strides = tuple(self.strides)
        strided = strides != (1, 1, 1)
        self.pool = None
        self.projection = None
        if strided:
            self.pool = keras.layers.AveragePooling3D(pool_size=strides, strides=strides, padding="same", name="pool")
        if strided or input_shape[-1] != self.output_filters:
            self.projection = Conv2Plus1D(self.output_filters, 1, name="projection", **conv)
        self.merge = keras.layers.ReLU(name="relu")

        shape = input_shape
        for layer in (self.reduce, self.conv, self.expand):
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        if self.projection is not None:
            shortcut_shape = input_shape if self.pool is None else self.pool.compute_output_shape(input_shape)
            self.projection.build(shortcut_shape)
        super().build(input_shape)

    @tf.autograph.experimental.do_not_convert
    def call(self, inputs, training=None):
        x = self.reduce(inputs, training=training)
        x = self.conv(x, training=training)
        residual = self.expand(x, training=training)
        shortcut = inputs
        if self.pool is not None:
            shortcut = self.pool(shortcut)
        if self.projection is not None:
            shortcut = self.projection(shortcut, training=training)
        return self.merge(residual + shortcut)

    def compute_output_shape(self, input_shape):
        b, t, h, w, _ = tf.TensorShape(input_shape).as_list()
        lengths = [conv_output_length(n, 3, s, "same") for n, s in zip((t, h, w), self.strides)]
        return tf.TensorShape([b, *lengths, self.output_filters])
