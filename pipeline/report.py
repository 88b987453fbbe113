"""``python -m pipeline report``: one self-contained HTML page about the newest pipeline run in a run folder.

A run folder is what run-local/demo leave: ``metadata.sqlite`` (ML Metadata) and the artifacts it points at.
``gather`` follows the newest pipeline run's executions to their output artifacts and reads them into a plain
dict; ``render`` turns that into PNGs and ``report.html``, with the PNGs also embedded as data: URIs so the page
works copied alone, offline and without JavaScript. A stage the run did not reach shows as "not available".
"""
from __future__ import annotations

import base64
import html
import json
import os
import re
import time

import numpy as np
import tensorflow as tf
import tensorflow_model_analysis as tfma
from google.protobuf import json_format
# Figure without pyplot: PNGs rendered by Agg, no display needed and no global pyplot state to clean up.
from matplotlib.figure import Figure
from ml_metadata.proto import metadata_store_pb2
from tfx.orchestration import metadata

from components.clipgen.executor import CLIP_STATS_FILENAME
from components.evaluation import GATE_FILE
from components.ingest import DEAD_LETTER_KEY as INGEST_DEAD_LETTER_KEY
from components.ingest import INGEST_STATS_FILENAME, STATS_KEY as INGEST_STATS_KEY
from components.metric_names import LEVELS, STATISTICS, metric_name
from components.trainer.history import HISTORY_FILENAME
from pipeline.config import ConfigError, RunConfig
from pipeline.local_runner import execution_seconds, is_candidate, newest_run_executions, summarize

METADATA_FILE = "metadata.sqlite"
OTHER_METRICS = ("sparse_categorical_crossentropy", "example_count")
PNG_FILES = ("training_curves.png", "confusion_matrix.png")


def build_report(run_dir: str, out: str | None = None) -> str:
    """Writes the report of the newest run in ``run_dir``; returns the HTML path."""
    if out is not None and (os.path.isdir(out) or not out.endswith((".html", ".htm"))):
        raise ConfigError(f"--out {out!r}: give the path of an .html file to write")
    data = gather(run_dir)
    out = out or os.path.join(data["run"]["pipeline_root"] or run_dir, "report", "report.html")
    render(data, out)
    return out


# ---- gathering: ML Metadata and artifacts -> plain dict ----

def gather(run_dir: str) -> dict:
    """The newest pipeline run in ``run_dir`` as plain data: one entry per report section."""
    if not os.path.isdir(run_dir):
        raise ConfigError(f"--run {run_dir!r}: no such folder; give a run folder such as runs/demo")
    metadata_path = os.path.join(run_dir, METADATA_FILE)
    if not os.path.isfile(metadata_path):  # checked first: MLMD would silently create an empty store
        raise ConfigError(f"--run {run_dir!r}: no {METADATA_FILE} there; expected a run folder written by "
                          f"run-local/demo (e.g. runs/demo)")
    with metadata.Metadata(metadata.sqlite_metadata_connection_config(metadata_path)) as m:
        run, executions = newest_run_executions(m.store)
        if run is None:
            raise ConfigError(f"--run {run_dir!r}: {metadata_path} records no pipeline run")
        nodes = _run_nodes(m.store, executions)
        newest_ids = {t: max((a.id for a in m.store.get_artifacts_by_type(t)), default=None)
                      for t in ("ModelEvaluation", "PushedModel")}
    # summarize() reads the newest artifacts of each type: they belong to this run when the ids match.
    summary = summarize(RunConfig(metadata_path=metadata_path))
    resolve = _resolver(run_dir)
    labels, new_classes = _run_labels(nodes)
    uris = [resolve(a.uri) for n in nodes.values() for a in n["outputs"].values()]
    return {
        "run": {"name": run.name, "metadata_path": metadata_path, "labels": labels, "new_classes": new_classes,
                "pipeline_root": os.path.dirname(os.path.dirname(os.path.dirname(uris[0]))) if uris else None,
                "components": [{"name": n, "state": node["state"], "seconds": node["seconds"],
                                "computed_s": node["computed_s"]}
                               for n, node in nodes.items()]},
        "ingest": _readable(_ingest, nodes.get("Ingest"), resolve),
        "dataset": _readable(_dataset, nodes.get("ClipGen"), resolve),
        "training": _readable(_training, nodes.get("Trainer"), resolve),
        "evaluation": _readable(_evaluation, nodes.get("Evaluator"), summary, newest_ids["ModelEvaluation"],
                                labels, resolve),
        "push": _push(nodes.get("Pusher"), summary, newest_ids["PushedModel"]),
    }


