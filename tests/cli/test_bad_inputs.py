"""Every user mistake in config loading and the CLIs' arguments ends in ONE line
`alia-<tool>: error: <what>; <fix>` and exit 2, before any process group starts.

Each case runs the console script in a subprocess, as a user types it, in a directory where
`afile` is a file, `empty` an empty directory and `confs` a config dir with broken group files.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import cli, subprocess_env

TINY = "+model=tiny"
train, plan, convert, data = "alia-train", "alia-plan", "alia-convert", "alia-data"

# (cli module, argv, text the one line must contain). {tmp} is the test's tmp dir, where
# `afile` is a file, `empty` an empty directory and `confs` a config dir with broken group files.
CASES = [
    # wrong types, read from the schema
    (train, [TINY, "train.steps=abc"], "train.steps: expects an integer, got 'abc'; e.g. train.steps=100"),
    (train, [TINY, "train.steps=1.5"], "train.steps: expects an integer, got '1.5'"),
    (train, [TINY, "optim.lr=fast"], "optim.lr: expects a number, got 'fast'"),
    (train, [TINY, "parallel.sp=maybe"], "parallel.sp: expects true or false, got 'maybe'"),
    (train, [TINY, "parallel.vpp=x"], "parallel.vpp: expects an integer or null"),
    (train, [TINY, "data.sources=abc"], "data.sources: expects a list of {path: ..., lang: ..., multiplier: ...} entries"),
    (train, [TINY, "data.multipliers=3"], "data.multipliers: expects a mapping of names to numbers"),
    (train, [TINY, "data.multipliers.eu=x"], "data.multipliers.eu: expects a number, got 'x'"),
    (train, [TINY, "train.check_memory=maybe"], "train.check_memory: expects true or false"),
    (train, [TINY, "data.sources=[{path:x}]"], "data.sources[0].lang: has no value"),
    (train, [TINY, "data.sources=[{path:x,lang:es,colour:1}]"], "data.sources: unknown key 'colour'"),
    # groups, keys and override syntax
    (train, [TINY, "data=nope"], "data: no option 'nope' in config group data (available: sample)"),
    (train, [TINY, "cluster=nope"], "cluster: no option 'nope'"),
    (train, ["+model=nope"], "model: unknown model 'nope'"),
    (train, ["model=tiny"], "model: choose the model with +model=tiny"),
    (train, [], "model: no model chosen"),
    (train, [TINY, TINY], "model: chosen more than once; keep one of the model=... overrides"),
    (train, [TINY, "train.stepz=3"], "train.stepz: unknown config key; did you mean train.steps?"),
    (train, [TINY, "data.num_workers=2"], "data.num_workers: this key was removed"),
    (train, [TINY, "train.steps"], "'train.steps': not a valid override"),
    (train, [TINY, "train.steps=[1,2"], "'train.steps=[1,2': not a valid override"),
    (train, [TINY, "=3"], "'=3': the key is missing"),
    (train, [TINY, "data.split=95,5,0"], "data.split: a value with commas must be quoted"),
    (train, [TINY, "run.dir=${oops}"], "oops"),
    (train, ["--config-dir", "{tmp}/nope", TINY], "--config-dir: {tmp}/nope does not exist"),
    (train, ["--config-dir={tmp}/afile", TINY], "--config-dir: {tmp}/afile is not a directory"),
    (train, [TINY, "--config-dir"], "--config-dir: needs a directory"),
    (train, ["--config-dir", "{tmp}/confs", TINY, "data=broken"], "config: not valid YAML: "),
    (train, ["--config-dir", "{tmp}/confs", TINY, "data=typo"],
     "{tmp}/confs/data/typo.yaml: data.sourcs: unknown config key; did you mean data.sources?"),
    (train, ["--config-dir", "{tmp}/confs", "+model=nopkg"], "{tmp}/confs/model/nopkg.yaml: its keys land under model.model"),
    # values
    (train, [TINY, "train.steps=0"], "train.steps: must be a positive integer, got 0"),
    (train, [TINY, "train.micro_batch_size=-4"], "train.micro_batch_size: must be a positive integer"),
    (train, [TINY, "train.device=tpu"], "train.device: 'tpu' is not one of"),
    (train, [TINY, "data.split=abc"], "data.split: 'abc' is not train,valid,test percentages"),
    (train, [TINY, "data.multipliers.eu=-1"], "data.multipliers.eu: must be >= 0"),
    (train, [TINY, "data.default_multiplier=-1"], "data.default_multiplier: must be >= 0"),
    # paths
    (train, [TINY, "run.dir={tmp}/afile"], "run.dir: {tmp}/afile is a file, not a directory"),
    (train, [TINY, "run.dir={tmp}/afile/sub/run"], "run.dir: {tmp}/afile/sub/run is under {tmp}/afile, which is a file"),
    (train, [TINY, "run.dir=/proc/alia-run"], "run.dir: cannot write in /proc"),
    (train, [TINY, "run.dir={tmp}/run", "data.cache_dir={tmp}/afile/cache"], "data.cache_dir: {tmp}/afile/cache is under"),
    (train, [TINY, "run.dir={tmp}/run", "checkpoint.load={tmp}/nope"], "checkpoint.load: {tmp}/nope does not exist"),
    (train, [TINY, "run.dir={tmp}/run", "checkpoint.load={tmp}/empty"], "checkpoint.load: no checkpoint found at {tmp}/empty"),
    (train, [TINY, "run.dir={tmp}/run", "data.tokenizer={tmp}/nope.model"], "data.tokenizer:"),
    (train, [TINY, "run.dir={tmp}/run", "data.tokenizer={tmp}/afile"], "data.tokenizer:"),
    (train, [TINY, "run.dir={tmp}/run", "data.use_sample=false"], "data.sources"),
    (train, [TINY, "run.dir="], "run.dir: is empty; give a path"),  # not the working directory
    (train, [TINY, "run.dir={tmp}/run", "data.cache_dir="], "data.cache_dir: is empty; give a path"),
    (train, [TINY, "run.dir={tmp}/run", "data.tokenizer="], "data.tokenizer: is empty; give a path (or null)"),
    # the other CLIs that compose configs
    (plan, [TINY, "train.steps=abc"], "train.steps: expects an integer, got 'abc'"),
    (plan, ["--config-dir", "{tmp}/nope", TINY], "--config-dir: {tmp}/nope does not exist"),
    (plan, ["+model=alia_40b", "cluster=nope"], "cluster: no option 'nope'"),
    (plan, [TINY, "train.global_batch_size=-1"], "train.global_batch_size: must be a positive integer"),
    (convert, ["from-hf", "{tmp}/empty", "{tmp}/out", TINY, "--config-dir", "{tmp}/nope"], "--config-dir: {tmp}/nope does not exist"),
    (convert, ["from-hf", "{tmp}/empty", "{tmp}/out", TINY, "optim.lr=fast"], "optim.lr: expects a number"),
    (data, ["mixture", "data=nope"], "data: no option 'nope' in config group data"),
    (data, ["mixture", "data=x", "--config-dir", "{tmp}/nope"], "--config-dir: {tmp}/nope does not exist"),
]


def _ids() -> list[str]:
    return [f"{prog.removeprefix('alia-')}:{' '.join(argv) or '(nothing)'}" for prog, argv, _ in CASES]


@pytest.fixture
def tmp(tmp_path) -> Path:
    (tmp_path / "afile").write_text("not a directory\n")
    (tmp_path / "empty").mkdir()
    for group, name, text in (("data", "broken", "sources: [\n"), ("data", "typo", "sourcs: []\n"),
                              ("model", "nopkg", "model:\n  name: nopkg\n")):
        (tmp_path / "confs" / group).mkdir(parents=True, exist_ok=True)
        (tmp_path / "confs" / group / f"{name}.yaml").write_text(text)
    return tmp_path


@pytest.mark.parametrize("prog, argv, expected", CASES, ids=_ids())
def test_bad_input_is_one_line_and_exit_2(prog, argv, expected, tmp):
    proc = subprocess.run([cli(prog), *(a.replace("{tmp}", str(tmp)) for a in argv)], cwd=tmp,
                          env=subprocess_env(), capture_output=True, text=True, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), proc.stderr
    assert expected.replace("{tmp}", str(tmp)) in lines[0]
    assert "[alia-train] run dir" not in proc.stdout  # refused before any process group started
    assert not (tmp / "run").exists(), "a refused launch created its run directory"


def test_a_refused_launch_is_said_before_megatron_core_is_imported(tmp):
    """Launch checks (values, layouts, paths, tokenizer, data) run before megatron-core's ~2 s
    import, so that a mistake is said at once."""
    proc = subprocess.run([cli(train), TINY, f"run.dir={tmp}/run", "data.split=abc"], cwd=tmp,
                          env=subprocess_env(PYTHONPROFILEIMPORTTIME="1"), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "alia-train: error: data.split" in proc.stderr, proc.stderr[-2000:]
    imported = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "torch" in imported  # the import profile is there: the check below can fail
    assert not [name for name in imported if name.startswith("megatron")]
