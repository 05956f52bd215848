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
    "alia_40b_32k": (40_433_885_184, 2_097_152_000, 256),
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
    cfg = _cfg("alia_40b", 256, "parallel.distributed_optimizer=false", "parallel.overlap_param_gather=false")
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


def test_context_parallelism_splits_activations_and_adds_the_gathered_kv():
    from dataclasses import replace

    cfg = _cfg("alia_40b_32k", 256)
    m = cfg.model
    cp8 = layout_from_config(cfg, 1024)
    cp1 = replace(cp8, cp=1)
    assert (cp8.cp, cp8.tp, cp8.seq_length) == (8, 4, 32768)
    # With selective recompute a layer keeps only its local share: 1/8 of the CP 1 figure.
    assert activations.layer_bytes(m, cp8, "selective") == pytest.approx(activations.layer_bytes(m, cp1, "selective") / 8)
    # The gathered K/V of one layer: K and V, all 32,768 positions, the 8 / TP 4 = 2 KV heads
    # of this rank, head dim 8192 / 64 = 128, bf16.
    kv = 2 * 32768 * 2 * 128 * 2
    assert activations.gathered_kv_bytes(m, cp8) == kv
    assert activations.gathered_kv_bytes(m, cp1) == 0
    # Selective recompute re-gathers them in the backward, with their gradient: one layer's worth.
    layers, flight = 24, 2
    sel = activations.stage_bytes(m, cp8, 0, "selective")
    assert sel - layers * flight * activations.layer_bytes(m, cp8, "selective") == pytest.approx(2 * kv)
    # Without recompute every layer keeps them, in place of its local K and V (1/8 of them).
    none8, none1 = activations.layer_bytes(m, cp8, "none"), activations.layer_bytes(m, cp1, "none")
    assert none8 - none1 / 8 == pytest.approx(kv - kv / 8)
    assert activations.stage_bytes(m, cp8, 0, "none") > layers * flight * kv


def test_40b_32k_plan_matches_the_4k_stage_per_gpu():
    """CP 8 at 32k gives each GPU the 4k stage's 4,096 tokens: with selective recompute the same
    activations and logits as the 4k plan (same micro-batches in flight), plus the small
    gathered K/V. The recipe as configured fits MN5's 64 GB GPUs."""
    recipe = plan_run(_cfg("alia_40b_32k", 256), 1024)
    lay = recipe.layout
    assert (lay.cp, lay.dp, lay.num_microbatches, lay.tokens_per_step) == (8, 16, 8, 4_194_304)
    assert recipe.fits, format_run_plan(recipe)
    assert 30 * GIB < recipe.peak.total < 50 * GIB
    long = plan_run(_cfg("alia_40b_32k", 256, "train.recompute=selective"), 1024)
    short = plan_run(_cfg("alia_40b", 256, "train.recompute=selective"), 1024)
    for s32, s4 in zip(long.stages, short.stages):
        assert s32.weights == s4.weights and s32.logits == s4.logits
        assert s32.activations - s32.gathered_kv == pytest.approx(s4.activations)
        assert 0 < s32.gathered_kv < 0.01 * s32.activations
        # Optimizer state shards over DP x CP = 128, as at 4k over DP 128.
        assert s32.master + s32.adam == pytest.approx(s4.master + s4.adam)


def test_32k_without_cp_does_not_fit_and_cp_is_suggested():
    cfg = _cfg("alia_40b_32k", 256, "parallel.cp=1")
    plan = plan_run(cfg, 1024)
    assert not plan.fits
    # The whole 32k sequence on one GPU: the logits alone are 8 x the CP 8 plan's.
    assert plan.stages[-1].logits == 8 * plan_run(_cfg("alia_40b_32k", 256), 1024).stages[-1].logits
    assert any(h.startswith("parallel.cp=2 ") for h in plan.hints)
    assert plan.suggestions and all("parallel.cp=" in s for s in plan.suggestions[:1])
    overrides = plan.suggestions[0].split("  (")[0].split()
    assert plan_run(_cfg("alia_40b_32k", 256, "parallel.cp=1", *overrides), 1024).fits


def test_short_sequences_get_no_cp_suggestion(cfg40):
    plan = plan_run(_cfg("alia_40b", 256, "parallel.tp=1", "parallel.pp=1", "parallel.sp=false"), 1024)
    assert plan.suggestions and not any("parallel.cp" in s for s in plan.suggestions + plan.hints)