def _run_labels(nodes: dict) -> tuple[list[str], list[str]]:
    """The run's label map (read from its data when the run started; the Trainer's model and ClipGen's clips record
    it) and the classes new since the model served before the run."""
    for node, output in (("Trainer", "model"), ("ClipGen", "clips")):
        artifact = nodes.get(node, {}).get("outputs", {}).get(output)
        if artifact is not None and "labels" in artifact.custom_properties:
            new = (json.loads(artifact.custom_properties["new_classes"].string_value)
                   if "new_classes" in artifact.custom_properties else [])
            return json.loads(artifact.custom_properties["labels"].string_value), new
    return json.loads(nodes.get("ClipGen", {}).get("properties", {}).get("labels", "[]")), []


def _readable(read, *args) -> dict:
    """A section whose artifact files are gone (deleted or moved since the run) is missing, not a crash."""
    try:
        return read(*args)
    except (FileNotFoundError, tf.errors.NotFoundError) as exc:
        return _missing(f"artifact file not found ({exc})")


def _run_nodes(store, executions) -> dict[str, dict]:
    """node id -> execution state, seconds, custom properties and output artifacts (cached steps link their old
    outputs)."""
    nodes = {}
    for node_id, execution in executions:
        outputs = {}
        for event in store.get_events_by_execution_ids([execution.id]):
            if event.type == metadata_store_pb2.Event.OUTPUT:
                outputs[event.path.steps[0].key] = store.get_artifacts_by_id([event.artifact_id])[0]
        properties = {k: v.string_value or v.int_value for k, v in execution.custom_properties.items()}
        cached = execution.last_known_state == metadata_store_pb2.Execution.CACHED
        nodes[node_id] = {
            "state": metadata_store_pb2.Execution.State.Name(execution.last_known_state), "properties": properties,
            "outputs": outputs, "seconds": execution_seconds(execution),
            "computed_s": _producer_seconds(store, outputs) if cached else None}
    return nodes


def _producer_seconds(store, outputs) -> float | None:
    """Seconds the execution that computed a cached step's outputs took, in whichever earlier run that was."""
    for artifact in outputs.values():
        for event in store.get_events_by_artifact_ids([artifact.id]):
            (producer,) = store.get_executions_by_id([event.execution_id])
            if event.type == metadata_store_pb2.Event.OUTPUT and \
                    producer.last_known_state == metadata_store_pb2.Execution.COMPLETE:
                return execution_seconds(producer)
    return None


def _resolver(run_dir: str):
    """Relative artifact URIs (the demo's runs/demo/root/...) are relative to where run-local was started: the
    current folder or one above the run folder. Absolute and gs:// URIs are used as they are."""
    bases, folder = [os.getcwd()], os.path.abspath(run_dir)
    while os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
        bases.append(folder)

    def resolve(uri: str) -> str:
        if os.path.isabs(uri) or "://" in uri:
            return uri
        return next((os.path.join(b, uri) for b in bases if os.path.exists(os.path.join(b, uri))), uri)
    return resolve


def _missing(reason: str) -> dict:
    return {"missing": reason}


def _read_json(path: str):
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def _dataset(node, resolve) -> dict:
    if not node or "clip_stats" not in node["outputs"]:
        return _missing("ClipGen did not finish in this run")
    stats = _read_json(os.path.join(resolve(node["outputs"]["clip_stats"].uri), CLIP_STATS_FILENAME))
    dead_dir = resolve(node["outputs"]["dead_letter"].uri)
    return {"splits": stats["splits"], "clip_shape": stats["clip_shape"], "elapsed_s": stats["elapsed_s"],
            "dead_letters": _dead_letters(dead_dir), "dead_letter_dir": dead_dir}


def _ingest(node, resolve) -> dict:
    if not node or INGEST_STATS_KEY not in node["outputs"]:
        return _missing("Ingest did not finish in this run")
    stats = _read_json(os.path.join(resolve(node["outputs"][INGEST_STATS_KEY].uri), INGEST_STATS_FILENAME))
    dead_dir = resolve(node["outputs"][INGEST_DEAD_LETTER_KEY].uri)
    return {"inputs": stats["inputs"], "outputs": stats["outputs"], "dead_letters": _dead_letters(dead_dir),
            "dead_letter_dir": dead_dir}


def _dead_letters(dead_dir: str) -> list[dict]:
    dead_letters = []
    for path in sorted(tf.io.gfile.glob(os.path.join(dead_dir, "Split-*", "*.jsonl"))):
        with tf.io.gfile.GFile(path) as f:
            dead_letters += [json.loads(line) for line in f if line.strip()]
    return dead_letters


