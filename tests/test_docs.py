"""Docs that a test can keep true: the exit-code table against exit_codes.py, what each signal
exits with wherever the docs say it, and the model list of the README against configs/model."""

from __future__ import annotations

import re
from pathlib import Path

from alia_train import exit_codes

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def test_the_exit_code_table_is_exit_codes_py():
    doc = (REPO / "docs" / "configuration.md").read_text()
    table = doc[doc.index("## Exit codes"):]
    listed = {int(code) for code in re.findall(r"^\| (\d+) \|", table, re.M)}
    defined = {value for name, value in vars(exit_codes).items() if name.startswith("EXIT_")}
    assert listed == defined


def test_each_signal_is_said_to_exit_with_its_code():
    """SIGTERM exits 143 (stopped), SIGUSR1 75 (requeued): no sentence gives SIGTERM 75."""
    assert exit_codes.EXIT_STOPPED == 143 and exit_codes.EXIT_RESUME == 75
    for path in DOCS:
        for line in path.read_text().splitlines():
            for said in re.findall(r"SIGTERM[^.;|]*?exits? (\d+)", line):
                assert int(said) == exit_codes.EXIT_STOPPED, f"{path.name}: {line.strip()}"
            for said in re.findall(r"SIGUSR1[^.;|]*?exits? (\d+)", line):
                assert int(said) == exit_codes.EXIT_RESUME, f"{path.name}: {line.strip()}"


def test_the_readme_names_every_shipped_model_and_config_group():
    readme = (REPO / "README.md").read_text()
    (configs_line,) = re.findall(r"^ +configs/ +(.+(?:\n {20,}.+)*)", readme, re.M)
    shipped = [p.stem for p in (REPO / "configs" / "model").glob("*.yaml")]
    shipped += [p.name for p in (REPO / "configs").iterdir() if p.is_dir()]
    for name in shipped:
        assert re.search(rf"\b{name}\b", configs_line), f"README's layout does not name {name}"
