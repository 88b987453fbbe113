import os

# Same Keras mode as every entry point (see bresnet/_keras.py), before anything imports TensorFlow.
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


import pytest  # noqa: E402


# `make test` runs the suite in 2 pytest-xdist processes (`-n 2`): on 2 cores the serial suite kept one core busy on
# average (31.2 CPU-minutes, user + sys, in 31.5 minutes of wall time, under ONEDNN_MAX_CPU_ISA=AVX2), most of
# it single-threaded imports, Beam and process start-ups. Each group below runs whole in one process, so a fixture
# its tests share is built once: a directory whose conftest holds session fixtures is one group, every other module
# is its own (module fixtures). Groups go out in this order, longest first (measured under the cap: the kfp-local
# story ~490 s, the trainer tests ~400 s, the end-to-end runs and their readers ~350 s, Flink against the
# DirectRunner ~200 s, the tiny benchmark ~190 s),
# then in collection order. (xdist's own `--dist loadgroup` cannot do it with pytest 9: its marks no longer reach
# the node ids.)
SHARED_FIXTURE_DIRS = ("trainer", "pipeline", "gcs")
LONGEST_FIRST = ("tests/kubeflow/test_kfp_local_gcs.py", "tests/trainer", "tests/pipeline",
                 "tests/reliability/test_beam_runners.py", "tests/bench/test_bench_harness.py")


def group_of(nodeid: str) -> str:
    path = nodeid.split("::", 1)[0]
    parts = path.split("/")
    return "/".join(parts[:2]) if len(parts) > 2 and parts[1] in SHARED_FIXTURE_DIRS else path


@pytest.hookimpl(optionalhook=True)   # a hook of pytest-xdist: unknown to pytest without it (-p no:xdist)
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        """xdist's loadscope with ``group_of`` as the scope, in collection order."""

        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)

    config.option.loadscopereorder = False
    return GroupScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(group_of(item.nodeid), len(rank)))  # stable: else collection order
    _skip_bfloat16_under_isa_cap(items)


def _skip_bfloat16_under_isa_cap(items):
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
