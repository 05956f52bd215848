"""The report's PNGs, drawn with matplotlib's object API on the Agg canvas.

No pyplot: nothing global is touched (a caller's backend, open figures), and nothing needs a
display. Output is byte-for-byte reproducible: matplotlib's default style regardless of the
user's matplotlibrc, fixed size and dpi, and no "Software" tag in the PNG, so the same metrics
give the same files and different metrics give different ones.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

from alia_train.fs import write_bytes_atomic
from alia_train.report.evals import EvalCurve
from alia_train.report.series import PlotData, Series

SIZE = (8.0, 4.5)
DPI = 100
PLOTS = (
    "loss.png",
    "loss_by_language.png",
    "valid_loss_by_language.png",
    "lr.png",
    "grad_norm.png",
    "throughput.png",
    "mixture.png",
)


def _colour(i: int) -> str:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if i < 10 else "tab20"]
    return cmap(i % cmap.N)


def _no_data(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} yet", ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _line(ax, s: Series, **kw) -> None:
    # Markers when there are few points: a run that just started is still readable.
    if len(s.steps) <= 30:
        kw.setdefault("marker", "o")
        kw.setdefault("markersize", 3)
    ax.plot(s.steps, s.values, **kw)


def _steps_axes(ax, title: str, ylabel: str) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)


def _many(entries: int) -> bool:
    return entries > 16


def _legend(ax) -> None:
    # Outside the axes, on the right: curves of many languages leave no empty corner inside.
    # Salamandra's 35 languages need two narrow columns to fit the height.
    many = _many(len(ax.get_legend_handles_labels()[1]))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False,
              fontsize="x-small" if many else "small", ncols=2 if many else 1)


def _lang_lines(ax, data: PlotData, by_lang: dict[str, Series], overall: Series, what: str) -> None:
    drawn = False
    for i, lang in enumerate(data.languages):
        if by_lang.get(lang):
            _line(ax, by_lang[lang], label=lang, color=_colour(i))
            drawn = True
    if not drawn:
        _no_data(ax, what)
        return
    if overall:
        _line(ax, overall, label="all", color="black", linestyle="--", linewidth=1, marker=None)
    _legend(ax)


def draw_loss(fig, data: PlotData) -> None:
    ax = fig.add_subplot()
    _steps_axes(ax, "Loss", "loss (nats/token)")
    if not data.train_loss:
        return _no_data(ax, "training records")
    _line(ax, data.train_loss, label="train", color="tab:blue")
    if data.valid_loss:
        _line(ax, data.valid_loss, label="validation", color="tab:orange", marker="o")
    _legend(ax)


def draw_loss_by_language(fig, data: PlotData) -> None:
    ax = fig.add_subplot()
    _steps_axes(ax, "Training loss by language", "loss (nats/token)")
    _lang_lines(ax, data, data.train_loss_by_lang, data.train_loss, "per-language training loss")


def draw_valid_loss_by_language(fig, data: PlotData) -> None:
    ax = fig.add_subplot()
    _steps_axes(ax, "Validation loss by language", "loss (nats/token)")
    _lang_lines(ax, data, data.valid_loss_by_lang, data.valid_loss, "validation records")


def draw_lr(fig, data: PlotData) -> None:
    ax = fig.add_subplot()
    _steps_axes(ax, "Learning rate", "lr")
    if not data.lr:
        return _no_data(ax, "training records")
    _line(ax, data.lr, color="tab:green")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))


def draw_grad_norm(fig, data: PlotData) -> None:
    ax = fig.add_subplot()
    _steps_axes(ax, "Gradient norm (before clipping)", "grad norm")
    if not data.grad_norm:
        return _no_data(ax, "gradient norms")
    _line(ax, data.grad_norm, color="tab:red")
    positive = [v for v in data.grad_norm.values if v > 0]
    # Early spikes flatten everything else on a linear axis.
    if positive and max(positive) / min(positive) > 100:
        ax.set_yscale("log")


def draw_throughput(fig, data: PlotData) -> None:
    if data.mfu:
        top, bottom = fig.subplots(2, 1, sharex=True)
    else:
        top, bottom = fig.add_subplot(), None
    _steps_axes(top, "Throughput", "tokens/s")
    if not data.tokens_per_sec:
        return _no_data(top, "training records")
    _line(top, data.tokens_per_sec, color="tab:purple")
    if bottom is not None:
        top.set_xlabel("")
        _steps_axes(bottom, "", "MFU (%)")
        _line(bottom, Series(data.mfu.steps, tuple(100 * v for v in data.mfu.values)), color="tab:brown")


def draw_mixture(fig, data: PlotData) -> None:
    ax = fig.add_subplot()
    ax.set_title("Language mixture (share of training tokens)")
    ax.set_ylabel("share (%)")
    langs = data.languages
    realised = [100 * data.realised_shares.get(lang, 0.0) for lang in langs]
    if not langs or (not any(realised) and not data.planned_shares):
        return _no_data(ax, "per-language token counts")
    x = list(range(len(langs)))
    if data.planned_shares is not None:
        width = 0.4
        planned = [100 * data.planned_shares.get(lang, 0.0) for lang in langs]
        ax.bar([i - width / 2 for i in x], planned, width, label="planned", color="0.7")
        ax.bar([i + width / 2 for i in x], realised, width, label="realised", color="tab:blue")
        _legend(ax)
    else:
        ax.bar(x, realised, 0.6, label="realised", color="tab:blue")
    ax.set_xticks(x, langs, rotation=90 if len(langs) > 12 else 0, fontsize="small" if len(langs) > 12 else None)
    ax.grid(True, axis="y", alpha=0.3)


def _margins(fig) -> None:
    # Fixed margins rather than a layout engine: as good for these simple figures, and half the
    # time (the layout engines draw every figure twice).
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    right = 0.97 if not legends else 0.76 if any(_many(len(lg.get_texts())) for lg in legends) else 0.85
    # Long labels (benchmark task names) need more room than a language code: ~0.75 % of the width a character.
    longest = max((len(t.get_text()) for lg in legends for t in lg.get_texts()), default=0)
    right = max(0.5, min(right, 0.94 - 0.0075 * longest))
    rotated = any(t.get_rotation() for ax in fig.axes for t in ax.get_xticklabels())
    fig.subplots_adjust(left=0.1, right=right, bottom=0.16 if rotated else 0.12, top=0.92, hspace=0.25)


DRAW: dict[str, Callable] = {
    "loss.png": draw_loss,
    "loss_by_language.png": draw_loss_by_language,
    "valid_loss_by_language.png": draw_valid_loss_by_language,
    "lr.png": draw_lr,
    "grad_norm.png": draw_grad_norm,
    "throughput.png": draw_throughput,
    "mixture.png": draw_mixture,
}


def eval_plot_name(group: str) -> str:
    """eval_<group>.png, the group's name kept to the characters safe in a file name."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in group)
    return f"eval_{safe}.png"


