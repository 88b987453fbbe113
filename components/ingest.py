"""TFX ingest of video SequenceExample TFRecords that survives bad input: ``VideoIngest``.

A ``FileBasedExampleGen`` (so TFX's file-based driver still resolves spans and fingerprints the input files:
new data invalidates the cache, and Kubeflow compiles it as an ExampleGen step; open-source KFP never runs that
driver, so there the parameter ``input_fingerprint`` comes from a task of its own, pipeline/kfp_caching.py, and
the executor records it on the examples) with its own executor, because
TFX's ImportExampleGen fails the whole run on one truncated file or one record that is not a protobuf. Here
every file is read record by record with the TFRecord checksums checked, and every record either reaches the
``examples`` output or the ``dead_letter`` output with its reason, file and record index:

==============================  =======================================================================
reason                          what was seen, and what is lost
==============================  =======================================================================
not_a_sequence_example          the record's bytes do not parse as a tf.train.SequenceExample
corrupt_record                  the record's data checksum does not match; its framing is intact, so only
                                this record is lost and reading goes on
record_too_large                the record is longer than ``max_record_bytes`` (memory bound); skipped
                                unread, reading goes on
truncated_file                  the file ends inside a record: that record is lost (nothing follows it)
corrupt_framing                 a length checksum does not match: no later record can be found, the rest
                                of the file is lost (one dead letter says from which record and byte on)
unreadable_file                 the file cannot be opened or decompressed: the rest of it is lost
missing_id                      SPLIT_BY_ID only: no bytes/int64 ``id_feature`` to hash into a split
duplicate_record                the same video id with byte-identical content as a record kept earlier
duplicate_id_across_splits      PRE_SPLIT only: the video id is already in an earlier split (``train``
                                before ``eval``), where it is kept: one video never feeds both splits
==============================  =======================================================================

Records of one video id with *different* content in one split (re-encodes, segments of one video) are all
kept, as SPLIT_BY_ID keeps them together. Records without ``id_feature`` are de-duplicated by content only.

Two ways in:

* ``PRE_SPLIT`` (default): ``input_base/train/*`` and ``input_base/eval/*`` become the train and eval splits
  as they are (the demo dataset's layout, and the usual layout of published Kinetics/UCF101 TFRecords).
* ``SPLIT_BY_ID``: one folder of records (``convert``'s ``videos-*.tfrecord``) is split into train/eval by a
  hash of the video id, exactly as TFX's ExampleGen with ``partition_feature_name`` does
  (base_example_gen_executor._GeneratePartitionKey): the bucket is sha256(serialized id Feature) mod the bucket
  total. The split is therefore a pure function of the id: stable across runs, re-encodes and re-conversions,
  and every record of one video stays in one split. Records that carry their id under another key (e.g.
  ``video/filename``) pass that key as ``id_feature``.

Outputs: ``examples`` (gzipped TFRecords of SequenceExamples in ``Split-train`` / ``Split-eval``, payload
format FORMAT_TF_SEQUENCE_EXAMPLE: what ClipGen reads), ``dead_letter`` (``Split-<input split>/
dead_letter-*.jsonl``, one ``{video_id, split, reason, detail, file, record_index}`` a line, ClipGen's format
plus the record's place) and ``ingest_stats`` (``ingest_stats.json``: per input split files, records_in,
records_ok, rejected, rejected_by_reason; per output split examples_out). A record or a lost region counts once
in records_in; records_in == records_ok + rejected per input split and the sum of records_ok == the sum of
examples_out are checked. A split that rejects more than ``max_rejected_fraction`` fails the run after the
dead letters and statistics are written.
"""
from __future__ import annotations

import bisect
import dataclasses
import hashlib
import json
import logging
import os
import time
from typing import Any, Iterable, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics
from tfx import types
from tfx.components import FileBasedExampleGen
from tfx.components.example_gen import utils as example_gen_utils
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_beam_component, base_beam_executor, executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_artifacts, standard_component_specs
from tfx.types.component_spec import ChannelParameter, ExecutionParameter
from tfx.utils import io_utils, proto_utils

