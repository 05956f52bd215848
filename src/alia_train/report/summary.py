"""report.md: the run configuration, last values, per-language results, time per step, plots.

Plain markdown with relative image links, so the report directory can be copied anywhere (or
viewed on GitHub) as a whole. Nothing time-dependent is written: the same run gives the same
file.
"""

from __future__ import annotations

import math
import statistics

from alia_train.metrics_file import finite
from alia_train.report.evals import EvalRows, curves, seconds_per_checkpoint
from alia_train.report.run import RunData
from alia_train.report.series import PlotData

TITLES = {
    "loss.png": "Loss",
    "loss_by_language.png": "Training loss by language",
    "valid_loss_by_language.png": "Validation loss by language",
    "lr.png": "Learning rate",
    "grad_norm.png": "Gradient norm",
    "throughput.png": "Throughput",
    "mixture.png": "Language mixture: planned vs realised",
}

# Last-value rows: (record key, label, format).
LAST = (
    ("loss", "training loss", "{:.4f}"),
    ("lr", "learning rate", "{:.3e}"),
    ("grad_norm", "grad norm", "{:.3f}"),
    ("tokens_per_sec", "tokens/s", "{:,.0f}"),
    ("tflops_per_gpu", "TFLOP/s per GPU", "{:.1f}"),
    ("mfu", "MFU", "{:.1%}"),
    ("peak_mem_gb", "peak GPU memory (GB)", "{:.1f}"),
    ("step_time", "step time (s)", "{:.3f}"),
    ("consumed_samples", "consumed samples", "{:,}"),
    ("consumed_tokens", "consumed tokens", "{:,}"),
)


def _fmt(value, spec: str = "{:.4f}") -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    try:
        return spec.format(value)
    except (ValueError, TypeError):
        return str(value)


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    days, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return (f"{days}d " if days else "") + f"{h}:{m:02d}:{s:02d}"


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _status(run: RunData) -> list[str]:
    recs = run.records
    last = recs.train[-1]["step"] if recs.train else None
    total = run.cfg("train.steps")
    lines = [f"# Run report: {run.name}", "", f"Run directory: `{run.run_dir}`", ""]
    if last is None:
        lines.append("No training records yet.")
    elif isinstance(total, int) and total > 0:
        state = "finished" if last >= total else f"{last / total:.0%} of the planned steps"
        lines.append(f"Last logged step: **{last}** of {total} ({state}).")
    else:
        lines.append(f"Last logged step: **{last}**.")
    if recs.launches > 1:
        lines.append(
            f"The metrics come from {recs.launches} launches (resumes); {recs.replaced} records that a "
            "resumed launch logged again were replaced by the later ones, so each step appears once."
        )
    for problem in run.problems:
        lines.append(f"Note: {problem}.")
    return lines + [""]


def _launches(run: RunData) -> list[str]:
    """One row per start of alia-train, from its launch record in metrics.jsonl."""
    recs = run.records.launch_records
    if not recs:
        return []
    rows = []
    for i, r in enumerate(recs, 1):
        lay = r.get("layout") if isinstance(r.get("layout"), dict) else {}
        layout = " ".join(f"{k} {v}" for k, v in lay.items() if v is not None)
        versions = r.get("versions") if isinstance(r.get("versions"), dict) else {}
        code = ", ".join(f"{k} {v}" for k, v in versions.items() if v)
        if r.get("git"):
            code += f"; git {str(r['git'])[:12]}{'+dirty' if str(r['git']).endswith('+dirty') else ''}"
        rows.append((str(i), str(r.get("time", "–")), str(r["step"]), str(r.get("world_size", "–")),
                     layout or "–", str(r.get("device", "–")), code or "–"))
    header = ("#", "started", "from step", "processes", "layout", "device", "code")
    return ["## Launches", ""] + _table(header, rows) + [""]


