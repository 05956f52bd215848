"""evals.jsonl as alia-eval appends it and every reader reads it: whole-line appends, batches
that count only when complete, a torn last line (a crash mid-write) skipped and never glued to,
earlier rows never changed, and one alia-eval per run directory at a time."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from alia_train.eval.results import append_batch, batch_key, run_dir_lock, scored, settings_key
from alia_train.report.evals import EVALS_FILE, curves, read_evals


def _batch(step: int, group: str = "alia_langid", settings: str = "s1", n: int = 3, attempt: int = 1) -> list[dict]:
    """A batch as alia-eval writes it; each attempt at a checkpoint has a batch id of its own."""
    tasks = [f"{group}_{lang}" for lang in ("es", "ca", "eu", "gl")][: n - 1] + [group]
    return [{"step": step, "task": t, "metric": "acc", "value": 0.25 + step / 1000 + i / 100, "stderr": 0.05,
             "n": 30, "group": group, "settings": settings, "checkpoint_id": f"c{step}",
             "batch": f"{step}-{group}-{settings}-{attempt}"} for i, t in enumerate(tasks)]


def test_batches_append_whole_lines_and_read_back(tmp_path):
    append_batch(tmp_path, _batch(20))
    append_batch(tmp_path, _batch(40))
    lines = (tmp_path / EVALS_FILE).read_text().splitlines()
    assert len(lines) == 6 and all(json.loads(line)["rows"] == 3 for line in lines)
    got = read_evals(tmp_path / EVALS_FILE)
    assert [r["step"] for r in got.rows] == [20, 20, 20, 40, 40, 40] and not got.problems()
    assert scored(tmp_path) == {batch_key(20, "c20", "alia_langid", "s1"), batch_key(40, "c40", "alia_langid", "s1")}
    (curve,) = [c for c in curves(got.rows)["alia_langid"] if c.task == "alia_langid"]
    assert curve.steps == [20, 40] and curve.last[0] == 40


def test_a_crash_mid_append_leaves_earlier_rows_and_the_next_append_alone(tmp_path):
    append_batch(tmp_path, _batch(20))
    path = tmp_path / EVALS_FILE
    intact = path.read_bytes()
    # A crash in the middle of the next batch: one row written, the second cut mid-line.
    second = [json.dumps({**r, "rows": 3}) + "\n" for r in _batch(40)]
    path.write_bytes(intact + second[0].encode() + second[1].encode()[:25])
    got = read_evals(path)
    assert [r["step"] for r in got.rows] == [20, 20, 20]  # the incomplete batch is left out
    assert got.damaged_lines == 1 and got.incomplete_batches == 1 and len(got.problems()) == 2
    assert scored(tmp_path) == {batch_key(20, "c20", "alia_langid", "s1")}  # step 40 is scored again

    append_batch(tmp_path, _batch(40, attempt=2))  # the re-run: the torn line is closed, not glued to
    data = path.read_bytes()
    assert data.startswith(intact + second[0].encode() + second[1].encode()[:25] + b"\n")
    got = read_evals(path)
    assert [r["step"] for r in got.rows] == [20, 20, 20, 40, 40, 40]
    assert got.damaged_lines == 1 and got.incomplete_batches == 1  # the cut attempt stays incomplete
    assert scored(tmp_path) == {batch_key(20, "c20", "alia_langid", "s1"), batch_key(40, "c40", "alia_langid", "s1")}


def test_a_missing_file_is_no_rows(tmp_path):
    got = read_evals(tmp_path / EVALS_FILE)
    assert got.rows == [] and not got.problems() and scored(tmp_path) == set()


def test_settings_key_is_stable_and_tells_settings_apart():
    a = settings_key({"num_fewshot": None, "limit": None, "dtype": "torch.float32"})
    assert a == settings_key({"dtype": "torch.float32", "limit": None, "num_fewshot": None})
    assert a != settings_key({"num_fewshot": 5, "limit": None, "dtype": "torch.float32"})


HOLD = """
import sys, time
from pathlib import Path
from alia_train.eval.results import run_dir_lock
with run_dir_lock(Path(sys.argv[1]), print):
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_a_second_alia_eval_waits_for_the_first(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path), "1.5"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        said = []
        t0 = time.monotonic()
        with run_dir_lock(tmp_path, said.append):
            waited = time.monotonic() - t0
        assert waited > 0.5 and len(said) == 1 and f"pid {holder.pid}" in said[0], said
    finally:
        holder.kill()
        holder.wait(30)
