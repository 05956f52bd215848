"""alia-eval end to end on CPU, as issue #27 asks to see it: a real tiny training run
(`alia-train +model=tiny`, a checkpoint every 20 steps), real lm-evaluation-harness on the shipped
four-language task, W&B offline. Training, the first alia-eval, alia-report and the offline
error run as the user's commands; the later alia-eval calls run its main() in this process
(same code, one import instead of one per call).

One module run is shared: train 60 steps (checkpoints 20, 40, 60), then `alia-eval --tasks local`
over all of them. Checked: a batch of rows per checkpoint; the score of the last checkpoint well
above chance (25 %) and above the first's; the scores in W&B at their training steps; a second
alia-eval adds nothing; an eval cut short mid-append is redone without touching earlier rows;
alia-report draws the curve; a dataset missing offline and other bad input are one line.
"""

from __future__ import annotations

import json
import re
import struct
import subprocess
import time
from pathlib import Path

import pytest

from conftest import cli, scratch, subprocess_env
from report.png import assert_valid_png

from alia_train.report.evals import read_evals

pytestmark = pytest.mark.slow

STEPS, EVERY = 60, 20
CHANCE = 0.25


def _run(cmd: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=subprocess_env(**env), capture_output=True, text=True, timeout=600)


def _eval(run_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    # One thread: the tiny model's matrices gain nothing from two, and the suite runs a process per core.
    offline = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(run_dir.parent / "hf"),
               "OMP_NUM_THREADS": "1"}
    return _run([cli("alia-eval"), str(run_dir), *args], run_dir.parent, **{**offline, **env})


@pytest.fixture(scope="module")
def run_dir(request, tmp_path_factory) -> Path:
    root = scratch(request, tmp_path_factory, "alia_eval")
    proc = _run([cli("alia-train"), "+model=tiny", f"train.steps={STEPS}", f"checkpoint.interval={EVERY}",
                 "checkpoint.keep=10", f"run.dir={root / 'run'}", "logging.console=plain"], root)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root / "run"


@pytest.fixture(scope="module")
def first_eval(run_dir) -> dict:
    wandb = {f"WANDB_{k}": str(run_dir.parent / f"wandb_{k.lower()}") for k in ("DIR", "CONFIG_DIR", "CACHE_DIR", "DATA_DIR")}
    t0 = time.monotonic()
    proc = _eval(run_dir, "--tasks", "local", "--wandb", "offline", WANDB_MODE="offline", WANDB_SILENT="true", **wandb)
    seconds = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"proc": proc, "seconds": seconds, "file": (run_dir / "evals.jsonl").read_bytes()}


def _group_acc(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["value"] for r in read_evals(run_dir / "evals.jsonl").rows
            if r["task"] == "alia_langid" and r["metric"] == "acc"}


def test_every_checkpoint_is_scored_and_the_score_rises_above_chance(run_dir, first_eval):
    got = read_evals(run_dir / "evals.jsonl")
    assert not got.problems()
    steps = sorted({r["step"] for r in got.rows})
    assert steps == list(range(EVERY, STEPS + 1, EVERY))
    for step in steps:
        rows = [r for r in got.rows if r["step"] == step]
        assert sorted(r["task"] for r in rows) == ["alia_langid"] + [f"alia_langid_{x}" for x in ("ca", "es", "eu", "gl")]
        assert all(set(r) >= {"step", "task", "metric", "value", "stderr", "n", "group", "settings", "seconds"}
                   for r in rows)
    acc = _group_acc(run_dir)
    first, last = acc[steps[0]], acc[steps[-1]]
    # 120 items: a standard error of ~0.04; chance is exactly 25 % (alia_train/eval/langid_items.py).
    assert last >= CHANCE + 0.15, acc
    assert last >= first + 0.10, acc
    out = first_eval["proc"].stdout
    assert re.search(r"scored 3 checkpoint\(s\) \(15 rows\) in [\d.]+ s: [\d.]+ s per checkpoint", out), out
    print(f"alia-eval: {first_eval['seconds']:.1f} s for {len(steps)} checkpoints; group acc {acc}; {out.splitlines()[-1]}")


def _wandb_history(run_dir: Path) -> list[dict]:
    """History rows of the offline W&B eval run (the .wandb file: a LevelDB-style log of records)."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = (run_dir / "wandb").glob("offline-run-*-eval/run-*.wandb")
    data, pos, block, records, partial = path.read_bytes(), 7, 32768, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 2):
            partial = chunk
        elif kind in (3, 4):
            partial += chunk
        if kind in (1, 4):
            records.append(partial)
    history = []
    for raw in records:
        rec = pb.Record()
        rec.ParseFromString(raw)
        if rec.WhichOneof("record_type") == "history":
            history.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                            for item in rec.history.item})
    return history


def test_wandb_gets_the_scores_at_their_training_steps(run_dir, first_eval):
    history = _wandb_history(run_dir)
    acc = _group_acc(run_dir)
    assert {h["train_step"]: h["eval/alia_langid/acc"] for h in history} == pytest.approx(acc)
    assert all({f"eval/alia_langid_{x}/acc" for x in ("es", "ca", "eu", "gl")} <= set(h) for h in history)


def _eval_here(run_dir: Path, capsys, monkeypatch, *args: str) -> str:
    """alia-eval's main() in this process (the imports paid once for the tests below); stdout."""
    from alia_train.cli.eval import main

    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert main([str(run_dir), *args]) == 0
    return capsys.readouterr().out