from components import label_maps, spans, video_format
from components.sinks import WriteTextLines
from components.spans import (CLIP_STORE_KEY, INGESTED_PROPERTY, REUSED_PROPERTY, WINDOW_PROPERTY,
                              examples_file_prefix)
from components.rejections import (add_split_counts, check_max_rejected_fraction, check_split_accounting,
                                  count_outcome, dead_letter_line, enforce_max_rejected_fraction)
from components.tfrecord_io import (CORRUPT_FRAMING, CORRUPT_RECORD, DEFAULT_MAX_RECORD_BYTES,  # noqa: F401
                                    RECORD_TOO_LARGE, TRUNCATED_FILE, UNREADABLE_FILE, ScannedRecord,
                                    WriteToGzipTFRecord, scan_tfrecord_file, scan_tfrecords)

logger = logging.getLogger(__name__)

PRE_SPLIT = "pre_split"
SPLIT_BY_ID = "split_by_id"
TRAIN_SPLIT, EVAL_SPLIT = "train", "eval"
HASH_BUCKETS = 100   # eval_percent buckets out of 100
DEFAULT_ID_FEATURE = video_format.DEFAULT_VIDEO_KEYS.video_ids[0]   # "example/id", what convert/demo write

EXAMPLES_KEY = standard_component_specs.EXAMPLES_KEY
SPAN_CONFIG_KEY = "span_config"
LABELS_KEY = "labels"
DEAD_LETTER_KEY = "dead_letter"
STATS_KEY = "ingest_stats"
INGEST_STATS_FILENAME = "ingest_stats.json"
DEAD_LETTER_FILE_PREFIX = "dead_letter"
_PARTS_DIR = "_parts"

# Why a record (or the rest of a file) was rejected: a closed set, like ClipGen's.
NOT_A_SEQUENCE_EXAMPLE = "not_a_sequence_example"
MISSING_ID = "missing_id"
DUPLICATE_RECORD = "duplicate_record"
DUPLICATE_ID_ACROSS_SPLITS = "duplicate_id_across_splits"
REJECT_REASONS = (NOT_A_SEQUENCE_EXAMPLE, CORRUPT_RECORD, RECORD_TOO_LARGE, TRUNCATED_FILE, CORRUPT_FRAMING,
                  UNREADABLE_FILE, MISSING_ID, DUPLICATE_RECORD, DUPLICATE_ID_ACROSS_SPLITS)


# ---- configs ---------------------------------------------------------------------------------------------

def video_input_config(mode: str = PRE_SPLIT, train_pattern: str = "train/*", eval_pattern: str = "eval/*",
                       records_pattern: str = "videos-*.tfrecord*") -> example_gen_pb2.Input:
    """Which files under input_base are read, and (PRE_SPLIT) into which split."""
    if mode == PRE_SPLIT:
        return example_gen_pb2.Input(splits=[
            example_gen_pb2.Input.Split(name=TRAIN_SPLIT, pattern=train_pattern),
            example_gen_pb2.Input.Split(name=EVAL_SPLIT, pattern=eval_pattern)])
    if mode == SPLIT_BY_ID:
        return example_gen_pb2.Input(splits=[example_gen_pb2.Input.Split(name="all", pattern=records_pattern)])
    raise ValueError(f"mode must be {PRE_SPLIT!r} or {SPLIT_BY_ID!r}, got {mode!r}")


def split_by_id_output_config(eval_percent: int = 25,
                              id_feature: str = DEFAULT_ID_FEATURE) -> example_gen_pb2.Output:
    """train/eval by hash of the context feature ``id_feature`` (eval gets ``eval_percent`` of 100 buckets)."""
    if not isinstance(eval_percent, int) or isinstance(eval_percent, bool) or not 1 <= eval_percent <= 99:
        raise ValueError(f"eval_percent must be an int in [1, 99], got {eval_percent!r}")
    _check_id_feature(id_feature)
    return example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(
        splits=[example_gen_pb2.SplitConfig.Split(name=TRAIN_SPLIT, hash_buckets=HASH_BUCKETS - eval_percent),
                example_gen_pb2.SplitConfig.Split(name=EVAL_SPLIT, hash_buckets=eval_percent)],
        partition_feature_name=id_feature))


