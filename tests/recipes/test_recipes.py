"""Every shipped recipe trains as published, shrunk: its own parallel layout (TP / PP / CP, sequence
parallelism, distributed optimizer, bf16 gradient reduce), its own recompute setting and bf16,
on the number of processes that layout needs, over gloo on CPU.

Only width, depth, vocabulary, sequence length, step count and the LR schedule are shrunk
(the recipes warm up over 2,000 steps; 6 steps at that rate would not move the loss), and a
context-parallel layout to CP2 x TP2 x its PP (8 processes, not the 40B 32k stage's 64). The same
launch also stops a copy of the run half-way and restarts it: the restart must continue exactly.
A recipe added to configs/model/ is picked up here without editing this file.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from helpers import relative_diff, run_layouts, train_losses

REPO = Path(__file__).resolve().parents[2]
STEPS = 6
RESUME_STEP = 3
SHRUNK_SCHEDULE = ["optim.lr=3e-3", "optim.min_lr=3e-4", "optim.warmup_steps=2", f"optim.decay_steps={STEPS}"]
NOT_RECIPES = {"tiny"}  # the demo model is not a published recipe


def recipes() -> list[str]:
    return sorted(p.stem for p in (REPO / "configs" / "model").glob("*.yaml") if p.stem not in NOT_RECIPES)


def recipe_spec(recipe: str) -> dict:
    return yaml.safe_load((REPO / "configs" / "model" / f"{recipe}.yaml").read_text())


def shrunk_layout(recipe: str) -> dict[str, int]:
    """The recipe's TP / PP / CP, except that a context-parallel layout (CP 8 x TP 4 x PP 2 is 64
    processes) keeps every split at its smallest: CP2 x TP2 x PP."""
    par = recipe_spec(recipe).get("parallel", {})
    tp, pp, cp = par.get("tp", 1), par.get("pp", 1), par.get("cp", 1)
    if cp > 1:
        tp, cp = min(tp, 2), 2
    return {"tp": tp, "pp": pp, "cp": cp}


def shrunk(recipe: str) -> tuple[list[str], int]:
    """Overrides that shrink `recipe` to CPU size, and the process count its layout needs."""
    spec = recipe_spec(recipe)
    model, train = spec["model"], spec["train"]
    layout = shrunk_layout(recipe)
    tp, pp, cp = layout["tp"], layout["pp"], layout["cp"]
    model_parallel = tp * pp * cp
    dp = 2 if model_parallel == 1 else 1  # a single-GPU layout still exercises DP (and distopt) over 2
    heads = max(4, 2 * tp)
    groups = heads if model["num_query_groups"] == model["num_attention_heads"] else heads // 2
    hidden = 16 * heads
    mbs = train.get("micro_batch_size", 1)
    overrides = [
        f"+model={recipe}",
        f"model.num_layers={2 * pp}",
        f"model.hidden_size={hidden}",
        f"model.ffn_hidden_size={3 * hidden}",
        f"model.num_attention_heads={heads}",
        f"model.num_query_groups={groups}",
        "model.vocab_size=null",  # the shipped sample tokenizer
        f"parallel.tp={tp}",
        f"parallel.cp={cp}",
        "train.precision=bf16",
        "train.seq_length=64",
        f"train.global_batch_size={mbs * dp * 4}",
        "logging.interval=1",
        *SHRUNK_SCHEDULE,
    ]
    return overrides, model_parallel * dp



def test_every_recipe_is_found():
    assert {"salamandra_2b", "salamandra_7b", "alia_40b"} <= set(recipes())


@pytest.mark.multiproc
@pytest.mark.slow
@pytest.mark.parametrize("recipe", recipes())
def test_recipe_trains_shrunk_in_bf16(recipe, tmp_path):
    overrides, nproc = shrunk(recipe)
    split = f"run.dir={tmp_path}/resumed"
    runs = {
        recipe: [f"train.steps={STEPS}"],
        "first": [f"train.steps={RESUME_STEP}", split],
        "second": [f"train.steps={STEPS}", split],
    }
    run_layouts(tmp_path, [*overrides, f"data.cache_dir={tmp_path}/cache"], runs, nproc=nproc, timeout=900)
    run_dir = tmp_path / recipe
    losses = train_losses(run_dir)
    assert sorted(losses) == list(range(1, STEPS + 1)), losses
    assert all(v == v and abs(v) != float("inf") for v in losses.values()), losses
    first, last = (losses[1] + losses[2]) / 2, (losses[STEPS - 1] + losses[STEPS]) / 2
    assert last < first - 0.05, f"{recipe}: loss did not fall: {losses}"
    # The run really used the recipe's flags, not defaults.
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    published = recipe_spec(recipe)
    for key, value in {**published.get("parallel", {}), **shrunk_layout(recipe)}.items():
        assert saved["parallel"][key] == value, f"parallel.{key}"
    assert saved["train"]["recompute"] == published["train"].get("recompute", "none")
    assert saved["train"]["precision"] == "bf16"
    resumed = train_losses(tmp_path / "resumed")
    assert sorted(resumed) == list(range(1, STEPS + 1)), resumed
    worst = max(relative_diff(resumed[s], losses[s]) for s in range(RESUME_STEP + 1, STEPS + 1))
    assert worst < 1e-6, f"{recipe}: restart after step {RESUME_STEP} diverged: {resumed} vs {losses}"
