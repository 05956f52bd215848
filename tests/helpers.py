"""Helpers for tests that run real training processes."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import BIN, subprocess_env
from alia_train.metrics_file import read_records


def train_losses(run_dir: str | Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_records(Path(run_dir) / "metrics.jsonl").train}


def run_layouts(out: Path, common: list[str], runs: dict[str, list[str]], nproc: int, timeout: int = 600) -> None:
    spec = out / f"spec_{'_'.join(runs)}.json"
    spec.write_text(json.dumps({"common": common, "runs": runs, "out": str(out)}))
    runner = str(Path(__file__).parent / "parallel" / "layout_runner.py")
    if nproc == 1:
        cmd = [sys.executable, runner, str(spec)]
    else:
        cmd = [str(BIN / "torchrun"), "--standalone", f"--nproc_per_node={nproc}", runner, str(spec)]
    proc = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")


def relative_diff(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


# ---- runs that are killed and restarted (tests/checkpoint)
STEPS = 12  # of the resume tests' runs (tests/checkpoint)


def _session_seed() -> int:
    """ALIA_TEST_SEED if set, else a new one per test session; the same in every xdist worker
    of a session (they must collect the same parameter), via the run id xdist gives them."""
    if os.environ.get("ALIA_TEST_SEED"):
        return int(os.environ["ALIA_TEST_SEED"])
    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run_id:
        return int(run_id[:7], 16)
    return random.SystemRandom().randrange(1 << 28)


SEED = _session_seed()
RNG = random.Random(SEED)
print(f"resume tests: kill points drawn with seed {SEED} (set ALIA_TEST_SEED to replay)")


def command(run_dir: Path, cache: Path, *extra: str, nproc: int = 1, steps: int = STEPS) -> list[str]:
    args = [
        "+model=tiny", f"train.steps={steps}", "logging.interval=1", "checkpoint.interval=2",
        "checkpoint.keep=2", f"run.dir={run_dir}", f"data.cache_dir={cache}", *extra,
    ]
    if nproc == 1:
        return [str(BIN / "alia-train"), *args]
    return [str(BIN / "torchrun"), "--standalone", f"--nproc_per_node={nproc}", "--no-python", str(BIN / "alia-train"), *args]


def start(cmd: list[str], log: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                            env=subprocess_env(**env), start_new_session=True)


def finish(cmd: list[str], log: Path, expect: int = 0, **env: str) -> str:
    proc = start(cmd, log, **env)
    code = proc.wait(timeout=600)
    text = log.read_text(errors="replace")
    assert code == expect, f"exit {code}, expected {expect}:\n{text[-4000:]}"
    return text


def wait_for_step(run_dir: Path, step: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    metrics = run_dir / "metrics.jsonl"
    while time.time() < deadline:
        if metrics.exists() and any(s >= step for s in train_losses(run_dir)):
            return
        assert proc.poll() is None, f"run ended (exit {proc.returncode}) before step {step}"
        time.sleep(0.05)
    raise TimeoutError(f"step {step} not reached")


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    os.killpg(proc.pid, sig)
    proc.wait(timeout=60)


def files_of(directory: Path) -> dict[str, bytes]:
    """Every file under `directory` with its bytes: to check that nothing was lost or changed."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def group_is_gone(pgid: int, timeout: float = 20) -> bool:
    """No process of the group is left (helpers, data workers) within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False
