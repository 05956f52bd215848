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


TEST_REF = re.compile(r"`((?:tests/)?[\w/]*test_\w+\.py)?(?:::(\w+\*?))?`")


def _named_tests(path: Path) -> list[tuple[str, str | None]]:
    """(test file, test name or None) for each `tests/x.py::test_y`, `x.py::test_y` and
    `::test_y` (the file of the reference before it) in the doc."""
    named, last_file = [], None
    for file, name in TEST_REF.findall(path.read_text()):
        if not file and not name:
            continue
        last_file = file or last_file
        named.append((last_file, name or None))
    return named


def _test_file(ref: str) -> Path | None:
    if ref.startswith("tests/"):
        return REPO / ref
    found = sorted((REPO / "tests").rglob(Path(ref).name))
    return found[0] if len(found) == 1 else None


def test_every_test_the_docs_name_exists():
    """A doc row's "test" column is a promise too: each named test file and test function (a
    trailing `*` is a prefix) exists, so renaming a test without its doc fails here."""
    missing = []
    for path in DOCS:
        for file, name in _named_tests(path):
            source = _test_file(file) if file else None
            if source is None or not source.exists():
                missing.append(f"{path.name}: {file}::{name or ''} (no such test file, or not one)")
                continue
            pattern = rf"^\s*def {re.escape(name.rstrip('*'))}{'' if name.endswith('*') else r'\('}" if name else None
            if pattern and not re.search(pattern, source.read_text(), re.M):
                missing.append(f"{path.name}: {file}::{name}")
    assert missing == []
    assert len([1 for path in DOCS for _ in _named_tests(path)]) > 50  # the references are found
