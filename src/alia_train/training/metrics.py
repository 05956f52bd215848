"""Where step metrics go: metrics.jsonl (always), the console, W&B and TensorBoard (optional).

Only global rank 0 writes. metrics.jsonl grows across restarts with each step once: a run
that resumes from the checkpoint of step S first drops the records past S (written by the run
that died or stopped before saving them; the resumed run writes them again). `read_metrics`
still keeps the last record of each step, for files written before that rule.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN; keep it visible rather than drop it
    return value


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """Records of metrics.jsonl, one per (kind, step), the latest kept, in step order.

    A partial last line (a run killed mid-write) is ignored."""
    latest: dict[tuple[str, int], dict] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            latest[(rec.get("kind", "train"), rec["step"])] = rec
    return sorted(latest.values(), key=lambda r: (r["step"], r.get("kind", "train")))


class Console:
    """A one-line progress display in a terminal; plain lines in logs."""

    def __init__(self, mode: str, total_steps: int, stream=None):
        self.stream = stream or sys.stdout
        self.progress = mode == "progress" or (mode == "auto" and self.stream.isatty())
        self.total = total_steps
        self.start_time = time.time()
        self.start_step: int | None = None

    def _eta(self, step: int) -> str:
        if self.start_step is None:
            self.start_step, self.start_time = step, time.time()
            return "?"
        done = step - self.start_step
        if done <= 0:
            return "?"
        secs = (time.time() - self.start_time) / done * (self.total - step)
        return time.strftime("%H:%M:%S", time.gmtime(secs))

    def step(self, rec: dict) -> None:
        parts = [
            f"step {rec['step']}/{self.total}",
            f"loss {rec['loss']:.4f}",
            f"lr {rec['lr']:.3g}",
            f"grad_norm {rec['grad_norm']:.3f}" if rec.get("grad_norm") is not None else "grad_norm -",
            f"tok/s {rec['tokens_per_sec']:,.0f}",
        ]
        if "mfu" in rec:
            parts += [f"TFLOP/s/GPU {rec['tflops_per_gpu']:.1f}", f"MFU {100 * rec['mfu']:.1f}%"]
        if "peak_mem_gb" in rec:
            parts.append(f"mem {rec['peak_mem_gb']:.1f}GB")
        parts.append(f"eta {self._eta(rec['step'])}")
        line = " | ".join(parts)
        if self.progress:
            self.stream.write("\r\033[K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        if self.progress:
            self.stream.write("\r\033[K")
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.progress:
            self.stream.write("\n")
            self.stream.flush()


def _parse(line: bytes) -> dict | None:
    """The record of one metrics.jsonl line, or None for a damaged one (a killed run's half
    line)."""
    if not line.endswith(b"\n"):
        return None
    try:
        rec = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return rec if isinstance(rec, dict) else None


def drop_records_after(path: Path, step: int) -> int:
    """Remove the records of steps after `step`, and damaged lines, from metrics.jsonl
    (atomically: a temporary file renamed over it). Returns how many records were dropped."""
    if not path.exists():
        return 0
    kept: list[bytes] = []
    dropped = damaged = 0
    with open(path, "rb") as f:
        for line in f:
            if not line.strip():
                continue
            rec = _parse(line)
            if rec is None:
                damaged += 1
            elif isinstance(rec.get("step"), int) and rec["step"] > step:
                dropped += 1
            else:
                kept.append(line)
    if dropped or damaged:
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as f:
            f.writelines(kept)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    return dropped


class MetricsSink:
    def __init__(self, run_dir: str, console: Console, trackers: list, resume_step: int = 0):
        """`resume_step`: the step the run resumed at (0 for a fresh start); records of later
        steps are dropped, the resumed run writes them again."""
        self.path = Path(run_dir) / "metrics.jsonl"
        self.console = console
        self.trackers = trackers
        self.dropped = drop_records_after(self.path, resume_step)
        if self.dropped:
            console.message(f"[alia-train] metrics.jsonl: dropped {self.dropped} record(s) past step "
                            f"{resume_step}; they are logged again as those steps are redone")
        self._file = open(self.path, "a", encoding="utf-8")

    def write(self, rec: dict, show: bool = True) -> None:
        rec = {k: _clean(v) for k, v in rec.items()}
        self._file.write(json.dumps(rec) + "\n")
        self._file.flush()
        for t in self.trackers:
            t.log(rec)
        if show and rec.get("kind", "train") == "train":
            self.console.step(rec)

    def close(self) -> None:
        self._file.close()
        for t in self.trackers:
            t.close()
        self.console.close()
