import pytest

from alia_train.config import ConfigError, available_models, load_config


def test_models_available():
    assert {"tiny", "salamandra_2b", "salamandra_7b", "alia_40b"} <= set(available_models())


def test_no_model_says_how_to_pick_one():
    with pytest.raises(ConfigError, match=r"\+model=NAME.*tiny"):
        load_config([])


def test_unknown_model_is_named():
    with pytest.raises(ConfigError, match="unknown model 'salamandra_3b'"):
        load_config(["+model=salamandra_3b"])


@pytest.mark.parametrize("override", ["train.stepz=3", "+train.stepz=3"])
def test_unknown_key_is_named(override):
    with pytest.raises(ConfigError, match=r"^train.stepz: unknown config key; did you mean train.steps\?"):
        load_config(["+model=tiny", override])


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match="train.steps"):
        load_config(["+model=tiny", "train.steps=many"])


@pytest.mark.parametrize(
    "name, expect",
    [
        # Recipes from the public model cards / training configs.
        ("salamandra_2b", dict(lr=2e-4, min_lr=2e-5, gbs=512, seq=8192, mbs=1, tp=1, pp=1, sp=False, std=0.014)),
        ("salamandra_7b", dict(lr=3e-4, min_lr=3e-5, gbs=512, seq=8192, mbs=2, tp=4, pp=1, sp=True, std=0.02)),
        ("alia_40b", dict(lr=5e-5, min_lr=9e-6, gbs=1024, seq=4096, mbs=1, tp=4, pp=2, sp=True, std=0.007)),
    ],
)
def test_recipes(name, expect):
    cfg = load_config([f"+model={name}"])
    o, t, p = cfg.optim, cfg.train, cfg.parallel
    assert (o.lr, o.min_lr, o.warmup_steps, o.decay_style) == (expect["lr"], expect["min_lr"], 2000, "cosine")
    assert (o.adam_beta1, o.adam_beta2, o.weight_decay, o.clip_grad) == (0.9, 0.95, 0.1, 1.0)
    assert (t.global_batch_size, t.seq_length, t.micro_batch_size, t.seed) == (expect["gbs"], expect["seq"], expect["mbs"], 1234)
    assert (p.tp, p.pp, p.sp, p.distributed_optimizer) == (expect["tp"], expect["pp"], expect["sp"], True)
    assert cfg.model.init_std == expect["std"]
    assert t.recompute == "selective"


def test_overrides_and_paths_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(["+model=tiny", "train.steps=7", "run.dir=rel/run"])
    assert cfg.train.steps == 7
    assert cfg.run.dir == str(tmp_path / "rel" / "run")


def test_default_run_dir_uses_model_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(["+model=tiny"])
    assert cfg.run.dir == str(tmp_path / "runs" / "tiny")


def test_every_key_is_documented():
    """docs/configuration.md lists every config key (so the reference cannot drift)."""
    from pathlib import Path

    from alia_train.config.load import _all_keys

    doc = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    leaves = [k for k in _all_keys() if not any(o.startswith(k + ".") for o in _all_keys())]
    missing = [k for k in leaves if f"`{k}`" not in doc]
    assert not missing, f"undocumented keys: {missing}"
