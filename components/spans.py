"""Ingest's input files over time: glob matching, ``{SPAN}``/``{VERSION}``/date patterns, the training window,
and the store that lets a run reuse the clips of spans an earlier run already cut.

Pure functions and small records; no TFX, no Beam pipeline. Ingest's executor, ClipGen's executor, the KFP
fingerprint task (pipeline/kfp_caching.py) and the local runner all call the same ``resolve_window``, so each of
them sees the same window.

Patterns (relative to the input base) follow TFX's ExampleGen span specs (tfx/components/example_gen/utils.py,
``verify_split_pattern_specs``, which validates them here too): ``{SPAN}`` (or ``{SPAN:4}``, zero-padded to 4
digits) is an integer span; ``{YYYY}``, ``{MM}`` and ``{DD}`` together are a date, whose span number is the count of
days since 1970-01-01, as in TFX (``date_to_span_number``); ``{VERSION}`` is optional beside either, and the highest
version of a span is read. A pattern without specs is one unnumbered span (``None``): the whole input, as before.

The window: the newest span is ``newest_span`` ("latest": the highest span present in every split; "today": the
run's UTC date; a number or a YYYY-MM-DD date: that span), and the window is it and the ``window_spans - 1``
highest spans present before it. When the newest span is missing, ``on_missing_span`` decides: "fail" raises
``MissingSpanError`` naming the pattern and span; "skip" resolves the window that ends at the newest span present
and marks it ``skipped`` (the caller then does no new work: the local runner does not run the pipeline, and on
Kubeflow the fingerprint of an unchanged window hits the cache at every step).
"""
from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import json
import logging
import os
import re
from typing import Mapping, Sequence

log = logging.getLogger(__name__)

LATEST, TODAY = "latest", "today"
FAIL, SKIP = "fail", "skip"
ON_MISSING_SPAN = (FAIL, SKIP)
_EPOCH = datetime.date(1970, 1, 1)
_SPAN_RE = re.compile(r"\{SPAN(?::(\d+))?\}")
_VERSION_RE = re.compile(r"\{VERSION(?::(\d+))?\}")
_DATE_SPECS = ("{YYYY}", "{MM}", "{DD}")


DEFAULT_LABEL_MAP = "label_map.txt"
# Ingest's and ClipGen's shared names: the clip store parameter, and the properties Ingest records the window in.
CLIP_STORE_KEY = "clip_store"
WINDOW_PROPERTY, INGESTED_PROPERTY, REUSED_PROPERTY = "window", "ingested_spans", "reused_clips"


def examples_file_prefix(tag: str) -> str:
    """Ingest's and ClipGen's file name prefix for one span: data_tfrecord, or data_tfrecord-span-00007."""
    return "data_tfrecord" + (f"-{tag}" if tag else "")


class MissingSpanError(ValueError):
    """The window's newest span has no files (``on_missing_span: fail``)."""


# ---- globs, exactly as Beam matches them ---------------------------------------------------------------------

def translate_pattern(pattern: str) -> str:
    """A glob as a regular expression, exactly as Beam's ``FileSystem.translate_pattern`` (which Ingest's
    ``FileSystems.match`` uses): ``*`` is ``[^/\\\\]*``, ``**`` is ``.*``, ``?`` one character, ``[...]`` a class."""
    i, n, res = 0, len(pattern), ""
    while i < n:
        c = pattern[i]
        i += 1
        if c == "*":
            if i < n and pattern[i] == "*":
                res += ".*"
                i += 1
            else:
                res += r"[^/\\]*"
        elif c == "?":
            res += "."
        elif c == "[":
            j = i
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                res += "\\["
            else:
                stuff = pattern[i:j].replace("\\", "\\\\")
                i = j + 1
                if stuff[0] == "!":
                    stuff = "^" + stuff[1:]
                elif stuff[0] == "^":
                    stuff = "\\" + stuff
                res += f"[{stuff}]"
        else:
            res += re.escape(c)
    return "(?ms)" + res + r"\Z"


def _literal_prefix(pattern: str) -> str:
    match = re.search(r"[*?\[]", pattern)
    return pattern[:match.start()] if match else pattern