def test_a_second_alia_eval_adds_nothing(run_dir, first_eval, capsys, monkeypatch):
    out = _eval_here(run_dir, capsys, monkeypatch, "--tasks", "local")
    assert "nothing to score: 3 checkpoint(s) already scored" in out
    assert (run_dir / "evals.jsonl").read_bytes() == first_eval["file"]


def test_an_eval_cut_short_mid_append_is_redone_and_earlier_rows_stay(run_dir, first_eval, capsys, monkeypatch):
    path = run_dir / "evals.jsonl"
    lines = first_eval["file"].splitlines(keepends=True)
    kept = b"".join(lines[:-3]) + lines[-3][:40]  # the last batch cut in its third-last row, mid-line
    path.write_bytes(kept)
    out = _eval_here(run_dir, capsys, monkeypatch, "--tasks", "local")
    assert f"step {STEPS}:" in out and "step 20:" not in out  # only the cut checkpoint again
    assert path.read_bytes().startswith(kept + b"\n")
    got = read_evals(path)
    assert got.damaged_lines == 1 and got.incomplete_batches == 1
    first = [json.loads(line) for line in first_eval["file"].splitlines()]
    assert _group_acc(run_dir) == {r["step"]: r["value"] for r in first if r["task"] == "alia_langid"}  # same scores


def test_the_report_draws_the_benchmark_over_steps(run_dir, first_eval):
    proc = _run([cli("alia-report"), str(run_dir)], run_dir.parent)
    assert proc.returncode == 0, proc.stderr
    png = run_dir / "report" / "eval_alia_langid.png"
    assert assert_valid_png(png) == (800, 450)
    md = (run_dir / "report" / "report.md").read_text()
    assert "![Benchmark: alia_langid](eval_alia_langid.png)" in md
    assert re.search(rf"^\| alia_langid \| acc \(all\) \| {STEPS} \| 0\.\d{{4}} \|", md, re.M), md


def test_a_dataset_missing_offline_is_one_line_naming_the_task_and_the_download(run_dir, first_eval):
    before = (run_dir / "evals.jsonl").read_bytes()
    proc = _eval(run_dir, "--tasks", "arc_easy", "--checkpoints", "latest")
    assert proc.returncode == 2
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert errors[0].startswith("alia-eval: error: task arc_easy: dataset allenai/ai2_arc is not in the local "
                                "Hugging Face cache and HF_DATASETS_OFFLINE=1 forbids downloading it")
    assert errors[0].endswith("HF_DATASETS_OFFLINE=0 alia-eval --download --tasks arc_easy")
    assert (run_dir / "evals.jsonl").read_bytes() == before


@pytest.mark.parametrize("args, message", [
    (["{tmp}/missing", "--tasks", "local"], r"{tmp}/missing: no such run directory$"),
    (["{tmp}", "--tasks", "local"], r"{tmp}: no checkpoints \(expected .*checkpoints/step_\*"),
    (["{run}", "--tasks", "lcoal"], r"--tasks: unknown task 'lcoal': not a task set \(iberian, iberian_mc, local; .*did you mean local\?"),
    (["{run}", "--tasks", "local", "--checkpoints", "30"], r"no checkpoint at step 30 in .* \(steps saved: 20, 40, 60\)$"),
    (["{run}", "--tasks", "local", "--checkpoints", "last"], r"--checkpoints: 'last' is not all, latest or a list of steps"),
    (["{run}", "--tasks", "local", "--include-path", "{tmp}/nope"], r"--include-path .*/nope: no such directory$"),
])
def test_bad_input_is_one_line_and_exit_2(run_dir, first_eval, tmp_path, capsys, monkeypatch, args, message):
    from alia_train.cli.eval import main

    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert main([a.format(tmp=tmp_path, run=run_dir) for a in args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("alia-eval: error: "), err
    assert re.search(message.format(tmp=re.escape(str(tmp_path)), run=re.escape(str(run_dir))), err[0]), err


def test_an_unreadable_checkpoint_is_skipped_and_the_others_are_scored(run_dir, first_eval, tmp_path):
    """A checkpoint that cannot be read (retention removed a file meanwhile, a damaged shard) is
    one warning; the others are scored (in-process: alia_train.eval's API, as cli/eval.py calls it)."""
    import shutil

    from alia_train.cli.eval import _open_checkpoint
    from alia_train.eval import EvalOptions, run_eval
    from alia_train.eval.errors import CheckpointError

    run = tmp_path / "run"
    shutil.copytree(run_dir / "checkpoints", run / "checkpoints")
    real = _open_checkpoint(None)

    def open_checkpoint(path: Path):
        if path.name == "step_00000040":
            raise CheckpointError(f"{path}: checkpoint file missing (__0_0.distcp)")
        return real(path)

    said: list[str] = []
    summary = run_eval(run, EvalOptions(names=["alia_langid"], limit=2), open_checkpoint, None, said.append)
    assert summary.scored == 2 and summary.failed == [f"step 40: {run}/checkpoints/step_00000040: checkpoint file "
                                                      "missing (__0_0.distcp)"]
    assert any(line.startswith("WARNING: step 40 skipped:") for line in said), said
    assert sorted({r["step"] for r in read_evals(run / "evals.jsonl").rows}) == [20, 60]
