"""The run report, built from real pipeline runs (the session's `runs` fixture, plus one run stopped by ClipGen).

Checked: the HTML and its PNGs exist and are real images; the confusion matrix holds every eval clip; the numbers
equal the run summary and the artifacts; dead-letter reasons, the gate decision and the push are shown; a stage
the run did not reach reads "not available"; and a real browser (headless Chromium over the DevTools protocol)
loads the page with every image and no console error. The CLI is driven as a user does.
"""
import glob
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import pytest
import tensorflow as tf

from e2e_runs import BAD_VIDEO_REASONS, E2E_EPOCHS, INGEST_REJECT_REASON, REPORT_AFTER_RUN_1, add_bad_videos

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PNGS = ("training_curves.png", "confusion_matrix.png")


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "pipeline", "report", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


def section(page: str, title: str) -> str:
    """The HTML between <h2>title and the next <h2>."""
    start = page.index(f"<h2>{title}")
    end = page.find("<h2>", start + 4)
    return page[start:end if end > 0 else len(page)]


def cells(page: str, first_cell: str) -> list[str]:
    """The cells of the table row whose first cell is `first_cell`."""
    row = re.search(rf"<tr><td>{re.escape(first_cell)}</td>(.*?)</tr>", page).group(1)
    return re.findall(r"<td[^>]*>(.*?)</td>", row)


def count_records(pattern: str) -> int:
    return sum(1 for path in glob.glob(pattern) for _ in tf.data.TFRecordDataset(path, compression_type="GZIP"))


@pytest.fixture(scope="module")
def first_report(runs):
    root, first, _ = runs
    with open(root / REPORT_AFTER_RUN_1) as f:
        return root, first, f.read()


def test_report_files_are_written_with_real_pngs(first_report):
    root, _, page = first_report
    folder = os.path.dirname(root / REPORT_AFTER_RUN_1)
    for name in PNGS:
        with open(os.path.join(folder, name), "rb") as f:
            data = f.read()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, (name, len(data))
        height, width, _ = tf.io.decode_png(data).shape
        assert height > 200 and width > 300, (name, height, width)
        assert f"data-file='{name}'" in page  # embedded, and the file next to it is the same picture
    assert "src='data:image/png;base64," in page and "http" not in page.replace("http-equiv", "")


def test_numbers_match_the_run_summary(first_report):
    _, first, page = first_report
    for name in ("sparse_categorical_accuracy", "video_accuracy", "top_5_accuracy", "mean_class_accuracy",
                 "video_top_5_accuracy", "video_mean_class_accuracy"):
        shown = re.search(rf"data-metric='{name}'>([^<]+)<", page).group(1)
        assert float(shown) == pytest.approx(first.metrics[name], abs=6e-5), name
    assert "data-blessed='true'" in page and first.blessed is True
    assert f"Pushed version {first.pushed_version} to {first.pushed_path}" in page
    throughput = section(page, "Throughput")
    for component in ("Ingest", "ClipGen", "Transform", "Trainer", "Evaluator"):
        state, seconds, _ = cells(throughput, component)
        assert state == "COMPLETE" and float(seconds) == pytest.approx(first.component_seconds[component], abs=0.06)


def check_confusion_matrix(page: str, root, accuracy: float) -> int:
    """Every eval clip is in TFMA's matrix once, its diagonal gives TFMA's accuracy metric (computed apart), and
    the per-class precision/recall shown are the matrix's."""
    eval_clips = count_records(str(root / "root" / "ClipGen" / "clips" / "*" / "Split-eval" / "*.gz"))
    assert int(re.search(r"data-confusion-total='(\d+)'", page).group(1)) == eval_clips
    evaluation = section(page, "Evaluation")
    labels = [line.strip() for line in open(root / "data" / "label_map.txt") if line.strip()]
    rows = [cells(evaluation, label) for label in labels]
    assert sum(int(r[0]) for r in rows) == eval_clips and sum(int(r[1]) for r in rows) == eval_clips
    assert sum(int(r[2]) for r in rows) / eval_clips == pytest.approx(accuracy, abs=1e-4 + 1 / eval_clips)
    for label, (clips, predicted, correct, precision, recall) in zip(labels, rows):
        assert float(recall) == pytest.approx(int(correct) / int(clips), abs=6e-4), label
        if int(predicted):
            assert float(precision) == pytest.approx(int(correct) / int(predicted), abs=6e-4), label
    return eval_clips


