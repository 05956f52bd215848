"""Chained evaluation under a real one-node Slurm (conftest.py): scripts/slurm/train_2b.sh with
ALIA_EVAL_TASKS set submits scripts/slurm/eval.sh for its run directory with an afterany
dependency on itself; the eval job waits for the training job, then scores its checkpoints with
the real alia-eval and appends them to RUN_DIR/evals.jsonl.

The tiny model on CPU: 20 steps, a checkpoint every 10; the eval job uses the shipped offline
task (`local`) with --limit 4 and no GPU (--gres=none through ALIA_EVAL_SBATCH, which overrides
eval.sh's whole-node header). ~1 minute on 2 cores.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from alia_train.report.evals import read_evals

pytestmark = pytest.mark.slow

SBATCH = ["--gres=none", "--oversubscribe", "--nodes=1", "--ntasks-per-node=1", "--cpus-per-task=1"]


def _wait(predicate, timeout: float, what: str, log: Path):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            text = log.read_text(errors="replace")[-5000:] if log.exists() else ""
            pytest.fail(f"timed out ({timeout:.0f} s) waiting for {what}\n{text}")
        time.sleep(0.3)
    return value


def test_a_training_job_chains_an_eval_job_that_scores_its_checkpoints(slurm_cluster, tmp_path):
    cluster, run = slurm_cluster, tmp_path / "run"
    env = {"ALIA_EVAL_TASKS": "local", "ALIA_EVAL_ARGS": "--limit 4",
           "ALIA_EVAL_SBATCH": f"--gres=none --oversubscribe --cpus-per-task=1 --output={tmp_path}/%x-%j.out",
           "OMP_NUM_THREADS": "1", "HF_HOME": str(tmp_path / "hf")}
    overrides = ["+model=tiny", "cluster=local", "train.device=cpu", f"run.dir={run}", f"data.cache_dir={tmp_path / 'cache'}",
                 "train.steps=20", "checkpoint.interval=10", "logging.console=plain"]
    train = cluster.sbatch(*SBATCH, f"--output={tmp_path}/%x-%j.out", "scripts/slurm/train_2b.sh", *overrides, env=env)
    train_log = tmp_path / f"alia-2b-{train}.out"

    line = _wait(lambda: re.search(r"chained eval job (\d+) \(afterany:(\d+)\): alia-eval (\S+) --tasks local --limit 4",
                                   train_log.read_text() if train_log.exists() else ""), 120, "the chained eval job", train_log)
    job, parent, run_dir = int(line.group(1)), int(line.group(2)), line.group(3)
    assert parent == train and run_dir == str(run)
    info = cluster.job(job)
    if cluster.job(train).get("JobState") in ("PENDING", "RUNNING"):  # it must wait for the training job
        assert info["JobState"] == "PENDING" and info.get("Dependency", "").startswith(f"afterany:{train}"), info
    assert info["NumNodes"] in ("1", "1-1") and info["JobName"] == "alia-eval"  # one node

    eval_log = tmp_path / f"alia-eval-{job}.out"
    _wait(lambda: cluster.job(job).get("JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"), 420,
          "the eval job to end", eval_log)
    trained, scored = cluster.job(train), cluster.job(job)
    assert trained["JobState"] == "COMPLETED", train_log.read_text()[-3000:]
    assert scored["JobState"] == "COMPLETED", eval_log.read_text()[-5000:]
    # The eval job started only once the training job had ended.
    assert scored["StartTime"] >= trained["EndTime"], (scored["StartTime"], trained["EndTime"])
    rows = read_evals(run / "evals.jsonl").rows
    assert sorted({r["step"] for r in rows}) == [10, 20]
    assert {r["task"] for r in rows} >= {"alia_langid", "alia_langid_eu"} and all(r["n"] for r in rows)
    text = eval_log.read_text()
    assert "scored 2 checkpoint(s)" in text and "alia-eval ended with exit code 0" in text, text[-3000:]