def _training(node, resolve) -> dict:
    if not node or "model_run" not in node["outputs"]:
        return _missing("the Trainer did not finish in this run")
    history = _read_json(os.path.join(resolve(node["outputs"]["model_run"].uri), HISTORY_FILENAME))
    return {"workers": history["workers"], "attempts": history["attempts"], "epochs": history["epochs"]}


def _evaluation(node, summary, newest_id, labels, resolve) -> dict:
    if not node or "evaluation" not in node["outputs"]:
        return _missing("the Evaluator did not finish in this run")
    artifact = node["outputs"]["evaluation"]
    if artifact.id != newest_id:
        return _missing(f"this run reused evaluation {artifact.id}, but a later one ({newest_id}) exists")
    uri = resolve(artifact.uri)
    return {"metrics": summary.metrics, "confusion": _confusion(uri, len(labels)),
            "gate": _read_json(os.path.join(uri, GATE_FILE)),
            "thresholds": _thresholds(node["properties"].get("eval_config", "{}"))}


def _confusion(uri: str, num_classes: int) -> list[list[int]] | None:
    """TFMA's MultiClassConfusionMatrixPlot: rows true class, columns predicted class (argmax: threshold 0).

    Per-class precision/recall are derived from it rather than taken from TFMA's binarized Precision/Recall:
    those threshold each class probability at 0.5 (not argmax), and with top_k=1 they report recall 1.0 for a
    class the model never predicts (seen on an undertrained model)."""
    for per_slice in tfma.load_plots(uri):
        for kv in per_slice.plot_keys_and_values:
            if per_slice.slice_key.single_slice_keys or not is_candidate(kv.key):
                continue
            if kv.value.HasField("multi_class_confusion_matrix_at_thresholds"):
                counts = np.zeros((num_classes, num_classes), dtype=np.int64)
                for e in kv.value.multi_class_confusion_matrix_at_thresholds.matrices[0].entries:
                    if not (0 <= e.actual_class_id < num_classes and 0 <= e.predicted_class_id < num_classes):
                        raise ValueError(f"confusion matrix in {uri}: class ids {e.actual_class_id}/"
                                         f"{e.predicted_class_id} outside the {num_classes} labels of the run")
                    counts[e.actual_class_id, e.predicted_class_id] += round(e.num_weighted_examples)
                return counts.tolist()
    return None


def _thresholds(eval_config_json: str) -> list[dict]:
    """The gate as configured (the Evaluator's eval_config), including the change threshold a first run skips."""
    config = json_format.Parse(eval_config_json, tfma.EvalConfig())
    rules = []
    for spec in config.metrics_specs:
        for metric in spec.metrics:
            v, c = metric.threshold.value_threshold, metric.threshold.change_threshold
            bounds = [f"{sign} {getattr(v, bound).value:g}"
                      for sign, bound in (("≥", "lower_bound"), ("≤", "upper_bound")) if v.HasField(bound)]
            changes = [f"{kind} change vs baseline ≥ {getattr(c, kind).value:.4g}"
                       for kind in ("absolute", "relative") if c.HasField(kind)]
            name = json.loads(metric.config or "{}").get("name") or metric.class_name
            if bounds:
                rules.append({"metric": name, "kind": "value", "rule": " and ".join(bounds)})
            if changes:
                rules.append({"metric": name, "kind": "change",
                              "rule": "; ".join(changes) + f" ({tfma.MetricDirection.Name(c.direction)})"})
    return rules


def _push(node, summary, newest_id) -> dict:
    if not node or "pushed_model" not in node["outputs"]:
        return _missing("the Pusher did not finish in this run")
    if node["outputs"]["pushed_model"].id != newest_id:
        return _missing(f"this run reused push record {node['outputs']['pushed_model'].id}, a later one exists")
    base = node["properties"].get("serving_base_dir", "")
    return {"pushed": summary.pushed_path is not None, "version": summary.pushed_version,
            "path": summary.pushed_path, "serving_base": os.path.join(base, node["properties"].get("model_name", ""))}


# ---- rendering: dict -> PNGs + HTML ----

