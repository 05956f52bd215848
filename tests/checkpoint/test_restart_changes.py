"""Restarts that change something, with real alia-train processes on CPU: a SIGUSR1 stop (save,
exit "resume me", resume exactly), another parallel layout (resharded), settings that would
move the data position or the optimizer's form (refused in one line), one-shot resets of a new
stage, and a full disk during a save.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

from conftest import subprocess_env
from helpers import RNG, STEPS, command, finish, kill_group, start, train_losses, wait_for_step


def test_sigusr1_saves_and_exits_resume_me(tmp_path, cache, reference):
    from alia_train.exit_codes import EXIT_RESUME

    run_dir = tmp_path / "run"
    cmd = command(run_dir, cache, "checkpoint.interval=0")  # only the signal makes a checkpoint
    log = tmp_path / "log.txt"
    proc = start(cmd, log)
    # At least half the run left when the signal lands: tiny steps take ~0.1 s, and a signal that
    # arrives after the last step meets a finished run (exit 0, rightly), not a stop request.
    signal_step = RNG.randrange(2, STEPS // 2)
    wait_for_step(run_dir, signal_step, proc)
    os.killpg(proc.pid, signal.SIGUSR1)
    assert proc.wait(timeout=300) == EXIT_RESUME, log.read_text()[-3000:]
    published = sorted((run_dir / "checkpoints").glob("step_*"))
    assert len(published) == 1
    saved_step = int(published[0].name.split("_")[1])
    assert signal_step <= saved_step < STEPS
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == published[0].name
    text = finish(cmd, log)
    assert f"at step {saved_step}" in text
    assert train_losses(run_dir) == reference


def test_layout_change_reshards(tmp_path, cache):
    """Saved with TP=2; resumed with TP=2, TP=1 and DP=2 from copies of the same run dir."""
    from helpers import relative_diff, run_layouts

    common = ["+model=tiny", "logging.interval=1", f"data.cache_dir={cache}"]
    run_layouts(tmp_path, [*common, "train.steps=6"], {"saved_tp2": ["parallel.tp=2"]}, nproc=2)
    for name in ("tp2", "tp1", "dp2"):
        shutil.copytree(tmp_path / "saved_tp2", tmp_path / name)
    common = [*common, f"train.steps={STEPS}"]
    run_layouts(tmp_path, common, {"tp2": ["parallel.tp=2"], "dp2": []}, nproc=2)
    run_layouts(tmp_path, common, {"tp1": []}, nproc=1)
    same = train_losses(tmp_path / "tp2")
    for name in ("tp1", "dp2"):
        losses = train_losses(tmp_path / name)
        assert sorted(losses) == list(range(1, STEPS + 1))
        worst = max(relative_diff(losses[s], same[s]) for s in range(7, STEPS + 1))
        assert worst < 1e-4, f"{name}: {worst:.2e}"
    layout = json.loads((tmp_path / "tp1" / "checkpoints" / f"step_{STEPS:08d}" / "COMPLETE").read_text())["layout"]
    assert layout["tp"] == 1 and layout["world_size"] == 1


def _errors(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("alia-train: error:")]


def test_position_setting_change_is_refused(tmp_path, cache, reference_dir):
    """train.seq_length / train.seed change what `consumed_samples` points at: one line naming
    each, both values and the fix; exit 2; the checkpoints untouched."""
    run_dir = tmp_path / "run"
    shutil.copytree(reference_dir, run_dir)
    before = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    proc = subprocess.run(command(run_dir, cache, "train.seq_length=64", "train.seed=7"),
                          capture_output=True, text=True, env=subprocess_env(), timeout=600)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = _errors(proc.stderr)
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "train.seq_length was " in errors[0] and "this run has 64" in errors[0]
    assert "train.seed was " in errors[0] and "this run has 7" in errors[0]
    assert f"checkpoint.load={run_dir} checkpoint.reset_data=true" in errors[0]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == before
    # The layer implementation it was written with is recorded (local here: no TE on CPU).
    manifest = json.loads((run_dir / "checkpoints" / f"step_{STEPS:08d}" / "COMPLETE").read_text())
    assert manifest["layer_impl"] == "local" and len(manifest["crc32"]) == len(manifest["files"])


def _small_filesystem(path: Path, mib: int) -> bool:
    """Mount a tmpfs of `mib` MiB at `path` (root only); False where that is not possible."""
    path.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mib}m", "tmpfs", str(path)], capture_output=True)
    return done.returncode == 0


def _limit_file_size(limit: int):
    def apply() -> None:
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_disk_full_keeps_earlier_checkpoints(tmp_path, cache, reference_dir):
    """The run dir on a full disk (a 50 MiB tmpfs holding two checkpoints; where mounting is
    not allowed, a 4 MiB file-size limit): the next save fails with one line naming the
    condition and the directory, exit 2, earlier checkpoints intact, no .partial left."""
    from alia_train.checkpoint import directory

    mnt = tmp_path / "small"
    mounted = _small_filesystem(mnt, 50)
    try:
        run_dir = mnt / "run"
        shutil.copytree(reference_dir, run_dir)
        proc = subprocess.run(command(run_dir, cache, steps=STEPS + 2), capture_output=True, text=True,
                              env=subprocess_env(), timeout=600,
                              preexec_fn=None if mounted else _limit_file_size(4 << 20))
        assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
        errors = _errors(proc.stderr)
        assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        assert ("the disk is full" if mounted else "file-size limit") in errors[0], errors[0]
        assert "unexpected pos" not in proc.stderr and "Local worker" not in proc.stderr  # held back
        assert f"step_{STEPS + 2:08d}.partial" in errors[0] and f"resumes from step_{STEPS:08d}" in errors[0]
        kept = directory.complete_checkpoints(run_dir)
        assert [p.name for p in kept] == [f"step_{STEPS:08d}", f"step_{STEPS - 2:08d}"]
        assert all(directory.verify(p, deep=(0, 1)) is None for p in kept)
        assert not list((run_dir / "checkpoints").glob("*.partial"))
        assert (run_dir / "checkpoints" / "latest").read_text().strip() == f"step_{STEPS:08d}"
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_precision_change_needs_a_fresh_optimizer(tmp_path, cache, reference_dir):
    """fp32 -> bf16 changes the local optimizer's state (fp32 main weights appear): resuming it
    is refused in one line naming both ways out; the weights-only way works, and keeps the
    other run's data position (its dataset is sized from that position, not from sample 0)."""
    run_dir = tmp_path / "run"
    shutil.copytree(reference_dir, run_dir)
    text = finish(command(run_dir, cache, "train.precision=bf16", steps=STEPS + 2), tmp_path / "log.txt", expect=2)
    assert "optimizer state was written by a fp32 run and this run trains in bf16" in text
    assert "checkpoint.reset_optimizer=true" in text
    stage = tmp_path / "stage"
    text = finish(command(stage, cache, "train.precision=bf16", f"checkpoint.load={reference_dir}",
                          "checkpoint.reset_optimizer=true", steps=4), tmp_path / "stage.txt")
    assert f"at step 0 (consumed samples {8 * STEPS})" in text
    assert sorted(train_losses(stage)) == [1, 2, 3, 4]