def list_input_files(input_base: str, splits: Sequence[tuple[str, str]],
                     checksum: bool = True) -> list[tuple[str, str, int, str]]:
    """``(split, name relative to input_base, size, base64 CRC32C)`` of every file the split globs match, in
    split order then name order. gs://: from object metadata (nothing is downloaded); local: read and checksummed,
    or with ``checksum=False`` the modification time instead ("mtime:<ns>"), which costs no read."""
    from components import gcs
    base = input_base.rstrip("/")
    rows = []
    if gcs.is_gcs(base):
        bucket, prefix = gcs.split_gcs(base)
        prefix = prefix + "/" if prefix else ""
        client = gcs.client()
        for split, pattern in splits:
            regex = re.compile(translate_pattern(pattern))
            found = []
            for blob in client.list_blobs(bucket, prefix=prefix + _literal_prefix(pattern)):
                rel = blob.name[len(prefix):]
                if not blob.name.endswith("/") and regex.match(rel):
                    found.append((split, rel, int(blob.size or 0), blob.crc32c or ""))
            rows.extend(sorted(found))
    else:
        for split, pattern in splits:
            regex = re.compile(translate_pattern(pattern))
            start = os.path.join(base, os.path.dirname(_literal_prefix(pattern)))
            found = []
            for dirpath, dirnames, filenames in os.walk(start):
                dirnames.sort()
                for filename in filenames:
                    path = os.path.join(dirpath, filename)
                    rel = os.path.relpath(path, base).replace(os.sep, "/")
                    if regex.match(rel) and os.path.isfile(path):
                        stat = os.stat(path)
                        found.append((split, rel, stat.st_size, gcs.crc32c_of_file(path) if checksum
                                      else f"mtime:{stat.st_mtime_ns}"))
            rows.extend(sorted(found))
    return rows


def files_digest(rows: Sequence[tuple[str, str, int, str]]) -> str:
    digest = hashlib.sha256()
    for split, name, size, crc in rows:
        digest.update(f"{split}\t{name}\t{size}\t{crc}\n".encode())
    return "sha256:" + digest.hexdigest()


