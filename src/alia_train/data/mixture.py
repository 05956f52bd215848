"""The language mixture: blend weights from token counts and sampling multipliers.

A source's blend weight is its token count (read from its .idx) times its multiplier (the
source's own, else its language's, else the default), normalised over all sources. With
Salamandra's defaults (es, ca, eu, gl 2.0; code 0.5; others 1.0) the co-official languages
are seen twice as often as their natural share. Megatron's BlendedDataset draws fixed-length
samples in proportion to these weights, so they are also the planned token shares.
"""

from __future__ import annotations

from dataclasses import dataclass

from alia_train.config.schema import DataSource
from alia_train.data.checks import source_problem
from alia_train.data.indexed import read_index_info

REPEAT_WARNING_EPOCHS = 4.0


class MixtureError(ValueError):
    pass


@dataclass(frozen=True)
class SourcePlan:
    path: str
    lang: str
    documents: int
    tokens: int
    multiplier: float
    weight: float  # normalised blend weight = planned share of training tokens


@dataclass(frozen=True)
class LanguagePlan:
    lang: str
    tokens: int
    natural_share: float
    effective_share: float
    tokens_seen: float
    epochs: float


@dataclass
class MixturePlan:
    sources: list[SourcePlan]
    languages: list[LanguagePlan]
    total_tokens: int
    planned_tokens: float

    def shares(self) -> dict[str, float]:
        return {lp.lang: lp.effective_share for lp in self.languages}

    def warnings(self, max_epochs: float = REPEAT_WARNING_EPOCHS) -> list[str]:
        return [
            f"{lp.lang} would be repeated {lp.epochs:.1f} times (more than {max_epochs:g}): "
            "add data for it or lower its multiplier"
            for lp in self.languages
            if lp.epochs > max_epochs
        ]


def multiplier_for(source: DataSource, multipliers: dict[str, float], default: float) -> float:
    if source.multiplier is not None:
        return float(source.multiplier)
    return float(multipliers.get(source.lang, default))


def source_tokens(path: str) -> tuple[int, int]:
    """(documents, tokens) of an indexed dataset prefix; a clear error when it is missing."""
    problem = source_problem(path)
    if problem is not None:
        raise MixtureError(f"source {problem}")
    info = read_index_info(path)
    return info.documents, info.tokens


def plan_mixture(
    sources: list[DataSource],
    multipliers: dict[str, float],
    default_multiplier: float = 1.0,
    planned_tokens: float | None = None,
    counts: dict[str, tuple[int, int]] | None = None,
) -> MixturePlan:
    """Plan the blend; `planned_tokens` defaults to the corpus size (one natural epoch).

    `counts` maps a source path to (documents, tokens) when they are already known.
    """
    if not sources:
        raise MixtureError("no data sources: list them under data.sources (path prefix + lang)")
    if planned_tokens is not None and not planned_tokens > 0:
        raise MixtureError(f"tokens to be seen must be positive (got {planned_tokens:g}); fix --tokens")
    rows = []
    for s in sources:
        mult = multiplier_for(s, multipliers, default_multiplier)
        if mult < 0:
            raise MixtureError(f"source {s.path} ({s.lang}): negative multiplier {mult}")
        docs, tokens = counts[s.path] if counts and s.path in counts else source_tokens(s.path)
        rows.append((s, docs, tokens, mult))
    total = sum(r[2] for r in rows)
    mass = sum(r[2] * r[3] for r in rows)
    if total == 0 or mass == 0:
        raise MixtureError("the sources hold no tokens (or every multiplier is 0)")
    planned = float(total if planned_tokens is None else planned_tokens)
    plans = [SourcePlan(s.path, s.lang, d, t, m, t * m / mass) for s, d, t, m in rows]
    langs: dict[str, list[SourcePlan]] = {}
    for p in plans:
        langs.setdefault(p.lang, []).append(p)
    lang_plans = []
    for lang, ps in langs.items():
        tokens = sum(p.tokens for p in ps)
        share = sum(p.weight for p in ps)
        seen = share * planned
        lang_plans.append(
            LanguagePlan(lang, tokens, tokens / total, share, seen, seen / tokens if tokens else float("inf"))
        )
    lang_plans.sort(key=lambda lp: (-lp.effective_share, lp.lang))
    return MixturePlan(plans, lang_plans, total, planned)


def format_mixture_plan(plan: MixturePlan, max_epochs: float = REPEAT_WARNING_EPOCHS) -> str:
    head = f"{'lang':<8}{'tokens':>16}{'natural':>10}{'effective':>11}{'to be seen':>18}{'epochs':>9}"
    lines = [head, "-" * len(head)]
    for lp in plan.languages:
        flag = "  <-- repeated" if lp.epochs > max_epochs else ""
        lines.append(
            f"{lp.lang:<8}{lp.tokens:>16,}{lp.natural_share:>10.2%}{lp.effective_share:>11.2%}"
            f"{lp.tokens_seen:>18,.0f}{lp.epochs:>9.2f}{flag}"
        )
    lines.append("-" * len(head))
    lines.append(f"{'total':<8}{plan.total_tokens:>16,}{1:>10.2%}{1:>11.2%}{plan.planned_tokens:>18,.0f}"
                 f"{plan.planned_tokens / plan.total_tokens:>9.2f}")
    lines += [f"WARNING: {w}" for w in plan.warnings(max_epochs)]
    return "\n".join(lines)