def render(data: dict, out: str) -> None:
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    for name in PNG_FILES:  # a PNG left by an earlier report must not pass for this run's
        if os.path.exists(os.path.join(folder, name)):
            os.remove(os.path.join(folder, name))
    run, labels = data["run"], data["run"]["labels"]
    body = [f"<h1>Pipeline run {_e(run['name'])}</h1>",
            _table(None, [["metadata", run["metadata_path"]], ["pipeline root", run["pipeline_root"]],
                              ["labels", ", ".join(labels)],
                              *([["new classes (not in the model served before)", ", ".join(run["new_classes"])]]
                                if run.get("new_classes") else []),
                              ["report written", time.strftime("%Y-%m-%d %H:%M:%S")]])]
    body += _section("Ingest (video records)", data["ingest"], _ingest_html)
    body += _section("Dataset (ClipGen)", data["dataset"], _dataset_html)
    body += _section("Training", data["training"], _training_html, folder)
    body += _section("Evaluation (eval split)", data["evaluation"], _evaluation_html, labels, folder)
    body += _section("Blessing", data["evaluation"], _gate_html)
    body += _section("Push", data["push"], _push_html)
    body += ["<h2>Throughput</h2>", _throughput_html(run["components"], data["training"])]
    with open(out, "w") as f:
        f.write(f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Run {_e(run['name'])}</title>"
                f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>")


CSS = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto}table{border-collapse:collapse;margin:.5em 0}"
       "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}.na{color:#a00}img{max-width:100%}")


def _e(value) -> str:
    if isinstance(value, float):
        value = f"{value:.4g}" if abs(value) < 1000 else f"{value:.1f}"
    return html.escape("" if value is None else str(value))


def _table(headers, rows, attrs=None) -> str:
    head = "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in headers) + "</tr>" if headers else ""
    cells = "".join("<tr>" + "".join(f"<td{(attrs or {}).get((i, j), '')}>{_e(v)}</td>" for j, v in enumerate(r))
                    + "</tr>" for i, r in enumerate(rows))
    return f"<table>{head}{cells}</table>"


def _section(title, section, render_present, *args) -> list[str]:
    if "missing" in section:
        return [f"<h2>{_e(title)}</h2>", f"<p class='na'>not available: {_e(section['missing'])}</p>"]
    return [f"<h2>{_e(title)}</h2>", render_present(section, *args)]


def _image(fig, folder: str, name: str, alt: str) -> str:
    path = os.path.join(folder, name)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    with open(path, "rb") as f:
        encoded = base64.b64encode(f.read()).decode()
    return f"<p><img src='data:image/png;base64,{encoded}' alt='{_e(alt)}' data-file='{_e(name)}'></p>"


def _dataset_html(d) -> str:
    rows = [[s, v["videos_in"], v["videos_ok"], v["rejected"], v["clips_out"],
             ", ".join(f"{r}: {n}" for r, n in sorted(v["rejected_by_reason"].items())) or "none"]
            for s, v in sorted(d["splits"].items())]
    dead = [[x["split"], x["video_id"], x["reason"], x["detail"][:120]] for x in d["dead_letters"][:20]]
    return (_table(["split", "videos in", "ok", "rejected", "clips out", "rejected by reason"], rows)
            + f"<p>clip shape {_e(d['clip_shape'])}; ClipGen took {_e(d['elapsed_s'])} s "
            f"({_e(sum(v['clips_out'] for v in d['splits'].values()) / max(d['elapsed_s'], 1e-9))} clips/s). "
            f"{len(d['dead_letters'])} dead letter(s) in {_e(d['dead_letter_dir'])}"
            + (" (first 20):</p>" + _table(["split", "video", "reason", "detail"], dead) if dead else ".</p>"))


def _ingest_html(d) -> str:
    rows = [[s, v["records_in"], v["records_ok"], v["rejected"],
             ", ".join(f"{r}: {n}" for r, n in sorted(v["rejected_by_reason"].items())) or "none"]
            for s, v in sorted(d["inputs"].items())]
    dead = [[x["split"], x["video_id"], x["reason"], x["file"], x["record_index"], x["detail"][:120]]
            for x in d["dead_letters"][:20]]
    written = ", ".join(f"{s}: {n}" for s, n in sorted(d["outputs"].items()))
    return (_table(["input split", "records in", "ok", "rejected", "rejected by reason"], rows)
            + f"<p>written per output split: {_e(written)}. {len(d['dead_letters'])} dead letter(s) in "
            f"{_e(d['dead_letter_dir'])}"
            + (" (first 20):</p>" + _table(["split", "video", "reason", "file", "record", "detail"], dead)
               if dead else ".</p>"))


