"""Where step metrics go besides metrics.jsonl: W&B (offline, with the real wandb package),
TensorBoard, and the console (progress line in a terminal, plain lines otherwise)."""

from __future__ import annotations

import io
import re
from dataclasses import asdict
from pathlib import Path

import pytest

from alia_train.config import load_config
from alia_train.training.metrics import Console
from alia_train.training.tracking import TensorBoardTracker, WandbTracker, make_trackers, scrub_secrets

FAKE_KEY = "local-fedcba9876543210fedcba9876543210fedcba98"
MARKER = "alia-cfg-probe-7f3a"


def _rec(step: int, kind: str = "train", **extra) -> dict:
    rec = {"kind": kind, "step": step, "loss": 5.0 - step / 10}
    if kind == "train":
        rec.update({"lr": 1e-3, "grad_norm": 0.5, "tokens_per_sec": 1234.0, "step_time": 0.1,
                    "loss/es": 5.1, "tokens/es": 100, "skipped": True, "note": "text"})
    return rec | extra


# ---------------------------------------------------------------------------------- W&B
@pytest.fixture
def wandb_env(tmp_path, monkeypatch) -> Path:
    for name, sub in [("WANDB_DIR", "wandb_dir"), ("WANDB_CONFIG_DIR", "wandb_config"),
                      ("WANDB_CACHE_DIR", "wandb_cache"), ("WANDB_DATA_DIR", "wandb_data")]:
        monkeypatch.setenv(name, str(tmp_path / sub))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    return tmp_path


def test_wandb_offline_resumes_one_run_logs_the_config_and_never_the_key(wandb_env):
    run_dir = wandb_env / "run"
    run_dir.mkdir()
    cfg = load_config(["+model=tiny", f"run.dir={run_dir}", f"run.name={MARKER}", "logging.wandb.mode=offline"])

    # Launch 1.
    (tracker,) = make_trackers(cfg)
    assert isinstance(tracker, WandbTracker)
    run_id = (run_dir / "wandb_id").read_text().strip()
    assert tracker.run_id == run_id
    assert tracker._run.config["train"]["steps"] == cfg.train.steps
    assert tracker._run.config["run"]["name"] == MARKER
    for rec in (_rec(2), _rec(4), _rec(4, "valid")):
        tracker.log(rec)
    tracker.close()

    # Launch 2 of the same run dir (a resume, with a changed setting): the same W&B run.
    cfg.train.steps += 10
    (tracker,) = make_trackers(cfg)
    assert tracker.run_id == run_id
    assert tracker._run.config["train"]["steps"] == cfg.train.steps
    tracker.log(_rec(6))
    tracker.close()

    launches = sorted((run_dir / "wandb").glob(f"offline-run-*-{run_id}*"))  # "-1" is added within one second
    assert len(launches) == 2
    # The config went into the run's data (what `wandb sync` uploads).
    assert MARKER.encode() in (launches[0] / f"run-{run_id}.wandb").read_bytes()
    for path in [p for p in wandb_env.rglob("*") if p.is_file()]:
        assert FAKE_KEY.encode() not in path.read_bytes(), f"API key found in {path}"


class _FakeRun:
    """Stands in for wandb's Run: its step counter only moves forward, like the real one."""

    id = "fake"

    def __init__(self, step: int):
        self.step = step
        self.logged: list[tuple[int, dict]] = []

    def log(self, data: dict, step: int) -> None:
        self.step = max(self.step, step)
        self.logged.append((step, data))


