"""Mixture planning: weights = tokens x multiplier from .idx counts; config loading for the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from alia_train.config.schema import DataConfig, DataSource
from alia_train.data.config_io import DataConfigError, load_data_config
from alia_train.data.indexed import write_index
from alia_train.data.mixture import MixtureError, format_mixture_plan, plan_mixture

COUNTS = {"/d/es": (10, 1000), "/d/en": (10, 3000), "/d/code": (5, 2000), "/d/eu": (2, 100), "/d/eu2": (2, 100)}


def _sources(*names, **mult) -> list[DataSource]:
    return [DataSource(f"/d/{n}", n.rstrip("2"), mult.get(n)) for n in names]


def test_salamandra_defaults_double_coofficial_and_halve_code():
    plan = plan_mixture(_sources("es", "en", "code"), DataConfig().multipliers, 1.0, counts=COUNTS)
    mass = 2 * 1000 + 3000 + 0.5 * 2000
    assert plan.shares() == pytest.approx({"es": 2000 / mass, "en": 3000 / mass, "code": 1000 / mass})
    nat = {lp.lang: lp.natural_share for lp in plan.languages}
    assert nat == pytest.approx({"es": 1 / 6, "en": 3 / 6, "code": 2 / 6})
    assert [lp.lang for lp in plan.languages] == ["en", "es", "code"]  # by effective share
    assert sum(s.weight for s in plan.sources) == pytest.approx(1.0)


def test_tokens_seen_epochs_and_repetition_warning():
    plan = plan_mixture(_sources("es", "en", "eu"), {"es": 2.0, "eu": 2.0}, 1.0, planned_tokens=12_000, counts=COUNTS)
    by = {lp.lang: lp for lp in plan.languages}
    mass = 2000 + 3000 + 200
    assert by["eu"].tokens_seen == pytest.approx(12_000 * 200 / mass)
    assert by["eu"].epochs == pytest.approx(12_000 * 200 / mass / 100)
    assert by["en"].epochs == pytest.approx(12_000 * 3000 / mass / 3000)
    warnings = plan.warnings(4.0)
    assert [w.split()[0] for w in warnings] == ["es", "eu"]  # es: 4.6x, eu: 4.6x; en 2.3x is fine
    text = format_mixture_plan(plan)
    assert "WARNING: eu would be repeated 4.6 times" in text and "<-- repeated" in text


def test_source_multiplier_overrides_its_language_and_languages_sum_their_sources():
    plan = plan_mixture(_sources("eu", "eu2", "en", eu2=0.0), {"eu": 3.0}, 1.0, counts=COUNTS)
    by = {s.path: s.weight for s in plan.sources}
    assert by["/d/eu2"] == 0.0 and by["/d/eu"] == pytest.approx(300 / 3300)
    eu = next(lp for lp in plan.languages if lp.lang == "eu")
    assert eu.tokens == 200 and eu.effective_share == pytest.approx(300 / 3300)


def test_token_counts_come_from_the_idx(tmp_path):
    for name, lengths in {"a_es": [3, 4, 5], "a_en": [10]}.items():
        write_index(tmp_path / f"{name}.idx", np.array(lengths), np.uint16)
        (tmp_path / f"{name}.bin").write_bytes(b"\0\0" * sum(lengths))
    plan = plan_mixture([DataSource(str(tmp_path / "a_es"), "es"), DataSource(str(tmp_path / "a_en"), "en")], {}, 1.0)
    assert {(s.lang, s.documents, s.tokens) for s in plan.sources} == {("es", 3, 12), ("en", 1, 10)}


@pytest.mark.parametrize(
    "sources, mult, match",
    [
        ([], {}, "no data sources"),
        ([DataSource("/nowhere/x", "es")], {}, "no indexed dataset"),
        ([DataSource("/d/es", "es")], {"es": -1.0}, "negative multiplier"),
        ([DataSource("/d/es", "es")], {"es": 0.0}, "no tokens"),
    ],
)
def test_bad_mixtures_are_clear_errors(sources, mult, match):
    with pytest.raises(MixtureError, match=match):
        plan_mixture(sources, mult, 1.0, counts=COUNTS)


def test_data_config_from_yaml_stats_and_overrides(tmp_path):
    yaml = tmp_path / "mix.yaml"
    yaml.write_text("sources:\n  - {path: /d/es, lang: es}\nmultipliers: {es: 2.0}\nsplit: '90,10,0'\n"
                    "cache_dir: ${run.dir}/cache\n")
    stats = tmp_path / "x.stats.json"
    stats.write_text(json.dumps({"outputs": {"eu": {"path": "/d/eu"}, "gl": {"path": "/d/gl"}}}))
    data = load_data_config([str(yaml), str(stats)], ["multipliers.eu=5", "data.default_multiplier=0.5"])
    assert [(s.path, s.lang) for s in data.sources] == [("/d/es", "es"), ("/d/eu", "eu"), ("/d/gl", "gl")]
    # Listed multipliers merge over the defaults, as when Hydra composes the training config.
    assert data.multipliers == {"es": 2.0, "ca": 2.0, "eu": 5.0, "gl": 2.0, "code": 0.5}
    assert data.default_multiplier == 0.5
    assert data.split == "90,10,0" and data.cache_dir == "runs/default/cache"

    run_cfg = tmp_path / "config.yaml"  # a run's whole config: its data section is used
    run_cfg.write_text("model: {name: tiny}\ndata:\n  sources: [{path: /d/en, lang: en}]\n")
    assert [s.lang for s in load_data_config([str(run_cfg)]).sources] == ["en"]


@pytest.mark.parametrize(
    "text, overrides, match",
    [
        ("sourcez: []\n", [], "sourcez"),
        ("multipliers: {es: lots}\n", [], "multipliers"),
        ("split: '98,2,0'\n", ["novalue"], "key=value"),
    ],
)
def test_bad_data_configs_name_the_key(tmp_path, text, overrides, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(DataConfigError, match=match):
        load_data_config([str(path)], overrides)