def _check_id_feature(id_feature: str) -> None:
    if not isinstance(id_feature, str) or not id_feature:
        raise ValueError(f"id_feature must be a non-empty feature name, got {id_feature!r}")


# ---- the Beam pipeline -------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Kept:
    """A record that parsed, on its way to de-duplication (sortable by where it was read)."""
    split_order: int
    path: str
    index: int
    out_split: str
    video_id: str | None
    digest: str
    data: bytes
    tag: str = ""           # the span's tag ("span-00007"; "" for unnumbered input): outputs are per span


def _feature_id(feature) -> str | None:
    kind = feature.WhichOneof("kind")
    if kind == "bytes_list" and feature.bytes_list.value:
        return feature.bytes_list.value[0].decode("utf-8", "replace")
    if kind == "int64_list" and feature.int64_list.value:
        return str(feature.int64_list.value[0])
    return None


_DEAD = "dead_letter"
_OUTCOMES = "outcomes"


class _ReadFileFn(beam.DoFn):
    """A file path -> (dedupe key, _Kept) per record that parses; dead letters and outcomes for the rest."""

    def __init__(self, split: str, split_order: int, id_feature: str, output_splits: list[tuple[str, int]] | None,
                 max_record_bytes: int, tag: str = ""):
        self._split, self._order, self._id_feature, self._tag = split, split_order, id_feature, tag
        self._output_splits = output_splits   # [(name, hash_buckets)] when splitting by id, else None
        self._max_record_bytes = max_record_bytes

    def setup(self):
        self._rejected = {r: Metrics.counter(f"Ingest.{self._split}", f"rejected.{r}") for r in REJECT_REASONS}
        self._records = Metrics.counter(f"Ingest.{self._split}", "records_read")
        if self._output_splits:
            self._bounds = []
            total = 0
            for _, buckets in self._output_splits:
                total += buckets
                self._bounds.append(total)

    def process(self, path: str):
        import tensorflow as tf
        yield beam.pvalue.TaggedOutput(_OUTCOMES, ("file", self._split, None))
        for item in scan_tfrecord_file(path, self._max_record_bytes):
            if item.data is None:
                yield from self._reject(f"{path}#{item.index}", item.reason, item.detail, path, item.index)
                continue
            self._records.inc()
            seq = tf.train.SequenceExample()
            try:
                seq.ParseFromString(item.data)
            except Exception as exc:  # protobuf's DecodeError has no stable import path across versions
                yield from self._reject(f"{path}#{item.index}", NOT_A_SEQUENCE_EXAMPLE,
                                        f"record {item.index} ({len(item.data)} bytes) does not parse: {exc}",
                                        path, item.index)
                continue
            ctx = seq.context.feature
            feature = ctx[self._id_feature] if self._id_feature in ctx else None
            video_id = _feature_id(feature) if feature is not None else None
            out_split = self._split
            if self._output_splits:
                if video_id is None:
                    yield from self._reject(f"{path}#{item.index}", MISSING_ID,
                                            f"no bytes or int64 context feature {self._id_feature!r} to split by",
                                            path, item.index)
                    continue
                out_split = self.output_split(feature)
            digest = hashlib.sha1(item.data).hexdigest()
            # Per span: a span is ingested once and its clips reused by later windows, so it must not depend on
            # which other spans were read in the same run.
            key = f"{self._tag}|" + (f"id:{video_id}" if video_id is not None else f"sha1:{digest}")
            yield key, _Kept(self._order, path, item.index, out_split, video_id, digest, item.data, self._tag)

    def output_split(self, feature) -> str:
        """TFX's partition: sha256 of the deterministically serialized id Feature, mod the bucket total."""
        bucket = int(hashlib.sha256(feature.SerializeToString(deterministic=True)).hexdigest(), 16) % self._bounds[-1]
        return self._output_splits[bisect.bisect(self._bounds, bucket)][0]

    def _reject(self, video_id, reason, detail, path, index):
        self._rejected[reason].inc()
        yield beam.pvalue.TaggedOutput(_DEAD, (self._split, dead_letter_line(video_id, self._split, reason, detail,
                                                                             file=path, record_index=index)))
        yield beam.pvalue.TaggedOutput(_OUTCOMES, ("in", self._split, reason))


