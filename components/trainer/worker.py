"""Entry point of one training worker: ``python -m components.trainer.worker --job <job.json>``.

The launcher (local processes, or later a Kubeflow TFJob) provides, through the environment:
  TF_CONFIG                the cluster and this worker's task (required for more than one worker); a replica of an
                           Indexed Job derives it from TRAINER_PEER_PATTERN, TRAINER_REPLICAS and
                           JOB_COMPLETION_INDEX (cluster.indexed_job_tf_config)
  TRAINER_ATTEMPT          which whole-cluster attempt this is (0 first; recorded in the history)
  TRAINER_PARENT_PID       optional: the launcher's pid; the worker dies with that process (see exit_with_parent)
  TRAINER_FAULT_INJECTION  optional chaos hook for fault-tolerance tests, JSON
                           {"worker": i, "epoch": e, "exit_code": c, "attempt": a, "action": x}: when
                           epoch e (0-based) begins in attempt a (default 0), worker i exits abruptly
                           with code c (action "exit", default) or stops making progress while staying
                           alive (action "hang": only the stall watchdog frees its peers).

Log lines of the trainer carry the marker ``[trainer w<i>]`` so a launcher can stream them.
"""
from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import os
import signal
import sys
import threading
import time
from typing import Sequence

from components.trainer.cluster import cluster_info, derive_tf_config
from components.trainer.config import TrainingJob

FAULT_ENV = "TRAINER_FAULT_INJECTION"
ATTEMPT_ENV = "TRAINER_ATTEMPT"
PARENT_PID_ENV = "TRAINER_PARENT_PID"
LOG_MARKER = "[trainer w"
FAULT_ACTIONS = ("exit", "hang")

logger = logging.getLogger(__name__)


def parse_fault(text: str) -> dict:
    try:
        fault = json.loads(text)
        spec = {"worker": int(fault["worker"]), "epoch": int(fault["epoch"]),
                "exit_code": int(fault.get("exit_code", 17)), "attempt": int(fault.get("attempt", 0)),
                "action": str(fault.get("action", "exit"))}
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{FAULT_ENV} must be JSON with int 'worker' and 'epoch' (optional 'exit_code', "
                         f"'attempt', 'action'), got {text!r} ({exc!r})") from None
    if spec["action"] not in FAULT_ACTIONS:
        raise ValueError(f"{FAULT_ENV} action must be one of {FAULT_ACTIONS}, got {spec['action']!r}")
    if not 1 <= spec["exit_code"] <= 255:
        raise ValueError(f"{FAULT_ENV} exit_code must be in 1..255, got {spec['exit_code']}")
    return spec


def _fault_callback(spec: dict, worker_index: int, attempt: int) -> list:
    from bresnet._keras import keras

    class FailAtEpoch(keras.callbacks.Callback):
        """Dies like a crashed process (no cleanup, no exception), or hangs, when the target epoch starts."""

        def on_epoch_begin(self, epoch, logs=None):
            if epoch != spec["epoch"]:
                return
            if spec["action"] == "hang":
                logger.error("fault injection: worker %d hangs at epoch %d (attempt %d)", worker_index, epoch,
                             attempt)
                while True:
                    time.sleep(60)
            logger.error("fault injection: worker %d exits with code %d at epoch %d (attempt %d)",
                         worker_index, spec["exit_code"], epoch, attempt)
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(spec["exit_code"])

    if spec["worker"] == worker_index and spec["attempt"] == attempt:
        return [FailAtEpoch()]
    return []


def exit_with_parent(parent_pid: int, poll_s: float = 0.5) -> None:
    """Ends this worker as soon as its launcher has died, however it died (SIGKILL included).

    On Linux the kernel does it: PR_SET_PDEATHSIG delivers SIGKILL when the launcher thread that started this
    process ends (the launcher waits in that thread for as long as its workers run). Elsewhere, and as a
    fallback, a daemon thread polls for re-parenting. It exits without logging: a logging handler may be
    blocked writing to the dead launcher's pipe, and taking its lock could hang the exit."""
    _set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != parent_pid:  # died before we even got here
        os._exit(70)

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        _write_stderr_nonblocking(f"launcher process {parent_pid} is gone; exiting\n")
        os._exit(70)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _set_parent_death_signal(sig: int) -> bool:
    """prctl(PR_SET_PDEATHSIG, sig) on Linux; False where unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _write_stderr_nonblocking(message: str) -> None:
    """Writes to fd 2 only if that cannot block (a full pipe nobody reads any more)."""
    import select

    try:
        if select.select([], [2], [], 0)[1]:
            os.write(2, message.encode()[:512])
    except OSError:
        pass


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", required=True, help="path (or gfile URI) of the TrainingJob JSON")
    args = parser.parse_args(argv)

    # `kill -USR1 <pid>` prints every thread's Python stack into the worker log: the first thing to
    # look at when a worker seems stuck.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    derived = derive_tf_config()
    worker_index = cluster_info().worker_index
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, force=True,
                        format=f"%(asctime)s {LOG_MARKER}{worker_index}] %(levelname)s %(name)s: %(message)s")
    if derived:
        logger.info("TF_CONFIG derived from the Indexed Job's completion index: %s", derived)
    if os.environ.get(PARENT_PID_ENV):
        exit_with_parent(int(os.environ[PARENT_PID_ENV]))
    attempt = int(os.environ.get(ATTEMPT_ENV, "0"))
    fault = parse_fault(os.environ[FAULT_ENV]) if os.environ.get(FAULT_ENV) else None

    import tensorflow as tf

    from components.trainer import training

    tf.get_logger().handlers.clear()  # TF's own handler would print every line a second time
    with tf.io.gfile.GFile(args.job) as f:
        job = TrainingJob.from_json(f.read())
    extra = _fault_callback(fault, worker_index, attempt) if fault else []
    digest = training.train(job, attempt=attempt, extra_callbacks=extra)
    logger.info("worker %d finished: weights sha256 %s", worker_index, digest["sha256"][:16])
    return 0


def exit_now(code: int) -> None:
    """Ends the process without Python's finalization once everything it wrote is closed.

    TensorFlow's teardown at interpreter exit (tf.data and collective thread pools, the same lost wake-up the Trainer
    works around in ``make_dataset``) has held a finished demo worker 16 s after its last line (2026-12-02: "worker 0
    finished" at 06:26:08.9, the launcher saw it exit at 06:26:24.8), time the whole cluster waits for. Every file
    the worker writes (export, history, weights digest, done marker) is closed before ``main`` returns."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
