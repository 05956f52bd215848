"""Will a run fit, and how long will it take? Per-GPU memory by part and time to a token
budget, from the config alone (no torch import, no GPU): `alia-plan` and alia-train's
pre-flight check.

    from alia_train.plan import plan_run
    plan = plan_run(cfg, world_size, vocab_size)
    plan.fits, plan.problems, plan.suggestions, plan.format()
"""

from alia_train.plan.memory import RunPlan, StageMemory, plan_run

__all__ = ["RunPlan", "StageMemory", "plan_run"]