def _config(run: RunData) -> list[str]:
    if run.config is None:
        return ["## Run configuration", "", "No config.yaml in the run directory.", ""]
    c = run.cfg
    gbs, seq = c("train.global_batch_size"), c("train.seq_length")
    tokens_per_step = f" = {gbs * seq:,} tokens/step" if isinstance(gbs, int) and isinstance(seq, int) else ""
    par = f"tp {c('parallel.tp')}, pp {c('parallel.pp')}, cp {c('parallel.cp')}"
    if c("parallel.vpp"):
        par += f", vpp {c('parallel.vpp')}"
    if c("parallel.sp"):
        par += ", sequence parallel"
    if c("parallel.distributed_optimizer"):
        par += ", distributed optimizer"
    sources = c("data.sources") or []
    data = f"{len(sources)} sources" if sources else "the shipped sample corpus"
    mult = c("data.multipliers") or {}
    if mult:
        data += "; multipliers " + ", ".join(f"{k} {v:g}" if isinstance(v, (int, float)) else f"{k} {v}" for k, v in mult.items())
    evals = c("train.eval_interval")
    rows = [
        ("model", f"{c('model.name')}: {c('model.num_layers')} layers, hidden {c('model.hidden_size')}, "
                  f"{c('model.num_attention_heads')} heads ({c('model.num_query_groups')} KV groups), "
                  f"FFN {c('model.ffn_hidden_size')}"),
        ("parallelism", par),
        ("batch", f"{gbs} sequences × {seq} tokens{tokens_per_step} (micro-batch {c('train.micro_batch_size')})"),
        ("steps", str(c("train.steps"))),
        ("optimizer", f"lr {c('optim.lr')} → {c('optim.min_lr')}, {c('optim.decay_style')} decay, "
                      f"warmup {c('optim.warmup_steps')} steps, weight decay {c('optim.weight_decay')}, "
                      f"clip {c('optim.clip_grad')}"),
        ("precision / device", f"{c('train.precision', '–')} / {c('train.device', '–')}"),
        ("data", data),
        ("logging", f"every {c('logging.interval')} steps; validation "
                    + (f"every {evals} steps ({c('train.eval_iters')} batches)" if evals else "off")),
    ]
    lines = ["## Run configuration", ""] + _table(("", ""), rows)
    import yaml

    dump = yaml.safe_dump(run.config, sort_keys=False, allow_unicode=True).rstrip()
    lines += ["", "<details><summary>config.yaml (latest launch)</summary>", "", "```yaml", dump, "```", "", "</details>", ""]
    return lines


def _last_values(run: RunData) -> list[str]:
    if not run.records.train:
        return []
    # The newest value of each metric, from the newest record that has it (MFU is GPU-only).
    rows = []
    for key, label, spec in LAST:
        for rec in reversed(run.records.train):
            if key in rec:
                rows.append((label, _fmt(rec[key], spec)))
                break
    step = run.records.train[-1]["step"]
    return [f"## Last values (step {step})", ""] + _table(("metric", "value"), rows) + [""]


def _languages(data: PlotData) -> list[str]:
    if not data.languages:
        return []
    rows = []
    for lang in data.languages:
        train = data.train_loss_by_lang[lang].last
        valid = data.valid_loss_by_lang[lang]
        ppl = data.valid_ppl_by_lang[lang]
        best = delta = best_ppl = "–"
        if valid:
            finite_points = [(v, s) for s, v in zip(valid.steps, valid.values) if math.isfinite(v)]
            if finite_points:
                v, s = min(finite_points)
                best = f"{v:.4f} (step {s})"
                best_ppl = _fmt(dict(zip(ppl.steps, ppl.values)).get(s, math.exp(min(v, 50.0))), "{:.2f}")
            if len(valid.values) > 1:
                delta = f"{valid.values[-1] - valid.values[-2]:+.4f}"
        planned = "–" if data.planned_shares is None else f"{data.planned_shares.get(lang, 0.0):.1%}"
        rows.append((
            lang,
            planned,
            f"{data.realised_shares.get(lang, 0.0):.1%}",
            _fmt(train[1]) if train else "–",
            _fmt(valid.last[1]) if valid else "–",
            delta,
            best,
            best_ppl,
        ))
    header = ("language", "planned share", "realised share", "train loss (last)", "valid loss (last)",
              "Δ valid since previous eval", "best valid loss", "best valid ppl")
    notes = ["", "Shares are of training tokens: planned from `mixture.json`, realised from the "
             "`tokens/<lang>` counts of the training records."]
    if data.planned_shares is None:
        notes = ["", "No mixture.json in the run directory: realised shares only."]
    return ["## Languages", ""] + _table(header, rows) + notes + [""]


