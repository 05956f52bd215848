"""alia-report's command line: output, --out, and one-line errors with exit code 2."""

from __future__ import annotations

import pytest
from report.synthetic import make_run, records

from alia_train.cli.report import main


def _error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_no_metrics_is_a_one_line_error(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    err = _error_lines(capsys)
    assert len(err) == 1 and err[0].startswith("alia-report: error:") and "metrics.jsonl" in err[0]
    assert not (tmp_path / "report").exists()


def test_empty_metrics_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "metrics.jsonl").write_text('{"kind": "train", "st')
    assert main([str(tmp_path)]) == 2
    err = _error_lines(capsys)
    assert len(err) == 1 and "no complete record" in err[0]


def test_out_dir(tmp_path, capsys):
    run = make_run(tmp_path / "run", records(1, 6), mixture=False)
    assert main([str(run), "--out", str(tmp_path / "r")]) == 0
    assert "report.md" in capsys.readouterr().out
    assert (tmp_path / "r" / "report.md").is_file() and (tmp_path / "r" / "mixture.png").is_file()
    assert not (run / "report").exists()


def test_usage(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert "alia-report" in capsys.readouterr().out