# ---- span patterns ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class SpanPattern:
    """One split's pattern with TFX span specs, relative to the input base."""
    pattern: str

    def __post_init__(self):
        # TFX's rules (example_gen/utils.py, verify_split_pattern_specs), checked here without importing TFX's
        # components package (seconds of start-up in the fingerprint task).
        if not isinstance(self.pattern, str) or not self.pattern:
            raise ValueError(f"an input pattern must be a non-empty glob, got {self.pattern!r}")
        spans, versions = len(_SPAN_RE.findall(self.pattern)), len(_VERSION_RE.findall(self.pattern))
        dates = [self.pattern.count(spec) for spec in _DATE_SPECS]
        problem = None
        if spans and any(dates):
            problem = "use {SPAN} or the date specs {YYYY}{MM}{DD}, not both"
        elif spans > 1 or versions > 1:
            problem = "{SPAN} and {VERSION} may each appear once"
        elif any(dates) and dates != [1, 1, 1]:
            problem = "a date needs each of {YYYY}, {MM} and {DD} exactly once"
        elif versions and not (spans or any(dates)):
            problem = "{VERSION} needs {SPAN} or a date beside it"
        if problem:
            raise ValueError(f"input pattern {self.pattern!r}: {problem}")

    @property
    def kind(self) -> str | None:
        """"span", "date" or None (no span specs)."""
        if _SPAN_RE.search(self.pattern):
            return "span"
        return "date" if "{YYYY}" in self.pattern else None

    @property
    def has_version(self) -> bool:
        return bool(_VERSION_RE.search(self.pattern))

    def glob(self) -> str:
        """The pattern with every spec as ``*``: what matches the files of all spans."""
        out = _VERSION_RE.sub("\0", _SPAN_RE.sub("\0", self.pattern))
        for spec in _DATE_SPECS:
            out = out.replace(spec, "\0")
        return re.sub("\0+", "*", out)   # {YYYY}{MM}{DD} is one "*": "**" would cross folders

    @functools.cached_property
    def _regex(self) -> re.Pattern:
        """Built once per pattern: ``parse`` runs for every listed file."""
        parts, i = [], 0
        spec_re = re.compile(r"\{SPAN(?::\d+)?\}|\{VERSION(?::\d+)?\}|\{YYYY\}|\{MM\}|\{DD\}")
        for match in spec_re.finditer(self.pattern):
            parts.append(translate_pattern(self.pattern[i:match.start()])[len("(?ms)"):-len(r"\Z")])
            spec = match.group(0)
            width = re.search(r":(\d+)\}", spec)
            digits = rf"\d{{{width.group(1)}}}" if width else r"\d+"
            name = {"{YYYY}": "year", "{MM}": "month", "{DD}": "day"}.get(spec)
            if name:
                digits = r"\d{4}" if name == "year" else r"\d{2}"
            else:
                name = "span" if spec.startswith("{SPAN") else "version"
            parts.append(f"(?P<{name}>{digits})")
            i = match.end()
        parts.append(translate_pattern(self.pattern[i:])[len("(?ms)"):-len(r"\Z")])
        return re.compile("(?ms)" + "".join(parts) + r"\Z")

    def parse(self, relative_path: str) -> tuple[int | None, int | None] | None:
        """(span, version) of a file that matches the pattern, None for one that does not."""
        match = self._regex.match(relative_path)
        if not match:
            return None
        groups = match.groupdict()
        version = int(groups["version"]) if groups.get("version") is not None else None
        if self.kind == "span":
            return int(groups["span"]), version
        if self.kind == "date":
            try:
                day = datetime.date(int(groups["year"]), int(groups["month"]), int(groups["day"]))
            except ValueError:
                return None    # e.g. 20261341: not a date, not a span
            return (day - _EPOCH).days, version
        return None, None

    def for_span(self, span: int | None) -> str:
        """The pattern with this span's number (or date) written in: a label map's path for a span."""
        if self.has_version:
            raise ValueError(f"{self.pattern!r}: a per-span file cannot have a {{VERSION}}")
        if span is None or self.kind is None:
            return self.pattern
        if self.kind == "date":
            day = _EPOCH + datetime.timedelta(days=span)
            return (self.pattern.replace("{YYYY}", f"{day.year:04d}").replace("{MM}", f"{day.month:02d}")
                    .replace("{DD}", f"{day.day:02d}"))
        return _SPAN_RE.sub(lambda m: str(span).zfill(int(m.group(1) or 0)), self.pattern)

    def format_span(self, span: int | None) -> str:
        """A span as the pattern writes it: 20261202 for a date pattern, 7 for a span pattern."""
        if span is None:
            return "(unnumbered)"
        if self.kind == "date":
            return (_EPOCH + datetime.timedelta(days=span)).strftime("%Y%m%d")
        return str(span)


def parse_newest_span(value, kind: str | None, today: datetime.date | None = None) -> int | None:
    """``ingest.newest_span`` as a span number; None for "latest"."""
    if value in (None, "", LATEST):
        return None
    if value == TODAY:
        if kind != "date":
            raise ValueError("newest_span 'today' needs date patterns ({YYYY}{MM}{DD})")
        today = today or datetime.datetime.now(datetime.timezone.utc).date()
        return (today - _EPOCH).days
    if isinstance(value, int) and not isinstance(value, bool):
        if kind == "date":
            raise ValueError(f"newest_span {value!r}: the patterns are dates, give YYYY-MM-DD")
        return value
    text = str(value)
    if kind == "date" and re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        return (datetime.date.fromisoformat(text) - _EPOCH).days
    if kind == "span" and text.isdigit():
        return int(text)
    raise ValueError(f"newest_span must be 'latest', 'today' (date patterns), a span number or YYYY-MM-DD, "
                     f"got {value!r} for {kind or 'unnumbered'} patterns")


# ---- the window ----------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class SpanFiles:
    """One span of the window: its version and, per split, its files (paths under the input base)."""
    span: int | None
    version: int | None
    files: Mapping[str, tuple[tuple[str, int, str], ...]]   # split -> ((relative path, size, crc32c), ...)

    @property
    def fingerprint(self) -> str:
        return files_digest([(split, *row) for split in sorted(self.files) for row in self.files[split]])

    @property
    def tag(self) -> str:
        """The span in file names: span-00007; '' for the unnumbered span."""
        return "" if self.span is None else f"span-{self.span:05d}"


