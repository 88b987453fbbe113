"""Stopping local training: SIGTERM or Ctrl-C to the launching process stops every worker at once, and a worker
whose launcher is killed outright (SIGKILL) dies with it.

The workers here are stand-ins (a shell script that records its pid and sleeps): what is tested is the launcher's
and the worker entry point's process handling, not training."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from components.trainer.config import TrainingConfig, TrainingJob
from components.trainer.launcher import TerminationRequested, termination_guard

LAUNCH = textwrap.dedent("""
    import json, logging, signal, sys
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    logging.basicConfig(level=logging.INFO)
    from components.trainer.config import TrainingJob
    from components.trainer.launcher import LocalProcessLauncher
    job = TrainingJob.from_json(open(sys.argv[1]).read())
    LocalProcessLauncher(python=sys.argv[2], env={"FAKE_PIDS": sys.argv[3]}).launch(job)
""")


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_for(check, timeout, what):
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_to_the_local_launcher_stops_every_worker_at_once(tmp_path, sig):
    fake_worker = tmp_path / "fake-python"
    fake_worker.write_text('#!/bin/sh\necho $$ >> "$FAKE_PIDS"\nexec sleep 120\n')
    fake_worker.chmod(0o755)
    pids_file = tmp_path / "pids"
    config = TrainingConfig(labels=("a", "b"), clip_shape=(4, 8, 8, 3), workers=2, epochs=1, steps_per_epoch=1,
                            warmup_epochs=0.0)
    job = TrainingJob(config=config, train_uri="t", eval_uri="e", transform_graph_uri="g",
                      serving_model_dir=str(tmp_path / "m"), run_dir=str(tmp_path / "r"),
                      scratch_dir=str(tmp_path / "s"))
    job_path = tmp_path / "job.json"
    job_path.write_text(job.to_json())
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCH, str(job_path), str(fake_worker), str(pids_file)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(lambda: pids_file.exists() and len(pids_file.read_text().split()) == 2, 30, "2 workers")
        pids = [int(p) for p in pids_file.read_text().split()]
        assert all(_alive(p) for p in pids)
        started = time.monotonic()
        launcher.send_signal(sig)
        out, _ = launcher.communicate(timeout=20)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == -sig, out   # the signal's own outcome, after the cleanup
    _wait_for(lambda: not any(_alive(p) for p in pids), 2, "workers gone")
    assert time.monotonic() - started < 10
    assert "stopped 2 remaining worker(s)" in out, out


CHILD = textwrap.dedent("""
    import os, sys, time
    from components.trainer.worker import exit_with_parent
    exit_with_parent(int(sys.argv[1]), poll_s=30.0)  # the fallback poll is far too slow to be what ends it
    print("ready", flush=True)
    time.sleep(120)
""")
PARENT = textwrap.dedent("""
    import subprocess, sys, os
    child = subprocess.Popen([sys.executable, "-c", sys.argv[1], str(os.getpid())], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    print(child.pid, flush=True)
    child.wait()
""")


def test_worker_dies_at_once_with_a_killed_launcher():
    parent = subprocess.Popen([sys.executable, "-c", PARENT, CHILD], stdout=subprocess.PIPE, text=True)
    try:
        child_pid = int(parent.stdout.readline())
        assert _alive(child_pid)
        parent.kill()   # SIGKILL: no cleanup of any kind in the launcher
        parent.wait(timeout=10)
        _wait_for(lambda: not _alive(child_pid), 3, "the orphaned worker to die")
    finally:
        if parent.poll() is None:
            parent.kill()


def test_termination_guard_is_active_only_inside_and_hands_the_signal_to_the_previous_handler():
    calls = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: calls.append(signum))
    try:
        mine = signal.getsignal(signal.SIGTERM)
        cleaned = []
        with pytest.raises(TerminationRequested):
            with termination_guard():
                assert signal.getsignal(signal.SIGTERM) is not mine
                try:
                    os.kill(os.getpid(), signal.SIGTERM)
                    time.sleep(5)  # interrupted by the handler's exception
                finally:
                    cleaned.append(True)
        assert cleaned == [True] and calls == [signal.SIGTERM]  # cleanup first, then the previous handler
        assert signal.getsignal(signal.SIGTERM) is mine
        with termination_guard():
            pass
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)


EXIT_NOW = textwrap.dedent("""
    import logging, sys, threading, time
    from components.trainer.worker import exit_now
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    threading.Thread(target=time.sleep, args=(120,)).start()   # a non-daemon thread Python's exit would wait for
    logging.getLogger("w").info("last line")
    print("stdout tail", end="")
    exit_now(3)
""")


def test_exit_now_flushes_logs_and_does_not_wait_for_threads():
    # The timeout (TimeoutExpired) is the check that the exit did not wait for the sleeping thread's 120 s.
    proc = subprocess.run([sys.executable, "-c", EXIT_NOW], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3
    assert "last line" in proc.stderr and proc.stdout == "stdout tail"
