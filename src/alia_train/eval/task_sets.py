"""Named task sets: the config group `eval` (configs/eval/NAME.yaml, or DIR/eval/NAME.yaml with
--config-dir DIR), each a list of lm-evaluation-harness names under `tasks:`.

`--tasks iberian,arc_easy` is the set `iberian` followed by the task `arc_easy`; a name that is
no set is taken as an lm-eval task, group or tag (checked against the task index later).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from alia_train.config.load import ConfigError, group_options, use_config_dirs
from alia_train.eval.errors import EvalError

GROUP = "eval"


def set_names(config_dirs: list[str] | None = None) -> list[str]:
    try:
        use_config_dirs(config_dirs or [])
    except ConfigError as e:
        raise EvalError(str(e)) from None
    return group_options(GROUP)


def _set_file(name: str, config_dirs: list[str]) -> Path | None:
    from alia_train.config.load import search_dirs

    use_config_dirs(config_dirs)
    found = [d / GROUP / f"{name}.yaml" for d in search_dirs() if (d / GROUP / f"{name}.yaml").is_file()]
    return found[-1] if found else None  # a --config-dir option of the same name wins


def read_set(path: Path) -> list[str]:
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise EvalError(f"task set {path}: unreadable ({type(e).__name__})") from None
    tasks = spec.get("tasks") if isinstance(spec, dict) else None
    if not isinstance(tasks, list) or not tasks or not all(isinstance(t, str) and t.strip() for t in tasks):
        raise EvalError(f"task set {path}: needs `tasks:`, a list of lm-evaluation-harness task names")
    return [t.strip() for t in tasks]


def expand(spec: str, config_dirs: list[str] | None = None) -> list[str]:
    """The task names `--tasks spec` stands for, sets expanded, duplicates dropped, in order."""
    config_dirs = config_dirs or []
    set_names(config_dirs)  # checks the --config-dir dirs
    names: list[str] = []
    parts = [p.strip() for p in spec.split(",")]
    if not any(parts):
        raise EvalError("--tasks: no task named; e.g. --tasks local, --tasks iberian or --tasks arc_easy,piqa")
    for part in parts:
        if not part:
            continue
        path = _set_file(part, config_dirs)
        for name in read_set(path) if path else [part]:
            if name not in names:
                names.append(name)
    return names
