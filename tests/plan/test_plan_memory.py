"""The planner's arithmetic (alia_train.plan), on the published recipes."""

from __future__ import annotations

import pytest

from alia_train.config.load import load_config
from alia_train.model.params import layer_params
from alia_train.plan import format_run_plan, plan_run
from alia_train.plan import activations
from alia_train.plan.parallel_layout import layout_from_config
from alia_train.plan.memory import GIB

MODEL_CARD = {
    "salamandra_2b": (2_253_490_176, 524_288_000, 64),
    "salamandra_7b": (7_768_117_248, 1_048_576_000, 128),
    "alia_40b": (40_433_885_184, 2_097_152_000, 256),
}


def _cfg(model: str, nodes: int, *extra: str):
    return load_config([f"+model={model}", "cluster=marenostrum5", f"cluster.nodes={nodes}", *extra])


@pytest.fixture(scope="module")
def cfg40():
    return _cfg("alia_40b", 256)


@pytest.mark.parametrize("model", sorted(MODEL_CARD))
def test_published_layouts_fit_and_counts_match_model_cards(model):
    total, embedding, nodes = MODEL_CARD[model]
    cfg = _cfg(model, nodes)
    plan = plan_run(cfg, nodes * 4)
    assert plan.counts.total == total and plan.counts.embedding == embedding
    assert plan.fits, format_run_plan(plan)
    assert plan.layout.tokens_per_step == 4_194_304  # about 4M tokens per global batch


def test_40b_per_gpu_breakdown(cfg40):
    plan = plan_run(cfg40, 1024)
    lay = plan.layout
    assert (lay.tp, lay.pp, lay.dp, lay.sp) == (4, 2, 128, True)
    first, last = plan.stages
    m = cfg40.model
    h, v = m.hidden_size, 256_000
    norms = 2 * h
    per_layer = (layer_params(m) - norms) // 4 + norms
    assert first.params == 24 * per_layer + v * h // 4
    assert last.params == 24 * per_layer + v * h // 4 + h
    assert first.weights == first.params * 2 and first.grads == first.params * 2  # bf16, reduce in bf16
    assert first.master + first.adam == pytest.approx(first.params * 12 / 128)  # distributed over DP
    assert first.optimizer_replicated == pytest.approx(first.params * 12)
    # 1F1B: the first stage holds PP micro-batches, the last one; only the last has logits.
    assert first.activations == pytest.approx(2 * last.activations)
    assert first.logits == 0 and last.logits == 4096 * v / 4 * 8
    assert plan.peak is first
    assert 25 * GIB < first.total < 50 * GIB


def test_40b_tp1_pp1_does_not_fit_and_suggests_layouts_that_do(cfg40):
    cfg = _cfg("alia_40b", 256, "parallel.tp=1", "parallel.pp=1", "parallel.sp=false")
    plan = plan_run(cfg, 1024)
    assert not plan.fits
    assert any("per GPU" in p for p in plan.problems)
    assert any("parallel.tp" in h for h in plan.hints)
    assert plan.suggestions
    overrides = plan.suggestions[0].split("  (")[0].split()
    again = plan_run(_cfg("alia_40b", 256, "parallel.tp=1", "parallel.pp=1", "parallel.sp=false", *overrides), 1024)
    assert again.fits, format_run_plan(again)


def test_activation_terms():
    cfg = _cfg("salamandra_7b", 128)
    m = cfg.model
    lay = layout_from_config(cfg, 512)
    none = activations.layer_bytes(m, lay, "none")
    selective = activations.layer_bytes(m, lay, "selective")
    scores = activations.layer_bytes(m, lay, "none", scores_stored=True)
    s, b, h, a, t = 8192, 2, 4096, 32, 4
    # Selective recompute drops the core attention's output and log-sum-exp ...
    assert none - selective == pytest.approx(2 * s * b * h / t + 4 * a / t * s * b)
    # ... and, with unfused attention, the s x s softmax output (2 a s^2 b bytes over TP).
    assert scores - none == pytest.approx(2 * a / t * s * s * b)
    # Sequence parallelism splits the replicated part (8 sbh) over TP.
    from dataclasses import replace

    no_sp = activations.layer_bytes(m, replace(lay, sp=False), "selective")
    assert no_sp - selective == pytest.approx(8 * s * b * h * (1 - 1 / t))
    # Full recompute keeps one input per layer plus one layer's working set.
    full = activations.stage_bytes(m, lay, 0, "full")
    assert full == pytest.approx(32 * s * b * h / t * 2 + none)


def test_distributed_optimizer_off_costs_12_bytes_per_param(cfg40):
    cfg = _cfg("alia_40b", 256, "parallel.distributed_optimizer=false")
    plan = plan_run(cfg, 1024)
    first = plan.stages[0]
    assert first.master + first.adam == pytest.approx(first.params * 12)
    assert not plan.fits
    assert any("distributed_optimizer=true" in h for h in plan.hints)


def test_time_to_token_budget(cfg40):
    plan = plan_run(cfg40, 1024, tokens=9.37e12, mfu=0.4)
    d = plan.duration
    expected_s = 9.37e12 * d.flops_per_token / (1024 * 989e12 * 0.4)
    assert d.days == pytest.approx(expected_s / 86400)
    assert 50 < d.days < 80
    assert d.steps == -(-int(9.37e12) // 4_194_304)
    default = plan_run(cfg40, 1024)  # budget from train.steps
    assert default.duration.tokens == cfg40.train.steps * 4_194_304


def test_config_problems_and_unknown_vocab():
    bad = plan_run(_cfg("alia_40b", 256, "parallel.tp=3"), 1024)
    assert not bad.fits and bad.layout is None
    assert any(p.startswith("parallel.tp") for p in bad.problems)
    assert "cannot plan" in format_run_plan(bad)
    tiny = plan_run(load_config(["+model=tiny"]), 1)
    assert any(p.startswith("model.vocab_size") for p in tiny.problems)
    assert plan_run(load_config(["+model=tiny"]), 1, 32000).fits


def test_summary_line(cfg40):
    line = plan_run(cfg40, 1024).summary()
    assert line.startswith("memory plan: ") and "(first stage) of 64 GiB, fits" in line
