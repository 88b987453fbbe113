"""Warm start of the Trainer (``TrainingConfig.init_from``): where a run's initial weights come from, and loading them.

Plain functions, no TFX: the executor resolves ``init_from`` once with ``resolve_init_source`` and hands every
worker the same source (``TrainingJob.init_weights_from``); each worker reads it with ``read_source_weights``
(outside the distribution strategy's scope: reading a SavedModel creates variables, which under
MultiWorkerMirroredStrategy would be broadcast with collectives) and assigns it with ``assign_initial_weights``
right after building the model, so the replicas start identical.

Matching. A variable's name is not a stable key by itself: Keras makes layer and model names unique per process
(``dense`` then ``dense_1``; the chief's export builds a second model, ``b_res_net162_plus1dd_1/...``), and BResNet's
(2+1)D convolutions give several variables the same name (116 variables, 37 names). So a variable is matched by
its name without ``:0`` and with every path component's Keras instance suffix (``_<digits>``) removed, and among
variables of one such name by order (``model.weights`` order, which the SavedModel's and the h5 file's variable
lists keep). A matched variable of another shape (the head, when the class count changed) keeps its fresh
initialization; it and every model variable the source lacks are reported as re-initialized.

Fine-tuning is the same mechanism with a scope: ``init_scope: backbone`` loads everything but the head (``head_layer``:
the layer that computes the logits), which keeps its fresh initialization whatever the source holds. How the loaded
backbone then trains (frozen for the first epochs, a lower learning rate) is the optimizer's part
(``components/trainer/training.py``, ``BackboneScaledUpdates``); both find the head with ``head_layer``.
"""
from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from typing import Sequence

import numpy as np

logger = logging.getLogger(__name__)

SCRATCH = "none"
SERVING = "serving"
SCOPE_ALL = "all"
SCOPE_BACKBONE = "backbone"
SAVED_MODEL_FILE = "saved_model.pb"
SERVING_MODEL_SUBDIR = "Format-Serving"       # tfx.utils.path_utils.serving_model_dir of a Model artifact
H5_SUFFIXES = (".h5", ".hdf5")
REPORT_FILE = "warm_start.json"
EXPECTED = ("a SavedModel directory (holding saved_model.pb), a TFX Model artifact directory (holding "
            f"{SERVING_MODEL_SUBDIR}/saved_model.pb), a serving model base (holding numbered versions) or a Keras "
            ".h5 weights file")

_INSTANCE_SUFFIX = re.compile(r"_\d+$")


class WarmStartError(ValueError):
    """The warm-start source cannot be used: missing, not a model, or not this model."""


# ---- where the weights come from (executor side) -------------------------------------------------------

def resolve_init_source(init_from: str, serving_model_base: str = "") -> str:
    """``TrainingConfig.init_from`` -> the SavedModel directory or .h5 file to start from, or "" (from scratch).

    "none": "". "serving": the highest complete version under ``serving_model_base`` (``<serving_dir>/<model_name>``,
    found like the Evaluator's baseline), "" when nothing is served yet. Anything else is a path
    (``resolve_init_path``)."""
    if init_from == SCRATCH:
        return ""
    if init_from == SERVING:
        if not serving_model_base:
            raise ValueError("init_from 'serving' needs the serving model base (<serving_dir>/<model_name>): the "
                             "Trainer's serving_model_base parameter is empty")
        from components.pusher import latest_version_path  # lazy: components.pusher imports TFX at its end

        source = latest_version_path(serving_model_base)
        if source is None:
            logger.info("no model served yet under %s: training from scratch", serving_model_base)
            return ""
        logger.info("warm start from the served model %s", source)
        return source
    return resolve_init_path(init_from)


def resolve_init_path(path: str) -> str:
    """A SavedModel dir as is; a Model artifact dir -> its Format-Serving/; a serving model base -> its newest complete
    version; an .h5 file as is. Anything else raises ``WarmStartError`` naming the path and what was expected."""
    import tensorflow as tf

    if not path or not tf.io.gfile.exists(path):
        raise WarmStartError(f"init_from {path!r} does not exist; expected {EXPECTED}")
    if not tf.io.gfile.isdir(path):
        if path.lower().endswith(H5_SUFFIXES) or _is_hdf5(path):
            return path
        raise WarmStartError(f"init_from {path!r} is a file but not a Keras .h5 weights file; expected {EXPECTED}")
    if tf.io.gfile.exists(os.path.join(path, SAVED_MODEL_FILE)):
        return path
    serving = os.path.join(path, SERVING_MODEL_SUBDIR)
    if tf.io.gfile.exists(os.path.join(serving, SAVED_MODEL_FILE)):
        return serving
    from components.pusher import existing_versions, latest_version_path  # lazy, as above

    latest = latest_version_path(path)
    if latest is not None:
        return latest
    versions = existing_versions(path)
    if versions:
        raise WarmStartError(f"init_from {path!r} holds version directories {versions} but none is complete (no "
                             f"{SAVED_MODEL_FILE}); expected {EXPECTED}")
    raise WarmStartError(f"init_from {path!r} holds no SavedModel; expected {EXPECTED}")


