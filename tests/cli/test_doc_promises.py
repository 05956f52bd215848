"""What the docs promise about failures, checked from outside (issue #24): each test runs the
real command as a user would (the console script in a subprocess, real files), then checks the
exit code, that the error is one line with no traceback, and the files afterwards: nothing lost,
nothing silently wrong. These are the promises the other outside tests did not reach:

* Ctrl-C (SIGINT to the process group, as a terminal sends it) on `alia-train`, on `alia-data
  tokenize` while encoding and while publishing, and on `alia-convert to-hf` / `from-hf`
  while they read or write tensors (docs/configuration.md "Exit codes", docs/cluster.md
  "Signals", docs/data.md, docs/huggingface.md "All or nothing");
* every sample-order setting changed on resume is refused, the micro batch size is not
  (docs/configuration.md "Resuming", docs/data.md "The sample order");
* `alia-convert to-hf RUN_DIR` past a damaged newest checkpoint (docs/huggingface.md);
* `alia-data tokenize` rerun after an input changed or a shard was deleted, and a tokenizer of
  more than 65,535 pieces (int32 shards) (docs/data.md "Re-running", "Outputs");
* a GPU cluster config where torch sees no GPU (docs/cluster.md).

One tiny training run (module fixture `base`) is shared: resumes work on copies of it, and the
converter exports it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alia_train.data.sample_corpus import sample_corpus_dir, sample_tokenizer_path
from alia_train.exit_codes import EXIT_CONFIG, EXIT_INTERRUPTED
from conftest import cli, subprocess_env
from helpers import files_of, group_is_gone, train_losses, wait_for_step

HERE = Path(__file__).resolve().parent
INTERRUPT_CONVERT = str(HERE / "interrupt_convert.py")
STEPS = 6
# Warmup and decay fixed, so that the schedule does not depend on train.steps: a 200-step run
# stopped early and this 6-step run train the same first steps.
COMMON = ["+model=tiny", "logging.interval=1", "logging.console=plain", "checkpoint.interval=2",
          "checkpoint.keep=3", "optim.warmup_steps=2", "optim.decay_steps=200"]
def _train_cmd(run_dir: Path, cache: Path, *extra: str, steps: int = STEPS) -> list[str]:
    return [cli("alia-train"), *COMMON, f"train.steps={steps}", f"run.dir={run_dir}", f"data.cache_dir={cache}",
            *extra]


def _sigint_as_in_a_terminal() -> None:
    """In the child, before exec: SIGINT's default action, as a job started from a terminal
    has. A test run started in the background by a non-interactive shell (CI) inherits SIGINT
    ignored, and Python would then never raise KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _run(cmd: list[str], timeout: int = 600, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=subprocess_env(),
                          timeout=timeout, **kwargs)


def _one_error_line(proc: subprocess.CompletedProcess, prog: str) -> str:
    """The one `PROG: error:` line of a refused command; no traceback."""
    errors = [line for line in proc.stderr.splitlines() if line.startswith(f"{prog}: error: ")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stdout[-2000:] + proc.stderr[-4000:]
    return errors[0]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data_cache")


@pytest.fixture(scope="module")
def base(tmp_path_factory, cache) -> Path:
    """A finished 6-step run: checkpoints at steps 2, 4 and 6. Tests copy it, never change it."""
    run_dir = tmp_path_factory.mktemp("base") / "run"
    proc = _run(_train_cmd(run_dir, cache))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(train_losses(run_dir)) == list(range(1, STEPS + 1))
    return run_dir


def _copy_run(base: Path, to: Path) -> Path:
    shutil.copytree(base, to)
    return to


# ------------------------------------------------------------------------------------------
# alia-train: Ctrl-C


@pytest.fixture(scope="module")
def ctrl_c_train(tmp_path_factory, cache, base) -> dict:
    """A 200-step run of the base run's settings, Ctrl-C'd (SIGINT to its process group, as a
    terminal does) once step 5 is logged: checkpoints 2 and 4 are published by then."""
    root = tmp_path_factory.mktemp("ctrl_c")
    run_dir = root / "run"
    out, err = root / "stdout.txt", root / "stderr.txt"
    proc = subprocess.Popen(_train_cmd(run_dir, cache, steps=200), stdout=open(out, "wb"), stderr=open(err, "wb"),
                            env=subprocess_env(), start_new_session=True, preexec_fn=_sigint_as_in_a_terminal)
    try:
        wait_for_step(run_dir, 5, proc)
        sent = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=120)
        seconds = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return {"run_dir": run_dir, "code": code, "seconds": seconds, "pgid": proc.pid,
            "stdout": out.read_text(errors="replace"), "stderr": err.read_text(errors="replace")}


