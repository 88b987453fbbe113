import os

# Same Keras mode as every entry point (see bresnet/_keras.py), before anything imports TensorFlow.
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_saved_model(tmp_path_factory):
    """A real SavedModel computing 2·x (serving_default: float [None] -> output_0), for push tests."""
    import tensorflow as tf
    path = str(tmp_path_factory.mktemp("tiny_model") / "sm")
    module = tf.Module()
    module.w = tf.Variable(2.0)
    module.f = tf.function(lambda x: x * module.w, input_signature=[tf.TensorSpec([None], tf.float32)])
    tf.saved_model.save(module, path, signatures=module.f)
    return path
