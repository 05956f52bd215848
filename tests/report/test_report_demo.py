"""End to end: the real tiny demo (CPU), its metrics.jsonl, W&B offline, alia-report, and a
resume that re-runs steps.

One module-scoped run is shared by the checks: launch 1 trains 12 steps (checkpoints at 6 and
12); the step-12 checkpoint is then removed, as if the run had died just before saving it, and
launch 2 (train.steps=16) resumes from step 6 and logs steps 8-12 again (after dropping launch
1's records of them), with a launch record for each start.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest
from report.png import assert_valid_png

from alia_train.checkpoint import directory
from alia_train.report import load_run
from alia_train.report.plots import PLOTS
from alia_train.report.series import plot_data
from conftest import cli, scratch, subprocess_env

FAKE_KEY = "local-0123456789abcdef0123456789abcdef01234567"
COMMON = ["+model=tiny", "logging.interval=2", "train.eval_interval=6", "checkpoint.interval=6",
          "logging.wandb.mode=offline", "logging.console=plain"]


def _env(tmp: Path) -> dict[str, str]:
    # W&B offline, with every directory it might write to inside the test's tmp dir, and an API
    # key in the environment that must not end up in any file.
    return subprocess_env(
        WANDB_MODE="offline", WANDB_API_KEY=FAKE_KEY, WANDB_SILENT="true",
        WANDB_DIR=str(tmp / "wandb_dir"), WANDB_CONFIG_DIR=str(tmp / "wandb_config"),
        WANDB_CACHE_DIR=str(tmp / "wandb_cache"), WANDB_DATA_DIR=str(tmp / "wandb_data"),
    )


def _run(cmd: list[str], env: dict[str, str]) -> str:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}:\n{out[-5000:]}"
    return out


def _pngs(report: Path) -> dict[str, bytes]:
    return {name: (report / name).read_bytes() for name in PLOTS}


@pytest.fixture(scope="module")
def demo(request, tmp_path_factory) -> dict:
    tmp = scratch(request, tmp_path_factory, "demo")
    run = tmp / "run"
    env = _env(tmp)
    logs = [_run([cli("alia-train"), *COMMON, "train.steps=12", f"run.dir={run}"], env)]
    first_metrics = (run / "metrics.jsonl").read_text()
    logs.append(_run([cli("alia-report"), str(run)], env))
    first_report = _pngs(run / "report")

    # The run "dies" after logging step 12 but before its final checkpoint is published.
    ckpts = directory.checkpoints_dir(run)
    shutil.rmtree(ckpts / directory.step_dir_name(12))
    (ckpts / "latest").write_text(directory.step_dir_name(6) + "\n")
    logs.append(_run([cli("alia-train"), *COMMON, "train.steps=16", f"run.dir={run}"], env))
    logs.append(_run([cli("alia-report"), str(run)], env))
    return {"run": run, "tmp": tmp, "first_metrics": first_metrics, "first_report": first_report, "logs": logs}


def _train_records(text: str) -> list[dict]:
    recs = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [r for r in recs if r["kind"] == "train"]


def test_per_language_losses_average_to_the_overall_loss(demo):
    train = _train_records(demo["first_metrics"])
    assert [r["step"] for r in train] == [2, 4, 6, 8, 10, 12]
    for rec in train:
        langs = [k.split("/", 1)[1] for k in rec if k.startswith("tokens/")]
        assert len(langs) >= 2, rec
        tokens = sum(rec[f"tokens/{lang}"] for lang in langs)
        weighted = sum(rec[f"loss/{lang}"] * rec[f"tokens/{lang}"] for lang in langs) / tokens
        assert weighted == pytest.approx(rec["loss"], rel=1e-6)
        for key in ("lr", "grad_norm", "tokens_per_sec", "consumed_samples", "consumed_tokens", "step_time"):
            assert key in rec


def test_validation_records_per_language(demo):
    valid = [r for r in load_run(demo["run"]).records.valid]
    assert [r["step"] for r in valid] == [6, 12, 16]
    for rec in valid:
        langs = [k.split("/", 1)[1] for k in rec if k.startswith("loss/")]
        assert len(langs) >= 2
        for lang in langs:
            assert rec[f"ppl/{lang}"] == pytest.approx(math.exp(rec[f"loss/{lang}"]))


def test_report_pngs_are_valid_and_follow_the_metrics(demo):
    report = demo["run"] / "report"
    for name in PLOTS:
        assert_valid_png(report / name)
    md = (report / "report.md").read_text()
    assert "Last logged step: **16** of 16 (finished)." in md
    assert "2 launches" in md
    # The resumed launch added steps 14-16 and re-ran 8-12: the curves are not the same.
    after = _pngs(report)
    for name in ("loss.png", "loss_by_language.png", "valid_loss_by_language.png", "lr.png", "mixture.png"):
        assert after[name] != demo["first_report"][name], name


def test_resumed_run_has_each_step_once(demo):
    raw = _train_records((demo["run"] / "metrics.jsonl").read_text())
    # The resumed launch dropped launch 1's records past its checkpoint (steps 8-12) before
    # logging them again (training/metrics.py), so the file itself has each step once.
    assert [r["step"] for r in raw] == list(range(2, 17, 2))
    data = plot_data(load_run(demo["run"]))
    steps = tuple(range(2, 17, 2))
    assert data.train_loss.steps == steps
    assert data.lr.steps == steps
    for lang, s in data.train_loss_by_lang.items():
        # A small language can miss an interval altogether (no sample of it in those batches).
        assert list(s.steps) == sorted(set(s.steps)) and set(s.steps) <= set(steps), lang
    assert set().union(*(s.steps for s in data.train_loss_by_lang.values())) == set(steps)
    assert data.valid_loss.steps == (6, 12, 16)
    # Realised shares come from the kept records only (8 records x 2 steps x 8 x 128 tokens).
    kept = load_run(demo["run"]).records.train
    total = sum(v for r in kept for k, v in r.items() if k.startswith("tokens/"))
    assert sum(data.realised_shares.values()) == pytest.approx(1.0) and total > 0


def test_wandb_offline_continues_one_run_and_keeps_the_key_out(demo):
    run, tmp = demo["run"], demo["tmp"]
    run_id = (run / "wandb_id").read_text().strip()
    launches = sorted((run / "wandb").glob(f"offline-run-*-{run_id}*"))  # "-1" is added within one second
    assert len(launches) == 2, list((run / "wandb").iterdir())
    for path in [p for p in tmp.rglob("*") if p.is_file()]:
        assert FAKE_KEY.encode() not in path.read_bytes(), f"API key found in {path}"
    assert all(FAKE_KEY not in log for log in demo["logs"])


def test_each_start_wrote_a_launch_record_and_the_report_lists_them(demo):
    records = [json.loads(line) for line in (demo["run"] / "metrics.jsonl").read_text().splitlines() if line.strip()]
    launches = [r for r in records if r["kind"] == "launch"]
    assert [(r["step"], r["consumed_samples"]) for r in launches] == [(0, 0), (6, 48)]
    assert all(r["world_size"] == 1 and r["layout"]["dp"] == 1 and r["versions"]["torch"] for r in launches)
    # Each launch record comes before that launch's first train record.
    kinds = [(r["kind"], r["step"]) for r in records]
    assert kinds.index(("launch", 6)) < kinds.index(("train", 14))
    md = (demo["run"] / "report" / "report.md").read_text()
    table = md.split("## Launches", 1)[1].split("\n## ", 1)[0]
    assert [line.split(" | ")[2] for line in table.splitlines() if line.startswith("| 1 ") or line.startswith("| 2 ")] == ["0", "6"]
