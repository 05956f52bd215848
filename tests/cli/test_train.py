"""alia-train as a user runs it: real processes on CPU, real files.

One module-scoped run (the command from issue #13, `alia-train +model=tiny train.steps=6`, in
an empty working directory) is shared; the other launches reuse its run directory:
  * quiet output: no library warning lines, the TE / Apex absence said once;
  * a launch record in metrics.jsonl;
  * a launch refused after start-up (another architecture on resume) and one that hits a
    file-size limit writing config.yaml both leave config.yaml as the accepted launch wrote it;
  * `--config-dir DIR` with the PREFIX.data.yaml that `alia-data tokenize` writes as DIR/data.
"""

from __future__ import annotations

import json
import re
import resource
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import yaml

from alia_train.data.sample_corpus import sample_corpus_dir, sample_tokenizer_path
from conftest import cli, subprocess_env

NOISE = re.compile(r"warn|deprecat", re.IGNORECASE)


def _run(cmd: list[str], cwd: Path, preexec_fn=None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=subprocess_env(), capture_output=True, text=True,
                          timeout=600, preexec_fn=preexec_fn)


def _error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("alia-train: error:")]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory) -> dict:
    cwd = tmp_path_factory.mktemp("fresh")
    proc = _run([cli("alia-train"), "+model=tiny", "train.steps=6"], cwd)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    run_dir = cwd / "runs" / "tiny"
    return {"proc": proc, "run_dir": run_dir, "config": (run_dir / "config.yaml").read_bytes()}


def test_a_tiny_run_prints_no_warning_lines(first_run):
    out = first_run["proc"].stdout + first_run["proc"].stderr
    noisy = [line for line in out.splitlines() if NOISE.search(line)]
    assert not noisy, "\n".join(noisy)
    notes = [line for line in out.splitlines() if "Transformer Engine" in line or "Apex" in line]
    assert len(notes) == 1 and notes[0].startswith("[alia-train] "), out
    assert "training finished at step 6" in out
    # tiny's warmup (20) is longer than these 6 steps: shortened, and said (not silently).
    assert "[alia-train] note: optim.warmup_steps 20 >= train.steps 6: warming up over 5 steps" in out


def test_every_start_appends_a_launch_record(first_run):
    records = [json.loads(line) for line in (first_run["run_dir"] / "metrics.jsonl").read_text().splitlines()]
    launch = records[0]
    assert launch["kind"] == "launch" and launch["step"] == 0 and launch["world_size"] == 1
    assert launch["layout"] == {"tp": 1, "pp": 1, "vpp": None, "cp": 1, "dp": 1}
    assert launch["versions"]["megatron-core"] and launch["device"] == "cpu"
    assert [r["kind"] for r in records].count("launch") == 1
    assert not list(first_run["run_dir"].glob("*config.yaml*tmp*")), "temporary file left behind"


def test_a_refused_resume_leaves_config_yaml_alone(first_run):
    run_dir = first_run["run_dir"]
    metrics = (run_dir / "metrics.jsonl").read_bytes()
    proc = _run([cli("alia-train"), "+model=tiny", "train.steps=8", f"run.dir={run_dir}",
                 "model.num_layers=2"], run_dir.parent)
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert len(_error_lines(proc)) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert (run_dir / "config.yaml").read_bytes() == first_run["config"]
    assert (run_dir / "metrics.jsonl").read_bytes() == metrics  # no launch record either


def _file_size_limit(max_bytes: int):
    def apply() -> None:
        # As a full disk does, the write fails (EFBIG) instead of killing the process.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))
    return apply


def test_a_full_disk_never_truncates_config_yaml(first_run):
    run_dir = first_run["run_dir"]
    assert len(first_run["config"]) > 1000  # so the old in-place write would have cut it
    # Same config (its data caches exist, nothing else needs writing): it resumes at step 6,
    # then cannot write config.yaml.
    proc = _run([cli("alia-train"), "+model=tiny", "train.steps=6", f"run.dir={run_dir}"],
                run_dir.parent, preexec_fn=_file_size_limit(1000))
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    errors = _error_lines(proc)
    assert len(errors) == 1 and "config.yaml" in errors[0] and "File too large" in errors[0], proc.stderr
    assert (run_dir / "config.yaml").read_bytes() == first_run["config"]
    assert not list(run_dir.glob("*config.yaml*tmp*")), "temporary file left behind"
    # The resume path (checkpoint load) is quiet too.
    assert "resumed from" in proc.stdout
    assert not [line for line in (proc.stdout + proc.stderr).splitlines() if NOISE.search(line)]


