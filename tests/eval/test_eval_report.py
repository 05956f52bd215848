"""alia-report with RUN_DIR/evals.jsonl: a PNG per benchmark (its tasks' metrics over steps),
the latest values in report.md, and a damaged tail noted rather than fatal."""

from __future__ import annotations

import json
import re

from report.png import assert_valid_png
from report.synthetic import make_run, records

from alia_train.eval.results import append_batch
from alia_train.report import write_report
from alia_train.report.evals import curves, read_evals
from alia_train.report.plots import PLOTS


def _rows(step: int, group: str, tasks: dict[str, float], fewshot: int = 0, attempt: int = 0) -> list[dict]:
    return [{"step": step, "task": t, "metric": "acc", "value": v, "stderr": 0.02, "n": 100, "group": group,
             "num_fewshot": fewshot, "limit": None, "settings": f"k{fewshot}", "checkpoint_id": f"c{step}",
             "batch": f"{step}-{group}-{fewshot}-{attempt}", "seconds": 1.5 + step / 100}
            for t, v in tasks.items()]


def test_report_draws_each_benchmark_over_steps_and_lists_the_latest_values(tmp_path):
    run = make_run(tmp_path / "run", records(1, 20))
    for step in (10, 20):
        append_batch(run, _rows(step, "alia_langid", {"alia_langid_es": 0.3 + step / 100, "alia_langid": 0.4 + step / 100}))
        append_batch(run, _rows(step, "arc_easy", {"arc_easy": 0.25 + step / 200}))
    cut = _rows(20, "alia_langid", {"alia_langid_es": 0.99, "alia_langid": 0.99}, attempt=1)
    with open(run / "evals.jsonl", "a") as f:  # a batch cut short after its first row, then a torn line
        f.write(json.dumps({**cut[0], "rows": 2}) + "\n" + '{"step": 30, "task": "arc_e')

    paths = write_report(run)
    names = [p.name for p in paths]
    assert names == [*PLOTS, "eval_alia_langid.png", "eval_arc_easy.png", "report.md"]
    for p in paths[-3:-1]:
        assert assert_valid_png(p) == (800, 450)
    md = paths[-1].read_text()
    assert "## Benchmarks (latest checkpoint scored)" in md
    row = next(line for line in md.splitlines() if line.startswith("| alia_langid | acc (all) |"))
    assert "| 20 | 0.6000 |" in row and "+0.1000 since step 10" in row
    assert "0.9900" not in md  # the incomplete batch's rows are left out
    assert "| arc_easy | acc (all) | 20 | 0.3500 |" in md
    assert "1 unreadable line(s) skipped" in md and "1 incomplete batch(es)" in md
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert {"eval_alia_langid.png", "eval_arc_easy.png"} <= set(links)

    # The plot follows the scores: a changed score changes its PNG only.
    before = {p.name: p.read_bytes() for p in paths}
    append_batch(run, _rows(30, "arc_easy", {"arc_easy": 0.5}))
    after = {p.name: p.read_bytes() for p in write_report(run)}
    assert after["eval_arc_easy.png"] != before["eval_arc_easy.png"]
    assert after["eval_alia_langid.png"] == before["eval_alia_langid.png"]


def test_curves_keep_settings_apart_and_the_last_write_of_a_step_wins(tmp_path):
    append_batch(tmp_path, _rows(10, "arc_easy", {"arc_easy": 0.3}))
    append_batch(tmp_path, _rows(10, "arc_easy", {"arc_easy": 0.4}, fewshot=5))
    append_batch(tmp_path, _rows(10, "arc_easy", {"arc_easy": 0.35}, attempt=1))  # a re-saved step 10
    (zero, five) = curves(read_evals(tmp_path / "evals.jsonl").rows)["arc_easy"]
    assert zero.points[10][0] == 0.35 and five.points[10][0] == 0.4
    assert zero.label(True) == "acc (all) (0-shot)" and five.label(True) == "acc (all) (5-shot)"