class _DedupeFn(beam.DoFn):
    """All records of one video id (or of one content hash) -> the ones kept, dead letters for duplicates."""

    def __init__(self, split_names: list[str]):
        self._split_names = split_names

    def process(self, keyed):
        _, records = keyed
        records = sorted(records, key=lambda r: (r.split_order, r.path, r.index))
        first = records[0]
        kept: dict[str, _Kept] = {}
        for r in records:
            split = self._split_names[r.split_order]
            video_id = r.video_id if r.video_id is not None else f"{r.path}#{r.index}"
            if r.split_order != first.split_order:
                reason = DUPLICATE_ID_ACROSS_SPLITS
                detail = (f"video id {r.video_id!r} is also in split {self._split_names[first.split_order]!r} "
                          f"({first.path}#{first.index}), where it is kept")
            elif r.digest in kept:
                reason = DUPLICATE_RECORD
                original = kept[r.digest]
                detail = f"byte-identical to {original.path}#{original.index}, which is kept"
            else:
                kept[r.digest] = r
                yield (r.out_split, r.tag), r.data
                yield beam.pvalue.TaggedOutput(_OUTCOMES, ("in", split, None))
                continue
            yield beam.pvalue.TaggedOutput(_DEAD, (split, dead_letter_line(video_id, split, reason, detail,
                                                                           file=r.path, record_index=r.index)))
            yield beam.pvalue.TaggedOutput(_OUTCOMES, ("in", split, reason))


def _empty_split_stats() -> dict:
    return {"files": 0, "records_in": 0, "records_ok": 0, "rejected": 0, "rejected_by_reason": {}}


class IngestStatsFn(beam.CombineFn):
    """Outcomes -> {"inputs": {split: counts}, "outputs": {split: examples_out}}; constant memory."""

    def create_accumulator(self) -> dict:
        return {"inputs": {}, "outputs": {}}

    def add_input(self, acc: dict, outcome: tuple) -> dict:
        kind, split, reason = outcome
        if kind == "out":
            acc["outputs"][split] = acc["outputs"].get(split, 0) + 1
            return acc
        s = acc["inputs"].setdefault(split, _empty_split_stats())
        if kind == "file":
            s["files"] += 1
        else:
            count_outcome(s, "records", reason)
        return acc

    def merge_accumulators(self, accumulators: Iterable[dict]) -> dict:
        merged = self.create_accumulator()
        for acc in accumulators:
            for split, n in acc["outputs"].items():
                merged["outputs"][split] = merged["outputs"].get(split, 0) + n
            for split, s in acc["inputs"].items():
                add_split_counts(merged["inputs"].setdefault(split, _empty_split_stats()), s)
        return merged

    def extract_output(self, acc: dict) -> dict:
        return acc


def record_window(examples: types.Artifact, window: spans.Window, ingested: list, reused: dict) -> None:
    """On the examples artifact: the newest span and version (the standard properties ExampleGen sets), the window
    (``window``: spans, versions, fingerprints; ``ingested_spans``) and the store entries of the spans whose clips
    ClipGen reuses (``reused_clips``)."""
    examples.span = int(window.newest.span or 0)
    if window.newest.version is not None:
        examples.version = int(window.newest.version)
    examples.set_string_custom_property(WINDOW_PROPERTY, json.dumps(
        {"kind": window.kind, "skipped": window.skipped,
         "spans": [{"span": s.span, "version": s.version, "fingerprint": s.fingerprint, "tag": s.tag}
                   for s in window.spans]}, sort_keys=True))
    examples.set_string_custom_property(INGESTED_PROPERTY, json.dumps(ingested))
    examples.set_string_custom_property(REUSED_PROPERTY, json.dumps({str(k): v for k, v in reused.items()},
                                                                    sort_keys=True))


