"""Experiment trackers: Weights & Biases (online / offline / disabled) and TensorBoard.

A run directory keeps its W&B run id in `wandb_id`, so every restart of the run continues the
same W&B run (offline too: `wandb sync RUN_DIR/wandb/offline-run-*` uploads the launches in
order into that one run). Credentials come from the environment (WANDB_API_KEY) or netrc only;
they are never part of the config, so they never reach config.yaml, a checkpoint or a log, and
`scrub_secrets` keeps any key that looks like one out of what W&B is sent.
"""

from __future__ import annotations

import os
import re
import secrets
import string
import sys
from pathlib import Path

# Config keys that must never be sent anywhere, should one ever be added to the config.
SECRET_KEY = re.compile(r"(api_?key|token|secret|password|passwd|credential)s?$", re.IGNORECASE)


def scrub_secrets(config):
    """A copy of a (nested) config dict without the keys named like credentials."""
    if isinstance(config, dict):
        return {k: scrub_secrets(v) for k, v in config.items() if not (isinstance(k, str) and SECRET_KEY.search(k))}
    if isinstance(config, list):
        return [scrub_secrets(v) for v in config]
    return config


def new_run_id() -> str:
    # Our own, like W&B's (8 lowercase letters and digits): wandb has moved its helper around
    # between releases (wandb.util.generate_id is gone in 0.31).
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def _scalars(rec: dict) -> dict:
    # Booleans are ints to Python but not a curve; the strings "nan"/"inf" (metrics.py's JSON
    # spelling of non-finite floats) are dropped rather than plotted as text.
    kind = rec.get("kind", "train")
    return {
        f"{kind}/{k}": v for k, v in rec.items()
        if k not in ("step", "kind") and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


class WandbTracker:
    def __init__(self, run_dir: str, mode: str, project: str, entity: str | None, name: str | None, config: dict):
        import wandb

        id_file = Path(run_dir) / "wandb_id"
        run_id = id_file.read_text().strip() if id_file.exists() else new_run_id()
        id_file.write_text(run_id)
        self._run = wandb.init(
            project=project,
            entity=entity,
            name=name or Path(run_dir).name,
            id=run_id,
            resume="allow",
            mode=mode,
            dir=run_dir,
            config=scrub_secrets(config),
            # A resumed run may change settings (train.steps, lr, ...): the latest launch wins.
            allow_val_change=True,
        )
        self._dropped = 0

    @property
    def run_id(self) -> str:
        return self._run.id

    def log(self, rec: dict) -> None:
        step, data = rec["step"], _scalars(rec)
        if not data:
            return
        # A resumed run logs again the steps after its checkpoint; W&B keeps a run's steps
        # increasing and would warn once per record, so those are dropped here, quietly.
        # metrics.jsonl (and alia-report) keep the re-run values.
        if step < self._run.step:
            if self._dropped == 0:
                print(
                    f"[alia-train] W&B run {self._run.id} is at step {self._run.step}: not sending the "
                    "re-run steps before it (metrics.jsonl has them)",
                    file=sys.stderr, flush=True,
                )
            self._dropped += 1
            return
        self._run.log(data, step=step)

    def close(self) -> None:
        self._run.finish()


class TensorBoardTracker:
    def __init__(self, run_dir: str):
        try:
            import tensorboard  # noqa: F401  (torch's SummaryWriter needs it)
        except ImportError:
            raise RuntimeError(
                "logging.tensorboard=true needs the tensorboard package: pip install tensorboard"
            ) from None
        self._log_dir = os.path.join(run_dir, "tensorboard")
        self._writer = None

    def log(self, rec: dict) -> None:
        data = _scalars(rec)
        if not data:
            return
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            # Opened at the first record: on a resume, purge_step hides the previous launches'
            # events from this step on, so TensorBoard shows each step once.
            resumed = os.path.isdir(self._log_dir) and any(os.scandir(self._log_dir))
            self._writer = SummaryWriter(log_dir=self._log_dir, purge_step=rec["step"] if resumed else None)
        for k, v in data.items():
            self._writer.add_scalar(k, v, rec["step"])

    def close(self) -> None:
        if self._writer is not None:
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
