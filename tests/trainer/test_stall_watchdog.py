"""The stall watchdog: one thread that fails a worker whose training stopped (a hung peer), and stays quiet while
training moves. The abort and the exit are injected here; the launcher tests run the real ones in a 2-worker
cluster (test_trainer_launcher.py: a hung worker)."""
import threading
import time

import pytest

from components.trainer.stall_watchdog import EXIT_CODE, StallWatchdog


class Recorder:
    def __init__(self):
        self.aborts, self.exits = [], []
        self.aborted = threading.Event()
        self.exited = threading.Event()

    def abort(self, message):
        self.aborts.append(message)
        self.aborted.set()

    def exit(self, code):
        self.exits.append(code)
        self.exited.set()


def _watchdog(rec, timeout_s=0.4, grace_s=0.3):
    return StallWatchdog(timeout_s, worker_index=3, poll_s=0.02, grace_s=grace_s, abort=rec.abort,
                         exit_process=rec.exit)


def test_no_progress_aborts_the_collectives_then_exits_if_that_did_not_end_the_worker():
    rec = Recorder()
    with _watchdog(rec) as dog:
        assert rec.exited.wait(5)
    assert dog.fired and len(rec.aborts) == 1 and rec.exits == [EXIT_CODE]
    assert rec.aborts[0].startswith("worker 3: no training progress for ")
    assert "collective_timeout_s 0" in rec.aborts[0]


def test_training_that_moves_is_never_interrupted():
    rec = Recorder()
    with _watchdog(rec) as dog:
        for step in range(40):   # 1.2 s of steps, each well inside the 0.4 s timeout
            time.sleep(0.03)
            (dog.on_train_batch_end if step % 5 else dog.on_test_batch_end)(step)
    assert not dog.fired and not rec.aborts and not rec.exits
    assert not any(t.name.startswith("stall-watchdog") for t in threading.enumerate()), "thread left running"


def test_leaving_the_block_within_the_grace_period_means_no_exit():
    """The abort made fit raise: the worker unwinds out of the with-block, and the watchdog does not kill it."""
    rec = Recorder()
    with _watchdog(rec, grace_s=5.0):
        assert rec.aborted.wait(5)
    time.sleep(0.1)
    assert rec.exits == []


def test_every_fit_boundary_counts_as_progress():
    dog = StallWatchdog(10, 0)
    for hook, args in ((dog.on_train_begin, ()), (dog.on_epoch_begin, (0,)), (dog.on_train_batch_end, (0,)),
                       (dog.on_test_begin, ()), (dog.on_test_batch_end, (0,)), (dog.on_epoch_end, (0,)),
                       (dog.on_train_end, ())):
        dog._last = 0.0
        hook(*args)
        assert dog._last > 0.0, hook.__name__
    # Keras must hand the batch hooks TF's logs as they are: converting them to numpy would sync every step.
    assert dog._supports_tf_logs


@pytest.mark.parametrize("timeout", [0, -1.0])
def test_timeout_must_be_positive(timeout):
    with pytest.raises(ValueError, match="timeout_s must be > 0"):
        StallWatchdog(timeout, 0)
