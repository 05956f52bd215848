"""metrics.jsonl, read: one record per (kind, step), the way the run finally went.

The one reader of the file: alia-report (report/run.py), the resume rewrite
(training/metrics.py) and the tests all read it here, by the same rules.

The file is append-only across restarts. A resumed run starts again from its last checkpoint,
so it logs again steps that the previous launch had already logged; those later records win.
When a launch goes back in time (a train record whose step is not after the previous train
record), every earlier record from that step on is dropped, not only the ones it re-logs: a
resumed run that stops sooner, or evaluates at other steps, leaves no stale points behind.
A `{"kind": "launch", "step": S}` record (a launch that starts from step S; alia-train writes
one at every start, training/launch_record.py) marks the same exactly: earlier records after S are
dropped even when the new launch logs at other steps (a changed logging.interval). Files from
before launch records existed are read by the rewind rule alone.

A line is a record when it holds a JSON object with an integer "step". A launch killed
mid-write leaves half a line; the tail of a line glued to such a half line is salvaged.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

METRICS_FILE = "metrics.jsonl"


@dataclass
class Records:
    train: list[dict] = field(default_factory=list)
    valid: list[dict] = field(default_factory=list)
    # Launches seen in the file (1 + the times the step went back) and records superseded.
    launches: int = 0
    replaced: int = 0
    # The launch records themselves, in file order (world size, layout, versions, time).
    launch_records: list[dict] = field(default_factory=list)


def record_text(line: str) -> tuple[dict, str] | None:
    """(record, its JSON text) of one line, or None for a damaged or blank line. Salvages the
    tail of a line glued to a partial one: a launch killed mid-write leaves no newline, and the
    next launch appends its first record to that line."""
    line = line.strip()
    if not line:
        return None
    start = 0
    while start != -1:
        try:
            rec = json.loads(line[start:])
        except json.JSONDecodeError:
            start = line.find("{", start + 1)
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step"), int):
            return rec, line[start:]
        return None
    return None


def _number(value):
    # metrics.py writes non-finite floats as strings ("nan", "inf") since JSON has none.
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


class _Timeline:
    """The records kept so far, and the launches and replacements seen."""

    def __init__(self) -> None:
        self.kept: dict[tuple[str, int], dict] = {}
        self.launches = self.replaced = 0
        self.last_train_step: int | None = None
        self.launch_records: list[dict] = []

    def _drop_from(self, step: int) -> None:
        stale = [key for key in self.kept if key[1] >= step]
        for key in stale:
            del self.kept[key]
        self.replaced += len(stale)

    def add(self, rec: dict) -> None:
        kind, step = rec["kind"], rec["step"]
        self.launches = self.launches or 1
        if kind == "launch":
            self.launch_records.append(rec)
            self._drop_from(step + 1)
            self.launches += 1 if self.last_train_step is not None else 0
            self.last_train_step = None  # this launch's first train record is not a rewind
            return
        if kind == "train":
            if self.last_train_step is not None and step <= self.last_train_step:
                self.launches += 1
                self._drop_from(step)
            self.last_train_step = step
        if (kind, step) in self.kept:
            self.replaced += 1
        self.kept[(kind, step)] = rec


def parse_lines(lines) -> Records:
    timeline = _Timeline()
    for line in lines:
        found = record_text(line)
        if found is None:
            continue
        rec = {k: _number(v) for k, v in found[0].items()}
        rec["kind"] = rec.get("kind", "train")
        timeline.add(rec)
    ordered = sorted(timeline.kept.values(), key=lambda r: r["step"])
    return Records(
        train=[r for r in ordered if r["kind"] == "train"],
        valid=[r for r in ordered if r["kind"] == "valid"],
        launches=timeline.launches,
        replaced=timeline.replaced,
        launch_records=timeline.launch_records,
    )


def read_records(path: str | os.PathLike) -> Records:
    # errors="replace": a torn multi-byte character in a partial line must not stop the reader.
    with open(path, encoding="utf-8", errors="replace") as f:
        return parse_lines(f)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def finite(value) -> bool:
    return is_number(value) and math.isfinite(value)
