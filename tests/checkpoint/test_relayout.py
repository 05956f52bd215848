"""Routine checkpoints of the distributed optimizer (each rank its own shard, no exchange) onto
another layout, with real alia-train processes over gloo: DP4 -> TP2 x DP2 and DP2 -> PP2,
each rewritten in the portable form on its own layout first (training/relayout.py), then
trained on where the uninterrupted run goes; and `alia-convert portable` for a job whose
processes cannot host the old layout."""

from __future__ import annotations

import shutil
import subprocess

from conftest import BIN, cli, subprocess_env
from helpers import relative_diff, run_layouts, train_losses

SAVED, STEPS = 3, 6


def _common(cache) -> list[str]:
    return ["+model=tiny", "logging.interval=1", f"data.cache_dir={cache}", "parallel.distributed_optimizer=true",
            "checkpoint.interval=3", "train.global_batch_size=8", "train.micro_batch_size=2"]


def _form(run_dir, step: int) -> str:
    from megatron.core import dist_checkpointing

    common = dist_checkpointing.load_common_state_dict(str(run_dir / "checkpoints" / f"step_{step:08d}"))
    return common["optimizer_form"]["sharding"]


def _continues(run_dir, reference: dict[int, float]) -> None:
    losses = train_losses(run_dir)
    assert sorted(losses) == list(range(1, STEPS + 1))
    worst = max(relative_diff(losses[s], reference[s]) for s in range(SAVED + 1, STEPS + 1))
    assert worst < 1e-4, f"{run_dir.name}: the losses after the resume drift ({worst:.2e})"


def test_routine_checkpoints_resume_on_another_tp_and_pp(tmp_path, cache):
    common = _common(cache)
    run_layouts(tmp_path, [*common, f"train.steps={SAVED}"], {"dp4": []}, nproc=4)
    run_layouts(tmp_path, [*common, f"train.steps={SAVED}"], {"dp2": []}, nproc=2)
    assert _form(tmp_path / "dp4", SAVED) == "dp_reshardable"  # the routine form, no gather
    shutil.copytree(tmp_path / "dp4", tmp_path / "tp2dp2")
    shutil.copytree(tmp_path / "dp2", tmp_path / "pp2")
    on = [*common, f"train.steps={STEPS}"]
    run_layouts(tmp_path, on, {"dp4": [], "tp2dp2": ["parallel.tp=2"]}, nproc=4)
    run_layouts(tmp_path, on, {"pp2": ["parallel.pp=2"]}, nproc=2)
    reference = train_losses(tmp_path / "dp4")
    _continues(tmp_path / "tp2dp2", reference)
    _continues(tmp_path / "pp2", reference)
    # The resumed step was rewritten portable; what the new layout saves is routine again.
    assert _form(tmp_path / "tp2dp2", SAVED) == "fully_reshardable"
    assert _form(tmp_path / "tp2dp2", STEPS) == "dp_reshardable"
    assert _form(tmp_path / "dp4", STEPS) == "dp_reshardable"


def test_a_job_that_cannot_host_the_old_layout_names_the_command_that_does(tmp_path, cache):
    """Saved by TP2 (2 processes), resumed as TP1 in one process: one line naming
    `alia-convert portable`; after that command, the one process resumes."""
    common = [*_common(cache), "train.global_batch_size=4"]
    run_layouts(tmp_path, [*common, f"train.steps={SAVED}", "parallel.tp=2"], {"tp2": []}, nproc=2)
    run_dir = tmp_path / "tp2"
    train = [cli("alia-train"), *common, f"train.steps={STEPS}", f"run.dir={run_dir}"]
    refused = subprocess.run(train, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    errors = [line for line in refused.stderr.splitlines() if line.strip()]
    assert refused.returncode == 2 and len(errors) == 1, refused.stderr[-3000:]
    assert "Traceback" not in refused.stderr
    assert f"torchrun --nproc_per_node=2 --no-python alia-convert portable {run_dir}" in errors[0], errors[0]
    assert _form(run_dir, SAVED) == "dp_reshardable"  # untouched
    convert = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2", "--no-python", cli("alia-convert"),
               "portable", str(run_dir)]
    done = subprocess.run(convert, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert f"step {SAVED} of {run_dir} is portable now" in done.stdout
    assert _form(run_dir, SAVED) == "fully_reshardable"
    resumed = subprocess.run(train, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    assert f"at step {SAVED}" in resumed.stdout and sorted(train_losses(run_dir)) == list(range(1, STEPS + 1))
