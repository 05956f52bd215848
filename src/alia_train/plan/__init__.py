"""Will a run fit, and how long will it take? Per-GPU memory by part and time to a token
budget, from the config alone (no torch import, no GPU): `alia-plan` and alia-train's
pre-flight check.

    from alia_train.plan import format_run_plan, plan_run
    plan = plan_run(cfg, world_size, vocab_size)
    plan.fits, plan.problems, plan.suggestions, format_run_plan(plan)
"""

from alia_train.plan.memory import StageMemory
from alia_train.plan.plan_text import format_run_plan
from alia_train.plan.run_plan import RunPlan, plan_run

__all__ = ["RunPlan", "StageMemory", "format_run_plan", "plan_run"]
