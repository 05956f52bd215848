"""RUN_DIR/evals.jsonl, read: benchmark scores per checkpoint step, as `alia-eval` appends them.

One row per (step, task, metric):

    {"step": 100, "task": "alia_langid_es", "metric": "acc", "value": 0.53, "stderr": 0.09,
     "group": "alia_langid", "n": 30, "num_fewshot": 0, "limit": null, "settings": "9c1e...",
     "checkpoint": "step_00000100", "checkpoint_id": "5d0f...", "batch": "...", "rows": 5, ...}

`group` is the name asked for on the command line (a task, or a group such as
`catalan_bench`); the rows of one checkpoint and one group form a batch, written row by row,
each row one write of a whole line, flushed and fsynced. A batch counts only when all its
`rows` rows are there: an append cut short (a crash, a full disk, a killed job) leaves an
incomplete batch that is ignored, and at most a torn last line, which is skipped; earlier rows
are never touched. The one reader of the file: alia-eval (what is scored already), alia-report
(curves and the latest values) and the tests.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

EVALS_FILE = "evals.jsonl"
ROW_KEYS = ("step", "task", "metric", "value", "batch", "rows")


@dataclass
class EvalRows:
    rows: list[dict] = field(default_factory=list)  # rows of complete batches, in file order
    damaged_lines: int = 0  # lines that are not a row (a torn last line, a hand edit)
    incomplete_batches: int = 0  # batches cut short: their rows are left out

    def problems(self) -> list[str]:
        out = []
        if self.damaged_lines:
            out.append(f"{EVALS_FILE}: {self.damaged_lines} unreadable line(s) skipped (an append cut short)")
        if self.incomplete_batches:
            out.append(f"{EVALS_FILE}: {self.incomplete_batches} incomplete batch(es) of rows left out "
                       "(an evaluation cut short; alia-eval scores those checkpoints again)")
        return out


def _row(line: str) -> dict | None:
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(row, dict) or any(k not in row for k in ROW_KEYS):
        return None
    if not isinstance(row["step"], int) or not isinstance(row["rows"], int):
        return None
    return row


def read_evals(path: str | Path) -> EvalRows:
    """The complete batches of an evals.jsonl (an empty result when there is no file)."""
    path = Path(path)
    out = EvalRows()
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return out
    batches: dict[str, list[tuple[int, dict]]] = {}
    for number, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        row = _row(line)
        if row is None:
            out.damaged_lines += 1
            continue
        batches.setdefault(str(row["batch"]), []).append((number, row))
    kept = []
    for rows in batches.values():
        if len(rows) == rows[0][1]["rows"]:
            kept.extend(rows)
        else:
            out.incomplete_batches += 1
    out.rows = [row for _, row in sorted(kept, key=lambda nr: nr[0])]
    return out


def value(row: dict) -> float | None:
    v = row.get("value")
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def series_key(row: dict) -> tuple:
    """One curve: a task's metric under one set of settings (few-shot, limit)."""
    return (row.get("group"), row["task"], row["metric"], row.get("num_fewshot"), row.get("limit"))


@dataclass
class EvalCurve:
    group: str
    task: str
    metric: str
    num_fewshot: int | None
    limit: float | None
    points: dict[int, tuple[float, float | None, int | None]] = field(default_factory=dict)  # step -> (value, stderr, n)

    @property
    def steps(self) -> list[int]:
        return sorted(self.points)

    @property
    def last(self) -> tuple[int, float, float | None, int | None]:
        step = max(self.points)
        return (step, *self.points[step])

    def label(self, several_settings: bool) -> str:
        """"acc (all)" for the group's own aggregate, "es acc" for its task alia_langid_es."""
        task = self.task.removeprefix(self.group + "_") if self.task.startswith(self.group + "_") else self.task
        text = f"{self.metric} (all)" if self.task == self.group else f"{task} {self.metric}"
        if several_settings:
            text += f" ({self.num_fewshot or 0}-shot" + (f", limit {self.limit:g})" if self.limit else ")")
        return text


def curves(rows: list[dict]) -> dict[str, list[EvalCurve]]:
    """{group: its curves}, groups and curves in the order they first appear; for a step scored
    more than once (a re-saved checkpoint) the row written last wins."""
    by_key: dict[tuple, EvalCurve] = {}
    for row in rows:
        v = value(row)
        if v is None:
            continue
        key = series_key(row)
        curve = by_key.get(key)
        if curve is None:
            curve = by_key[key] = EvalCurve(str(row.get("group") or row["task"]), row["task"], row["metric"],
                                            row.get("num_fewshot"), row.get("limit"))
        stderr = row.get("stderr")
        stderr = float(stderr) if isinstance(stderr, (int, float)) and math.isfinite(stderr) else None
        n = row.get("n") if isinstance(row.get("n"), int) else None
        curve.points[row["step"]] = (v, stderr, n)
    grouped: dict[str, list[EvalCurve]] = {}
    for curve in by_key.values():
        grouped.setdefault(curve.group, []).append(curve)
    return grouped


def seconds_per_checkpoint(rows: list[dict]) -> dict[str, float]:
    """{group: median seconds one checkpoint took} over the batches (model load included)."""
    import statistics

    per_group: dict[str, dict[str, float]] = {}
    for row in rows:
        s = row.get("seconds")
        if isinstance(s, (int, float)):
            per_group.setdefault(str(row.get("group")), {})[str(row["batch"])] = float(s)
    return {g: statistics.median(b.values()) for g, b in per_group.items()}
