"""write_report: a run directory in, report/ (PNGs + report.md) out."""

from __future__ import annotations

import errno
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


class ReportWriteError(Exception):
    """An output could not be written (the message names it and the output directory)."""


def _write_problem(out: Path, e: OSError) -> str:
    if out.exists() and not out.is_dir():
        return f"cannot write the report to {out}: it is a file, not a directory; choose another --out DIR"
    where = f"{e.filename}: " if e.filename else ""
    fix = ("free some space or choose another --out DIR" if e.errno in (errno.ENOSPC, errno.EDQUOT)
           else "choose another --out DIR")
    return f"cannot write the report to {out} ({where}{e.strerror or e}); {fix} (report.md was not written)"


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
    md = out / REPORT_MD
    try:
        pngs = render(data, out, curves(evals.rows))
        write_text_atomic(md, render_markdown(run, data, [p.name for p in pngs], evals))
    except OSError as e:  # report.md last: it never links plots that were not written
        raise ReportWriteError(_write_problem(out, e)) from None
    return pngs + [md]
