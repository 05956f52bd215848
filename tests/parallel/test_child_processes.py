"""Helper processes started through multiprocessing after `child_processes.install()`: they
survive the job-wide signals Slurm sends (USR1, TERM, CONT), still stop on their parent's
terminate(), and die with their parent. Real processes and signals; no megatron (a few seconds).

Each scenario runs in a fresh interpreter (a "trainer" stand-in that installs the rules and
starts the helpers the way megatron-core does), so the patches never leak into pytest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

if not sys.platform.startswith("linux"):
    pytest.skip("PR_SET_PDEATHSIG and sigtimedwait are Linux features", allow_module_level=True)

TRAINER = textwrap.dedent(
    """
    import json, multiprocessing as mp, os, signal, sys, threading, time
    from alia_train.parallel.child_processes import install

    install()
    for sig in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT):  # the trainer has handlers
        signal.signal(sig, lambda s, f: None)

    holder = {}

    def start_manager():  # megatron-core starts its Manager from a worker thread
        holder["manager"] = mp.get_context("spawn").Manager()
        holder["queue"] = holder["manager"].Queue()

    t = threading.Thread(target=start_manager)
    t.start(); t.join()
    fork_child = mp.get_context("fork").Process(target=time.sleep, args=(600,), daemon=True)
    fork_child.start()
    spawn_child = mp.get_context("spawn").Process(target=time.sleep, args=(600,), daemon=True)
    spawn_child.start()
    helpers = {"manager": holder["manager"]._process.pid, "fork": fork_child.pid, "spawn": spawn_child.pid}
    print(json.dumps(helpers), flush=True)
    for line in sys.stdin:  # commands from the test
        cmd = line.strip()
        if cmd == "use":
            holder["queue"].put(1); holder["queue"].get()
            print(json.dumps({"alive": [p.is_alive() for p in (fork_child, spawn_child)]}), flush=True)
        elif cmd == "terminate":
            fork_child.terminate(); spawn_child.terminate()
            fork_child.join(10); spawn_child.join(10)
            print(json.dumps({"exitcodes": [fork_child.exitcode, spawn_child.exitcode]}), flush=True)
    """
)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def trainer():
    proc = subprocess.Popen([sys.executable, "-c", TRAINER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        helpers = json.loads(proc.stdout.readline())
        yield proc, helpers
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in helpers.values():
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _ask(proc, cmd: str) -> dict:
    proc.stdin.write(cmd + "\n")
    proc.stdin.flush()
    return json.loads(proc.stdout.readline())


def test_helpers_survive_job_signals_and_still_stop_on_terminate(trainer):
    proc, helpers = trainer
    # What Slurm does to every process of a step: USR1 (--signal), TERM/CONT/TERM (time limit).
    for sig in (signal.SIGUSR1, signal.SIGTERM, signal.SIGCONT, signal.SIGTERM, signal.SIGINT):
        os.killpg(proc.pid, sig)
    time.sleep(1.5)
    assert all(_alive(pid) for pid in helpers.values()), helpers
    assert _ask(proc, "use") == {"alive": [True, True]}  # the Manager still serves its queue
    # Process.terminate() (SIGTERM from the parent) still ends them, as multiprocessing expects.
    assert _ask(proc, "terminate") == {"exitcodes": [143, 143]}


def test_helpers_die_with_their_parent(trainer):
    proc, helpers = trainer
    proc.kill()  # the OOM killer / a hard kill: no chance to clean up
    proc.wait()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in helpers.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [name for name, pid in helpers.items() if _alive(pid)]
