"""Read metrics.jsonl into one record per (kind, step), the way the run finally went.

The file is append-only across restarts. A resumed run starts again from its last checkpoint,
so it logs again steps that the previous launch had already logged; those later records win.
When a launch goes back in time (a train record whose step is not after the previous train
record), every earlier record from that step on is dropped, not only the ones it re-logs: a
resumed run that stops sooner, or evaluates at other steps, leaves no stale points behind.
A `{"kind": "launch", "step": S}` record (a launch that starts from step S; alia-train writes
one at every start, cli/launch_record.py) marks the same exactly: earlier records after S are
dropped even when the new launch logs at other steps (a changed logging.interval). Files from
before launch records existed are read by the rewind rule alone.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field


@dataclass
class Records:
    train: list[dict] = field(default_factory=list)
    valid: list[dict] = field(default_factory=list)
    # Launches seen in the file (1 + the times the step went back) and records superseded.
    launches: int = 0
    replaced: int = 0
    # The launch records themselves, in file order (world size, layout, versions, time).
    launch_records: list[dict] = field(default_factory=list)


def _parse(line: str) -> dict | None:
    """A record, or None. Salvages the tail of a line glued to a partial one: a launch killed
    mid-write leaves no newline, and the next launch appends its first record to that line."""
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
            return rec
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


def parse_lines(lines) -> Records:
    kept: dict[tuple[str, int], dict] = {}
    launches, replaced, last_train_step = 0, 0, None
    launch_records: list[dict] = []
    for line in lines:
        rec = _parse(line)
        if rec is None:
            continue
        rec = {k: _number(v) for k, v in rec.items()}
        kind, step = rec.get("kind", "train"), rec["step"]
        rec["kind"] = kind
        if launches == 0:
            launches = 1
        if kind == "launch":
            launch_records.append(rec)
            stale = [key for key in kept if key[1] > step]
            for key in stale:
                del kept[key]
            replaced += len(stale)
            launches += 1 if last_train_step is not None else 0
            last_train_step = None  # this launch's first train record is not a rewind
            continue
        if kind == "train":
            if last_train_step is not None and step <= last_train_step:
                launches += 1
                stale = [key for key in kept if key[1] >= step]
                for key in stale:
                    del kept[key]
                replaced += len(stale)
            last_train_step = step
        if (kind, step) in kept:
            replaced += 1
        kept[(kind, step)] = rec
    ordered = sorted(kept.values(), key=lambda r: r["step"])
    return Records(
        train=[r for r in ordered if r["kind"] == "train"],
        valid=[r for r in ordered if r["kind"] == "valid"],
        launches=launches,
        replaced=replaced,
        launch_records=launch_records,
    )


def read_records(path: str | os.PathLike) -> Records:
    # errors="replace": a torn multi-byte character in a partial line must not stop the report.
    with open(path, encoding="utf-8", errors="replace") as f:
        return parse_lines(f)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def finite(value) -> bool:
    return is_number(value) and math.isfinite(value)
