"""The data every plot is drawn from, as plain lists: tests check these, not the pixels."""

from __future__ import annotations

from dataclasses import dataclass

from alia_train.metrics_file import is_number
from alia_train.report.run import RunData


@dataclass(frozen=True)
class Series:
    steps: tuple[int, ...] = ()
    values: tuple[float, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.steps)

    @property
    def last(self) -> tuple[int, float] | None:
        return (self.steps[-1], self.values[-1]) if self.steps else None


def series(records: list[dict], key: str) -> Series:
    """(step, value) of the records that have a number under `key`, in step order."""
    points = [(r["step"], float(r[key])) for r in records if is_number(r.get(key))]
    return Series(tuple(s for s, _ in points), tuple(v for _, v in points))


def _langs_in(records: list[dict], prefix: str) -> list[str]:
    seen: dict[str, None] = {}
    for r in records:
        for k in r:
            if k.startswith(prefix):
                seen.setdefault(k[len(prefix):], None)
    return list(seen)


def languages(run: RunData) -> list[str]:
    """Planned languages first (mixture.json order), then the others as metrics first name them,
    so one language keeps its colour in every plot."""
    seen: dict[str, None] = dict.fromkeys(run.planned_shares or {})
    recs = run.records
    for lang in _langs_in(recs.train, "tokens/") + _langs_in(recs.train, "loss/") + _langs_in(recs.valid, "loss/"):
        seen.setdefault(lang, None)
    return list(seen)


def realised_tokens(train: list[dict], langs: list[str]) -> dict[str, float]:
    return {lang: sum(float(r[f"tokens/{lang}"]) for r in train if is_number(r.get(f"tokens/{lang}"))) for lang in langs}


def shares(amounts: dict[str, float]) -> dict[str, float]:
    total = sum(amounts.values())
    return {k: (v / total if total else 0.0) for k, v in amounts.items()}


@dataclass
class PlotData:
    languages: list[str]
    train_loss: Series
    valid_loss: Series
    train_loss_by_lang: dict[str, Series]
    valid_loss_by_lang: dict[str, Series]
    valid_ppl_by_lang: dict[str, Series]
    lr: Series
    grad_norm: Series
    tokens_per_sec: Series
    mfu: Series
    step_time: Series
    realised_shares: dict[str, float]
    planned_shares: dict[str, float] | None = None


def plot_data(run: RunData) -> PlotData:
    train, valid = run.records.train, run.records.valid
    langs = languages(run)
    planned = None
    if run.planned_shares is not None:
        # Normalised, and zero for a language that was planned but never logged (or vice versa).
        planned = shares({lang: run.planned_shares.get(lang, 0.0) for lang in langs})
    return PlotData(
        languages=langs,
        train_loss=series(train, "loss"),
        valid_loss=series(valid, "loss"),
        train_loss_by_lang={lang: series(train, f"loss/{lang}") for lang in langs},
        valid_loss_by_lang={lang: series(valid, f"loss/{lang}") for lang in langs},
        valid_ppl_by_lang={lang: series(valid, f"ppl/{lang}") for lang in langs},
        lr=series(train, "lr"),
        grad_norm=series(train, "grad_norm"),
        tokens_per_sec=series(train, "tokens_per_sec"),
        mfu=series(train, "mfu"),
        step_time=series(train, "step_time"),
        realised_shares=shares(realised_tokens(train, langs)),
        planned_shares=planned,
    )
