"""`alia-report`: plots and a markdown summary of a run directory, offline (no network, no GPU).

    from alia_train.report import write_report
    write_report("runs/try1")            # -> runs/try1/report/{*.png, report.md}

The pieces: `alia_train.metrics_file` reads metrics.jsonl (one record per step, resumes
resolved), `run` reads the rest of the run dir, `series` turns records into what is plotted, `plots` draws the PNGs,
`summary` writes report.md, and `build` ties them together.
"""

from alia_train.report.build import NoMetricsError, ReportWriteError, write_report
from alia_train.report.run import RunData, load_run

__all__ = ["NoMetricsError", "ReportWriteError", "RunData", "load_run", "write_report"]
