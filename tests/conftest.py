import os

# Same Keras mode as every entry point (see bresnet/_keras.py), before anything imports TensorFlow.
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """Tests marked ``bfloat16`` run bfloat16 ops explicitly; under a oneDNN ISA cap below bfloat16
    (ONEDNN_MAX_CPU_ISA=AVX2 on an AVX512-BF16 CPU, to time the suite as on an AVX2 machine) oneDNN aborts them,
    which a real AVX2 CPU does not (TensorFlow falls back there), so they are skipped under the cap only."""
    from components.trainer.precision import onednn_capped_below_bfloat16
    if not onednn_capped_below_bfloat16():
        return
    skip = pytest.mark.skip(reason=f"ONEDNN_MAX_CPU_ISA={os.environ['ONEDNN_MAX_CPU_ISA']} caps oneDNN below "
                                   "bfloat16 on a bfloat16 CPU: its bfloat16 kernels abort (not so on a real AVX2 CPU)")
    for item in items:
        if "bfloat16" in item.keywords:
            item.add_marker(skip)


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
