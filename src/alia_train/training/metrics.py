"""Where step metrics go: metrics.jsonl (always), the console, W&B and TensorBoard (optional).

Only global rank 0 writes. metrics.jsonl grows across restarts with each step once: a run
that resumes from the checkpoint of step S first drops the records past S (written by the run
that died or stopped before saving them; the resumed run writes them again). The file is
read by alia_train.metrics_file, for files written before that rule too.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from alia_train.fs import write_text_atomic
from alia_train.metrics_file import METRICS_FILE, record_text
from alia_train.progress import ProgressLine, is_live


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN; keep it visible rather than drop it
    return value


class Console:
    """A one-line progress display in a terminal; plain lines in logs."""

    def __init__(self, mode: str, total_steps: int, stream=None):
        self.stream = stream or sys.stdout
        self.line = ProgressLine(self.stream, live=is_live(self.stream, mode))
        self.progress = self.line.live
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
        self.line.show(" | ".join(parts))

    def message(self, text: str) -> None:
        self.line.message(text)

    def close(self) -> None:
        self.line.close()


def drop_records_after(path: Path, step: int) -> int:
    """Remove the records of steps after `step`, and damaged lines, from metrics.jsonl
    (atomically: a temporary file renamed over it). Lines are read as alia_train.metrics_file
    reads them. Returns how many records were dropped."""
    if not path.exists():
        return 0
    kept: list[str] = []
    dropped = damaged = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            found = record_text(line)
            if found is None:
                damaged += bool(line.strip())
            elif found[0]["step"] > step:
                dropped += 1
            else:
                kept.append(found[1] + "\n")
    if dropped or damaged:
        write_text_atomic(path, "".join(kept))
    return dropped


class MetricsSink:
    def __init__(self, run_dir: str, console: Console, trackers: list, resume_step: int = 0):
        """`resume_step`: the step the run resumed at (0 for a fresh start); records of later
        steps are dropped, the resumed run writes them again."""
        self.path = Path(run_dir) / METRICS_FILE
        self.console = console
        self.trackers = trackers
        self.dropped = drop_records_after(self.path, resume_step)
        if self.dropped:
            console.message(f"[alia-train] metrics.jsonl: dropped {self.dropped} record(s) past step "
                            f"{resume_step}; they are logged again as those steps are redone")
        self._file = open(self.path, "a", encoding="utf-8")

    def write(self, rec: dict, show: bool = True) -> None:
        clean = {k: _clean(v) for k, v in rec.items()}
        self._file.write(json.dumps(clean) + "\n")
        self._file.flush()
        for t in self.trackers:
            t.log(clean)
        if show and rec.get("kind", "train") == "train":
            self.console.step(rec)  # the numbers: a skipped step's loss shows as inf / nan

    def close(self) -> None:
        self._file.close()
        for t in self.trackers:
            t.close()
        self.console.close()