def test_ctrl_c_stops_alia_train_at_once_and_the_rerun_resumes_exactly(ctrl_c_train, cache, base, tmp_path):
    """docs/cluster.md: "To stop a run by hand at once, use SIGINT (Ctrl-C)"; a restart resumes
    from the latest complete checkpoint. Stopped within seconds, no process left, every
    checkpoint complete and intact, and the same command again reproduces the uninterrupted
    run's losses bit for bit."""
    from alia_train.checkpoint import directory

    run_dir = ctrl_c_train["run_dir"]
    assert ctrl_c_train["code"] != 0 and ctrl_c_train["seconds"] < 30, ctrl_c_train
    assert "training finished" not in ctrl_c_train["stdout"]
    assert group_is_gone(ctrl_c_train["pgid"]), "a process of the interrupted run is still alive"
    kept = directory.complete_checkpoints(run_dir)
    assert len(kept) >= 2 and all(directory.verify(p, deep=(0, 1)) is None for p in kept), kept
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == kept[0].name
    rerun = _run(_train_cmd(run_dir, cache, steps=STEPS))  # 200 -> 6 steps: the same schedule and order
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert f"resumed from {kept[0]}" in rerun.stdout
    assert train_losses(run_dir) == train_losses(base)


def test_ctrl_c_on_alia_train_exits_130_in_one_line(ctrl_c_train):
    """docs/configuration.md, Exit codes: 130 interrupted (Ctrl-C)."""
    err = ctrl_c_train["stderr"]
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("alia-train: ") and "interrupted" in lines[0], err[-3000:]
    assert ctrl_c_train["code"] == EXIT_INTERRUPTED


# ------------------------------------------------------------------------------------------
# alia-train: settings changed on resume


def _sample_prefix(cache: Path) -> str:
    """The shards alia-train made of the sample corpus in the shared cache."""
    (found,) = cache.glob("sample/tok-*/sample_es.bin")
    return str(found)[: -len("_es.bin")]


def test_every_sample_order_setting_changed_on_resume_is_refused(base, cache, tmp_path):
    """docs/configuration.md, Resuming: data.sources, data.valid_sources, data.split,
    data.multipliers and data.default_multiplier (train.seq_length and train.seed:
    tests/checkpoint/test_restart_changes.py) changed on resume: refused in one line naming
    each setting with its saved and new value and the fix, exit 2; the checkpoints,
    config.yaml and metrics.jsonl untouched. Each change is to real, valid shards, so nothing
    but the resume rule can refuse it."""
    run_dir = _copy_run(base, tmp_path / "run")
    before = files_of(run_dir / "checkpoints"), (run_dir / "config.yaml").read_bytes(), \
        (run_dir / "metrics.jsonl").read_bytes()
    sample = _sample_prefix(cache)
    changes = {
        "data.multipliers.eu=3": ("data.multipliers was {", "'eu': 3.0"),
        "data.default_multiplier=0.5": ("data.default_multiplier was 1.0 in the checkpoint, this run has 0.5",),
        "data.split='90,10,0'": ("data.split was 95,5,0 in the checkpoint, this run has 90,10,0",),
        f"data.sources=[{{path:'{sample}_es',lang:es}},{{path:'{sample}_ca',lang:ca}}]":
            ("data.sources was [] in the checkpoint, this run has [{",),
        f"data.valid_sources=[{{path:'{sample}_eu',lang:eu}}]": ("data.valid_sources was [] in the checkpoint",),
    }
    proc = _run(_train_cmd(run_dir, cache, *changes, steps=STEPS + 2))
    assert proc.returncode == EXIT_CONFIG, proc.stdout[-2000:] + proc.stderr[-3000:]
    line = _one_error_line(proc, "alia-train")
    for needles in changes.values():
        for needle in needles:
            assert needle in line, (needle, line)
    assert f"checkpoint.load={run_dir} checkpoint.reset_data=true" in line, line
    assert (files_of(run_dir / "checkpoints"), (run_dir / "config.yaml").read_bytes(),
            (run_dir / "metrics.jsonl").read_bytes()) == before


