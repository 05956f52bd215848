"""write_report on synthetic runs: the files, their validity, and that they follow the metrics."""

from __future__ import annotations

import re

from report.png import assert_valid_png
from report.synthetic import make_run, records, write_metrics

from alia_train.report import write_report
from alia_train.report.plots import PLOTS


def _bytes(paths):
    return {p.name: p.read_bytes() for p in paths}


def test_report_files_valid_deterministic_and_following_the_metrics(tmp_path):
    recs = records(1, 14) + records(11, 20, offset=0.05)
    run = make_run(tmp_path / "run", recs)
    paths = write_report(run)
    assert [p.name for p in paths] == [*PLOTS, "report.md"]
    assert all(p.parent == run / "report" for p in paths)
    for p in paths[:-1]:
        assert assert_valid_png(p) == (800, 450)

    # Every image link in report.md is relative and resolves next to it.
    md = (run / "report" / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert sorted(links) == sorted(PLOTS)
    assert all((run / "report" / link).is_file() for link in links)

    # Same metrics: same bytes (PNGs and report.md), even in another directory.
    first = _bytes(paths)
    assert _bytes(write_report(run)) == first
    assert _bytes(write_report(run, tmp_path / "elsewhere"))["loss.png"] == first["loss.png"]

    # One grad norm changes: grad_norm.png changes, the loss plots do not.
    changed = [dict(r) for r in recs]
    at = {(r["kind"], r["step"]): i for i, r in enumerate(changed)}  # the last record of each step
    changed[at["train", 8]]["grad_norm"] = 5.0
    write_metrics(run, changed)
    second = _bytes(write_report(run))
    assert second["grad_norm.png"] != first["grad_norm.png"]
    assert second["loss.png"] == first["loss.png"]
    assert second["loss_by_language.png"] == first["loss_by_language.png"]

    # One per-language loss and one token count change: their plots change.
    changed[at["train", 16]]["loss/eu"] += 0.5
    changed[at["train", 16]]["tokens/gl"] *= 3
    write_metrics(run, changed)
    third = _bytes(write_report(run))
    assert third["loss_by_language.png"] != second["loss_by_language.png"]
    assert third["mixture.png"] != second["mixture.png"]
    assert third["report.md"] != second["report.md"]


def test_report_md_summary(tmp_path):
    run = make_run(tmp_path / "run", records(1, 14) + records(11, 20, offset=0.05), steps=40)
    write_report(run)
    md = (run / "report" / "report.md").read_text()
    assert md.startswith("# Run report: synthetic\n")
    assert "Last logged step: **20** of 40 (50% of the planned steps)." in md
    assert "2 launches" in md
    assert "| model | tiny: 4 layers, hidden 128" in md
    assert "```yaml" in md and "global_batch_size: 8" in md
    assert "## Last values (step 20)" in md
    # Best validation per language: the lowest loss and where it was.
    row = next(line for line in md.splitlines() if line.startswith("| eu |"))
    assert "30.0%" not in row and "15.0%" in row  # planned share of eu
    assert "(step 18)" in row
    assert "median step time" in md and "estimated time to step 40" in md


def test_run_in_progress_without_validation_mixture_or_config(tmp_path):
    # First records only, a half-written line at the end, nothing else in the run dir.
    run = make_run(tmp_path / "run", records(1, 4, eval_interval=0, gpu=True), mixture=False,
                   config=False, tail='{"kind": "train", "step": 6, "loss": 7.')
    paths = write_report(run, tmp_path / "out")
    for p in paths[:-1]:
        assert_valid_png(p)
    md = paths[-1].read_text()
    assert "Last logged step: **4**." in md
    assert "No config.yaml" in md and "realised shares only" in md
    assert "| MFU | 40.4% |" in md


def test_records_with_non_finite_values_still_plot(tmp_path):
    recs = records(1, 8)
    recs[1]["loss"] = "nan"
    recs[2]["grad_norm"] = "inf"
    run = make_run(tmp_path / "run", recs)  # written as metrics.py does: "nan", "inf"
    for p in write_report(run)[:-1]:
        assert_valid_png(p)
