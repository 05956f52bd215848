"""metrics.jsonl after a resume: the records past the checkpoint's step are dropped (the
resumed run writes them again), so every step is logged once."""

from __future__ import annotations

import io
import json

from alia_train.metrics_file import read_records
from alia_train.training.metrics import Console, MetricsSink, drop_records_after


def _write(path, steps, tail: str = "") -> None:
    lines = [json.dumps({"kind": "train", "step": s, "loss": 1.0}) for s in steps]
    lines.insert(2, json.dumps({"kind": "valid", "step": 2, "loss": 2.0}))
    path.write_text("\n".join(lines) + "\n" + tail)


def test_resume_drops_records_past_the_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    _write(path, range(1, 8), tail='{"kind": "train", "st')  # killed mid-write after step 7
    sink = MetricsSink(str(tmp_path), Console("plain", 10, stream=io.StringIO()), [], resume_step=4)
    assert sink.dropped == 3
    for step in range(5, 11):  # the resumed run redoes 5.. and goes on
        sink.write({"kind": "train", "step": step, "loss": 0.5, "lr": 0.1, "grad_norm": None,
                    "tokens_per_sec": 1.0})
    sink.close()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    train = [r["step"] for r in records if r["kind"] == "train"]
    assert train == list(range(1, 11))
    assert [r["step"] for r in records if r["kind"] == "valid"] == [2]
    assert [r["step"] for r in read_records(path).train] == train


def test_nothing_to_drop_leaves_the_file_alone(tmp_path):
    path = tmp_path / "metrics.jsonl"
    _write(path, range(1, 5))
    before = path.stat().st_ino
    assert drop_records_after(path, 4) == 0
    assert path.stat().st_ino == before  # not rewritten
    assert drop_records_after(tmp_path / "absent.jsonl", 0) == 0
