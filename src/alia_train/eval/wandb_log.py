"""Eval scores to Weights & Biases, at the training step of their checkpoint.

On when the run's config.yaml has logging.wandb.mode online or offline (or `alia-eval --wandb
MODE`). The scores go to a W&B run of their own, `<run name>-eval` in the training run's group
(`<run name>`), with an id kept in RUN_DIR/wandb_eval_id (the training run's id + "-eval"), so
every alia-eval of a run continues the same W&B run. Not the training run itself: an eval job may run
while the next training job writes that run, and W&B takes one writer per run. Each score is
`eval/<task>/<metric>` plotted against `train_step` (W&B's define_metric): checkpoints may be
scored in any order, later or again, and still land at their step.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alia_train.config.load import ConfigError, read_config_file

STEP_KEY = "train_step"
MODES = ("online", "offline", "disabled")


def _wandb_settings(run_dir: Path) -> dict:
    try:
        cfg = read_config_file(run_dir / "config.yaml")
    except (OSError, ConfigError, ValueError):
        return {}
    logging = cfg.get("logging") if isinstance(cfg.get("logging"), dict) else {}
    wandb = logging.get("wandb") if isinstance(logging.get("wandb"), dict) else {}
    run = cfg.get("run") if isinstance(cfg.get("run"), dict) else {}
    return {**wandb, "run_name": run.get("name")}


def _eval_run_id(run_dir: Path) -> str:
    own = run_dir / "wandb_eval_id"
    if own.is_file() and own.read_text().strip():
        return own.read_text().strip()
    train = run_dir / "wandb_id"
    base = train.read_text().strip() if train.is_file() else ""
    if not base:
        import secrets
        import string

        base = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
    own.write_text(f"{base}-eval\n")
    return f"{base}-eval"


class EvalTracker:
    def __init__(self, run_dir: Path, mode: str, settings: dict):
        import wandb

        name = settings.get("name") or settings.get("run_name") or run_dir.name
        self._run = wandb.init(
            project=settings.get("project") or "alia-train", entity=settings.get("entity"),
            name=f"{name}-eval", group=str(name), job_type="eval",
            id=_eval_run_id(run_dir), resume="allow", mode=mode, dir=str(run_dir),
        )
        self._run.define_metric(STEP_KEY)
        self._run.define_metric("eval/*", step_metric=STEP_KEY)

    @property
    def run_id(self) -> str:
        return self._run.id

    def log(self, rows: list[dict]) -> None:
        data = {f"eval/{r['task']}/{r['metric']}": r["value"] for r in rows if r.get("value") is not None}
        if data:
            self._run.log({STEP_KEY: rows[0]["step"], **data})

    def close(self) -> None:
        self._run.finish()


def eval_tracker(run_dir: Path, mode: str | None, log: Callable[[str], None]) -> EvalTracker | None:
    settings = _wandb_settings(run_dir)
    mode = mode or str(settings.get("mode") or "disabled")
    if mode == "disabled":
        return None
    tracker = EvalTracker(run_dir, mode, settings)
    log(f"W&B ({mode}): scores go to run {tracker.run_id} as eval/<task>/<metric> over {STEP_KEY}")
    return tracker
