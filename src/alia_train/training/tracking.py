"""Experiment trackers: Weights & Biases (online / offline / disabled) and TensorBoard.

A run directory keeps its W&B run id in `wandb_id`, so every restart of the run continues the
same W&B run. Credentials come from the environment (WANDB_API_KEY) or netrc only; they are
never part of the config, so they never reach config.yaml, a checkpoint or a log.
"""

from __future__ import annotations

import os
from pathlib import Path


class WandbTracker:
    def __init__(self, run_dir: str, mode: str, project: str, entity: str | None, name: str | None, config: dict):
        import wandb

        id_file = Path(run_dir) / "wandb_id"
        run_id = id_file.read_text().strip() if id_file.exists() else wandb.util.generate_id()
        id_file.write_text(run_id)
        self._run = wandb.init(
            project=project,
            entity=entity,
            name=name or Path(run_dir).name,
            id=run_id,
            resume="allow",
            mode=mode,
            dir=run_dir,
            config=config,
        )

    def log(self, rec: dict) -> None:
        kind = rec.get("kind", "train")
        data = {f"{kind}/{k}": v for k, v in rec.items() if k not in ("step", "kind") and isinstance(v, (int, float))}
        self._run.log(data, step=rec["step"])

    def close(self) -> None:
        self._run.finish()


class TensorBoardTracker:
    def __init__(self, run_dir: str):
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(log_dir=os.path.join(run_dir, "tensorboard"))

    def log(self, rec: dict) -> None:
        kind = rec.get("kind", "train")
        for k, v in rec.items():
            if k not in ("step", "kind") and isinstance(v, (int, float)):
                self._writer.add_scalar(f"{kind}/{k}", v, rec["step"])

    def close(self) -> None:
        self._writer.close()


def make_trackers(cfg) -> list:
    from dataclasses import asdict

    trackers: list = []
    wb = cfg.logging.wandb
    if wb.mode != "disabled":
        trackers.append(WandbTracker(cfg.run.dir, wb.mode, wb.project, wb.entity, wb.name, asdict(cfg)))
    if cfg.logging.tensorboard:
        trackers.append(TensorBoardTracker(cfg.run.dir))
    return trackers