def _training_html(t, folder) -> str:
    epochs = [e["epoch"] for e in t["epochs"]]
    fig = Figure(figsize=(10, 3.5))
    axes = fig.subplots(1, 2)
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for key, style in ((metric, "o-"), (f"val_{metric}", "s--")):
            if all(key in e for e in t["epochs"]):
                ax.plot(epochs, [e[key] for e in t["epochs"]], style, label=key)
        ax.set_xlabel("epoch"), ax.set_title(metric), ax.legend(), ax.grid(alpha=.3)
    return (f"<p>{t['workers']} worker(s), {t['attempts']} attempt(s).</p>"
            + _image(fig, folder, "training_curves.png", "training and validation loss and accuracy per epoch"))


def _evaluation_html(e, labels, folder) -> str:
    m = e["metrics"]
    k = next((int(found.group(1)) for name in m if (found := re.fullmatch(r"top_(\d+)_accuracy", name))), 5)
    names = [[metric_name(statistic, level, k) for level in LEVELS] for statistic in STATISTICS]
    rows = [[statistic.replace("top_k", f"top-{k}").replace("_", " "), *(m.get(n, "not reported") for n in row)]
            for statistic, row in zip(STATISTICS, names)]
    parts = [_table(["", "clip level", "video level"], rows,
                    attrs={(i, j + 1): f" data-metric='{n}'" for i, row in enumerate(names) for j, n in enumerate(row)}),
             "<p>Clip level: each clip on its own; video level: clip probabilities averaged per video. Mean class "
             "accuracy: each class's share of right answers, averaged over the classes.</p>",
             _table(["metric", "value"], [[n, m.get(n, "not reported")] for n in OTHER_METRICS],
                    attrs={(i, 1): f" data-metric='{n}'" for i, n in enumerate(OTHER_METRICS)})]
    if e["confusion"] is None:
        return "".join(parts) + "<p class='na'>confusion matrix not available: no plot in this evaluation</p>"
    counts = np.array(e["confusion"])
    fig = Figure(figsize=(1 + .7 * len(labels), .8 + .6 * len(labels)))
    ax = fig.subplots()
    ax.imshow(counts, cmap="Blues")
    for (i, j), n in np.ndenumerate(counts):
        ax.text(j, i, str(n), ha="center", va="center", color="white" if n > counts.max() / 2 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right"), ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted"), ax.set_ylabel("true"), ax.set_title(f"confusion matrix ({counts.sum()} clips)")
    parts.append(_image(fig, folder, "confusion_matrix.png", "confusion matrix of the eval clips"))
    rows = [[label, int(counts[i].sum()), int(counts[:, i].sum()), int(counts[i, i]),
             counts[i, i] / counts[:, i].sum() if counts[:, i].sum() else "no clip predicted",
             counts[i, i] / counts[i].sum() if counts[i].sum() else "no clip"] for i, label in enumerate(labels)]
    parts.append(_table(["class", "eval clips", "predicted as", "correct", "precision", "recall"], rows))
    return "".join(parts) + f"<p data-confusion-total='{counts.sum()}'>{counts.sum()} eval clips in the matrix.</p>"


def _gate_html(e) -> str:
    gate = e["gate"]
    verdict = "BLESSED" if gate["blessed"] else "NOT BLESSED"
    return (f"<p data-blessed='{str(gate['blessed']).lower()}'><b>{verdict}</b>; baseline (model in serving): "
            f"{'yes' if gate['had_baseline'] else 'none (first run: change threshold not applied)'}.</p>"
            + _table(["metric", "threshold", "rule"], [[t["metric"], t["kind"], t["rule"]] for t in e["thresholds"]])
            + (_table(["failed metric", "value", "threshold"],
                      [[f["metric"], f["value"], f["threshold"]] for f in gate["failures"]])
               if gate["failures"] else "<p>No threshold failed.</p>"))


def _push_html(p) -> str:
    if p["pushed"]:
        return f"<p data-pushed='true'>Pushed version {_e(p['version'])} to {_e(p['path'])}.</p>"
    return f"<p data-pushed='false'>No model pushed; serving base path {_e(p['serving_base'])} unchanged.</p>"


def _throughput_html(components, training) -> str:
    parts = [_table(["component", "state", "seconds", "seconds when computed (cached)"],
                    [[c["name"], c["state"], c["seconds"], c["computed_s"]] for c in components])]
    if "missing" not in training:
        parts.append(_table(["epoch", "train s", "clips/s (all workers)"]
                            + [f"clips/s worker {i}" for i in range(training["workers"])],
                            [[e["epoch"], e["train_seconds"], e["clips_per_s"]] + e["clips_per_s_per_worker"]
                             for e in training["epochs"]]))
    return "".join(parts)
