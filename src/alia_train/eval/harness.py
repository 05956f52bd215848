"""lm-evaluation-harness, as alia-eval drives it: tasks found and loaded once, scored per model,
results turned into evals.jsonl rows.

* Task index: the shipped tasks (eval/tasks/) and --include-path dirs first, alone: a run that
  asks only for those skips indexing lm-eval's ~15,000 tasks (7 s). lm-eval's own are added
  when a name is not found there.
* Datasets load once per alia-eval (all checkpoints share them), honouring
  HF_DATASETS_OFFLINE: a dataset missing from the cache is one line naming the task and the
  command that downloads it (`alia-eval --download --tasks NAME`, on a login node).
* Each asked-for name is evaluated on its own (`evaluator.evaluate`, what `simple_evaluate`
  calls, with its seeds and few-shot handling): its rows form one batch of evals.jsonl.
"""

from __future__ import annotations

import difflib
import logging
import os
import random
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from alia_train.eval.errors import EvalError

LOCAL_TASKS = Path(__file__).resolve().parent / "tasks"
SEED = 1234  # lm-eval's default seeds for numpy, torch and the few-shot sampler
BOOTSTRAP_ITERS = 1000  # stderr of non-mean metrics (BLEU, F1 ...); lm-eval's CLI uses 100,000


def quiet(verbose: bool) -> None:
    """lm-eval, datasets and transformers log a screenful per task: errors only, unless verbose."""
    if verbose:
        return
    for name in ("lm_eval", "lm-eval", "datasets", "transformers", "accelerate", "evaluate"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def task_manager(names: list[str], include_paths: list[Path]):
    """A TaskManager that knows every name in `names` if any can (see the module docstring)."""
    from lm_eval.tasks import TaskManager

    paths = [str(LOCAL_TASKS), *(str(p) for p in include_paths)]
    local = TaskManager(include_path=paths, include_defaults=False)
    if all(name in local.all_tasks for name in names):
        return local
    return TaskManager(include_path=paths, include_defaults=True)


def check_names(tm, names: list[str], sets: list[str]) -> None:
    unknown = [n for n in names if n not in tm.all_tasks]
    if not unknown:
        return
    name = unknown[0]
    close = difflib.get_close_matches(name, list(tm.all_tasks) + sets, n=3, cutoff=0.75)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise EvalError(
        f"--tasks: unknown task '{name}': not a task set ({', '.join(sets) or 'none'}; configs/eval/) and not an "
        f"lm-evaluation-harness task, group or tag{hint} (`lm-eval ls tasks` lists them; your own task YAMLs: "
        "--include-path DIR)"
    )


def _leaf_datasets(tm, name: str, depth: int = 0) -> list[tuple[str, str]]:
    """(leaf task, dataset_path) pairs under `name`, from the task index (no data read)."""
    entry = tm.task_index.get(name)
    cfg = (entry.cfg if entry else None) or {}
    if depth > 8 or entry is None:
        return []
    subs = cfg.get("task") if isinstance(cfg.get("task"), list) else None
    if subs is None and entry.kind.name == "TAG":
        subs = [n for n, e in tm.task_index.items() if name in (e.tags or ())]
    if subs is None:
        return [(name, str(cfg.get("dataset_path") or ""))]
    found = []
    for sub in subs:
        if isinstance(sub, str):
            found += _leaf_datasets(tm, sub, depth + 1)
        elif isinstance(sub, dict) and sub.get("task"):
            found.append((str(sub["task"]), str(sub.get("dataset_path") or "")))
    return found


_DATASET_IN_MESSAGE = (re.compile(r"Couldn't reach '([^']+)'"), re.compile(r"Dataset '?([\w./-]+?)'? (?:is not cached|doesn't exist)"))


def _missing_dataset(exc: BaseException) -> str | None:
    """The dataset an exception (or its causes) says could not be fetched, if it is that kind."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, (ConnectionError, FileNotFoundError)) or type(exc).__name__ in (
            "DatasetNotFoundError", "LocalEntryNotFoundError", "OfflineModeIsEnabled"
        ):
            for pattern in _DATASET_IN_MESSAGE:
                m = pattern.search(str(exc))
                if m:
                    return m.group(1)
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def offline_message(tm, name: str, dataset: str, spec: str | None = None) -> str:
    tasks = [t for t, d in _leaf_datasets(tm, name) if d == dataset] or [name]
    where = f"task {tasks[0]}" + (f" (in {name})" if tasks[0] != name else "")
    offline = os.environ.get("HF_DATASETS_OFFLINE", "0").lower() in ("1", "true", "yes", "on")
    why = "HF_DATASETS_OFFLINE=1 forbids downloading it" if offline else "it could not be downloaded from here"
    return (f"{where}: dataset {dataset} is not in the local Hugging Face cache and {why}; download it on a "
            f"login node (same HF_HOME / HF_DATASETS_CACHE): HF_DATASETS_OFFLINE=0 alia-eval --download --tasks "
            f"{shlex.quote(spec or name)}")


def load_tasks(tm, name: str, spec: str | None = None) -> dict:
    """TaskManager.load for one name (datasets read here), missing datasets in one line that
    names the download command for `spec` (the whole --tasks list) or `name`."""
    try:
        return tm.load([name])
    except Exception as e:  # noqa: BLE001 - which exception a missing dataset raises varies by library version
        dataset = _missing_dataset(e)
        if dataset is None:
            raise
        raise EvalError(offline_message(tm, name, dataset, spec)) from None


def _seed_everything(loaded: dict, num_fewshot: int | None) -> None:
    """simple_evaluate's few-shot rule and seeds, before each evaluation: every checkpoint sees
    the same few-shot examples and the same random draws."""
    import numpy as np
    import torch

    random.seed(0)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    for task in loaded["tasks"].values():
        if num_fewshot is not None and task.get_config("num_fewshot") != 0:
            task.set_config(key="num_fewshot", value=num_fewshot)
        elif task.get_config("num_fewshot") is None:
            task.set_config(key="num_fewshot", value=0)
        task.set_fewshot_seed(seed=SEED)


def evaluate(lm, loaded: dict, num_fewshot: int | None, limit: float | None) -> dict:
    from lm_eval.evaluator import evaluate as lm_evaluate

    _seed_everything(loaded, num_fewshot)
    if limit is not None and limit >= 1:
        limit = int(limit)
    return lm_evaluate(lm=lm, task_dict=loaded, limit=limit, bootstrap_iters=BOOTSTRAP_ITERS, log_samples=False)


def _number(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if f == f and f not in (float("inf"), float("-inf")) else None


@dataclass
class Score:
    task: str
    metric: str  # "acc"; lm-eval's "metric,filter" when the filter is not "none"
    value: float | None
    stderr: float | None
    n: int | None
    num_fewshot: int | None
    version: object


def scores(results: dict) -> list[Score]:
    """Every metric of every task (and group aggregate) in an lm-eval results dict."""
    out = []
    n_samples = results.get("n-samples", {})
    for task, metrics in results.get("results", {}).items():
        n = n_samples.get(task, {}).get("effective")
        if n is None:
            subs = results.get("group_subtasks", {}).get(task) or []
            n = sum(n_samples.get(s, {}).get("effective", 0) for s in subs) or None
        for key, v in metrics.items():
            if "," not in key or key.split(",", 1)[0].endswith("_stderr"):
                continue
            metric, flt = key.split(",", 1)
            out.append(Score(task, metric if flt == "none" else key, _number(v),
                             _number(metrics.get(f"{metric}_stderr,{flt}")), n,
                             results.get("n-shot", {}).get(task), results.get("versions", {}).get(task)))
    return out