def test_another_tokenizer_on_resume_is_refused(base, cache, tmp_path):
    """docs/configuration.md, Resuming: "the tokenizer (by its file's sha256) ... likewise"
    refused. Another real tokenizer of the same 4,096 pieces (trained on the sample corpus
    with other reserved tokens), so that the vocabulary size cannot give it away: one line
    naming data.tokenizer and both files, exit 2, the checkpoints untouched."""
    other = tmp_path / "other.model"
    trained = _run([cli("alia-data"), "tokenizer", "train", "--input", sample_corpus_dir(), "--output", other,
                    "--vocab-size", "4096", "--reserved-tokens", "90", "--threads", "1"], timeout=120)
    assert trained.returncode == 0, trained.stderr
    run_dir = _copy_run(base, tmp_path / "run")
    before = files_of(run_dir / "checkpoints")
    proc = _run(_train_cmd(run_dir, cache, f"data.tokenizer={other}", steps=STEPS + 2))
    assert proc.returncode == EXIT_CONFIG, proc.stdout[-2000:] + proc.stderr[-3000:]
    line = _one_error_line(proc, "alia-train")
    assert "data.tokenizer: checkpoint was trained with" in line and str(sample_tokenizer_path()) in line, line
    assert f"this run uses {other}" in line and "set data.tokenizer to the checkpoint's tokenizer" in line, line
    assert files_of(run_dir / "checkpoints") == before


def test_another_runs_checkpoint_on_another_mixture_needs_reset_data(base, cache, tmp_path):
    """docs/configuration.md, Annealing: from another run's checkpoint "on another mixture add
    checkpoint.reset_data=true (...; without it the launch is refused, naming that key)"."""
    checkpoint = base / "checkpoints" / "step_00000004"
    before = files_of(base)
    run_dir = tmp_path / "stage"
    proc = _run(_train_cmd(run_dir, cache, f"checkpoint.load={checkpoint}", "data.multipliers.eu=3",
                           steps=STEPS + 2))
    assert proc.returncode == EXIT_CONFIG, proc.stdout[-2000:] + proc.stderr[-3000:]
    line = _one_error_line(proc, "alia-train")
    assert "data.multipliers was {" in line and "add checkpoint.reset_data=true" in line, line
    assert not list(run_dir.glob("checkpoints/step_*")) and files_of(base) == before