def _is_hdf5(path: str) -> bool:
    import tensorflow as tf

    with tf.io.gfile.GFile(path, "rb") as f:
        return f.read(8) == b"\x89HDF\r\n\x1a\n"


# ---- reading the source (every worker, outside the strategy's scope) -------------------------------------

def read_source_weights(source: str) -> list[tuple[str, np.ndarray]]:
    """The source's variables as (name without ':0', value) in the source model's weight order.

    A SavedModel is loaded with ``tf.saved_model.load`` (its Keras ``variables`` list, else every variable it
    tracks); an .h5 file (``save_weights`` or a whole-model ``save``) is read with h5py. Variables that belong to no
    model layer (the Transform layer's) are simply never matched. Call it outside any distribution strategy scope."""
    import tensorflow as tf

    if tf.distribute.has_strategy():
        raise RuntimeError("read_source_weights must run outside a tf.distribute strategy scope: loading a SavedModel "
                           "creates variables, which a multi-worker strategy would broadcast with collectives")
    if tf.io.gfile.isdir(source):
        return _read_saved_model(source)
    return _read_h5(source)


def _read_saved_model(path: str) -> list[tuple[str, np.ndarray]]:
    import tensorflow as tf

    loaded = tf.saved_model.load(path)
    variables = getattr(loaded, "variables", None)  # a Keras model's list, in model.weights order
    if not isinstance(variables, Sequence) or not all(isinstance(v, tf.Variable) for v in variables):
        seen, variables = set(), []
        for obj in tf.train.TrackableView(loaded).descendants():
            if isinstance(obj, tf.Variable) and id(obj) not in seen:
                seen.add(id(obj))
                variables.append(obj)
    return [(_strip_device_suffix(v.name), v.numpy()) for v in variables]


def _read_h5(path: str) -> list[tuple[str, np.ndarray]]:
    import h5py
    import tensorflow as tf

    local, tmp = path, None
    if "://" in path:  # h5py reads local files only
        tmp = tempfile.NamedTemporaryFile(suffix=".h5", delete=False)
        tmp.close()
        tf.io.gfile.copy(path, tmp.name, overwrite=True)
        local = tmp.name
    try:
        with h5py.File(local, "r") as f:
            group = f["model_weights"] if "model_weights" in f else f   # whole-model .h5 vs save_weights
            if "layer_names" not in group.attrs:
                raise WarmStartError(f"init_from {path!r} is an HDF5 file but not Keras weights (no layer_names)")
            out = []
            for layer in group.attrs["layer_names"]:
                layer_group = group[_text(layer)]
                for weight in layer_group.attrs.get("weight_names", []):
                    out.append((_strip_device_suffix(_text(weight)), np.asarray(layer_group[_text(weight)])))
            return out
    finally:
        if tmp is not None:
            os.unlink(tmp.name)


def _text(value) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def _strip_device_suffix(name: str) -> str:
    return re.sub(r":\d+$", "", name)


def match_key(name: str) -> str:
    """'b_res_net162_plus1dd_1/stem/kernel:0' -> 'b_res_net162_plus1dd/stem/kernel'; 'dense_3/bias' -> 'dense/bias'."""
    return "/".join(_INSTANCE_SUFFIX.sub("", part) for part in _strip_device_suffix(name).split("/"))


def _keyed(names: Sequence[str]) -> list[tuple[str, int]]:
    """(match_key, its occurrence index among equal keys), in order."""
    counts: dict[str, int] = {}
    out = []
    for name in names:
        key = match_key(name)
        out.append((key, counts.get(key, 0)))
        counts[key] = counts.get(key, 0) + 1
    return out


def _display_names(names: Sequence[str]) -> list[str]:
    """Variable names without ':0'; a name the model has more than once gets '#<occurrence>'."""
    plain = [_strip_device_suffix(n) for n in names]
    total: dict[str, int] = {}
    for n in plain:
        total[n] = total.get(n, 0) + 1
    seen: dict[str, int] = {}
    out = []
    for n in plain:
        k = seen.get(n, 0)
        seen[n] = k + 1
        out.append(n if total[n] == 1 else f"{n}#{k}")
    return out


# ---- the head and the backbone ----------------------------------------------------------------------------

