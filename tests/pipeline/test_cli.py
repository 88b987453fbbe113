"""The command line as a user drives it: help on every command, clear errors with exit code 2."""
import json
import os
import subprocess
import sys

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMMANDS = ["demo", "demo-data", "convert", "run-local", "show-config", "compile", "submit", "schedule", "stage",
            "report", "predict"]


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=300)


def test_top_level_help_lists_every_command():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in COMMANDS:
        assert command in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    result = run_cli(command, "--help")
    assert result.returncode == 0, result.stderr
    assert f"usage: python -m pipeline {command}" in result.stdout


def test_console_script_runs():
    script = os.path.join(os.path.dirname(sys.executable), "bresnet-pipeline")
    result = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "run-local" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["no-such-command"], "invalid choice"),
    (["run-local", "--workers", "two"], "invalid int value"),
    (["show-config", "--set", "training.epochz=3"], "unknown key"),
    (["show-config", "--set", "clips.height=-1"], "clips.height must be a positive integer"),
    (["show-config", "--config", "missing.yaml"], "missing.yaml"),
    (["convert", "--out", "x"], "--input"),
    (["convert", "--input", "no/such/dir", "--out", "x"], "does not exist"),
])
def test_bad_arguments_exit_2_with_a_clear_message(args, message):
    result = run_cli(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_show_config_output_is_a_loadable_config(tmp_path):
    result = run_cli("show-config", "--config", "smoke", "--set", "training.epochs=3", "--workers", "3")
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert config["training"]["epochs"] == 3 and config["training"]["workers"] == 3
    path = tmp_path / "mine.yaml"
    path.write_text(result.stdout)
    again = run_cli("show-config", "--config", str(path))
    assert yaml.safe_load(again.stdout) == config


def test_demo_data_command_writes_a_dataset(tmp_path):
    result = run_cli("demo-data", "--out", str(tmp_path / "d"), "--videos-per-class", "4", "--seed", "3")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["num_train_videos"] + summary["num_eval_videos"] == 32
    bad = run_cli("demo-data", "--out", str(tmp_path / "e"), "--videos-per-class", "1")
    assert bad.returncode == 2 and "videos_per_class" in bad.stderr and "Traceback" not in bad.stderr
    assert (tmp_path / "d" / "label_map.txt").read_text().split() == sorted(summary["classes"])


def test_tf_serving_manifest_points_at_the_model_base_path():
    with open(os.path.join(ROOT, "deploy", "tf-serving.yaml")) as f:
        deployment, service = list(yaml.safe_load_all(f))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert "--model_base_path=MODEL_BASE_PATH" in container["args"]
    assert "--model_name=bresnet" in container["args"]
    assert {p["containerPort"] for p in container["ports"]} == {8500, 8501}
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_pipeline_modules_do_not_import_the_vertex_sdk():
    """`tfx.v1` imports its Google Cloud extensions and with them google-cloud-aiplatform (~6 s of every command's
    start-up); the pipeline imports TFX's classes from their own modules instead."""
    code = ("import sys; import pipeline.local_runner, pipeline.kubeflow_runner, pipeline.report; "
            "print(sorted(m for m in sys.modules if m.startswith(('google.cloud.aiplatform', 'tfx.v1'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_a_missing_newest_span_fails_clearly_or_skips_the_run(tmp_path):
    """Checked by run-local before anything runs or is cached (the KFP fingerprint task does the same)."""
    for span in (1, 2):
        for split in ("train", "eval"):
            os.makedirs(tmp_path / f"span-{span}" / split)
            (tmp_path / f"span-{span}" / split / "v.tfrecord").write_bytes(b"")
    common = ["run-local", "--data-dir", str(tmp_path), "--pipeline-root", str(tmp_path / "root"),
              "--set", "ingest.train_pattern=span-{SPAN}/train/*", "--set", "ingest.eval_pattern=span-{SPAN}/eval/*",
              "--set", "ingest.newest_span=3"]
    failed = run_cli(*common)
    assert failed.returncode == 1 and "newest span 3 is missing" in failed.stderr, failed.stderr
    assert "present: 1, 2" in failed.stderr and "Traceback" not in failed.stderr
    skipped = run_cli(*common, "--set", "ingest.on_missing_span=skip")
    assert skipped.returncode == 0, skipped.stderr
    assert "skipped: the newest span is missing" in skipped.stdout
    assert not (tmp_path / "root" / "Ingest").exists()                      # nothing ran


def test_component_progress_lines_outlive_a_library_that_quiets_absl(capsys):
    """Transform's libraries set absl's verbosity to WARNING mid-run; the lines of later components still print."""
    import logging
    from absl import logging as absl_logging
    from pipeline.local_runner import component_progress
    absl = logging.getLogger("absl")
    before = absl.level
    with component_progress():
        absl_logging.info("Component Transform is running.")
        absl_logging.set_verbosity(absl_logging.WARNING)
        absl_logging.info("Component Transform is finished.")
        absl_logging.info("Component Trainer is running.")
    out = capsys.readouterr().out
    assert "[run-local] Transform started" in out and "[run-local] Transform finished in" in out
    assert "[run-local] Trainer started" in out
    assert absl.level == before and "setLevel" not in vars(absl)      # put back as it was
