"""The launch check's arithmetic (alia_train.plan.machine_fit, levers): which levers make a run
fit the machine at hand, in which order, and the one line a run that does not fit is refused
with: on CPU (the host's memory, shared by the ranks of a node) and on one GPU."""

from __future__ import annotations

import re

import pytest

from alia_train.config.load import load_config
from alia_train.plan.host_memory import Capacity
from alia_train.plan.levers import cheapest_fit, least_memory, peak_memory, smallest_machines
from alia_train.plan.machine_fit import check_machine
from alia_train.plan.memory import GIB
from alia_train.plan.parallel_layout import layout_from_config

SAMPLE_VOCAB = 4096  # the shipped sample tokenizer's
RECIPE_VOCAB = 256_000


@pytest.fixture(scope="module")
def cfg2b():
    return load_config(["+model=salamandra_2b"])


def _planned(overrides: list[str], vocab: int, device: str = "gpu") -> float:
    cfg = load_config(overrides)
    return peak_memory(cfg.model, vocab, layout_from_config(cfg, 1, device)).total


@pytest.mark.parametrize("budget_gib, levers", [
    (64, "train.loss_impl=chunked"),  # the 256,000-entry logits dominate: chunked loss, no recompute
    (50, "train.recompute=full train.loss_impl=chunked"),
])
def test_cheapest_levers_that_fit_one_gpu(cfg2b, budget_gib, levers):
    base = layout_from_config(cfg2b, 1)
    assert peak_memory(cfg2b.model, RECIPE_VOCAB, base).total > budget_gib * GIB  # 70.2 GiB as published
    fit = cheapest_fit(cfg2b.model, RECIPE_VOCAB, base, budget_gib * GIB)
    assert fit.text() == levers
    # The overrides, given to the config, are planned at what the search said, within the budget.
    assert _planned(["+model=salamandra_2b", *fit.changes], RECIPE_VOCAB) == pytest.approx(fit.total)
    assert fit.total <= budget_gib * GIB


def test_a_smaller_micro_batch_comes_first():
    cfg = load_config(["+model=salamandra_7b", "parallel.tp=1", "parallel.sp=false"])  # micro batch 2
    base = layout_from_config(cfg, 1)
    one = peak_memory(cfg.model, RECIPE_VOCAB, layout_from_config(load_config(
        ["+model=salamandra_7b", "parallel.tp=1", "parallel.sp=false", "train.micro_batch_size=1"]), 1))
    fit = cheapest_fit(cfg.model, RECIPE_VOCAB, base, one.total + GIB)
    assert fit.changes == ("train.micro_batch_size=1",)


def test_a_shorter_sequence_only_when_nothing_else_fits(cfg2b):
    base = layout_from_config(cfg2b, 1)
    floor_at_8k = least_memory(cfg2b.model, RECIPE_VOCAB, base, shorter_sequences=False)
    fit = cheapest_fit(cfg2b.model, RECIPE_VOCAB, base, floor_at_8k.total - GIB)
    seq = fit.layout.seq_length
    assert seq < 8192 and f"train.seq_length={seq}" in fit.changes
    # The longest sequence that fits: twice as long does not, whatever else is changed.
    longer = load_config(["+model=salamandra_2b", f"train.seq_length={2 * seq}"])
    assert least_memory(longer.model, RECIPE_VOCAB, layout_from_config(longer, 1), False).total > fit.total + GIB
    # Nothing fits below the state of the parameters itself.
    assert cheapest_fit(cfg2b.model, RECIPE_VOCAB, base, 30 * GIB) is None


def _one_line(text: str) -> str:
    assert "\n" not in text
    return text


def _gib(pattern: str, text: str) -> float:
    return float(re.search(pattern, text).group(1))


def test_cpu_refusal_of_the_2b_says_needs_has_and_what_fits(tmp_path):
    cfg = load_config(["+model=salamandra_2b", "model.vocab_size=null"])
    fit = check_machine(cfg, SAMPLE_VOCAB, 1, "cpu", [Capacity("memory available 21.0 GiB", 21 * GIB, False)], 1)
    assert not fit.fits and not fit.layout.bf16  # fp32 on CPU
    line = _one_line(fit.refusal())
    assert line.startswith("memory: salamandra_2b does not fit in this machine's memory: it needs ")
    assert _gib(r"it needs ([\d.]+) GiB per process", line) == round(fit.peak.total / GIB, 1)
    assert "fp32 weights, gradients and Adam state" in line
    assert "there is 21.0 GiB (memory available 21.0 GiB)" in line
    # The 2B's state and a checkpoint save do not fit 21 GiB whatever the levers: it says so,
    # with what does fit here, what it needs on a GPU, and the escape hatch.
    assert "no setting makes it fit here" in line and "a checkpoint save's copies" in line
    assert "a smaller shipped model fits: +model=tiny" in line
    assert "on one GPU it needs" in line and "alia-plan +model=salamandra_2b --machines" in line
    assert line.endswith("train.check_memory=false starts anyway")


def test_cpu_ranks_of_one_node_share_its_memory():
    cfg = load_config(["+model=tiny", "parallel.tp=2"])
    one = check_machine(cfg, SAMPLE_VOCAB, 4, "cpu", [Capacity("memory available", 4 * GIB, False)], 1)
    four = check_machine(cfg, SAMPLE_VOCAB, 4, "cpu", [Capacity("memory available", 4 * GIB, False)], 4)
    assert one.fits and not four.fits  # ~1.3 GiB per process: one fits 4 GiB, four do not
    line = _one_line(four.refusal())
    per = four.peak.total / GIB
    assert f"it needs 4 processes x {per:.1f} = {4 * per:.1f} GiB" in line
    assert "no setting makes it fit here" in line  # the process itself is most of it
    # ulimit -v bounds each process, not the node: the tightest bound is the one reported.
    caps = [Capacity("memory available", 60 * GIB, False), Capacity("ulimit -v", GIB, True)]
    fit = check_machine(cfg, SAMPLE_VOCAB, 4, "cpu", caps, 4)
    assert fit.capacity.what == "ulimit -v" and f"needs {per:.1f} GiB per process" in fit.refusal()


def test_one_24gb_gpu_cannot_hold_the_2b_two_can():
    cfg = load_config(["+model=salamandra_2b", "model.vocab_size=null"])
    fit = check_machine(cfg, SAMPLE_VOCAB, 1, "gpu", [Capacity("GPU 0, NVIDIA GeForce RTX 4090", 23.6 * GIB, True)], 1)
    assert not fit.fits
    line = _one_line(fit.refusal())
    assert "in this GPU's memory: it needs" in line and "GiB per GPU" in line
    assert "there is 23.6 GiB (GPU 0, NVIDIA GeForce RTX 4090)" in line
    assert "no setting makes it fit here" in line and "2 GPUs of 23.6 GiB hold it" in line
    big = check_machine(cfg, SAMPLE_VOCAB, 1, "gpu", [Capacity("GPU 0", 79.1 * GIB, True)], 1)
    assert big.fits and big.summary().startswith("memory plan: ") and "GiB per GPU of 79.1 GiB, fits" in big.summary()


def test_smallest_machines_of_the_2b(cfg2b):
    sm = smallest_machines(cfg2b, RECIPE_VOCAB, 23.6)
    assert 40 * GIB < sm.one_gpu.total < 50 * GIB and sm.one_gpu.layout.seq_length == 8192
    # A CPU process holds fp32 state and a checkpoint save's copies: far more than one GPU.
    assert sm.cpu.total > 2 * sm.one_gpu.total and not sm.cpu.layout.bf16
    assert sm.gpus == 4