def test_confusion_matrix_holds_every_eval_clip_and_agrees_with_tfma(first_report):
    root, first, page = first_report
    eval_clips = check_confusion_matrix(page, root, first.metrics["sparse_categorical_accuracy"])
    assert eval_clips == first.metrics["example_count"]


def test_dataset_counts_and_dead_letter_reasons(first_report):
    root, _, page = first_report
    dataset = section(page, "Dataset")
    for split in ("train", "eval"):
        videos_in, ok, rejected, clips_out, reasons = cells(dataset, split)
        assert int(videos_in) == int(ok) + int(rejected) and int(rejected) == len(BAD_VIDEO_REASONS)
        assert reasons == ", ".join(f"{r}: 1" for r in sorted(BAD_VIDEO_REASONS))
        clips_dir = root / "root" / "ClipGen" / "clips" / "*" / f"Split-{split}"
        assert int(clips_out) == count_records(str(clips_dir / "*.gz"))
    for reason in BAD_VIDEO_REASONS:
        assert dataset.count(f"<td>{reason}</td>") == 2  # one dead letter per split
    assert "bad-eval-empty" in dataset and "bad-train-nolabel" in dataset


def test_ingest_counts_and_dead_letters(first_report):
    root, _, page = first_report
    ingest = section(page, "Ingest")
    for split in ("train", "eval"):
        records_in, ok, rejected, reasons = cells(ingest, split)
        assert int(records_in) == int(ok) + int(rejected) and int(rejected) == 1
        assert reasons == f"{INGEST_REJECT_REASON}: 1"
    assert ingest.count(f"<td>{INGEST_REJECT_REASON}</td>") == 2 and "videos-bad.tfrecord" in ingest


def test_training_curves_and_throughput_per_worker_and_epoch(first_report):
    root, _, page = first_report
    (history_path,) = glob.glob(str(root / "root" / "Trainer" / "model_run" / "*" / "training_history.json"))[:1]
    with open(history_path) as f:
        history = json.load(f)
    throughput = section(page, "Throughput")
    assert len(history["epochs"]) == E2E_EPOCHS
    for epoch in history["epochs"]:
        row = cells(throughput, str(epoch["epoch"]))
        assert [float(v) for v in row[2:]] == pytest.approx(epoch["clips_per_s_per_worker"], rel=1e-3)
    assert "2 worker(s)" in section(page, "Training")


def test_final_state_report_via_cli_default_path_shows_the_failed_gate(runs):
    root, first, second = runs
    started = time.monotonic()
    result = run_cli("--run", str(root))
    assert result.returncode == 0, result.stderr[-3000:]
    out = str(root / "root" / "report" / "report.html")
    assert result.stdout.strip().splitlines()[-1] == out
    page = open(out).read()
    assert "data-blessed='false'" in page and "NOT BLESSED" in page and second.blessed is False
    assert "video_mean_class_accuracy (change vs baseline)" in section(page, "Blessing")   # the gated metric
    assert "data-pushed='false'" in page and second.pushed_path is None
    assert float(re.search(r"data-metric='sparse_categorical_accuracy'>([^<]+)<", page).group(1)) == \
        pytest.approx(second.metrics["sparse_categorical_accuracy"], abs=6e-5)
    # The candidate's matrix, not the baseline's: its diagonal gives the candidate's (poor) accuracy.
    check_confusion_matrix(page, root, second.metrics["sparse_categorical_accuracy"])
    state, seconds, computed = cells(section(page, "Throughput"), "ClipGen")
    assert state == "CACHED" and float(computed) == pytest.approx(first.component_seconds["ClipGen"], abs=0.06)
    print(f"report via CLI: {time.monotonic() - started:.1f}s")