@dataclasses.dataclass(frozen=True)
class Window:
    spans: tuple[SpanFiles, ...]        # oldest first; the last is the newest
    newest_expected: int | None          # the span asked for (None: latest)
    skipped: bool                        # the newest span asked for is missing and on_missing_span is skip
    kind: str | None

    @property
    def newest(self) -> SpanFiles:
        return self.spans[-1]

    def describe(self, patterns: Mapping[str, str]) -> str:
        fmt = SpanPattern(next(iter(patterns.values()))).format_span
        spans = ", ".join(fmt(s.span) + (f" v{s.version}" if s.version is not None else "") for s in self.spans)
        return f"spans [{spans}]" + (f" (span {fmt(self.newest_expected)} missing: skipped)" if self.skipped else "")


def _check_window(patterns: Mapping[str, str], window_spans: int, on_missing_span: str) -> str | None:
    """Validates the window's settings; the patterns' common kind of span spec ("span", "date" or None)."""
    if not patterns:
        raise ValueError("no input patterns")
    if isinstance(window_spans, bool) or not isinstance(window_spans, int) or window_spans < 1:
        raise ValueError(f"window_spans must be an integer >= 1, got {window_spans!r}")
    if on_missing_span not in ON_MISSING_SPAN:
        raise ValueError(f"on_missing_span must be one of {ON_MISSING_SPAN}, got {on_missing_span!r}")
    kinds = {SpanPattern(p).kind for p in patterns.values()}
    if len(kinds) != 1:
        raise ValueError(f"all input patterns must use the same span specs, got {dict(patterns)}")
    kind = kinds.pop()
    if kind is None and window_spans != 1:
        raise ValueError(f"window_spans {window_spans} needs {{SPAN}} or {{YYYY}}{{MM}}{{DD}} in the input "
                         f"patterns, got {dict(patterns)}")
    return kind


def resolve_window(input_base: str, patterns: Mapping[str, str], *, window_spans: int = 1,
                   newest_span=LATEST, on_missing_span: str = FAIL, today: datetime.date | None = None,
                   checksum: bool = False) -> Window:
    """The spans to train on (module docstring). ``patterns``: {split: pattern}; a span counts as present when
    every split has files for it (at one common version, the highest). A span's fingerprint is its files' names,
    sizes and, on gs://, CRC32Cs; local files are identified by modification time unless ``checksum`` (the KFP cache
    key's fingerprint, which must match a staged copy's), so Ingest does not read every file twice."""
    parsed = {split: SpanPattern(p) for split, p in patterns.items()}
    kind = _check_window(patterns, window_spans, on_missing_span)
    target = parse_newest_span(newest_span, kind, today)

    rows = list_input_files(input_base, [(split, p.glob()) for split, p in parsed.items()], checksum=checksum)
    found: dict[tuple[int | None, int | None], dict[str, list]] = {}
    for split, rel, size, crc in rows:
        key = parsed[split].parse(rel)
        if key is not None:
            found.setdefault(key, {}).setdefault(split, []).append((rel, size, crc))
    present: dict[int | None, int | None] = {}   # span -> highest version present in every split
    for (span, version), by_split in found.items():
        if set(by_split) == set(parsed) and (span not in present or (version or 0) > (present[span] or 0)):
            present[span] = version
    if not present:
        raise FileNotFoundError(f"Ingest: no span has files in every split under {input_base}: "
                                f"{ {s: p.pattern for s, p in parsed.items()} }")
    first = next(iter(parsed.values()))
    skipped = False
    if kind is None:
        chosen = [None]
    else:
        newest = max(present) if target is None else target
        if newest not in present:
            where = ", ".join(f"{s}: {p.pattern}" for s, p in parsed.items())
            message = (f"newest span {first.format_span(newest)} is missing under {input_base} ({where}); "
                       f"spans present: {', '.join(first.format_span(s) for s in sorted(present)[-5:])}")
            older = [s for s in present if s < newest]
            if on_missing_span == FAIL:
                raise MissingSpanError(message + " (ingest.on_missing_span: fail)")
            if not older:
                raise MissingSpanError(message + ", and no earlier span to fall back on")
            log.warning("%s: skipped, the window ends at %s (ingest.on_missing_span: skip)", message,
                        first.format_span(max(older)))
            newest, skipped = max(older), True
        chosen = sorted(s for s in present if s <= newest)[-window_spans:]
        if len(chosen) < window_spans:
            log.info("window of %d spans: only %d present up to span %s", window_spans, len(chosen),
                     first.format_span(newest))
    spans = tuple(SpanFiles(span, present[span], {split: tuple(sorted(found[(span, present[span])][split]))
                                                  for split in parsed})
                  for span in chosen)
    return Window(spans, target, skipped, kind)