def check_accounting(stats: dict) -> None:
    """Every record (or lost region) of every input split is either ok or rejected, and every ok one is written."""
    for split, s in stats["inputs"].items():
        check_split_accounting("Ingest", split, s, unit="records")
    ok = sum(s["records_ok"] for s in stats["inputs"].values())
    out = sum(stats["outputs"].values())
    if ok != out:
        raise RuntimeError(f"Ingest: {ok} records accepted but {out} written ({stats['outputs']})")


class Executor(base_beam_executor.BaseBeamExecutor):
    """Reads every input file tolerantly, splits (as given or by id), de-duplicates, writes examples, dead letters
    and statistics, then checks the accounting and the rejected fraction."""

    def Do(self, input_dict: dict[str, list[types.Artifact]], output_dict: dict[str, list[types.Artifact]],
           exec_properties: dict[str, Any]) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        input_config = example_gen_pb2.Input()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.INPUT_CONFIG_KEY], input_config)
        output_config = example_gen_pb2.Output()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.OUTPUT_CONFIG_KEY], output_config)
        input_base = exec_properties[standard_component_specs.INPUT_BASE_KEY]
        id_feature = exec_properties.get("id_feature") or DEFAULT_ID_FEATURE
        max_record_bytes = int(exec_properties.get("max_record_bytes") or DEFAULT_MAX_RECORD_BYTES)
        max_fraction = float(exec_properties.get("max_rejected_fraction", 1.0))
        check_max_rejected_fraction(max_fraction)

        output_names = example_gen_utils.generate_output_split_names(input_config, output_config)
        by_id = None
        if output_config.split_config.splits:
            if len(input_config.splits) != 1:
                raise ValueError("Ingest: an output split config needs exactly one input split, got "
                                 f"{[s.name for s in input_config.splits]}")
            if output_config.split_config.partition_feature_name:
                id_feature = output_config.split_config.partition_feature_name
            by_id = [(s.name, s.hash_buckets) for s in output_config.split_config.splits]
        input_names = [s.name for s in input_config.splits]

        examples = artifact_utils.get_single_instance(output_dict[EXAMPLES_KEY])
        dead_letter = artifact_utils.get_single_instance(output_dict[DEAD_LETTER_KEY])
        stats_artifact = artifact_utils.get_single_instance(output_dict[STATS_KEY])
        examples.split_names = artifact_utils.encode_split_names(output_names)
        parts_path = os.path.join(stats_artifact.uri, _PARTS_DIR, "stats.json")

        patterns = {split.name: split.pattern for split in input_config.splits}
        span_config = exec_properties.get(SPAN_CONFIG_KEY) or spans.span_config_json(patterns)
        window = spans.resolve_from_config(input_base, span_config)
        store = exec_properties.get(CLIP_STORE_KEY) or ""
        reused = {s.span: entry for s in window.spans if (entry := spans.reusable_entry(store, s))}
        todo = [s for s in window.spans if s.span not in reused]
        logger.info("Ingest: window %s; reading %s%s", window.describe(json.loads(span_config)["patterns"]),
                    [s.span for s in todo] if window.kind else "all files",
                    f"; clips of spans {sorted(reused)} are reused from the clip store {store}" if reused else "")

        # The run's label map, read first: a missing one fails the run before any work
        configured = json.loads(exec_properties.get(LABELS_KEY) or "[]")
        labels = configured or label_maps.window_labels(
            input_base, json.loads(span_config).get("label_map", spans.DEFAULT_LABEL_MAP), [s.span for s in window.spans])
        logger.info("Ingest: label map of the run (%s): %s", "configured" if configured else "from the data", labels)

        started = time.monotonic()
        if todo:
            self._run_beam(input_base, input_config, todo, output_names, id_feature, by_id, max_record_bytes,
                           examples, dead_letter.uri, parts_path)
        elapsed = time.monotonic() - started

        stats = {"inputs": {}, "outputs": {}}
        if todo:
            stats = json.loads(io_utils.read_string_file(parts_path))
            io_utils.delete_dir(os.path.dirname(parts_path))
        for name in input_names:   # a split whose files held no records at all still gets its line
            stats["inputs"].setdefault(name, _empty_split_stats())
        for name in output_names:
            stats["outputs"].setdefault(name, 0)
        stats["elapsed_s"] = round(elapsed, 3)
        io_utils.write_string_file(os.path.join(stats_artifact.uri, INGEST_STATS_FILENAME),
                                   json.dumps(stats, indent=2, sort_keys=True))
        check_accounting(stats)
        examples_utils.set_payload_format(examples, example_gen_pb2.PayloadFormat.FORMAT_TF_SEQUENCE_EXAMPLE)
        examples_utils.set_file_format(examples, "tfrecords_gzip")
        fingerprint = exec_properties.get(example_gen_utils.FINGERPRINT_PROPERTY_NAME)
        if fingerprint:   # what the cache key saw (TFX's driver records the same property on local runs)
            examples.set_string_custom_property(example_gen_utils.FINGERPRINT_PROPERTY_NAME, str(fingerprint))
        for name, n in stats["outputs"].items():
            examples.set_int_custom_property(f"{name}_examples", int(n))
        record_window(examples, window, [s.span for s in todo], reused)
        label_maps.record(examples, labels, label_maps.CONFIG if configured else label_maps.DATA)
        for name, s in stats["inputs"].items():
            logger.info("Ingest[%s]: %d files, %d records in, %d ok, %d rejected %s", name, s["files"],
                        s["records_in"], s["records_ok"], s["rejected"], s["rejected_by_reason"])
        logger.info("Ingest: wrote %s examples in %.1f s", stats["outputs"], elapsed)
        enforce_max_rejected_fraction("Ingest", stats["inputs"], "records", max_fraction, dead_letter.uri)


    def _run_beam(self, input_base: str, input_config: example_gen_pb2.Input, todo: list[spans.SpanFiles],
                  output_names: list[str], id_feature: str, by_id: list | None, max_record_bytes: int,
                  examples: types.Artifact, dead_letter_uri: str, parts_path: str) -> None:
        """Reads the files of the spans in ``todo``: examples per output split and span, dead letters per input
        split, and the counts as one JSON object at ``parts_path``."""
        input_names = [s.name for s in input_config.splits]
        with self._make_beam_pipeline() as pipeline:
            records, dead, outcomes = [], [], []
            for order, split in enumerate(input_config.splits):
                for span in todo:
                    files = [os.path.join(input_base, rel) for rel, _, _ in span.files[split.name]]
                    where = f"[{split.name}]" + (f"[{span.tag}]" if span.tag else "")
                    logger.info("Ingest%s: %d files", where, len(files))
                    read = (pipeline
                            | f"Files{where}" >> beam.Create(files)
                            | f"SpreadFiles{where}" >> beam.Reshuffle()
                            | f"Read{where}" >> beam.ParDo(_ReadFileFn(
                                split.name, order, id_feature, by_id, max_record_bytes, span.tag)).with_outputs(
                                    _DEAD, _OUTCOMES, main="records"))
                    records.append(read.records)
                    dead.append(read[_DEAD])
                    outcomes.append(read[_OUTCOMES])
            # One shuffle, by video id: de-duplication needs it, and it spreads the writes as ExampleGen's does.
            deduped = (records | "FlattenRecords" >> beam.Flatten()
                       | "GroupById" >> beam.GroupByKey()
                       | "Dedupe" >> beam.ParDo(_DedupeFn(input_names)).with_outputs(_DEAD, _OUTCOMES, main="kept"))
            dead.append(deduped[_DEAD])
            outcomes.append(deduped[_OUTCOMES])
            outputs_by = [(name, span.tag) for name in output_names for span in todo]   # one file set per span
            outputs = deduped.kept | "ByOutputSplit" >> beam.Partition(
                lambda kv, n: outputs_by.index(kv[0]), len(outputs_by))
            for (name, tag), part in zip(outputs_by, outputs):
                where = f"[{name}]" + (f"[{tag}]" if tag else "")
                data = part | f"Data{where}" >> beam.Values()
                _ = data | f"Write{where}" >> WriteToGzipTFRecord(
                    os.path.join(artifact_utils.get_split_uri([examples], name), examples_file_prefix(tag)))
                outcomes.append(data | f"CountOut{where}" >> beam.Map(lambda _, n=name: ("out", n, None)))
            all_dead = dead | "FlattenDeadLetters" >> beam.Flatten()
            for name in input_names:
                _ = (all_dead
                     | f"DeadLetters[{name}]" >> beam.Filter(lambda kv, n=name: kv[0] == n)
                     | f"DeadLetterLines[{name}]" >> beam.Values()
                     | f"WriteDeadLetter[{name}]" >> WriteTextLines(
                         os.path.join(dead_letter_uri, f"Split-{name}", DEAD_LETTER_FILE_PREFIX),
                         file_name_suffix=".jsonl"))
            _ = (outcomes | "FlattenOutcomes" >> beam.Flatten()
                 | "CountOutcomes" >> beam.CombineGlobally(IngestStatsFn())
                 | "StatsToJson" >> beam.Map(lambda s: json.dumps(s, sort_keys=True))
                 | "WriteStats" >> WriteTextLines(parts_path, shard_name_template=""))