def test_resets_apply_only_when_starting_from_another_run(tmp_path, cache, reference_dir):
    """checkpoint.load + both resets starts a new stage at step 0 / sample 0 once; every restart
    after that (a rerun with more steps, a SIGKILL) resumes the stage's own checkpoints exactly."""
    from alia_train.metrics_file import record_text

    run_dir = tmp_path / "stage"
    stage = [f"checkpoint.load={reference_dir}", "checkpoint.reset_optimizer=true", "checkpoint.reset_data=true"]
    text = finish(command(run_dir, cache, *stage, steps=4), tmp_path / "log1.txt")
    assert "at step 0 (consumed samples 0); another run's checkpoint (checkpoint.load), with checkpoint.reset_optimizer, checkpoint.reset_data" in text
    cmd = command(run_dir, cache, *stage, steps=8)
    proc = start(cmd, tmp_path / "log2.txt")
    wait_for_step(run_dir, 7, proc)  # the checkpoint of step 6 is published before step 7 runs
    kill_group(proc)
    text2 = (tmp_path / "log2.txt").read_text()
    assert f"step_{4:08d} at step 4 (consumed samples 32)" in text2 and "not applied" in text2
    text3 = finish(cmd, tmp_path / "log3.txt")
    assert f"step_{6:08d} at step 6 (consumed samples 48)" in text3
    # Every line of the file, not the report's reading (which drops superseded records).
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    records = [r for r, _ in filter(None, map(record_text, lines)) if r.get("kind", "train") == "train"]
    assert [r["step"] for r in records] == list(range(1, 9))  # 8 logged steps, each once
    assert [r["consumed_samples"] for r in records] == [8 * s for s in range(1, 9)]
    assert [p.name for p in layout_checkpoints(run_dir)] == [f"step_{8:08d}", f"step_{6:08d}"]

    # train.steps 4 -> 8 moved the LR decay: said on resume, the saved 4-step schedule kept
    # (past its end, min_lr), until optim.override_schedule applies this run's settings.
    assert "LR schedule continues as saved, not as this run's settings (" in text2
    assert "optim.decay_steps (train.steps when unset) 4 -> 8" in text2
    # The sample order does not depend on train.steps: the resume reads on from its position.
    assert "train.steps 4 -> 8: the same sample order, read on from the consumed samples" in text2
    assert "WARNING" not in text2 and "sample order" not in text3  # the same train.steps: nothing to say
    min_lr = 3e-4  # configs/model/tiny.yaml
    assert all(abs(r["lr"] - min_lr) < 1e-12 for r in records[4:]), [r["lr"] for r in records]
    override = ["optim.override_schedule=true", "optim.lr=2e-3"]
    text4 = finish(command(run_dir, cache, *stage, *override, steps=10), tmp_path / "log4.txt")
    assert "LR schedule from this run's settings (optim.override_schedule): optim.lr 0.003 -> 0.002" in text4
    assert "optim.decay_steps (train.steps when unset) 4 -> 10" in text4
    lrs = {r["step"]: r["lr"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
           if r.get("kind") == "train"}
    assert sorted(lrs) == list(range(1, 11))
    assert abs(lrs[9] - 2e-3) < 1e-12, lrs  # the end of the new warmup (min(20, 10 - 1) steps) at the new lr


def layout_checkpoints(run_dir: Path) -> list[Path]:
    from alia_train.checkpoint import directory

    return directory.complete_checkpoints(run_dir)


def test_switching_the_distributed_optimizer_is_refused_before_loading(tmp_path, cache, reference_dir):
    """parallel.distributed_optimizer changed on resume, either way: megatron stores the two
    optimizer states differently and failed deep in dist_checkpointing on every rank. Refused
    in one line naming the setting, the saved value and both ways out; the weights-only way
    works."""
    run_dir = tmp_path / "run"
    shutil.copytree(reference_dir, run_dir)
    stage = tmp_path / "stage"  # the way out: another run's weights, a fresh distributed optimizer
    finish(command(stage, cache, f"checkpoint.load={reference_dir}", "checkpoint.reset_optimizer=true",
                   "parallel.distributed_optimizer=true", steps=2), tmp_path / "stage.txt")
    for source, now, was in ((run_dir, "true", "false"), (stage, "false", "true")):
        before = sorted(p.name for p in (source / "checkpoints").iterdir())
        proc = subprocess.run(command(source, cache, f"parallel.distributed_optimizer={now}", steps=STEPS + 2),
                              capture_output=True, text=True, env=subprocess_env(), timeout=600)
        assert proc.returncode == 2, proc.stderr[-3000:]
        errors = _errors(proc.stderr)
        assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        assert f"written with parallel.distributed_optimizer={was} and this run has {now}" in errors[0]
        assert f"set parallel.distributed_optimizer={was}, or start a new run.dir with checkpoint.load={source} " \
               "checkpoint.reset_optimizer=true" in errors[0]
        assert sorted(p.name for p in (source / "checkpoints").iterdir()) == before