# ---- the clip store: which span's clips an earlier run cut, and where -----------------------------------------

def store_entry_path(store: str, span: int) -> str:
    return f"{store.rstrip('/')}/span-{span:05d}.json"


def read_store_entry(store: str, span: int) -> dict | None:
    import tensorflow as tf
    path = store_entry_path(store, span)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def write_store_entry(store: str, span: int, entry: Mapping) -> None:
    """Written whole then renamed: a reader sees the old entry or the new one, never half of one."""
    import tensorflow as tf
    path = store_entry_path(store, span)
    tf.io.gfile.makedirs(os.path.dirname(path))
    tmp = f"{path}.tmp-{os.getpid()}"
    with tf.io.gfile.GFile(tmp, "w") as f:
        json.dump(dict(entry), f, indent=1, sort_keys=True)
    tf.io.gfile.rename(tmp, path, overwrite=True)


def reusable_entry(store: str, span_files: SpanFiles) -> dict | None:
    """The store's entry for this span when its clips were cut from exactly these files and are all still there."""
    import tensorflow as tf
    if not store or span_files.span is None:
        return None
    entry = read_store_entry(store, span_files.span)
    if not entry or entry.get("fingerprint") != span_files.fingerprint or entry.get("version") != span_files.version:
        return None
    for split, names in entry.get("files", {}).items():
        for name in names:
            if not tf.io.gfile.exists(f"{entry['clips_uri'].rstrip('/')}/Split-{split}/{name}"):
                log.info("clip store: span %s's file %s/Split-%s/%s is gone; the span is cut again",
                         span_files.span, entry["clips_uri"], split, name)
                return None
    return entry


# ---- Ingest's ``span_config`` parameter ----------------------------------------------------------------------

def span_config_json(patterns: Mapping[str, str], *, window_spans: int = 1, newest_span=LATEST,
                     on_missing_span: str = FAIL, label_map: str = DEFAULT_LABEL_MAP) -> str:
    """What Ingest carries as its ``span_config`` parameter (validated now, resolved at run time). ``label_map``:
    the label map file relative to the input base, per span when it holds the patterns' span specs
    (components/label_maps.py)."""
    kind = _check_window(patterns, window_spans, on_missing_span)
    label_kind = SpanPattern(label_map).kind
    if label_kind not in (None, kind) or SpanPattern(label_map).has_version:
        raise ValueError(f"label_map {label_map!r} must use the input patterns' span specs or none, and no "
                         f"{{VERSION}} (patterns: {dict(patterns)})")
    parse_newest_span(newest_span, kind)
    return json.dumps({"patterns": dict(patterns), "window_spans": window_spans, "newest_span": newest_span,
                       "on_missing_span": on_missing_span, "label_map": label_map}, sort_keys=True)


def label_map_files(label_map: str, span_numbers: Sequence[int | None]) -> list[str]:
    """The label map files (relative to the input base) of these spans: one, or one per span."""
    pattern = SpanPattern(label_map)
    return sorted({pattern.for_span(span) for span in span_numbers})


def resolve_from_config(input_base: str, span_config: str, today: datetime.date | None = None,
                        checksum: bool = False) -> Window:
    c = json.loads(span_config)
    return resolve_window(input_base, c["patterns"], window_spans=c["window_spans"], newest_span=c["newest_span"],
                          on_missing_span=c["on_missing_span"], today=today, checksum=checksum)