def test_a_new_micro_batch_size_on_resume_reads_on_from_the_consumed_samples(base, cache, tmp_path):
    """docs/configuration.md, What changes the sample order: train.micro_batch_size
    "unchanged; read on from the consumed samples". Resumed at step 4 with micro batches of 2
    instead of 4: accepted, steps 5 and 6 read samples 32..47, and their losses are the
    uninterrupted run's (the same samples; only the order of the gradient sums differs)."""
    run_dir = _copy_run(base, tmp_path / "run")
    shutil.rmtree(run_dir / "checkpoints" / f"step_{STEPS:08d}")  # back to step 4
    (run_dir / "checkpoints" / "latest").write_text("step_00000004\n")
    proc = _run(_train_cmd(run_dir, cache, "train.micro_batch_size=2"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "at step 4 (consumed samples 32)" in proc.stdout and "WARNING" not in proc.stdout + proc.stderr
    from alia_train.metrics_file import read_records

    records = {r["step"]: r for r in read_records(run_dir / "metrics.jsonl").train}
    assert [records[s]["consumed_samples"] for s in (5, 6)] == [40, 48]
    reference = train_losses(base)
    for step in (5, 6):
        assert math.isclose(records[step]["loss"], reference[step], rel_tol=1e-5), (step, records[step], reference)


# ------------------------------------------------------------------------------------------
# alia-convert


def _damage(checkpoint: Path) -> None:
    """4 KiB of a weight file flipped in place: the same size, another CRC-32."""
    shard = next(checkpoint.glob("*.distcp"))
    with open(shard, "r+b") as f:
        f.seek(shard.stat().st_size // 2)
        flipped = bytes(b ^ 0xFF for b in f.read(4096))
        f.seek(shard.stat().st_size // 2)
        f.write(flipped)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, base) -> dict:
    """`alia-convert to-hf RUN_DIR OUT` on a copy of the base run whose newest checkpoint
    (step 6) was overwritten at the same size."""
    root = tmp_path_factory.mktemp("exported")
    run_dir = _copy_run(base, root / "run")
    _damage(run_dir / "checkpoints" / f"step_{STEPS:08d}")
    before = files_of(run_dir)
    proc = _run([cli("alia-convert"), "to-hf", run_dir, root / "hf", "--dtype", "fp32"])
    return {"proc": proc, "run_dir": run_dir, "out": root / "hf", "before": before}


def test_to_hf_of_a_run_dir_skips_a_damaged_newest_checkpoint_with_a_warning(exported):
    """docs/huggingface.md: "a run dir means its newest undamaged checkpoint (the same choice
    alia-train makes when it resumes), with a warning naming each damaged one skipped". The
    export holds step 4's weights (not step 6's, not step 2's), and the run dir is left as it was."""
    import torch
    from safetensors import safe_open

    from alia_train.convert.dist_reader import DistCheckpointReader
    from alia_train.convert.mapping import EMBEDDING, HF_EMBED

    proc, run_dir, out = exported["proc"], exported["run_dir"], exported["out"]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and not proc.stderr.strip(), proc.stderr
    warnings = [line for line in proc.stdout.splitlines() if "WARNING" in line]
    damaged = run_dir / "checkpoints" / f"step_{STEPS:08d}"
    assert len(warnings) == 1 and f"skipping damaged checkpoint {damaged}:" in warnings[0], proc.stdout
    assert "corrupted (CRC-32" in warnings[0], warnings
    assert f"exporting {run_dir / 'checkpoints' / 'step_00000004'} (step 4," in proc.stdout
    assert files_of(run_dir) == exported["before"], "the export changed the run dir"
    with safe_open(str(next(out.glob("model-*.safetensors"))), "pt") as f:
        embedding = f.get_tensor(HF_EMBED)
    checkpoints = {step: DistCheckpointReader(run_dir / "checkpoints" / f"step_{step:08d}").read_rows(EMBEDDING, 4096)
                   for step in (2, 4)}
    assert torch.equal(embedding, checkpoints[4]) and not torch.equal(embedding, checkpoints[2])


def _interrupt_convert(where: str, nth: int, *argv) -> subprocess.CompletedProcess:
    return _run([sys.executable, INTERRUPT_CONVERT, where, str(nth), *argv], timeout=300,
                preexec_fn=_sigint_as_in_a_terminal)


@pytest.fixture(scope="module")
def interrupted_conversions(tmp_path_factory, exported) -> dict:
    """Ctrl-C in both directions, while tensors are being read (to-hf: at the 12th tensor read
    of the checkpoint, with small shards so that several are already written) and written
    (from-hf: at the 12th tensor written into the checkpoint)."""
    assert exported["proc"].returncode == 0
    root = tmp_path_factory.mktemp("interrupted")
    source = exported["run_dir"] / "checkpoints" / "step_00000004"
    runs = {
        "to-hf": ("read", ["to-hf", source, root / "hf", "--max-shard-size", "100KB", "--dtype", "fp32"]),
        "from-hf": ("write", ["from-hf", exported["out"], root / "ckpt", "+model=tiny"]),
    }
    return {name: {"proc": _interrupt_convert(where, 12, *argv), "out": Path(argv[2]), "source": Path(argv[1])}
            for name, (where, argv) in runs.items()}


@pytest.mark.parametrize("direction", ["to-hf", "from-hf"])
def test_an_interrupted_conversion_leaves_nothing_and_is_not_called_damage(interrupted_conversions, direction):
    """docs/huggingface.md, All or nothing: "on any error (bad input, damaged checkpoint,
    Ctrl-C) it is removed, so nothing is ever left under OUT_DIR". Files were already staged
    when Ctrl-C came; afterwards neither OUT_DIR nor its staging directory exists, and the
    interruption is not reported as a problem with the input (exit 2 "cannot read
    checkpoint" would send the user to look for damage that is not there)."""
    run = interrupted_conversions[direction]
    proc, out = run["proc"], run["out"]
    staged = [line for line in proc.stdout.splitlines() if line.startswith("STAGED ")]
    assert len(staged) == 1 and len(staged[0].split()) > 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert not out.exists() and not list(out.parent.glob(out.name + ".partial-*"))
    assert proc.returncode not in (0, EXIT_CONFIG), proc.stderr[-3000:]
    assert "cannot read checkpoint" not in proc.stderr and "corrupted" not in proc.stderr, proc.stderr[-3000:]
    assert "CheckpointException" not in proc.stderr, proc.stderr[-3000:]


@pytest.mark.parametrize("direction", ["to-hf", "from-hf"])
def test_an_interrupted_conversion_exits_130_in_one_line(interrupted_conversions, direction):
    proc = interrupted_conversions[direction]["proc"]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("alia-convert: ") and "interrupted" in lines[0], proc.stderr
    assert proc.returncode == EXIT_INTERRUPTED


# ------------------------------------------------------------------------------------------
# alia-data


def _write_docs(path: Path, n: int, salt: str = "") -> Path:
    langs = ("es", "ca")
    lines = [json.dumps({"text": f"document {i}{salt}: " + "la casa de la paraula " * (i % 5 + 1), "lang": langs[i % 2]})
             for i in range(n)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _tokenize(inputs, prefix: Path, *extra: str) -> list[str]:
    return [cli("alia-data"), "tokenize", "--input", *map(str, inputs), "--tokenizer", str(sample_tokenizer_path()),
            "--output-prefix", str(prefix), "--workers", "0", "--no-progress", *extra]


def _set_files(prefix: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(prefix.parent.glob(prefix.name + "[._]*"))}


def _verified(prefix: Path) -> dict:
    from alia_train.data.tokenize import finished_stats

    stats = finished_stats(str(prefix), deep=True)
    assert stats is not None, f"{prefix}: not a complete set its manifest vouches for"
    return stats


def test_tokenize_after_an_input_changed_refuses_then_redoes_with_force(tmp_path):
    """docs/data.md, Re-running: "up to date" only with the same inputs (path, size, mtime);
    "with other inputs ... over a finished set it stops and asks for --force". An input edited
    after a finished run (one character changed at the same size; then a document more): the
    rerun is refused in one line naming the changed input and how (modified at the same size,
    or its size) and --force, exit 2, never "up to date", the set untouched; with --force the
    set is redone from the new input."""
    src = _write_docs(tmp_path / "in.jsonl", 40)
    prefix = tmp_path / "out" / "c"
    first = _run(_tokenize([src], prefix))
    assert first.returncode == 0, first.stderr
    published = _set_files(prefix)
    documents = _verified(prefix)["totals"]["documents"]

    text = src.read_text(encoding="utf-8")
    same_size = text.replace("document 7:", "document 8:", 1)
    assert same_size != text and len(same_size.encode()) == len(text.encode())
    for edit, how in ((same_size, "was modified since the set was made (same size)"),
                      (None, "changed size since the set was made")):
        time.sleep(0.01)  # a new mtime, as any later edit has
        if edit is None:
            _write_docs(src, 41)  # one more document
        else:
            src.write_text(edit, encoding="utf-8")
        rerun = _run(_tokenize([src], prefix))
        assert rerun.returncode == EXIT_CONFIG, rerun.stdout + rerun.stderr
        line = _one_error_line(rerun, "alia-data")
        assert "other inputs" in line and "--force" in line, line
        assert f"input {src} {how}" in line, line  # names the file, and what changed
        assert "up to date" not in rerun.stdout + rerun.stderr
        assert _set_files(prefix) == published
    forced = _run(_tokenize([src], prefix, "--force"))
    assert forced.returncode == 0, forced.stderr
    assert _verified(prefix)["totals"]["documents"] == documents + 1
    again = _run(_tokenize([src], prefix))
    assert again.returncode == 0 and "up to date" in again.stderr, again.stderr


def test_tokenize_after_a_shard_was_deleted_redoes_it_saying_why(tmp_path):
    """docs/data.md, Re-running: "a file that does not match (changed, truncated, deleted)
    means the run is redone, saying why"."""
    src = _write_docs(tmp_path / "in.jsonl", 30)
    prefix = tmp_path / "c"
    assert _run(_tokenize([src], prefix)).returncode == 0
    published = _set_files(prefix)
    Path(f"{prefix}_ca.bin").unlink()
    rerun = _run(_tokenize([src], prefix))
    assert rerun.returncode == 0, rerun.stderr
    said = [line for line in rerun.stderr.splitlines() if "not up to date" in line]
    assert len(said) == 1 and "c_ca.bin" in said[0] and "redoing" in said[0], rerun.stderr
    _verified(prefix)
    now = _set_files(prefix)
    assert {k: v for k, v in now.items() if not k.endswith(".stats.json")} == \
        {k: v for k, v in published.items() if not k.endswith(".stats.json")}


def test_ctrl_c_while_tokenizing_exits_130_and_keeps_the_previous_set(tmp_path):
    """docs/data.md: "Ctrl-C exits with 130"; nothing is published and the previous set stays
    intact ("up to date"). SIGINT to the process group (as from a terminal: the encoding worker
    gets it too) while a ~25 MB --force run is encoding."""
    old = _write_docs(tmp_path / "old.jsonl", 30)
    prefix = tmp_path / "c"
    assert _run(_tokenize([old], prefix)).returncode == 0
    published = _set_files(prefix)
    big = tmp_path / "big.jsonl"
    line = json.dumps({"text": "la casa de la paraula etxea herri 1234 " * 60, "lang": "es"}) + "\n"
    big.write_text(line * (25_000_000 // len(line)), encoding="utf-8")
    cmd = _tokenize([big], prefix, "--force")
    cmd[cmd.index("--workers") + 1] = "1"  # a pool: the worker must stop too
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env(),
                            start_new_session=True, preexec_fn=_sigint_as_in_a_terminal)
    lock = Path(f"{prefix}.lock")
    deadline = time.monotonic() + 60
    while not lock.exists():  # taken once the request was checked, held while encoding
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert err.startswith("alia-data: interrupted; the set being written was not published: what was already "
                          "there is untouched"), err
    assert group_is_gone(proc.pid), "an encoding worker outlived its parent"
    assert _set_files(prefix) == published and not lock.exists()
    assert not list(tmp_path.glob("*.tmp-*")), list(tmp_path.iterdir())
    again = _run(_tokenize([old], prefix))
    assert again.returncode == 0 and "up to date" in again.stderr, again.stderr


PUBLISH_WITH_CTRL_C = """
import os, signal, sys, fnmatch
real = os.replace
def replace(src, dst, *a, **k):
    real(src, dst, *a, **k)
    if fnmatch.fnmatch(os.fspath(dst), sys.argv[1]) and not getattr(replace, "done", False):
        replace.done = True
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C right after the first shard is renamed into place
os.replace = replace
from alia_train.cli.data import main
sys.exit(main(sys.argv[2:]))
"""


def test_ctrl_c_while_publishing_waits_for_the_set_then_exits_130(tmp_path):
    """docs/data.md, Failures: "SIGTERM (or Ctrl-C) in the middle of a publish: held until the
    set is complete, then exit 130; readers see the new set" (SIGTERM:
    tests/data/test_publish.py). Ctrl-C right after the first .bin of a --force run over an
    older set is renamed into place."""
    prefix = tmp_path / "c"
    assert _run(_tokenize([_write_docs(tmp_path / "old.jsonl", 30)], prefix)).returncode == 0
    new = _write_docs(tmp_path / "new.jsonl", 50, salt=" new")
    proc = _run([sys.executable, "-c", PUBLISH_WITH_CTRL_C, f"{prefix}_*.bin", *_tokenize([new], prefix, "--force")[1:]],
                preexec_fn=_sigint_as_in_a_terminal)
    assert proc.returncode == EXIT_INTERRUPTED, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"alia-data: interrupted while publishing: the set was completed first "
                                  f"({prefix}.stats.json vouches for it)"), proc.stderr  # not "nothing published"
    stats = _verified(prefix)  # complete, and the new one
    assert stats["totals"]["documents"] == 50 and stats["inputs"][0]["path"] == str(new)
    assert not list(tmp_path.glob("*.tmp-*")) and not Path(f"{prefix}.lock").exists()


def test_a_tokenizer_of_more_than_65535_pieces_gets_int32_shards(tmp_path):
    """docs/data.md, Outputs: "`uint16` tokens below 65,500 pieces, else `int32`". A real
    SentencePiece model of 65,700 pieces, trained by `alia-data tokenizer train` in about a
    second (65,300 reserved control tokens come first, so the ~400 pieces BPE learns from a
    small text get ids 65,300-65,699, and ordinary text encodes to ids above 65,535). The
    shards are int32, and megatron's reader gives back exactly SentencePiece's ids."""
    import numpy as np
    import sentencepiece as spm
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    words = "el la de que casa etxea herri gizon the of and house people 2024".split()
    texts = [" ".join(words[(i * 7 + j) % len(words)] for j in range(40)) + f" {i}" for i in range(300)]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t, "lang": "es"}) + "\n" for t in texts), encoding="utf-8")
    model = tmp_path / "big.model"
    trained = _run([cli("alia-data"), "tokenizer", "train", "--input", corpus, "--output", model,
                    "--vocab-size", "65700", "--reserved-tokens", "65300", "--threads", "1"], timeout=120)
    assert trained.returncode == 0, trained.stderr
    sp = spm.SentencePieceProcessor(model_file=str(model))
    assert sp.vocab_size() == 65_700
    expected = [sp.encode(t) + [sp.eos_id()] for t in texts]
    assert max(max(ids) for ids in expected) > 65_535

    prefix = tmp_path / "shards" / "big"
    cmd = _tokenize([corpus], prefix)
    cmd[cmd.index("--tokenizer") + 1] = str(model)
    proc = _run(cmd)
    assert proc.returncode == 0, proc.stderr
    assert _verified(prefix)["dtype"] == "int32"
    shard = IndexedDataset(f"{prefix}_es")
    assert shard.index.dtype == np.int32 and len(shard) == len(texts)
    for i, ids in enumerate(expected):
        assert shard[i].tolist() == ids, i


# ------------------------------------------------------------------------------------------
# docs/cluster.md: a GPU cluster config where torch sees no GPU


def test_a_gpu_cluster_config_without_a_gpu_is_one_line_naming_torchs_cuda(tmp_path):
    """docs/cluster.md, A torch build for the nodes' NVIDIA driver: alia-train "refuses to start
    a job whose cluster config is not `local` while `train.device=auto` ... in one line that
    names torch's CUDA version"."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the refusal is for a torch that sees none")
    proc = _run([cli("alia-train"), "+model=tiny", "cluster=marenostrum5", f"run.dir={tmp_path / 'run'}"])
    assert proc.returncode == EXIT_CONFIG, proc.stdout[-2000:] + proc.stderr[-2000:]
    line = _one_error_line(proc, "alia-train")
    assert "train.device: cluster=marenostrum5 is a GPU cluster, but torch " in line and torch.__version__ in line
    if torch.version.cuda:
        assert f"CUDA {torch.version.cuda}" in line, line
    assert "train.device=cpu" in line and not (tmp_path / "run").exists()
