"""bench/scale.py: the arithmetic that carries measured rates to a Kinetics-700-sized job (bench/SCALE.md)."""
import json
import subprocess
import sys


def test_scale_self_check_and_a_run_on_the_recorded_rates(tmp_path):
    subprocess.run([sys.executable, "-m", "bench.scale", "--check"], check=True, capture_output=True, text=True)
    out = tmp_path / "SCALE.md"
    subprocess.run([sys.executable, "-m", "bench.scale", "--rates", "bench/beam_runners.json", "--out", str(out)],
                   check=True, capture_output=True, text=True)
    text = out.read_text()
    assert "## Decision" in text and "| ClipGen |" in text and "| Trainer |" in text
    # The decision on the recorded rates is what clips.frame_format "auto" does (read from the config code).
    assert "Built: `clips.frame_format`" in text and "NOT as decided" not in text
    rates = json.load(open("bench/beam_runners.json"))
    assert rates["same_clips"] and rates["clipgen"]["flink"]["steady_clips_s"] > 0