# ---- the component -----------------------------------------------------------------------------------------

class IngestDeadLetter(types.Artifact):
    """Records Ingest rejected: ``Split-<input split>/dead_letter-*.jsonl``, one JSON object a line."""
    TYPE_NAME = "bresnet.IngestDeadLetter"


class IngestStatistics(types.Artifact):
    """``ingest_stats.json``: per input split files, records_in, records_ok, rejected, rejected_by_reason; per
    output split examples_out."""
    TYPE_NAME = "bresnet.IngestStatistics"


class VideoIngestSpec(standard_component_specs.FileBasedExampleGenSpec):
    PARAMETERS = {
        **standard_component_specs.FileBasedExampleGenSpec.PARAMETERS,
        "id_feature": ExecutionParameter(type=str),
        "max_rejected_fraction": ExecutionParameter(type=float),
        "max_record_bytes": ExecutionParameter(type=int),
        # A digest of the input files, set at run time by a task upstream on Kubeflow (pipeline/kfp_caching.py), so
        # that open-source KFP's cache key, which sees only parameters, changes when the files do. TFX's own
        # ExampleGen driver (LocalDagRunner, Vertex's preCacheCheck) sets the same key from its file fingerprint.
        "input_fingerprint": ExecutionParameter(type=str, optional=True),
        # The split patterns as given, with span specs ({SPAN}, {YYYY}{MM}{DD}, {VERSION}), and the window
        # (components/spans.py). input_config carries the same patterns with every spec as "*": TFX's driver then
        # fingerprints every span's files and leaves span resolution to the executor, which does it the same way
        # under every orchestrator.
        SPAN_CONFIG_KEY: ExecutionParameter(type=str, optional=True),
        # Where ClipGen records which span's clips it cut (components/spans.py); "" when the window is one span.
        CLIP_STORE_KEY: ExecutionParameter(type=str, optional=True),
        # Configured labels (JSON list); empty: the window's label maps, read at run time (components/label_maps.py).
        LABELS_KEY: ExecutionParameter(type=str, optional=True),
    }
    OUTPUTS = {
        EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
        DEAD_LETTER_KEY: ChannelParameter(type=IngestDeadLetter),
        STATS_KEY: ChannelParameter(type=IngestStatistics),
    }


