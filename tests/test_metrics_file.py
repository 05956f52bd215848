"""metrics.jsonl as everything reads it (alia_train.metrics_file): one record per (kind, step),
resumes resolved; the resume rewrite (training/metrics.py) parses its lines the same way."""

from __future__ import annotations

import json
import math

from report.synthetic import records, train_record, valid_record

from alia_train.metrics_file import parse_lines, read_records
from alia_train.training.metrics import drop_records_after


def lines(recs):
    return [json.dumps(r) + "\n" for r in recs]


def test_resume_keeps_each_step_once_with_the_later_values():
    # Launch 1 logs 2..14, launch 2 resumes from step 10 and logs 12..20.
    recs = parse_lines(lines(records(1, 14) + records(11, 20, offset=0.05)))
    steps = [r["step"] for r in recs.train]
    assert steps == list(range(2, 21, 2))
    assert [r["step"] for r in recs.valid] == [6, 12, 18]
    by_step = {r["step"]: r for r in recs.train}
    assert by_step[12]["loss"] == train_record(12, offset=0.05)["loss"]
    assert by_step[10]["loss"] == train_record(10)["loss"]
    assert {r["step"]: r for r in recs.valid}[12]["loss"] == valid_record(12, offset=0.05)["loss"]
    assert recs.launches == 2
    assert recs.replaced == 3  # train 12, 14 and valid 12


def test_several_resumes():
    recs = parse_lines(lines(records(1, 8) + records(5, 14, offset=0.1) + records(13, 20, offset=0.2)))
    assert [r["step"] for r in recs.train] == list(range(2, 21, 2))
    assert recs.launches == 3


def test_a_resumed_launch_that_stops_sooner_leaves_no_stale_steps():
    # Launch 1 reached 14; launch 2 resumed from 10 with train.steps=12 and logged only 12.
    recs = parse_lines(lines(records(1, 14) + records(11, 12, offset=0.05, eval_interval=0)))
    assert [r["step"] for r in recs.train] == [2, 4, 6, 8, 10, 12]
    # Validation at 12 belonged to launch 1's timeline; launch 2 did not evaluate there.
    assert [r["step"] for r in recs.valid] == [6]


def test_partial_and_glued_lines(tmp_path):
    good = lines(records(1, 6))
    # A launch killed mid-write leaves half a line; the next launch appends right after it.
    partial = '{"kind": "train", "step": 8, "loss": 5.1'
    resumed = json.dumps(train_record(8, offset=0.3))
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(good) + partial + resumed + "\n" + "\n   \nnot json\n[1, 2]\n" + '{"kind": "train"}\n' + partial)
    recs = read_records(path)
    assert [r["step"] for r in recs.train] == [2, 4, 6, 8]
    assert recs.train[-1]["loss"] == train_record(8, offset=0.3)["loss"]


def test_non_finite_values_come_back_as_floats():
    rec = train_record(2)
    rec["loss"], rec["grad_norm"] = "nan", "inf"
    out = parse_lines(lines([rec])).train[0]
    assert math.isnan(out["loss"]) and out["grad_norm"] == math.inf


def test_records_without_kind_are_train():
    rec = train_record(2)
    del rec["kind"]
    assert parse_lines(lines([rec])).train[0]["step"] == 2


def test_launch_records_mark_where_a_resume_started():
    # Launch 2 resumed from step 10 and logs every 5 steps: 15 is after 14, no rewind to see,
    # but its launch record says launch 1's 12 and 14 are gone.
    launch2 = [train_record(15, offset=0.05, interval=5), train_record(20, offset=0.05, interval=5)]
    recs = parse_lines(lines([{"kind": "launch", "step": 0}] + records(1, 14)
                             + [{"kind": "launch", "step": 10}] + launch2))
    assert [r["step"] for r in recs.train] == [2, 4, 6, 8, 10, 15, 20]
    assert [r["step"] for r in recs.valid] == [6]
    assert recs.launches == 2 and recs.replaced == 3


def test_the_resume_rewrite_reads_lines_as_the_reader_does(tmp_path):
    # A glued line (half a record, then a whole one), a whole last record without its newline,
    # and lines that are not records at all.
    partial = '{"kind": "train", "step": 8, "loss": 5.1'
    text = ("".join(lines(records(1, 6))) + partial + json.dumps(train_record(8)) + "\n"
            + "not json\n" + '{"kind": "train"}\n' + json.dumps(train_record(10)))
    path = tmp_path / "metrics.jsonl"
    path.write_text(text)
    before = read_records(path)
    assert [r["step"] for r in before.train] == [2, 4, 6, 8, 10]
    assert drop_records_after(path, 8) == 1  # step 10
    after = read_records(path)
    assert after.train == before.train[:-1] and after.valid == before.valid
    assert all(json.loads(line) for line in path.read_text().splitlines())  # damaged lines gone