def draw_eval(fig, group: str, curves: list[EvalCurve]) -> None:
    """One benchmark (a task or group asked of alia-eval): each of its tasks' metrics over the
    checkpoints' steps, with the standard error as a band."""
    ax = fig.add_subplot()
    _steps_axes(ax, f"Benchmark: {group}", "score")
    several = len({(c.num_fewshot, c.limit) for c in curves}) > 1
    for i, curve in enumerate(curves):
        steps = curve.steps
        values = [curve.points[s][0] for s in steps]
        colour = "black" if curve.task == group else _colour(i)
        _line(ax, Series(tuple(steps), tuple(values)), label=curve.label(several), color=colour,
              linewidth=2 if curve.task == group else 1)
        errs = [curve.points[s][1] for s in steps]
        if all(e is not None for e in errs) and len(steps) > 1:
            ax.fill_between(steps, [v - e for v, e in zip(values, errs)], [v + e for v, e in zip(values, errs)],
                            color=colour, alpha=0.12, linewidth=0)
    _legend(ax)


def _save(fig, path: Path) -> Path:
    _margins(fig)
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=DPI, metadata={"Software": None})
    write_bytes_atomic(path, png.getvalue())  # a reader never sees half a PNG
    return path


def render(data: PlotData, out_dir: Path, evals: dict[str, list[EvalCurve]] | None = None) -> list[Path]:
    """Write every plot of PLOTS into out_dir, then one per benchmark of `evals`; returns their
    paths."""
    import matplotlib.style
    from matplotlib.figure import Figure

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with matplotlib.style.context("default"):
        for name in PLOTS:
            fig = Figure(figsize=SIZE, dpi=DPI)
            DRAW[name](fig, data)
            written.append(_save(fig, out_dir / name))
        for group, curves in (evals or {}).items():
            fig = Figure(figsize=SIZE, dpi=DPI)
            draw_eval(fig, group, curves)
            written.append(_save(fig, out_dir / eval_plot_name(group)))
    return written
