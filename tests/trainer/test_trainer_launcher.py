"""LocalProcessLauncher with real MultiWorkerMirroredStrategy workers: lock-step training, a worker that
dies (clear error, no hang) and whole-cluster restart resuming from the BackupAndRestore checkpoint."""
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from components.trainer.launcher import LocalProcessLauncher, WorkerFailedError, worker_log_path
from components.trainer.training import weights_path
from components.trainer.worker import FAULT_ENV

from trainer_test_data import FAULT, training_config, training_job

PROJECT_ROOT = str(Path(__file__).resolve().parents[2])


def _read(path):
    with open(path) as f:
        return f.read()


def test_two_workers_train_in_lock_step(restarted_run):
    job, result = restarted_run.job, restarted_run.result
    digests = [json.loads(_read(weights_path(job.scratch_dir, i))) for i in range(2)]
    # All-reduced gradients: both replicas end bit-identical, and training did change the weights.
    assert digests[0]["sha256"] == digests[1]["sha256"]
    assert digests[0]["num_values"] == digests[1]["num_values"] > 0
    assert digests[0]["initial"]["sha256"] != digests[0]["sha256"]
    for i in range(2):
        log = _read(worker_log_path(job.scratch_dir, i))
        assert f"worker {i} of 2" in log and "2 replicas in sync" in log
        assert re.search(r"Collective all_reduce tensors: .*group_size = 2", log), "no 2-worker collective in log"
    epochs = result.history["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    for e in epochs:
        assert len(e["clips_per_s_per_worker"]) == 2 and all(r > 0 for r in e["clips_per_s_per_worker"])
        assert e["clips_per_s"] == pytest.approx(sum(e["clips_per_s_per_worker"]))
        assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(e)
        assert e["threads"] > 1   # the chief's thread count at the epoch's end (the collective-timeout build-up)
    assert re.search(r"epoch 3/3: .*clips/s on this worker .*, \d+ threads", _read(worker_log_path(job.scratch_dir, 1)))
    print(f"\n2-worker cluster: {result.history['epochs'][-1]['clips_per_s']:.1f} clips/s in the last epoch, "
          f"run took {restarted_run.seconds:.0f}s for {result.attempts} attempts")


def test_crashed_worker_restarts_cluster_which_resumes_from_backup(restarted_run):
    job, result = restarted_run.job, restarted_run.result
    assert result.attempts == 2
    (failure,) = result.failures
    assert (failure.attempt, failure.worker_index, failure.exit_code) == (0, FAULT["worker"], FAULT["exit_code"])
    assert "fault injection: worker 1 exits with code 17" in failure.log_tail
    # The second cluster started from the epoch backed up before the crash, not from scratch.
    assert result.history["resumed_from_epoch"] == [0, 1]
    assert [e["attempt"] for e in result.history["epochs"]] == [0, 1, 1]
    assert "worker 0 attempt 1: training from epoch 1 of 3" in _read(worker_log_path(job.scratch_dir, 0))
    assert os.path.isfile(os.path.join(job.serving_model_dir, "saved_model.pb"))
    assert not os.path.exists(os.path.join(job.scratch_dir, "backup")), "backup kept after the export"


def test_dead_worker_without_restarts_fails_fast_with_its_log(clip_data, tmp_path):
    job = training_job(clip_data, tmp_path, training_config(workers=2, max_restarts=0, epochs=2))
    fault = {"worker": 1, "epoch": 0, "exit_code": 23}
    started = time.perf_counter()
    with pytest.raises(WorkerFailedError) as caught:
        LocalProcessLauncher(env={FAULT_ENV: json.dumps(fault)}, timeout_s=240).launch(job)
    elapsed = time.perf_counter() - started
    err = caught.value
    assert (err.worker_index, err.exit_code) == (1, 23)
    message = str(err)
    assert "training worker 1 exited with code 23" in message and "worker-1.log" in message
    assert "fault injection: worker 1 exits with code 23 at epoch 0" in message  # the log tail
    assert len(err.log_tail.splitlines()) <= 40
    # Worker 0 was stopped rather than left waiting on its dead peer, well within the collective timeout.
    assert elapsed < job.config.collective_timeout_s
    pids = [int(m) for m in re.findall(r"pid (\d+) =====", _read(worker_log_path(job.scratch_dir, 0)))]
    assert pids
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not os.path.exists(job.serving_model_dir)


def test_hung_worker_is_cut_loose_by_the_collective_timeout(clip_data, tmp_path):
    """A peer that stays alive but stops (no crash for the launcher to see, and its heartbeats go on) must not
    block the cluster: the survivor gives up after collective_timeout_s without progress and the launcher
    reports it."""
    job = training_job(clip_data, tmp_path, training_config(workers=2, max_restarts=0, epochs=2,
                                                            collective_timeout_s=15.0))
    fault = {"worker": 1, "epoch": 0, "action": "hang"}
    with pytest.raises(WorkerFailedError) as caught:
        LocalProcessLauncher(env={FAULT_ENV: json.dumps(fault)}, timeout_s=300).launch(job)
    err = caught.value
    assert err.worker_index == 0 and err.exit_code != 0
    # A stall watchdog saw no step finish within the timeout and aborted the collectives: the survivor's own, or the
    # hung worker's, whose abort reaches the survivor's pending all-reduce over gRPC first. Either way fit raised
    # DeadlineExceededError naming the watchdog's reason.
    assert re.search(r"worker [01]: no training progress for \d+s \(collective_timeout_s 15\)", err.log_tail)
    assert "DeadlineExceededError" in err.log_tail
    log1 = _read(worker_log_path(job.scratch_dir, 1))
    assert "fault injection: worker 1 hangs at epoch 0" in log1
    pid1 = int(re.search(r"pid (\d+) =====", log1).group(1))
    with pytest.raises(ProcessLookupError):  # the hung worker was stopped, not left behind
        os.kill(pid1, 0)


def _gone(pid: int) -> bool:
    """Exited: no such process, or a zombie nobody reaped (re-parented workers here may stay so)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_workers_exit_when_their_launcher_is_killed(clip_data, tmp_path):
    """A launcher killed outright cannot stop its workers; they must notice and exit by themselves, even
    when they are silent (worker 1 hung, worker 0 waiting on it with a long collective timeout)."""
    job = training_job(clip_data, tmp_path, training_config(workers=2, collective_timeout_s=300.0))
    spec = tmp_path / "job_spec.json"
    spec.write_text(job.to_json())
    script = ("import sys; from components.trainer.config import TrainingJob; "
              "from components.trainer.launcher import LocalProcessLauncher; "
              "LocalProcessLauncher(env={sys.argv[2]: sys.argv[3]}).launch("
              "TrainingJob.from_json(open(sys.argv[1]).read()))")
    fault = json.dumps({"worker": 1, "epoch": 0, "action": "hang"})
    launcher = subprocess.Popen([sys.executable, "-c", script, str(spec), FAULT_ENV, fault], cwd=PROJECT_ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log1 = worker_log_path(job.scratch_dir, 1)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and launcher.poll() is None:
        if os.path.exists(log1) and "hangs at epoch 0" in _read(log1):
            break
        time.sleep(0.2)
    else:
        pytest.fail("worker 1 never reached its hang")
    pids = [int(re.search(r"pid (\d+) =====", _read(worker_log_path(job.scratch_dir, i))).group(1)) for i in range(2)]
    launcher.kill()  # no chance to clean up: the workers must notice on their own
    launcher.wait()
    deadline = time.monotonic() + 30
    while not all(_gone(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert all(_gone(p) for p in pids), "workers outlived their launcher"
