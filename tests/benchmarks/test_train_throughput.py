"""benchmarks/train_throughput.py keeps alia-train's figures whatever the baseline does: they
are written to --json before transformers is imported, and a missing transformers leaves the
baseline out, saying so, instead of ending the process."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from conftest import subprocess_env

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "train_throughput.py"
TINY = ["+model=tiny", "model.num_layers=1", "model.vocab_size=4096", "train.micro_batch_size=1",
        "train.global_batch_size=2", "train.seq_length=32", "train.device=cpu"]


def test_alia_figures_survive_a_baseline_that_breaks(tmp_path):
    """A transformers whose import fails (as a broken or mismatched install would) ends the
    process in the baseline; the figures measured before it are in the JSON already."""
    broken = tmp_path / "site" / "transformers"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise RuntimeError('a broken transformers')\n")
    out = tmp_path / "result.json"
    env = subprocess_env(PYTHONPATH=f"{broken.parent}:{subprocess_env().get('PYTHONPATH', '')}")
    proc = subprocess.run([sys.executable, str(SCRIPT), *TINY, "--random-tokens", "--steps", "1", "--warmup", "1",
                           "--json", str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "a broken transformers" in proc.stderr
    (alia,) = json.loads(out.read_text())["results"]
    assert alia["system"] == "alia-train" and alia["tokens_per_sec"] > 0
    assert alia["device"] == "cpu" and alia["dtype"] == "float32"


def test_a_missing_transformers_leaves_the_baseline_out(monkeypatch):
    spec = importlib.util.spec_from_file_location("train_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "train_throughput", module)  # its dataclass looks itself up
    spec.loader.exec_module(module)
    monkeypatch.setitem(sys.modules, "transformers", None)  # import raises ImportError
    why = module._baseline({}, [], [], None)
    assert why.startswith("transformers cannot be imported") and "alia-train[hf]" in why
