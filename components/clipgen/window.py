"""ClipGen's side of the training window (components/spans.py): which spans it cuts this run, the reused spans'
clips it copies into its output, and the store entries it writes for the spans it cut.

Ingest decides and records on its examples artifact (``window``, ``ingested_spans``, ``reused_clips``); ClipGen
follows that record rather than looking at the store again, so both steps of one run agree even if another run
writes the store in between. Output file names carry the span (``data_tfrecord-span-00007-*``), so the window's
files sit side by side in one split folder, which is all Transform, the Trainer and the Evaluator read.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os

import tensorflow as tf
from tfx import types

from components import spans

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SpanWindow:
    windowed: bool                      # Ingest recorded a window of numbered spans
    spans: tuple = ()                   # span numbers, oldest first
    spans_to_cut: tuple = ()            # the spans Ingest read this run
    reused: dict = dataclasses.field(default_factory=dict)   # span -> store entry (components/spans.py)
    info: dict = dataclasses.field(default_factory=dict)     # span -> {"version", "fingerprint", "tag"}

    @classmethod
    def of(cls, examples: list[types.Artifact]) -> "SpanWindow":
        text = examples[0].get_string_custom_property(spans.WINDOW_PROPERTY) if examples else ""
        window = json.loads(text) if text else {}
        if not window.get("kind"):
            return cls(windowed=False)
        if len(examples) != 1:
            raise ValueError(f"ClipGen: a windowed input must be one examples artifact, got {len(examples)}")
        artifact = examples[0]
        return cls(windowed=True,
                   spans=tuple(s["span"] for s in window["spans"]),
                   spans_to_cut=tuple(json.loads(artifact.get_string_custom_property(spans.INGESTED_PROPERTY))),
                   reused={int(k): v for k, v in
                           json.loads(artifact.get_string_custom_property(spans.REUSED_PROPERTY)).items()},
                   info={s["span"]: s for s in window["spans"]})

    @property
    def tags_to_cut(self) -> list[str]:
        """One clip branch per span read this run; [""] (one branch over everything) without spans."""
        return [self.info[span]["tag"] for span in self.spans_to_cut] if self.windowed else [""]

    def assemble(self, clips: types.Artifact, splits: list[str], per_span: dict) -> dict[str, int]:
        """Copies the reused spans' clip files into ``clips``' split folders; the window's clips per split."""
        totals = {split: sum(counts[split]["clips_out"] for counts in per_span.values()) for split in splits}
        for span, entry in sorted(self.reused.items()):
            for split in splits:
                names = entry["files"].get(split, [])
                for name in names:
                    tf.io.gfile.copy(f"{entry['clips_uri'].rstrip('/')}/Split-{split}/{name}",
                                     f"{clips.uri.rstrip('/')}/Split-{split}/{name}", overwrite=True)
                totals[split] += int(entry["clips"].get(split, 0))
            log.info("ClipGen: span %s reused from %s: %s clips", span, entry["clips_uri"],
                     {split: entry["clips"].get(split, 0) for split in splits})
        for split in splits:
            clips.set_int_custom_property(f"{split}_window_clips", totals[split])
        return totals

    def register(self, store: str, clips: types.Artifact, splits: list[str], per_span: dict) -> None:
        """After a successful cut: one store entry per span cut this run, so a later window reuses its clips."""
        if not (store and self.windowed):
            return
        for span in self.spans_to_cut:
            info = self.info[span]
            prefix = spans.examples_file_prefix(info["tag"]) + "-"
            files = {split: sorted(os.path.basename(p) for p in tf.io.gfile.glob(
                f"{clips.uri.rstrip('/')}/Split-{split}/{prefix}*")) for split in splits}
            spans.write_store_entry(store, span, {
                "span": span, "version": info["version"], "fingerprint": info["fingerprint"],
                "clips_uri": clips.uri, "files": files,
                "clips": {split: per_span[info["tag"]][split]["clips_out"] for split in splits}})
        log.info("ClipGen: clip store %s now holds spans %s", store, list(self.spans_to_cut))
