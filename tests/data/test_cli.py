"""The `alia-data` command line: subcommands, exit codes, messages, and a light start-up."""

from __future__ import annotations

import subprocess
import sys

from alia_train.cli.data import main


def test_tokenize_then_mixture(tmp_path, corpus_dir, tokenizer_path, capsys):
    prefix = tmp_path / "out" / "corpus"
    rc = main(["tokenize", "--input", str(corpus_dir), "--tokenizer", str(tokenizer_path),
               "--output-prefix", str(prefix), "--workers", "0", "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0
    for lang in ("ca", "code", "en", "es", "eu"):
        assert f"{prefix}_{lang}.bin/.idx" in out
    assert f"stats: {prefix}.stats.json" in out

    rc = main(["mixture", f"{prefix}.stats.json", "--tokens", "1e7", "multipliers.eu=4"])
    out = capsys.readouterr().out
    assert rc == 0
    assert out.splitlines()[0].split() == ["lang", "tokens", "natural", "effective", "to", "be", "seen", "epochs"]
    assert "WARNING: eu would be repeated" in out

    # The data config written beside the shards gives the same plan.
    assert main(["mixture", f"{prefix}.data.yaml", "multipliers.eu=4", "--tokens", "1e7"]) == 0
    assert capsys.readouterr().out == out


def test_errors_are_one_line_and_exit_1(tmp_path, tokenizer_path, capsys):
    rc = main(["tokenize", "--input", str(tmp_path / "nope.jsonl"), "--tokenizer", str(tokenizer_path),
               "--output-prefix", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("alia-data: error: input ") and "no such file" in err
    rc = main(["mixture", str(tmp_path / "missing.yaml")])
    assert rc == 1 and "no such file" in capsys.readouterr().err


def test_tokenize_never_loads_torch_or_megatron(tmp_path, corpus_dir, tokenizer_path):
    code = (
        "import sys; from alia_train.cli.data import main; "
        f"rc = main(['tokenize', '--input', {str(corpus_dir / 'eu.jsonl')!r}, '--tokenizer', {str(tokenizer_path)!r},"
        f" '--output-prefix', {str(tmp_path / 'x')!r}, '--workers', '1', '--no-progress']); "
        "heavy = [m for m in ('torch', 'megatron', 'datasets') if m in sys.modules]; "
        "print('HEAVY', heavy); sys.exit(rc)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout
