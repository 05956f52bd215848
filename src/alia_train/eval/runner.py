"""alia-eval's loop: for each selected checkpoint not yet scored with these tasks and settings,
build the model once, score each asked-for task, append its rows to RUN_DIR/evals.jsonl (and
send them to W&B when the run uses it).

What counts as "already scored" is a complete batch in evals.jsonl with the same step,
checkpoint identity (a re-saved step is scored again), task name and settings (few-shot,
limit, dtype; not the batch size, device or model path, which do not change a score), so running
it after every save costs one read of evals.jsonl when there is nothing new.
"""

from __future__ import annotations

import gc
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from alia_train.eval import harness, hf_model
from alia_train.eval.checkpoints import Checkpoint, select
from alia_train.eval.errors import CheckpointError
from alia_train.eval.results import append_batch, batch_key, run_dir_lock, scored, settings_key


@dataclass
class EvalOptions:
    names: list[str]
    spec: str | None = None  # --tasks as typed: what the download command in an error names
    sets: list[str] = field(default_factory=list)
    include_paths: list[Path] = field(default_factory=list)
    checkpoints: str | list[int] = "all"
    num_fewshot: int | None = None
    limit: float | None = None
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int | str | None = None
    max_batch_size: int = 64
    via: str = "memory"  # or "export": alia-convert to-hf into a temporary directory
    wandb: str | None = None  # None: as the run's config.yaml says
    verbose: bool = False


@dataclass
class EvalSummary:
    scored: int = 0  # checkpoints scored now
    skipped: int = 0  # checkpoints already scored with every asked-for task
    rows: int = 0
    seconds: list[float] = field(default_factory=list)  # per scored checkpoint, model build included
    load_seconds: list[float] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # "step N: why" of checkpoints that could not be read


def _row_base(c: Checkpoint, name: str, key: str, opts: EvalOptions, dtype, device: str) -> dict:
    import lm_eval

    return {"group": name, "settings": key, "checkpoint": c.path.name, "checkpoint_id": c.ident,
            "batch": f"{c.step}-{c.ident}-{name}-{key}-{time.time_ns()}", "limit": opts.limit,
            "dtype": str(dtype).removeprefix("torch."), "device": device, "via": opts.via,
            "lm_eval": getattr(lm_eval, "__version__", "?")}


def _rows(results: dict, c: Checkpoint, base: dict, seconds: float) -> list[dict]:
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return [{"step": c.step, "task": s.task, "metric": s.metric, "value": s.value, "stderr": s.stderr, "n": s.n,
             "num_fewshot": s.num_fewshot, "version": s.version, **base, "seconds": round(seconds, 3), "time": now}
            for s in harness.scores(results)]


def _headline(rows: list[dict], name: str) -> str:
    own = [r for r in rows if r["task"] == name and r["value"] is not None] or [r for r in rows if r["value"] is not None]
    if not own:
        return "no metric"
    r = own[0]
    err = f" ± {r['stderr']:.3f}" if r["stderr"] is not None else ""
    return f"{r['task']} {r['metric']} {r['value']:.4f}{err}"


class _ModelMaker:
    """Builds the model of a checkpoint by the chosen path; the tokenizer once per run."""

    def __init__(self, opts: EvalOptions, dtype, device: str, open_checkpoint: Callable, export: Callable | None,
                 tmp: Path):
        self.opts, self.dtype, self.device, self.tmp = opts, dtype, device, tmp
        self.open_checkpoint, self.export = open_checkpoint, export
        self._tokenizers: dict[str, object] = {}

    def load(self, c: Checkpoint):
        """(the model, lm-eval's wrapper of it) for checkpoint c."""
        source = self.open_checkpoint(c.path)
        tok = self._tokenizers.get(source.tokenizer_sha)
        if tok is None:
            path = self.tmp / f"tokenizer-{source.tokenizer_sha[:16]}"
            path.mkdir()
            source.write_tokenizer(path)
            tok = self._tokenizers[source.tokenizer_sha] = hf_model.tokenizer(path)
        if self.opts.via == "export":
            out = self.tmp / f"export-{c.step}"
            self.export(c.path, out, self.dtype)
            try:
                model = hf_model.model_from_dir(out, source.config, self.dtype, self.device)
            finally:
                import shutil

                shutil.rmtree(out, ignore_errors=True)
        else:
            model = hf_model.build_model(source, self.dtype, self.device)
        bs = self.opts.batch_size or ("auto" if self.device != "cpu" else 16)
        return model, hf_model.harness_model(model, tok, bs, self.opts.max_batch_size, self.opts.verbose)