def head_layer(model):
    """The layer that computes the model's logits: the model's ``head`` attribute (BResNet's ``logits`` Dense), else,
    for a functional model with one output, the layer producing it. Everything else is the backbone. Raises
    ``ValueError`` when neither applies (a model builder for fine-tuning must expose its head one of these ways)."""
    from bresnet._keras import keras

    head = getattr(model, "head", None)
    if isinstance(head, keras.layers.Layer):
        return head
    output_names = list(getattr(model, "output_names", None) or [])
    if len(output_names) == 1:
        try:
            head = model.get_layer(output_names[0])
        except ValueError:   # a subclassed model's output name ("output_1") names no layer
            head = None
        if head is not None and head.weights:
            return head
    raise ValueError(f"cannot tell the head of model {model.name!r} ({type(model).__name__}) from its backbone: "
                     "fine-tuning needs a model with a `head` layer attribute, or a functional model whose single "
                     "output layer (with weights) computes the logits")


def head_variables(model) -> list:
    """The head's variables (trainable and not), as the model holds them (under a strategy: its distributed ones)."""
    head = {id(v) for v in head_layer(model).weights}
    return [v for v in model.weights if id(v) in head]


def backbone_variables(model) -> list:
    """The model's trainable variables that are not the head's, in model order."""
    head = {id(v) for v in head_variables(model)}
    return [v for v in model.trainable_variables if id(v) not in head]


# ---- assigning (every worker, inside the strategy's scope) ------------------------------------------------

def assign_initial_weights(model, source_weights: Sequence[tuple[str, np.ndarray]], source: str = "",
                           scope: str = SCOPE_ALL) -> dict:
    """Assigns every model variable whose match key and shape the source has (with ``scope`` "backbone": every one
    but the head's); returns the report ``{"source", "scope", "loaded", "total", "reinitialized", "head",
    "shape_mismatch", "missing", "unused_source"}``.

    ``reinitialized`` lists (by display name) the variables that keep their fresh initialization: the head's under
    scope "backbone" (``head``), those of another shape (``shape_mismatch``: name -> [source shape, model shape]) and
    those the source lacks (``missing``). Raises ``WarmStartError`` when no variable matches (the source is another
    model). Values are cast to the variable's dtype: under a mixed-precision policy Keras variables stay float32, so a
    float32 source loads as is."""
    if scope not in (SCOPE_ALL, SCOPE_BACKBONE):
        raise ValueError(f"scope must be {SCOPE_ALL!r} or {SCOPE_BACKBONE!r}, got {scope!r}")
    variables = list(model.weights)
    names = _display_names([v.name for v in variables])
    skipped = {id(v) for v in head_variables(model)} if scope == SCOPE_BACKBONE else set()
    available = {key: value for key, value in zip(_keyed([n for n, _ in source_weights]),
                                                  (w for _, w in source_weights))}
    used: set = set()
    loaded, mismatch, missing, head = 0, {}, [], []
    assignments = []
    for variable, key, name in zip(variables, _keyed([v.name for v in variables]), names):
        if id(variable) in skipped:
            head.append(name)
            continue
        value = available.get(key)
        if value is None:
            missing.append(name)
            continue
        used.add(key)
        shape = tuple(variable.shape)
        if tuple(value.shape) != shape:
            mismatch[name] = [list(value.shape), list(shape)]
            continue
        assignments.append((variable, value))
    if not assignments:
        raise WarmStartError(
            f"init_from {source!r} is not a source of this model: none of its {len(source_weights)} variables matches "
            f"one of the model's {len(variables)} by name and shape (model variables: {names[:5]}...; source: "
            f"{[n for n, _ in source_weights][:5]}...)")
    for variable, value in assignments:
        variable.assign(np.asarray(value, dtype=variable.dtype.as_numpy_dtype))
        loaded += 1
    fresh = set(head) | set(mismatch) | set(missing)
    reinitialized = [n for n in names if n in fresh]
    return {"source": source, "scope": scope, "loaded": loaded, "total": len(variables),
            "reinitialized": reinitialized, "head": head, "shape_mismatch": mismatch, "missing": missing,
            "unused_source": len(available) - len(used)}


def load_initial_weights(model, source: str, scope: str = SCOPE_ALL) -> dict:
    """``read_source_weights`` then ``assign_initial_weights``: for a model built outside a strategy's scope."""
    return assign_initial_weights(model, read_source_weights(source), source, scope)


# ---- the report, from the chief to the executor -----------------------------------------------------------

def report_path(run_dir: str) -> str:
    return os.path.join(run_dir, REPORT_FILE)


def read_report(run_dir: str) -> dict | None:
    """The chief's warm-start report of this run (``<run_dir>/warm_start.json``, kept with the ModelRun), or None
    if it wrote none."""
    import tensorflow as tf

    path = report_path(run_dir)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)
