"""`alia-report RUN_DIR [--out DIR]`: plots and report.md of a run, offline.

Reads only files (metrics.jsonl, config.yaml, mixture.json): no network, no GPU, no torch. Safe
to run on a run that is still training, and on one resumed many times.
"""

from __future__ import annotations

import argparse
import sys

from alia_train.cli.errors import report_error
from alia_train.parallel.quiet import quiet_libraries
from alia_train.exit_codes import EXIT_CONFIG, EXIT_FAILED, EXIT_OK

DESCRIPTION = """Write PNG plots (loss overall and per language, validation loss per language,
learning rate, grad norm, throughput and MFU, planned vs realised language mixture) and a
report.md summary of a run directory into RUN_DIR/report/ (or --out DIR)."""

EPILOG = """example:
  alia-report runs/try1                 # -> runs/try1/report/report.md and *.png
  alia-report runs/try1 --out /tmp/r1   # somewhere else
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="alia-report", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (holds metrics.jsonl)")
    p.add_argument("--out", metavar="DIR", default=None, help="output directory (default RUN_DIR/report)")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    return p


def main(argv: list[str] | None = None) -> int:
    quiet_libraries()
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    from alia_train.report import NoMetricsError, ReportWriteError, write_report

    try:
        paths = write_report(args.run_dir, args.out)
    except NoMetricsError as e:
        return report_error("alia-report", str(e), EXIT_CONFIG)
    except ReportWriteError as e:  # e.g. an output directory under a file, read-only, full
        return report_error("alia-report", str(e), EXIT_FAILED)
    except OSError as e:  # an input of the run directory it cannot read
        where = f"{e.filename}: " if e.filename else f"{args.run_dir}: "
        return report_error("alia-report", f"cannot read {where}{e.strerror or e}; is it a run directory "
                            "alia-train wrote?", EXIT_CONFIG)
    if not args.quiet:
        print(f"alia-report: wrote {paths[-1]} and {len(paths) - 1} plots in {paths[-1].parent}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
