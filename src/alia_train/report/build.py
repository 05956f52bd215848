"""write_report: a run directory in, report/ (PNGs + report.md) out."""

from __future__ import annotations

from pathlib import Path

from alia_train.fs import write_text_atomic
from alia_train.metrics_file import METRICS_FILE
from alia_train.report.evals import EVALS_FILE, curves, read_evals
from alia_train.report.plots import render
from alia_train.report.run import load_run
from alia_train.report.series import plot_data
from alia_train.report.summary import render_markdown

REPORT_MD = "report.md"


class NoMetricsError(FileNotFoundError):
    """The run directory has no metrics.jsonl, or no complete record in it yet."""


def write_report(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Write the plots (one more per benchmark in RUN_DIR/evals.jsonl) and report.md into out_dir
    (default RUN_DIR/report); returns the paths, report.md last."""
    run_dir = Path(run_dir)
    try:
        run = load_run(run_dir)
    except FileNotFoundError as e:
        raise NoMetricsError(str(e)) from None
    if not run.records.train and not run.records.valid:
        raise NoMetricsError(f"{run_dir / METRICS_FILE}: no complete record yet (has the run logged its first step?)")
    out = Path(out_dir) if out_dir is not None else run_dir / "report"
    data = plot_data(run)
    evals = read_evals(run_dir / EVALS_FILE)  # alia-eval's scores, when there are any
    pngs = render(data, out, curves(evals.rows))
    md = out / REPORT_MD
    write_text_atomic(md, render_markdown(run, data, [p.name for p in pngs], evals))
    return pngs + [md]
