"""Span patterns and the training window (components/spans.py), on real files in a temporary folder."""
import datetime
import os

import pytest

from components import spans
from components.spans import MissingSpanError, SpanPattern, resolve_window


def _touch(root, rel, data=b"x"):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


@pytest.fixture
def span_data(tmp_path):
    for span in (1, 2, 4):
        _touch(tmp_path, f"span-{span}/train/a.tfrecord", b"t" * span)
        _touch(tmp_path, f"span-{span}/eval/a.tfrecord", b"e" * span)
    _touch(tmp_path, "span-5/train/a.tfrecord")        # no eval files: span 5 is not complete
    return str(tmp_path)


PATTERNS = {"train": "span-{SPAN}/train/*", "eval": "span-{SPAN}/eval/*"}


def test_patterns_follow_tfx_span_specs():
    assert SpanPattern("span-{SPAN}/train/*").parse("span-12/train/x.gz") == (12, None)
    assert SpanPattern("s{SPAN:3}/v{VERSION}/*").parse("s007/v2/x") == (7, 2)
    assert SpanPattern("s{SPAN:3}/v{VERSION}/*").parse("s07/v2/x") is None          # the width is exact
    date = SpanPattern("day={YYYY}{MM}{DD}/train/*")
    assert date.parse("day=19700102/train/x") == (1, None)                           # TFX: days since 1970-01-01
    assert date.parse("day=20261341/train/x") is None                                # not a date
    assert date.glob() == "day=*/train/*" and date.format_span(1) == "19700102"
    assert SpanPattern("train/*").kind is None and SpanPattern("train/*").glob() == "train/*"
    for bad, problem in [("{SPAN}/{YYYY}{MM}{DD}", "not both"), ("{SPAN}/{SPAN}", "once"),
                         ("{YYYY}{MM}/x", "exactly once"), ("{VERSION}/x", "needs {SPAN}")]:
        with pytest.raises(ValueError, match=problem):
            SpanPattern(bad)


def test_the_window_is_the_newest_complete_spans(span_data):
    window = resolve_window(span_data, PATTERNS, window_spans=2)
    assert [s.span for s in window.spans] == [2, 4]          # span 5 lacks eval files: not present
    assert window.newest.files["train"] == (("span-4/train/a.tfrecord", 4, window.newest.files["train"][0][2]),)
    assert not window.skipped
    assert [s.span for s in resolve_window(span_data, PATTERNS, window_spans=9).spans] == [1, 2, 4]
    assert [s.span for s in resolve_window(span_data, PATTERNS, newest_span=2, window_spans=2).spans] == [1, 2]
    # The fingerprint of a span changes with its files only.
    before = {s.span: s.fingerprint for s in resolve_window(span_data, PATTERNS, window_spans=3).spans}
    _touch(span_data, "span-4/train/b.tfrecord")
    after = {s.span: s.fingerprint for s in resolve_window(span_data, PATTERNS, window_spans=3).spans}
    assert before[1] == after[1] and before[2] == after[2] and before[4] != after[4]


def test_a_missing_newest_span_fails_or_skips(span_data):
    with pytest.raises(MissingSpanError, match=r"newest span 3 is missing .*span-\{SPAN\}/train/\*.*present: 1, 2, 4"):
        resolve_window(span_data, PATTERNS, newest_span=3)
    skipped = resolve_window(span_data, PATTERNS, newest_span=3, on_missing_span="skip", window_spans=2)
    assert skipped.skipped and [s.span for s in skipped.spans] == [1, 2]
    with pytest.raises(MissingSpanError, match="no earlier span"):
        resolve_window(span_data, PATTERNS, newest_span=0, on_missing_span="skip")


def test_date_spans_and_today(tmp_path):
    for day in ("20261130", "20261201"):
        _touch(tmp_path, f"{day}/train/a")
        _touch(tmp_path, f"{day}/eval/a")
    patterns = {"train": "{YYYY}{MM}{DD}/train/*", "eval": "{YYYY}{MM}{DD}/eval/*"}
    window = resolve_window(str(tmp_path), patterns, window_spans=2, newest_span="today",
                            today=datetime.date(2026, 12, 1))
    assert [SpanPattern(patterns["train"]).format_span(s.span) for s in window.spans] == ["20261130", "20261201"]
    with pytest.raises(MissingSpanError, match="newest span 20261202 is missing"):
        resolve_window(str(tmp_path), patterns, newest_span="today", today=datetime.date(2026, 12, 2))
    assert resolve_window(str(tmp_path), patterns, newest_span="2026-11-30").newest.span == \
        (datetime.date(2026, 11, 30) - datetime.date(1970, 1, 1)).days


def test_versions_pick_the_highest_version_present_in_every_split(tmp_path):
    for v in (1, 2):
        _touch(tmp_path, f"s1/v{v}/train/a")
    _touch(tmp_path, "s1/v1/eval/a")
    window = resolve_window(str(tmp_path), {"train": "s{SPAN}/v{VERSION}/train/*", "eval": "s{SPAN}/v{VERSION}/eval/*"})
    assert (window.newest.span, window.newest.version) == (1, 1)     # v2 has no eval files


def test_span_config_is_validated_up_front():
    with pytest.raises(ValueError, match="window_spans 2 needs"):
        spans.span_config_json({"train": "train/*"}, window_spans=2)
    with pytest.raises(ValueError, match="same span specs"):
        spans.span_config_json({"train": "s{SPAN}/train/*", "eval": "eval/*"})
    with pytest.raises(ValueError, match="'today' needs date patterns"):
        spans.span_config_json(PATTERNS, newest_span="today")
    with pytest.raises(ValueError, match="on_missing_span"):
        spans.span_config_json(PATTERNS, on_missing_span="ignore")
    with pytest.raises(ValueError, match="newest_span"):
        spans.span_config_json(PATTERNS, newest_span="yesterday")


def test_the_store_reuses_a_span_only_for_the_same_files_with_its_clips_present(span_data, tmp_path):
    store, clips = str(tmp_path / "store"), tmp_path / "clips"
    _touch(str(clips), "Split-train/data_tfrecord-span-00004-00000-of-00001.gz")
    span4 = resolve_window(span_data, PATTERNS).newest
    entry = {"span": 4, "version": None, "fingerprint": span4.fingerprint, "clips_uri": str(clips),
             "files": {"train": ["data_tfrecord-span-00004-00000-of-00001.gz"]}, "clips": {"train": 3}}
    spans.write_store_entry(store, 4, entry)
    assert spans.reusable_entry(store, span4) == entry
    _touch(span_data, "span-4/eval/b.tfrecord")                         # the span's files changed
    assert spans.reusable_entry(store, resolve_window(span_data, PATTERNS).newest) is None
    spans.write_store_entry(store, 4, {**entry, "fingerprint": resolve_window(span_data, PATTERNS).newest.fingerprint})
    os.remove(clips / "Split-train" / "data_tfrecord-span-00004-00000-of-00001.gz")   # its clips are gone
    assert spans.reusable_entry(store, resolve_window(span_data, PATTERNS).newest) is None