def _timing(run: RunData) -> list[str]:
    train = run.records.train
    times = [(r["step"], r["step_time"]) for r in train if finite(r.get("step_time"))]
    if not times:
        return []
    per_step = [t for _, t in times]
    # Each record's step_time is the mean over the steps since the previous record.
    total, prev = 0.0, 0
    for rec in train:
        if finite(rec.get("step_time")):
            total += rec["step_time"] * (rec["step"] - prev)
        prev = rec["step"]
    median = statistics.median(per_step)
    rows = [
        ("median step time", f"{median:.3f} s"),
        ("mean step time", f"{statistics.fmean(per_step):.3f} s"),
        ("training time of the logged steps", duration(total)),
    ]
    tps = [r["tokens_per_sec"] for r in train if finite(r.get("tokens_per_sec"))]
    if tps:
        rows.insert(2, ("median tokens/s", f"{statistics.median(tps):,.0f}"))
    total_steps, last = run.cfg("train.steps"), train[-1]["step"]
    if isinstance(total_steps, int) and total_steps > last:
        rows.append((f"estimated time to step {total_steps}", duration(median * (total_steps - last))))
    return ["## Time per step", ""] + _table(("", ""), rows) + [
        "", "A step time is the wall-clock time between two training records divided by the steps "
        "between them, validation excluded: the first one includes warm-up, and an interval with a "
        "checkpoint save includes the save.", ""]


def _benchmarks(evals: EvalRows | None) -> list[str]:
    """The latest score of each task and metric from evals.jsonl (alia-eval)."""
    if evals is None or not (evals.rows or evals.problems()):
        return []
    rows = []
    for group, group_curves in curves(evals.rows).items():
        several = len({(c.num_fewshot, c.limit) for c in group_curves}) > 1
        for c in group_curves:
            step, v, err, n = c.last
            first = c.points[c.steps[0]][0]
            change = f"{v - first:+.4f} since step {c.steps[0]}" if len(c.steps) > 1 else "–"
            rows.append((group, c.label(several), str(step), f"{v:.4f}", _fmt(err), str(n or "–"),
                         str(c.num_fewshot if c.num_fewshot is not None else "–"), change))
    header = ("benchmark", "task / metric", "step", "value", "± stderr", "examples", "few-shot", "change")
    lines = ["## Benchmarks (latest checkpoint scored)", ""] + (_table(header, rows) if rows else ["No complete scores yet."])
    per = seconds_per_checkpoint(evals.rows)
    if per:
        lines += ["", "Scoring time per checkpoint (median, model loading excluded): "
                  + ", ".join(f"{g} {t:.1f} s" for g, t in per.items()) + "."]
    lines += ["", "From `evals.jsonl`, written by `alia-eval` (docs/evaluation.md); the curves are in the "
              "benchmark plots below."]
    lines += [f"Note: {p}." for p in evals.problems()]
    return lines + [""]


def _title(name: str) -> str:
    if name in TITLES:
        return TITLES[name]
    if name.startswith("eval_"):
        return f"Benchmark: {name.removeprefix('eval_').removesuffix('.png')}"
    return name


def _plots(names: list[str]) -> list[str]:
    lines = ["## Plots", ""]
    for name in names:
        lines += [f"### {_title(name)}", "", f"![{_title(name)}]({name})", ""]
    return lines


def render_markdown(run: RunData, data: PlotData, plot_names: list[str], evals: EvalRows | None = None) -> str:
    lines = (_status(run) + _config(run) + _launches(run) + _last_values(run) + _languages(data)
             + _benchmarks(evals) + _timing(run) + _plots(plot_names))
    return "\n".join(lines).rstrip() + "\n"