def test_run_stopped_by_clipgen_shows_missing_sections(tmp_path):
    from pipeline.config import load_config
    from pipeline.demo_data import generate_demo_data
    from pipeline.local_runner import run_local
    from pipeline.report import build_report
    data = str(tmp_path / "data")
    generate_demo_data(data, videos_per_class=4, seed=3)
    add_bad_videos(data, with_non_protobuf=False)   # Ingest passes; ClipGen rejects and stops the run
    config = load_config("smoke", [f"data_dir={data}", f"pipeline_root={tmp_path / 'root'}",
                                   f"metadata_path={tmp_path / 'metadata.sqlite'}",
                                   f"serving_dir={tmp_path / 'serving'}", "max_rejected_fraction=0.0"])
    with pytest.raises(RuntimeError, match="max_rejected_fraction"):
        run_local(config)
    out = build_report(str(tmp_path))
    assert out == str(tmp_path / "root" / "report" / "report.html")
    page = open(out).read()
    for title in ("Dataset", "Training", "Evaluation", "Blessing", "Push"):
        assert "not available" in section(page, title), title
    assert "not available" not in section(page, "Ingest")
    assert cells(section(page, "Throughput"), "ClipGen")[0] == "FAILED"
    assert "<img" not in page and not any(os.path.exists(os.path.join(os.path.dirname(out), p)) for p in PNGS)


def test_cli_help_and_a_folder_without_metadata_is_a_usage_error(tmp_path):
    result = run_cli("--help")
    assert result.returncode == 0 and "--run DIR" in result.stdout and "--out" in result.stdout
    result = run_cli("--run", str(tmp_path))
    assert result.returncode == 2
    assert f"--run '{tmp_path}': no metadata.sqlite there" in result.stderr
    assert not os.path.exists(tmp_path / "metadata.sqlite")  # the check must not create a store


# ---- a real browser: headless Chromium driven over the DevTools protocol ----

def chromium_or_skip() -> str:
    path = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed; CI must install it (.ci/run does, from Debian)")
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    return path


class DevTools:
    """A minimal DevTools client: commands on one page session, events kept for inspection."""

    def __init__(self, ws_url: str):
        import websocket
        self.ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self.next_id, self.events, self.session = 0, [], None

    def call(self, method: str, **params):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if self.session:
            message["sessionId"] = self.session
        self.ws.send(json.dumps(message))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self.next_id:
                assert "error" not in reply, reply
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str, timeout_s: float = 60):
        deadline = time.monotonic() + timeout_s
        while not any(e.get("method") == method for e in self.events):
            assert time.monotonic() < deadline, f"no {method} within {timeout_s}s"
            self.events.append(json.loads(self.ws.recv()))


def open_in_chromium(html_path: str):
    """Loads the page; returns (console errors and exceptions, [{complete, width}] of every <img>)."""
    chromium = chromium_or_skip()
    with tempfile.TemporaryDirectory() as profile:
        process = subprocess.Popen(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        lines = queue.Queue()  # stderr is drained by a thread so Chromium never blocks on a full pipe
        threading.Thread(target=lambda: [lines.put(line) for line in process.stderr], daemon=True).start()
        try:
            deadline, ws_url = time.monotonic() + 60, None
            while ws_url is None:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
                match = re.search(r"DevTools listening on (ws://\S+)", line)
                ws_url = match.group(1) if match else None
            tools = DevTools(ws_url)
            target = tools.call("Target.createTarget", url="about:blank")["targetId"]
            tools.session = tools.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            for domain in ("Runtime", "Log", "Page", "Network"):
                tools.call(f"{domain}.enable")
            tools.call("Page.navigate", url="file://" + os.path.abspath(html_path))
            tools.wait_for("Page.loadEventFired")
            images = tools.call("Runtime.evaluate", returnByValue=True, expression=(
                "Array.from(document.images).map(i => ({complete: i.complete, width: i.naturalWidth}))"))
            errors = [e for e in tools.events if e.get("method") in ("Runtime.exceptionThrown", "Network.loadingFailed")
                      or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert"))
                      or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]
            tools.ws.close()
            return errors, images["result"]["value"]
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_report_loads_in_a_real_browser_with_every_image(first_report):
    root, _, _ = first_report
    started = time.monotonic()
    errors, images = open_in_chromium(str(root / REPORT_AFTER_RUN_1))
    assert errors == []
    assert len(images) == len(PNGS) and all(i["complete"] and i["width"] > 0 for i in images), images
    print(f"chromium check: {time.monotonic() - started:.1f}s")
