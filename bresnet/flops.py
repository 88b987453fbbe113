"""Cost of a model: FLOPs of one forward pass (TF profiler) and a per-layer table of shapes and parameters.

Both work from graphs and shapes only, so they are cheap even for 32×256×256 clips: nothing is executed.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from bresnet._keras import keras
from bresnet.layers import reference_ops

logger = logging.getLogger(__name__)

# Layers whose weights the seed's parameter table counts (it leaves normalization weights out).
COUNTED_LAYERS = (keras.layers.Conv3D, keras.layers.Dense)


def _clip_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    if not isinstance(input_shape, (tuple, list)) or len(input_shape) != 4:
        raise ValueError(f"input_shape must be (T, H, W, C), got {input_shape!r}")
    if not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in input_shape):
        raise ValueError(f"input_shape must hold positive ints, got {input_shape!r}")
    return tuple(input_shape)


def count_flops(model: keras.Model, input_shape: Sequence[int]) -> int:
    """FLOPs (multiply and add counted separately) of an inference forward pass over ONE clip.

    ``input_shape`` is (T, H, W, C). The model is traced at batch size 1 (under
    :func:`bresnet.layers.reference_ops`) into a concrete function and the TF profiler sums the ``flops``
    statistics of its graph's ops (convolutions, matmuls, element-wise ops; ops without a registered
    statistic, e.g. fused batch norm, count 0).
    """
    input_shape = _clip_shape(input_shape)
    spec = tf.TensorSpec((1, *input_shape), tf.float32)
    # autograph=False: the forward pass has no tensor-dependent Python control flow to convert. Traced with
    # the reference ops: the count is the architecture's cost, not that of the fast path's fused/merged ops.
    with reference_ops():
        concrete = tf.function(lambda clips: model(clips, training=False),
                               autograph=False).get_concrete_function(spec)
    options = (tf.compat.v1.profiler.ProfileOptionBuilder(tf.compat.v1.profiler.ProfileOptionBuilder.float_operation())
               .with_empty_output().build())
    stats = tf.compat.v1.profiler.profile(graph=concrete.graph, run_meta=tf.compat.v1.RunMetadata(), cmd="op",
                                          options=options)
    logger.info("%s: %.3f GFLOPs per clip of %s", model.name, stats.total_float_ops / 1e9, input_shape)
    return int(stats.total_float_ops)


@dataclasses.dataclass(frozen=True)
class LayerRow:
    """One row of the layer table: ``params`` counts conv/dense weights only (as the seed's table does),
    ``true_params`` every weight, normalization included."""

    name: str
    output_shape: tuple
    params: int
    true_params: int


def counted_params(layer: keras.layers.Layer) -> int:
    """Weights of the convolutions and dense layers in ``layer`` (itself or nested), as the seed table counts."""
    modules = [layer, *layer.submodules]
    return sum(int(np.prod(w.shape)) for m in modules if isinstance(m, COUNTED_LAYERS) for w in m.weights)


def summary_rows(model: keras.Model, input_shape: Sequence[int]) -> list[LayerRow]:
    """Per top-level layer: name, output shape (batch None) and parameters, for clips of ``input_shape``.

    The model must be a chain of its top-level layers in ``model.layers`` order (BResNet162Plus1DD is);
    shapes come from each layer's ``compute_output_shape``, so no data flows. Builds the model if needed.
    """
    input_shape = _clip_shape(input_shape)
    if not model.built:
        model.build((None, *input_shape))
    shape = tf.TensorShape((None, *input_shape))
    rows = []
    for layer in model.layers:
        shape = tf.TensorShape(layer.compute_output_shape(shape))
        rows.append(LayerRow(layer.name, tuple(shape.as_list()), counted_params(layer), layer.count_params()))
    return rows
