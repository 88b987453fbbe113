"""The project's one Keras decision: Keras 2 (``tf_keras``) everywhere.

TFT 1.16's Transform layer and TFMA 0.47 are Keras-2 based, and importing tensorflow_transform flips
``TF_USE_LEGACY_KERAS`` on anyway, so ``tf.keras`` would silently change meaning depending on import order.
The model imports ``tf_keras`` directly (import order cannot change it), and the variable is set here, before
TensorFlow is imported by anything of ours, so TFT/TFMA and every child process (training workers, Beam
workers) agree. The Dockerfile and Makefile set it too.
"""
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import tf_keras as keras  # noqa: E402  (must follow the environment variable)

__all__ = ["keras"]

# AutoGraph does not skip tf_keras (it only skips tensorflow's own modules), so it rewrites Keras internals on
# every trace: a first `fit` of this model took ~30 s instead of ~10 s. Telling it not to convert tf_keras is a
# private TF API, hence the guard: if it moves, we only lose the speed-up.
try:
    from tensorflow.python.autograph.core import config as _autograph_config

    if not any(getattr(rule, "module_prefix", "") == "tf_keras" for rule in _autograph_config.CONVERSION_RULES):
        _autograph_config.CONVERSION_RULES = ((_autograph_config.DoNotConvert("tf_keras"),)
                                              + tuple(_autograph_config.CONVERSION_RULES))
except (ImportError, AttributeError):  # pragma: no cover
    pass
