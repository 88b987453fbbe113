"""The label map of a run: read from the data window when the run starts, not when the pipeline is built.

``labels`` configured in the RunConfig win ("config"). Otherwise each span of the window names its classes in a
label map file (``ingest.label_map``, relative to the input base; it may carry the patterns' span specs, e.g.
``span-{SPAN}/label_map.txt``, or be one file for every span), and the run's label map is the sorted union ("data").
Ingest records it on its examples; ClipGen, the Trainer and the Evaluator take it from there, so a class that
appears in tomorrow's span is trained tomorrow, with no recompiled pipeline.

Against the model in serving (``check_against_served``): a class new to the window is reported (the head grows,
components/trainer/warm_start.py re-initialises it); a class the served model knows but the window lacks is an
error unless the labels were configured, because the new model would silently stop predicting it.
"""
from __future__ import annotations

import json
import logging
from typing import Sequence

from components import spans
from components.video_format import LabelMap

log = logging.getLogger(__name__)

CONFIG, DATA = "config", "data"
LABELS_PROPERTY, SOURCE_PROPERTY = "labels", "label_source"
SERVED_LABELS_FILE = "assets.extra/labels.txt"   # write_served_labels, called by components/trainer/export.py


def window_labels(input_base: str, label_map: str, window_spans: Sequence[int | None]) -> list[str]:
    """The sorted union of the label maps of the window's spans."""
    import tensorflow as tf
    labels: set[str] = set()
    for path in (f"{input_base.rstrip('/')}/{rel}" for rel in spans.label_map_files(label_map, window_spans)):
        if not tf.io.gfile.exists(path):
            raise FileNotFoundError(f"label map {path} not found (ingest.label_map: {label_map!r}); "
                                    f"or configure `labels` explicitly")
        try:
            labels.update(LabelMap.load(path).labels)
        except ValueError as exc:
            raise ValueError(f"label map {path}: {exc}") from None
    return LabelMap(labels).labels


def record(artifact, labels: Sequence[str], source: str) -> None:
    artifact.set_string_custom_property(LABELS_PROPERTY, json.dumps(list(labels)))
    artifact.set_string_custom_property(SOURCE_PROPERTY, source)


def recorded(artifact) -> tuple[list[str], str]:
    """(labels, source) an upstream step recorded; ([], "") when it recorded none."""
    text = artifact.get_string_custom_property(LABELS_PROPERTY)
    return (json.loads(text) if text else []), artifact.get_string_custom_property(SOURCE_PROPERTY)


def write_served_labels(model_dir: str, labels: Sequence[str]) -> None:
    """The class names beside an exported model (its assets.extra/labels.txt), one a line."""
    import tensorflow as tf
    path = f"{model_dir.rstrip('/')}/{SERVED_LABELS_FILE}"
    tf.io.gfile.makedirs(path.rsplit("/", 1)[0])
    with tf.io.gfile.GFile(path, "w") as f:
        f.write("".join(f"{label}\n" for label in labels))


def served_labels(model_dir: str) -> list[str] | None:
    """The class names of a pushed model (its assets.extra/labels.txt), None for an export without the file."""
    import tensorflow as tf
    path = f"{model_dir.rstrip('/')}/{SERVED_LABELS_FILE}"
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def check_against_served(labels: Sequence[str], source: str, served: Sequence[str] | None,
                         served_where: str = "the served model") -> list[str]:
    """The classes new to this run (not in the served model); raises when the run lacks a served class and the
    labels come from the data."""
    if served is None:
        return []
    lost = sorted(set(served) - set(labels))
    if lost and source != CONFIG:
        raise ValueError(f"the window's label map lacks {lost}, which {served_where} predicts: a new model would "
                         f"never predict them. Add their videos to the window, or configure `labels` explicitly "
                         f"to train without them (window labels: {list(labels)})")
    if lost:
        log.warning("labels configured without %s, which %s predicts", lost, served_where)
    new = sorted(set(labels) - set(served))
    if new:
        log.info("classes new to this run (not in %s): %s", served_where, new)
    return new
