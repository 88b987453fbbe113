"""Rules shared by the stages that reject input (Ingest counts records, ClipGen counts videos).

Every input item is either kept or rejected with a reason (nothing silently dropped), and a run that rejects
more than ``max_rejected_fraction`` of a split stops instead of training on scraps.
"""
from __future__ import annotations

import json


def check_max_rejected_fraction(value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"max_rejected_fraction must be a number in [0, 1], got {value!r}")


def dead_letter_line(video_id: str, split: str, reason: str, detail: str, **where) -> str:
    """One dead-letter JSON line: the item's id, split, reason and what was seen, plus where it came from
    (``where``: Ingest's file and record index)."""
    return json.dumps({"video_id": video_id, "split": split, "reason": reason, "detail": detail, **where},
                      sort_keys=True)


def count_outcome(stats: dict, unit: str, reason: str | None) -> None:
    """Counts one input item into a split's stats: ``<unit>_in`` and either ``<unit>_ok`` or (``reason`` given)
    ``rejected`` and ``rejected_by_reason[reason]``: CombineFn add_input."""
    stats[f"{unit}_in"] += 1
    if reason is None:
        stats[f"{unit}_ok"] += 1
    else:
        stats["rejected"] += 1
        stats["rejected_by_reason"][reason] = stats["rejected_by_reason"].get(reason, 0) + 1


def add_split_counts(into: dict, counts: dict) -> None:
    """Adds one split's ``counts`` (numbers, and a ``rejected_by_reason`` dict) into ``into``: CombineFn merging."""
    for key, value in counts.items():
        if key == "rejected_by_reason":
            for reason, n in value.items():
                into[key][reason] = into[key].get(reason, 0) + n
        else:
            into[key] += value


def check_split_accounting(stage: str, split: str, stats: dict, unit: str) -> None:
    """``<unit>_in == <unit>_ok + rejected`` and ``rejected == sum(rejected_by_reason)`` for one split's stats."""
    counted_in, ok = stats[f"{unit}_in"], stats[f"{unit}_ok"]
    if counted_in != ok + stats["rejected"]:
        raise RuntimeError(f"{stage}[{split}]: {unit}_in={counted_in} != {unit}_ok={ok} + "
                           f"rejected={stats['rejected']}")
    if stats["rejected"] != sum(stats["rejected_by_reason"].values()):
        raise RuntimeError(f"{stage}[{split}]: rejected={stats['rejected']} != sum of rejected_by_reason "
                           f"{stats['rejected_by_reason']}")


def enforce_max_rejected_fraction(stage: str, stats_by_split: dict[str, dict], unit: str, max_fraction: float,
                                  dead_letter_uri: str) -> None:
    """Fails naming every split that rejected more than ``max_fraction`` of its ``<unit>_in`` (empty splits pass)."""
    check_max_rejected_fraction(max_fraction)
    over = []
    for split, s in sorted(stats_by_split.items()):
        counted_in = s[f"{unit}_in"]
        if counted_in and s["rejected"] / counted_in > max_fraction:
            over.append(f"{stage}[{split}]: rejected {s['rejected']} of {counted_in} {unit} "
                        f"({s['rejected'] / counted_in:.1%}) > max_rejected_fraction {max_fraction:.1%}; "
                        f"by reason {s['rejected_by_reason']}")
    if over:
        raise RuntimeError("\n".join(over) + f"\nsee the dead letters under {dead_letter_uri}")
