"""Fails a training worker that stops making progress, with one thread, however many steps it runs.

``training.collective_timeout_s`` is how long a worker may go without finishing a step (or a validation batch)
before it gives up on its peers. It used to be TensorFlow's per-collective timeout
(``CommunicationOptions(timeout_seconds=...)``). TensorFlow arms that timeout for every all-reduce through
``Env::SchedClosureAfter``, and the POSIX Env implements that as a detached thread that sleeps the whole timeout
(tsl/platform/default/env.cc: "Consuming a thread here is wasteful ... could be replaced by a timer thread"). A
worker therefore held collectives per second x timeout threads: ~7,000 on the demo at 2 workers with 60 s.
With the old 300 s default, two workers reached ~50,000 threads and died ("std::system_error: Resource temporarily
unavailable"). The cluster preset's 30 minutes could never have run.

Peers that die need no timeout at all. MultiWorkerMirroredStrategy runs TensorFlow's coordination service,
whose heartbeats abort the survivors' collectives when a task stops answering (collective_all_reduce_strategy.py
turns its own health check off for that reason: "If coordination service is enabled, use its internal
heartbeat to detect peer failures"). What heartbeats cannot see is a peer that is alive but stuck, for example
in a read or a deadlock. Its peers then wait in the all-reduce forever. This watchdog covers that case. Keras
callbacks mark progress. A thread checks every few seconds, and when ``timeout_s`` passes without any, it logs
why, aborts this worker's collectives the way the strategy's own health check does
(``context.abort_collective_ops``), so that ``fit`` raises ``DeadlineExceededError``, and it ends the process if
that has not happened ``grace_s`` later.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from bresnet._keras import keras

logger = logging.getLogger(__name__)

EXIT_CODE = 75   # the process's exit code when the abort did not end it within grace_s


def abort_collectives(message: str) -> None:
    """Makes every pending and future collective of this process fail with DEADLINE_EXCEEDED and ``message``."""
    from tensorflow.python.eager import context
    from tensorflow.python.framework import errors
    context.context().abort_collective_ops(errors.DEADLINE_EXCEEDED, message)


def _exit_process(code: int) -> None:
    from components.trainer.worker import exit_now
    exit_now(code)


class StallWatchdog(keras.callbacks.Callback):
    """Progress marks from ``fit`` (batch and epoch boundaries, training and validation), checked by one thread.

    The thread runs inside ``with watchdog:``; the worker holds it around everything that waits on its peers
    (the first collective reads, then ``fit``). The workers' skew in reaching the first step (tracing) counts
    against ``timeout_s``, as it did against the per-collective timeout. ``beat()`` marks progress outside ``fit``."""

    def __init__(self, timeout_s: float, worker_index: int, *, poll_s: float | None = None, grace_s: float = 30.0,
                 abort: Callable[[str], None] = abort_collectives, exit_process: Callable[[int], None] = _exit_process):
        super().__init__()
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        self._supports_tf_logs = True   # batch hooks must not turn the logs into numpy (a sync every step)
        self.timeout_s = float(timeout_s)
        self.poll_s = min(5.0, self.timeout_s / 4) if poll_s is None else poll_s
        self.grace_s = grace_s
        self._worker = worker_index
        self._abort = abort
        self._exit_process = exit_process
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.fired = False

    # -- progress ------------------------------------------------------------------------------------------
    def beat(self) -> None:
        self._last = time.monotonic()

    def __enter__(self) -> "StallWatchdog":
        self.beat()
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name=f"stall-watchdog-w{self._worker}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None

    def on_train_begin(self, logs=None):
        self.beat()

    def on_train_batch_end(self, batch, logs=None):
        self.beat()

    def on_test_batch_end(self, batch, logs=None):
        self.beat()

    def on_epoch_begin(self, epoch, logs=None):
        self.beat()

    def on_epoch_end(self, epoch, logs=None):
        self.beat()

    def on_test_begin(self, logs=None):
        self.beat()

    def on_train_end(self, logs=None):
        self.beat()

    # -- the thread ----------------------------------------------------------------------------------------
    def _watch(self) -> None:
        while not self._stop.wait(self.poll_s):
            idle = time.monotonic() - self._last
            if idle <= self.timeout_s:
                continue
            self.fired = True
            message = (f"worker {self._worker}: no training progress for {idle:.0f}s (collective_timeout_s "
                       f"{self.timeout_s:.0f}): a peer is stuck, or this worker is; aborting this worker's "
                       "collectives")
            logger.error("%s", message)
            self._abort(message)
            if self._stop.wait(self.grace_s):
                return
            logger.error("worker %d: still running %.0fs after aborting its collectives; exiting with code %d",
                         self._worker, self.grace_s, EXIT_CODE)
            self._exit_process(EXIT_CODE)
            return