def test_config_dir_trains_with_a_users_data_group(tmp_path):
    corpus = sample_corpus_dir()
    prefix = tmp_path / "shards" / "mix"
    tok = _run([cli("alia-data"), "tokenize", "--input", str(corpus / "eu.jsonl"), str(corpus / "gl.jsonl"),
                "--tokenizer", str(sample_tokenizer_path()), "--output-prefix", str(prefix),
                "--workers", "0", "--no-progress"], tmp_path)
    assert tok.returncode == 0, tok.stderr
    confs = tmp_path / "my_confs"
    (confs / "data").mkdir(parents=True)
    shutil.copy(f"{prefix}.data.yaml", confs / "data" / "my_mix.yaml")
    elsewhere = tmp_path / "elsewhere"  # not the checkout, not the config dir
    elsewhere.mkdir()

    proc = _run([cli("alia-train"), "--config-dir", str(confs), "+model=tiny", "data=my_mix",
                 "train.steps=2", "logging.interval=1", "run.dir=run"], elsewhere)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    run_dir = elsewhere / "run"
    data = yaml.safe_load((run_dir / "config.yaml").read_text())["data"]
    assert [(s["path"], s["lang"]) for s in data["sources"]] == [(f"{prefix}_eu", "eu"), (f"{prefix}_gl", "gl")]
    assert data["use_sample"] is False
    assert json.loads((run_dir / "mixture.json").read_text())["languages"] == ["eu", "gl"]
    train = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in train if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2]
    assert {k for r in train for k in r if k.startswith("tokens/")} <= {"tokens/eu", "tokens/gl"}
    assert not (run_dir / "data_cache" / "sample").exists(), "the sample corpus must not be used"


def test_a_run_of_non_finite_steps_stops_in_one_line_and_saves_none_of_them(tmp_path):
    """Issue #24: optim.lr=1e6 under skip made every step after the second non-finite (NaN
    gradients, finite loss), and the run still "finished" and saved those weights."""
    from alia_train.exit_codes import EXIT_NONFINITE

    proc = _run([cli("alia-train"), "+model=tiny", "train.steps=8", "optim.lr=1e6", "train.on_nonfinite=skip",
                 "train.max_skipped_steps=2", "checkpoint.interval=1", "train.global_batch_size=2",
                 "train.micro_batch_size=2", "train.seq_length=64", "logging.console=plain", "run.dir=run"], tmp_path)
    assert proc.returncode == EXIT_NONFINITE, proc.stdout[-3000:] + proc.stderr[-3000:]
    errors = _error_lines(proc)
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert errors[0].startswith("alia-train: error: non-finite gradients at step 5 (loss "), errors
    assert "3 non-finite steps in a row (steps 3-5), more than train.max_skipped_steps=2" in errors[0]
    assert [line for line in proc.stdout.splitlines() if "step skipped" in line][-1].startswith(
        "[alia-train] WARNING: non-finite gradients at step 4")
    assert "training finished" not in proc.stdout
    # The saves due at the skipped steps 3 and 4 were not made: `latest` is the one before them.
    checkpoints = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("step_*")) == ["step_00000001", "step_00000002"]
    assert (checkpoints / "latest").read_text().strip() == "step_00000002"


def test_a_non_finite_step_with_stop_exits_3_in_one_line_and_saves_nothing_after_it(tmp_path):
    """train.on_nonfinite=stop (the default) from outside: one line naming what was non-finite
    and the step, exit 3, no checkpoint of the wrecked weights (docs/failures.md)."""
    from alia_train.exit_codes import EXIT_NONFINITE

    proc = _run([cli("alia-train"), "+model=tiny", "train.steps=8", "optim.lr=1e6", "checkpoint.interval=1",
                 "train.global_batch_size=2", "train.micro_batch_size=2", "train.seq_length=64",
                 "logging.console=plain", "run.dir=run"], tmp_path)
    assert proc.returncode == EXIT_NONFINITE, proc.stdout[-3000:] + proc.stderr[-3000:]
    errors = _error_lines(proc)
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    step = int(re.match(r"alia-train: error: non-finite (?:gradients|loss) at step (\d+)", errors[0]).group(1))
    assert "training finished" not in proc.stdout
    saved = sorted(int(p.name.split("_")[1]) for p in (tmp_path / "run" / "checkpoints").glob("step_*"))
    assert saved == list(range(1, step)), (step, saved)  # every finite step, none of the bad one
