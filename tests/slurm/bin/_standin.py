"""Shared by the stand-in sbatch / srun / scontrol: a local imitation of just enough of Slurm
to run scripts/slurm/*.sh in tests. State (job ids, pids, requeue requests, launched steps)
lives under $SLURM_STANDIN_STATE."""

from __future__ import annotations

import os
import re
from pathlib import Path

# Options that take a value (long and short forms); anything else starting with '-' is a flag.
VALUE_OPTIONS = {
    "--nodes", "-N", "--ntasks", "-n", "--ntasks-per-node", "--cpus-per-task", "-c",
    "--job-name", "-J", "--output", "-o", "--error", "-e", "--account", "-A",
    "--partition", "-p", "--qos", "-q", "--time", "-t", "--gres", "--signal",
    "--open-mode", "--dependency", "-d", "--chdir", "-D", "--kill-on-bad-exit",
    "--wait", "--cpu-bind", "--export", "--mem", "--gpus-per-node",
}
# `--wait` is a flag for sbatch but takes a value for srun.
SBATCH_FLAGS = {"--wait", "-W", "--exclusive", "--requeue", "--no-requeue", "--parsable"}
SHORT = {"-N": "nodes", "-n": "ntasks", "-c": "cpus-per-task", "-J": "job-name", "-o": "output",
         "-e": "error", "-A": "account", "-p": "partition", "-q": "qos", "-t": "time",
         "-d": "dependency", "-D": "chdir", "-W": "wait"}


def state_dir() -> Path:
    d = Path(os.environ["SLURM_STANDIN_STATE"])
    d.mkdir(parents=True, exist_ok=True)
    return d


def parse_options(argv: list[str], flags: set[str]) -> tuple[dict[str, str], list[str]]:
    """Options up to the first non-option word -> ({name: value}, rest)."""
    opts: dict[str, str] = {}
    i = 0
    while i < len(argv):
        a = argv[i]
        if not a.startswith("-") or a == "-":
            break
        if "=" in a and a.startswith("--"):
            name, value = a[2:].split("=", 1)
        elif a in flags:
            name, value = SHORT.get(a, a.lstrip("-")), "1"
        elif a in VALUE_OPTIONS:
            name, value = SHORT.get(a, a.lstrip("-")), argv[i + 1]
            i += 1
        else:
            name, value = a.lstrip("-"), "1"
        opts[name] = value
        i += 1
    return opts, argv[i:]


def sbatch_headers(script: Path) -> list[str]:
    """The #SBATCH words of a batch script (sbatch stops at the first command)."""
    words: list[str] = []
    for line in script.read_text().splitlines()[1:]:
        s = line.strip()
        if s.startswith("#SBATCH"):
            words += s.split("#", 2)[1].split()[1:]
        elif s and not s.startswith("#"):
            break
    return words


def expand_hostlist(nodelist: str) -> list[str]:
    hosts: list[str] = []
    for prefix, ranges in re.findall(r"([^,\[]+)(?:\[([^\]]+)\])?,?", nodelist):
        if not ranges:
            hosts.append(prefix)
            continue
        for part in ranges.split(","):
            lo, _, hi = part.partition("-")
            for i in range(int(lo), int(hi or lo) + 1):
                hosts.append(f"{prefix}{i:0{len(lo)}d}")
    return hosts
