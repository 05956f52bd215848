"""Everything the report reads from a run directory: metrics.jsonl, config.yaml, mixture.json.

Only metrics.jsonl is required; the others are optional (an old run, or one whose first
launch has not written them yet) and the report leaves out what they would have added.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from alia_train.metrics_file import METRICS_FILE, Records, is_number, read_records

CONFIG = "config.yaml"
MIXTURE = "mixture.json"


@dataclass
class RunData:
    run_dir: Path
    records: Records
    # config.yaml as a plain dict (the latest launch's config), or None.
    config: dict | None = None
    # mixture.json's planned_shares {lang: share}, or None.
    planned_shares: dict[str, float] | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        run = (self.config or {}).get("run") or {}
        return str(run.get("name") or self.run_dir.name)

    def cfg(self, dotted: str, default=None):
        """A config value by dotted key ("train.steps"), or `default`."""
        node = self.config
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node


def _read_config(path: Path, problems: list[str]) -> dict | None:
    if not path.is_file():
        return None
    import yaml

    from alia_train.config.load import ConfigError, read_config_file

    try:
        return read_config_file(path)
    except (OSError, yaml.YAMLError) as e:
        problems.append(f"{CONFIG}: unreadable ({type(e).__name__}); run config left out")
    except ConfigError:  # not a mapping: no run config to show
        pass
    return None


def _read_mixture(path: Path, problems: list[str]) -> dict[str, float] | None:
    if not path.is_file():
        return None
    try:
        shares = json.loads(path.read_text(encoding="utf-8")).get("planned_shares")
    except (OSError, ValueError, AttributeError) as e:
        problems.append(f"{MIXTURE}: unreadable ({type(e).__name__}); planned mixture left out")
        return None
    if not isinstance(shares, dict) or not all(is_number(v) for v in shares.values()):
        problems.append(f"{MIXTURE}: no planned_shares {{lang: share}}; planned mixture left out")
        return None
    return {str(k): float(v) for k, v in shares.items()}


def load_run(run_dir: str | Path) -> RunData:
    """Read a run directory. Raises FileNotFoundError when it has no metrics.jsonl."""
    run_dir = Path(run_dir)
    metrics = run_dir / METRICS_FILE
    if not metrics.is_file():
        raise FileNotFoundError(f"{metrics}: no such file (is {run_dir} a run directory?)")
    problems: list[str] = []
    return RunData(
        run_dir=run_dir,
        records=read_records(metrics),
        config=_read_config(run_dir / CONFIG, problems),
        planned_shares=_read_mixture(run_dir / MIXTURE, problems),
        problems=problems,
    )