class VideoIngest(FileBasedExampleGen):
    """File-based ExampleGen for video SequenceExample TFRecords that dead-letters bad records (module docstring)."""
    SPEC_CLASS = VideoIngestSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)

    def __init__(self, input_base: str, input_config: example_gen_pb2.Input,
                 output_config: example_gen_pb2.Output | None = None, *, id_feature: str = DEFAULT_ID_FEATURE,
                 max_rejected_fraction: float = 1.0, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
                 input_fingerprint: str = "", span_config: str = "", clip_store: str = "",
                 labels: Sequence[str] = ()):
        _check_id_feature(id_feature)
        check_max_rejected_fraction(max_rejected_fraction)
        if isinstance(max_record_bytes, bool) or not isinstance(max_record_bytes, int) or max_record_bytes < 1:
            raise ValueError(f"max_record_bytes must be a positive int, got {max_record_bytes!r}")
        spec = VideoIngestSpec(
            input_base=input_base, input_config=input_config,
            output_config=output_config or example_gen_utils.make_default_output_config(input_config),
            custom_config=None, range_config=None,
            output_data_format=example_gen_pb2.PayloadFormat.FORMAT_TF_SEQUENCE_EXAMPLE,
            output_file_format=example_gen_pb2.FileFormat.FORMAT_TFRECORDS_GZIP,
            id_feature=id_feature, max_rejected_fraction=float(max_rejected_fraction),
            max_record_bytes=max_record_bytes, input_fingerprint=input_fingerprint,
            span_config=span_config or spans.span_config_json({s.name: s.pattern for s in input_config.splits}),
            clip_store=clip_store, labels=json.dumps(list(labels)),
            examples=types.Channel(type=standard_artifacts.Examples),
            dead_letter=types.Channel(type=IngestDeadLetter),
            ingest_stats=types.Channel(type=IngestStatistics))
        # FileBasedExampleGen.__init__ would build its own spec without our outputs; its driver and its Kubeflow
        # handling (input fingerprint, span) are what we keep by subclassing.
        base_beam_component.BaseBeamComponent.__init__(self, spec=spec)


