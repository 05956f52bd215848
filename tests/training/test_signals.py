"""What SIGUSR1 / SIGTERM mean to alia-train (alia_train.training.signals), with real signals
in a fresh interpreter: recorded, never fatal, repeats are one request, TERM wins over USR1, and
a signal the batch script received before the training started counts (ALIA_STOP_SIGNAL)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent(
    """
    import json, os, signal, sys, time
    from alia_train.training.signals import install_stop_handler

    request = install_stop_handler()
    for name in sys.argv[1:]:
        os.kill(os.getpid(), getattr(signal, name))
        time.sleep(0.01)
    decision = request.agreed()  # no process group: this rank alone decides
    print(json.dumps(None if decision is None else {
        "signal": decision.name, "exit_code": decision.exit_code, "requeue": decision.requeue,
        "received": decision.signals_received, "announce": decision.announce(7),
        "warning": decision.kill_wait_warning(45.0),
    }))
    """
)


def _probe(*signals: str, **env: str) -> dict | None:
    full_env = {**os.environ, **env}
    out = subprocess.run([sys.executable, "-c", PROBE, *signals], env=full_env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_time_limit_sequence_is_one_stop_request():
    # Slurm at the time limit: TERM, CONT, TERM within milliseconds; the process lives on.
    got = _probe("SIGTERM", "SIGCONT", "SIGTERM", ALIA_KILL_WAIT_S="30")
    assert got["signal"] == "SIGTERM" and got["exit_code"] == 143 and not got["requeue"]
    assert got["received"] == 2
    assert got["announce"].endswith("saving a checkpoint at step 7")
    assert "KillWait" in got["warning"]  # a 45 s save cannot finish in 30 s


def test_usr1_requeues_and_term_wins_over_it():
    got = _probe("SIGUSR1")
    assert (got["signal"], got["exit_code"], got["requeue"], got["warning"]) == ("SIGUSR1", 75, True, None)
    got = _probe("SIGUSR1", "SIGTERM", "SIGUSR1")
    assert (got["signal"], got["exit_code"]) == ("SIGTERM", 143)


@pytest.mark.parametrize("passed", ["USR1", "SIGUSR1"])
def test_signal_passed_by_the_batch_script_counts(passed):
    got = _probe(ALIA_STOP_SIGNAL=passed)
    assert got["signal"] == "SIGUSR1" and got["exit_code"] == 75


def test_no_signal_no_stop():
    assert _probe() is None