def test_wandb_skips_rerun_steps_before_the_resumed_runs_step(capsys):
    tracker = WandbTracker.__new__(WandbTracker)
    tracker._run, tracker._dropped = _FakeRun(step=15), 0  # an online resume: W&B was at 14
    for step in (12, 14, 16):
        tracker.log(_rec(step))
    tracker.log(_rec(16, "valid"))
    assert [s for s, _ in tracker._run.logged] == [16, 16]
    assert tracker._dropped == 2
    assert capsys.readouterr().err.count("re-run steps") == 1  # said once, not per record
    data = tracker._run.logged[0][1]
    # Numbers only, namespaced by kind; booleans and text stay out.
    assert data["train/loss"] == pytest.approx(3.4) and data["train/tokens/es"] == 100
    assert "train/skipped" not in data and "train/note" not in data
    assert set(tracker._run.logged[1][1]) == {"valid/loss"}


def test_secrets_never_reach_the_logged_config():
    cfg = {"a": 1, "api_key": "x", "nested": {"wandb_api_key": "x", "token": "y", "tokens": 3,
                                              "tokenizer": "t.model", "Password": "z"},
           "sources": [{"path": "p", "secret": "s"}]}
    assert scrub_secrets(cfg) == {"a": 1, "nested": {"tokenizer": "t.model"}, "sources": [{"path": "p"}]}
    # The real config has nothing to scrub.
    real = asdict(load_config(["+model=tiny"]))
    assert scrub_secrets(real) == real


def test_wandb_disabled_makes_no_tracker(tmp_path):
    cfg = load_config(["+model=tiny", f"run.dir={tmp_path}"])
    assert make_trackers(cfg) == []
    assert not (tmp_path / "wandb_id").exists()


# ---------------------------------------------------------------------------------- TensorBoard
def test_tensorboard_without_the_package_says_how_to_get_it(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed
    with pytest.raises(RuntimeError, match="pip install tensorboard"):
        TensorBoardTracker(str(tmp_path))


def test_tensorboard_resume_purges_rerun_steps(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for steps in ((2, 4, 6), (4, 6, 8)):  # launch 2 resumed from step 2 and re-ran 4 and 6
        tracker = TensorBoardTracker(str(tmp_path))
        for step in steps:
            tracker.log(_rec(step))
        tracker.close()
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/loss")] == [2, 4, 6, 8]


# ---------------------------------------------------------------------------------- console
class _Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def _two_steps(console: Console) -> None:
    console.step(_rec(2))
    console.message("validation step 2: loss 4.8")
    console.step(_rec(4, tflops_per_gpu=400.0, mfu=0.4, peak_mem_gb=12.5))
    console.close()


def test_console_in_a_terminal_redraws_one_progress_line():
    stream = _Stream(tty=True)
    _two_steps(Console("auto", total_steps=10, stream=stream))
    out = stream.getvalue()
    # Each update returns to the line start and clears it instead of starting a new line.
    assert out.count("\r\033[K") == 3  # two steps and the message's clearing
    assert out.startswith("\r\033[Kstep 2/10 | loss 4.8000 |")
    assert "\r\033[Kvalidation step 2: loss 4.8\n" in out
    last = out.rsplit("\r\033[K", 1)[1]
    assert last.startswith("step 4/10 | loss 4.6000") and last.endswith("\n")
    assert "tok/s 1,234" in last and "MFU 40.0%" in last and "mem 12.5GB" in last
    assert re.search(r"eta \d\d:\d\d:\d\d\n$", last)


def test_console_in_a_log_writes_plain_lines():
    stream = _Stream(tty=False)
    _two_steps(Console("auto", total_steps=10, stream=stream))
    out = stream.getvalue()
    assert "\r" not in out and "\033" not in out
    lines = out.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("step 2/10 | loss 4.8000 | lr 0.001 | grad_norm 0.500 | tok/s 1,234")
    assert lines[0].endswith("eta ?")  # no rate yet after the first record
    assert lines[1] == "validation step 2: loss 4.8"
    assert re.search(r"^step 4/10 .* eta \d\d:\d\d:\d\d$", lines[2])


def test_console_mode_overrides_the_terminal_check():
    assert Console("plain", 10, stream=_Stream(tty=True)).progress is False
    assert Console("progress", 10, stream=_Stream(tty=False)).progress is True