def _release() -> None:
    gc.collect()
    import torch

    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _todo(run_dir: Path, ckpts: list[Checkpoint], names: list[str], key: str) -> list[tuple[Checkpoint, list[str]]]:
    done = scored(run_dir)
    todo = [(c, [n for n in names if batch_key(c.step, c.ident, n, key) not in done]) for c in ckpts]
    return [(c, ns) for c, ns in todo if ns]


def run_eval(run_dir: Path, opts: EvalOptions, open_checkpoint: Callable[[Path], hf_model.ModelSource],
             export: Callable | None, log: Callable[[str], None]) -> EvalSummary:
    """Score the selected checkpoints of run_dir (see the module docstring)."""
    from alia_train.eval.wandb_log import eval_tracker

    harness.quiet(opts.verbose)
    summary = EvalSummary()
    ckpts = select(run_dir, opts.checkpoints, log)
    device = hf_model.resolve_device(opts.device)
    dtype = hf_model.resolve_dtype(opts.dtype, device)
    key = settings_key({"num_fewshot": opts.num_fewshot, "limit": opts.limit, "dtype": str(dtype)})
    with run_dir_lock(run_dir, log):
        todo = _todo(run_dir, ckpts, opts.names, key)
        summary.skipped = len(ckpts) - len(todo)
        if not todo:
            log(f"nothing to score: {len(ckpts)} checkpoint(s) already scored with {', '.join(opts.names)} "
                "and these settings")
            return summary
        tm = harness.task_manager(opts.names, opts.include_paths)
        harness.check_names(tm, opts.names, opts.sets)
        needed = [n for n in opts.names if any(n in ns for _, ns in todo)]
        loaded = {n: harness.load_tasks(tm, n, opts.spec) for n in needed}
        tracker = eval_tracker(run_dir, opts.wandb, log)
        with tempfile.TemporaryDirectory(prefix="alia-eval-") as tmp:
            maker = _ModelMaker(opts, dtype, device, open_checkpoint, export, Path(tmp))
            try:
                for c, names in todo:
                    try:
                        _score_checkpoint(run_dir, c, names, loaded, maker, opts, key, tracker, summary, log)
                    except CheckpointError as e:
                        log(f"WARNING: step {c.step} skipped: {e}")
                        summary.failed.append(f"step {c.step}: {e}")
            finally:
                if tracker is not None:
                    tracker.close()
    return summary


def _score_checkpoint(run_dir, c: Checkpoint, names, loaded, maker: _ModelMaker, opts: EvalOptions, key: str,
                      tracker, summary: EvalSummary, log) -> None:
    t0 = time.monotonic()
    model, lm = maker.load(c)
    load_s = time.monotonic() - t0
    parts = []
    for name in names:
        t1 = time.monotonic()
        results = harness.evaluate(lm, loaded[name], opts.num_fewshot, opts.limit)
        seconds = time.monotonic() - t1
        rows = _rows(results, c, _row_base(c, name, key, opts, maker.dtype, maker.device), seconds)
        for r in rows:
            r["load_seconds"] = round(load_s, 3)
        append_batch(run_dir, rows)
        if tracker is not None:
            tracker.log(rows)
        summary.rows += len(rows)
        parts.append(f"{_headline(rows, name)} ({seconds:.1f} s)")
    total = time.monotonic() - t0
    summary.scored += 1
    summary.seconds.append(total)
    summary.load_seconds.append(load_s)
    log(f"step {c.step}: " + "; ".join(parts) + f"; model {load_s:.1f} s, {total:.1f} s in all")
    del model, lm
    _release()