def make_video_example_gen(input_base: str, mode: str = PRE_SPLIT, *, train_pattern: str = "train/*",
                           eval_pattern: str = "eval/*", records_pattern: str = "videos-*.tfrecord*",
                           eval_percent: int = 25, id_feature: str = DEFAULT_ID_FEATURE,
                           max_rejected_fraction: float = 1.0,
                           max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES, window_spans: int = 1,
                           newest_span=spans.LATEST, on_missing_span: str = spans.FAIL,
                           clip_store: str = "", label_map: str = spans.DEFAULT_LABEL_MAP,
                           labels: Sequence[str] = ()) -> VideoIngest:
    """VideoIngest reading video SequenceExample TFRecords under ``input_base`` (see module docstring).

    Patterns are globs relative to ``input_base``; TFRecords may be uncompressed or gzipped (``.gz``). They may
    hold TFX's span specs; ``window_spans``, ``newest_span`` and ``on_missing_span`` choose the spans read
    (components/spans.py), and ``clip_store`` is where ClipGen records the spans it cut, so that a later run reads
    only its new spans. ``labels``: the run's label map when configured; empty: the union of the window's label map
    files (``label_map``, relative to ``input_base``; components/label_maps.py).
    ``eval_percent`` applies to SPLIT_BY_ID only; ``id_feature`` names the video id (split key in SPLIT_BY_ID,
    de-duplication key in both modes)."""
    if not isinstance(input_base, str) or not input_base:
        raise ValueError(f"input_base must be a non-empty path, got {input_base!r}")
    raw = video_input_config(mode, train_pattern, eval_pattern, records_pattern)
    patterns = {split.name: split.pattern for split in raw.splits}
    span_config = spans.span_config_json(patterns, window_spans=window_spans, newest_span=newest_span,
                                         on_missing_span=on_missing_span, label_map=label_map)
    input_config = video_input_config(mode, *(spans.SpanPattern(p).glob() for p in
                                              (train_pattern, eval_pattern, records_pattern)))
    output_config = split_by_id_output_config(eval_percent, id_feature) if mode == SPLIT_BY_ID else None
    return VideoIngest(input_base=input_base, input_config=input_config, output_config=output_config,
                       id_feature=id_feature, max_rejected_fraction=max_rejected_fraction,
                       max_record_bytes=max_record_bytes, span_config=span_config,
                       clip_store=clip_store if window_spans > 1 else "", labels=labels)
