"""BResNet162Plus1DD: the (2+1)D ResNet video model, and torchvision-style builder functions.

Layout (input channels-last float32 [B, T, H, W, 3]):
  stem   Conv2Plus1D 32, 3×3×3, stride 2 ─┐ ResNet-C stem: three 3×3×3 convolutions instead of one
  stem1  Conv2Plus1D 32, 3×3×3            │ wide one, each batch-normalized and ReLU'd; only the
  stem2  Conv2Plus1D 64, 3×3×3           ─┘ stem downsamples time.
  maxpool 2, stride 2
  block  .. block3: bottlenecks (64, 1·1·1), (128, 1·2·2), (256, 1·2·2), (512, 1·2·2)
  gap    global average pooling
  head   ``dense`` Dense(units) embedding, or with ``num_classes`` ``logits`` Dense(num_classes).
"""
from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from bresnet._keras import keras
from bresnet.blocks import BottleneckResidual2Plus1DD
from bresnet.layers import PACKAGE, Conv2Plus1D, StoredConfigMixin, positive_int

STAGES = ((64, (1, 1, 1)), (128, (1, 2, 2)), (256, (1, 2, 2)), (512, (1, 2, 2)))
BLOCK_NAMES = ("block", "block1", "block2", "block3")


def _check_dropout(dropout: float) -> float:
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)):
        raise TypeError(f"dropout must be a float, got {dropout!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    return float(dropout)


def _check_clip_shape(shape: Sequence[int | None], arg: str, allow_unknown: bool) -> tuple:
    """(T, H, W, C): C a positive int; T, H, W positive ints (or None when ``allow_unknown``)."""
    if not isinstance(shape, (tuple, list)) or len(shape) != 4:
        raise ValueError(f"{arg} must be (T, H, W, C), got {shape!r}")
    for i, dim in enumerate(shape):
        if dim is None and allow_unknown and i < 3:
            continue
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise TypeError(f"{arg} must hold ints, got {shape!r}")
        if dim < 1:
            raise ValueError(f"{arg} must hold positive sizes, got {shape!r}")
    return tuple(shape)


@keras.saving.register_keras_serializable(package=PACKAGE)
class BResNet162Plus1DD(StoredConfigMixin, keras.Model):
    """The video model. ``num_classes`` set: logits [B, num_classes]; unset: embedding [B, units].

    ``units`` sizes the seed's embedding head and is unused when ``num_classes`` is given (a linear
    embedding straight before linear logits would add parameters but no expressiveness).
    ``dropout`` > 0 adds dropout between pooling and the head. ``zero_init_residual`` starts every residual
    block as its shortcut (:class:`BottleneckResidual2Plus1DD`); the seed initializes its batch norms to 1.
    """

    _config_fields = ("units", "num_classes", "dropout", "zero_init_residual")

    def __init__(self, units: int = 256, num_classes: int | None = None, dropout: float = 0.0,
                 zero_init_residual: bool = False, **kwargs):
        units = positive_int(units, "units")
        if num_classes is not None:
            num_classes = positive_int(num_classes, "num_classes")
        dropout = _check_dropout(dropout)
        if not isinstance(zero_init_residual, bool):
            raise TypeError(f"zero_init_residual must be a bool, got {zero_init_residual!r}")
        super().__init__(**kwargs)
        self.units = units
        self.num_classes = num_classes
        self.dropout = dropout
        self.zero_init_residual = zero_init_residual

        stem = dict(kernel_size=3, use_bias=False, normalization="batch_norm", activation="relu")
        self.stem = Conv2Plus1D(32, strides=2, name="stem", **stem)
        self.stem1 = Conv2Plus1D(32, name="stem1", **stem)
        self.stem2 = Conv2Plus1D(64, name="stem2", **stem)
        self.maxpool = keras.layers.MaxPool3D(pool_size=2, strides=2, padding="same", name="maxpool")
        self.blocks = [BottleneckResidual2Plus1DD(filters, strides, zero_init_residual=zero_init_residual, name=name)
                       for (filters, strides), name in zip(STAGES, BLOCK_NAMES)]
        self.gap = keras.layers.GlobalAveragePooling3D(name="gap")
        self.head_dropout = keras.layers.Dropout(dropout, name="dropout") if dropout > 0 else None
        if num_classes is None:
            self.head = keras.layers.Dense(units, name="dense")
        else:
            # float32 logits even under a mixed-precision policy: softmax/cross-entropy want full precision.
            self.head = keras.layers.Dense(num_classes, dtype="float32", name="logits")

    def call(self, inputs, training=None):
        # Not decorated itself: Model.build (and so .keras loading) needs call's real signature.
        return self._forward(inputs, training)

    @tf.autograph.experimental.do_not_convert
    def _forward(self, inputs, training):
        x = self.stem(inputs, training=training)
        x = self.stem1(x, training=training)
        x = self.stem2(x, training=training)
        x = self.maxpool(x)
        for block in self.blocks:
            x = block(x, training=training)
        x = self.gap(x)
        if self.head_dropout is not None:
            x = self.head_dropout(x, training=training)
        return self.head(x)


def bresnet162plus1dd(num_classes: int | None = None, units: int = 256,
                      input_shape: Sequence[int | None] | None = None, **kwargs) -> keras.Model:
    """A BResNet162Plus1DD; built for clips of ``input_shape`` (T, H, W, C; T/H/W may be None) when given.

    ``kwargs`` go to the model (``dropout``, ``zero_init_residual``, ``name``).
    """
    model = BResNet162Plus1DD(units=units, num_classes=num_classes, **kwargs)
    if input_shape is not None:
        input_shape = _check_clip_shape(input_shape, "input_shape", allow_unknown=True)
        # A symbolic call (no computation) builds every layer and records the input signature that
        # SavedModel export and `fit` use.
        model(keras.Input(shape=input_shape, dtype="float32"))
    return model


def build_classifier(num_classes: int, clip_shape: tuple[int, int, int, int], dropout: float = 0.0) -> keras.Model:
    """The built classifier the Trainer uses: float32 clips [B, T, H, W, 3] → logits [B, num_classes].

    Its residual blocks start as their shortcuts (``zero_init_residual``): on the demo task, 1,200 steps of the
    demo recipe reached clip accuracy 0.67 that way and 0.22 from the seed's initialization (README, demo).
    """
    num_classes = positive_int(num_classes, "num_classes")
    clip_shape = _check_clip_shape(clip_shape, "clip_shape", allow_unknown=False)
    if clip_shape[-1] != 3:
        raise ValueError(f"clip_shape must end in 3 (RGB) channels, got {clip_shape!r}")
    return bresnet162plus1dd(num_classes=num_classes, input_shape=clip_shape, dropout=dropout, zero_init_residual=True)
