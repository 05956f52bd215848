"""The data the plots are drawn from (alia_train.report.series), on synthetic runs."""

from __future__ import annotations

import json

import pytest
from report.synthetic import LANGS, make_run, records, train_record

from alia_train.report import load_run
from alia_train.report.series import plot_data


@pytest.fixture
def resumed(tmp_path):
    # Launch 1 logs 2..14 and dies; launch 2 resumes from step 10 and logs 12..20.
    return make_run(tmp_path / "run", records(1, 14) + records(11, 20, offset=0.05))


def test_each_step_once_in_every_series_of_a_resumed_run(resumed):
    data = plot_data(load_run(resumed))
    train_steps = tuple(range(2, 21, 2))
    for s in [data.train_loss, data.lr, data.grad_norm, data.tokens_per_sec, data.step_time,
              *data.train_loss_by_lang.values()]:
        assert s.steps == train_steps
    for s in [data.valid_loss, *data.valid_loss_by_lang.values(), *data.valid_ppl_by_lang.values()]:
        assert s.steps == (6, 12, 18)
    # The re-run steps show the resumed launch's values.
    assert dict(zip(data.train_loss.steps, data.train_loss.values))[12] == train_record(12, offset=0.05)["loss"]
    assert not data.mfu  # a CPU run has no MFU


def test_languages_and_mixture(resumed):
    data = plot_data(load_run(resumed))
    assert data.languages == list(LANGS)
    assert data.planned_shares == pytest.approx(LANGS)
    assert sum(data.realised_shares.values()) == pytest.approx(1.0)
    # Realised = tokens/<lang> summed over the kept train records / all their tokens.
    recs = load_run(resumed).records.train
    total = sum(r[f"tokens/{lang}"] for r in recs for lang in LANGS)
    assert data.realised_shares["eu"] == pytest.approx(sum(r["tokens/eu"] for r in recs) / total)


def test_planned_shares_are_normalised_and_cover_unlogged_languages(tmp_path):
    run = make_run(tmp_path / "run", records(1, 4), mixture=False)
    (run / "mixture.json").write_text(json.dumps({"planned_shares": {"es": 2, "ca": 1, "xx": 1}}))
    data = plot_data(load_run(run))
    # Planned languages first, in mixture.json order; then the ones only the metrics name.
    assert data.languages[:3] == ["es", "ca", "xx"] and set(data.languages) == {"xx", *LANGS}
    assert data.planned_shares["es"] == pytest.approx(0.5)
    assert data.planned_shares["en"] == 0.0
    assert data.realised_shares["xx"] == 0.0


def test_missing_or_broken_mixture_means_realised_only(tmp_path):
    run = make_run(tmp_path / "run", records(1, 4), mixture=False)
    assert plot_data(load_run(run)).planned_shares is None
    (run / "mixture.json").write_text("{not json")
    loaded = load_run(run)
    assert plot_data(loaded).planned_shares is None
    assert loaded.problems and "mixture.json" in loaded.problems[0]


def test_gpu_records_give_an_mfu_series(tmp_path):
    run = make_run(tmp_path / "run", records(1, 6, gpu=True))
    assert plot_data(load_run(run)).mfu.steps == (2, 4, 6)
