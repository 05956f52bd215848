import pytest

from alia_train.config import ConfigError, available_models, config_dir, load_config, to_yaml


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
    # alia-plan says every recipe fits without recompute; DP communication overlapped.
    assert t.recompute == "none"
    assert (p.overlap_grad_reduce, p.overlap_param_gather, p.align_param_gather) == (True, True, True)


def test_long_context_stage_is_the_4k_recipe_at_32k():
    """alia_40b_32k (reference: 32,768 tokens, CP 8, RoPE scaling 8, GBS 128) changes only
    what the stage changes, and starts from a 4k checkpoint's weights alone."""
    from dataclasses import asdict

    # Same run name: the paths derived from it (run.dir, data.cache_dir) are then equal too.
    base, long = (asdict(load_config([f"+model={name}", "run.name=stage"])) for name in ("alia_40b", "alia_40b_32k"))
    changed = {
        ("model", "name"): "alia_40b_32k",
        ("model", "max_position_embeddings"): 32768,
        ("model", "rope_scaling_factor"): 8.0,
        ("train", "seq_length"): 32768,
        ("train", "global_batch_size"): 128,
        ("parallel", "cp"): 8,
        ("checkpoint", "reset_optimizer"): True,
        ("checkpoint", "reset_data"): True,
    }
    for (group, key), value in changed.items():
        assert long[group].pop(key) == value, f"{group}.{key}"
        base[group].pop(key)
    assert long == base
    assert long["checkpoint"]["load"] is None  # the user names the 4k run


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


def test_config_dir_adds_groups_and_models(tmp_path):
    """--config-dir DIR: DIR's group files are options next to the packaged ones, a model of
    one's own included (and the validator knows it)."""
    from alia_train.config.validate import config_problems

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "my_mix.yaml").write_text(
        "use_sample: false\nsources:\n  - {path: /data/x_eu, lang: eu}\nmultipliers: {eu: 3.0}\n")
    (tmp_path / "model").mkdir()
    tiny = (config_dir() / "model" / "tiny.yaml").read_text()
    (tmp_path / "model" / "mini.yaml").write_text(tiny.replace("name: tiny", "name: mini").replace("num_layers: 4", "num_layers: 2"))

    cfg = load_config(["+model=mini", "data=my_mix"], [tmp_path])
    assert (cfg.model.name, cfg.model.num_layers) == ("mini", 2)
    assert [(s.path, s.lang) for s in cfg.data.sources] == [("/data/x_eu", "eu")]
    assert cfg.data.multipliers["eu"] == 3.0 and cfg.data.use_sample is False
    assert "mini" in available_models()
    assert config_problems(cfg, 1, False, False) == []
    # Without the directory, the same names are unknown again.
    with pytest.raises(ConfigError, match="unknown model 'mini'"):
        load_config(["+model=mini"])
    with pytest.raises(ConfigError, match=r"data: no option 'my_mix' .*--config-dir DIR"):
        load_config(["+model=tiny", "data=my_mix"])


def test_config_dir_with_quotes_and_spaces_in_its_path(tmp_path):
    odd = tmp_path / "my 'confs'"
    (odd / "data").mkdir(parents=True)
    (odd / "data" / "mine.yaml").write_text("split: '90,10,0'\n")
    assert load_config(["+model=tiny", "data=mine"], [odd]).data.split == "90,10,0"


def test_group_file_finds_packaged_then_user_options(tmp_path):
    from alia_train.config.load import group_file

    assert group_file("data", "sample") == config_dir() / "data" / "sample.yaml"
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mine.yaml").write_text("use_sample: false\n")
    assert group_file("data", "mine", [tmp_path]) == tmp_path / "data" / "mine.yaml"
    with pytest.raises(ConfigError, match="no option 'mine'"):
        group_file("data", "mine")


def test_old_config_yaml_with_retired_keys_still_loads(tmp_path):
    from alia_train.config.load import from_yaml

    cfg = load_config(["+model=tiny"])
    old = to_yaml(cfg).replace("  use_sample: true\n", "  use_sample: true\n  num_workers: 0\n")
    assert "num_workers: 0" in old
    (tmp_path / "config.yaml").write_text(old)
    assert from_yaml(tmp_path / "config.yaml") == cfg


@pytest.mark.parametrize("override, message", [
    ("train.steps=abc", "train.steps: expects an integer, got 'abc'; e.g. train.steps=100"),
    ("optim.lr=fast", "optim.lr: expects a number, got 'fast'; e.g. optim.lr=0.0003"),
    ("parallel.sp=maybe", "parallel.sp: expects true or false, got 'maybe'; e.g. parallel.sp=false"),
    ("parallel.vpp=x", "parallel.vpp: expects an integer or null, got 'x'"),
    ("model.vocab_size=big", "model.vocab_size: expects an integer or null, got 'big'"),
    ("data.multipliers=3", "data.multipliers: expects a mapping of names to numbers, got '3'"),
    ("data.sources=abc", "data.sources: expects a list of {path: ..., lang: ..., multiplier: ...} entries, got 'abc'"),
])
def test_wrong_type_says_what_the_key_expects(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(["+model=tiny", override])
    assert str(e.value) == message


def test_group_files_hold_only_what_differs_from_the_schema():
    """Defaults live in the schema alone: a packaged group option sets only what it changes. A
    model file (`@package _global_`: sections at the top) is a recipe's values only."""
    import dataclasses

    import yaml

    from alia_train.config.schema import Config

    def sections(path):
        tree = yaml.safe_load(path.read_text()) or {}
        return tree.items() if path.parent.name == "model" else [(path.parent.name, tree)]

    repeated = []
    for path in sorted(config_dir().glob("*/*.yaml")):
        for section, values in sections(path):
            if not hasattr(Config(), section):
                continue  # another tool's group (configs/eval: alia-eval's task sets)
            schema = getattr(Config(), section)
            for key, value in values.items():
                default = getattr(schema, key)
                default = dataclasses.asdict(default) if dataclasses.is_dataclass(default) else default
                if value == default and (section, key) != ("model", "name"):
                    repeated.append(f"{path.parent.name}/{path.name}: {section}.{key}={value!r}")
    assert repeated == [], "the schema's defaults, repeated"


def test_choices_are_written_and_read_back_as_plain_strings(tmp_path):
    from alia_train.config.load import from_yaml
    from alia_train.config.schema import Recompute

    cfg = load_config(["+model=alia_40b", "train.precision=bf16", "train.recompute=selective"])
    text = to_yaml(cfg)
    assert "  recompute: selective\n" in text and "  precision: bf16\n" in text
    (tmp_path / "config.yaml").write_text(text)
    again = from_yaml(tmp_path / "config.yaml")
    assert again == cfg and again.train.recompute is Recompute.selective


def test_run_name_defaults_to_the_model_name():
    assert load_config(["+model=salamandra_7b"]).run.name == "salamandra_7b"
    assert load_config(["+model=tiny", "run.name=try"]).run.name == "try"


@pytest.mark.parametrize("content, message", [
    ("recompute: some\n", "train.recompute: 'some' is not one of none, selective, full"),
    ("steps: many\n", "train.steps: expects an integer, got 'many'; e.g. train.steps=100"),
])
def test_a_wrong_value_in_a_group_file_names_the_file_and_the_key(tmp_path, content, message):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "mine.yaml").write_text(content)
    with pytest.raises(ConfigError) as e:
        load_config(["+model=tiny", "train=mine"], [tmp_path])
    assert str(e.value) == f"{tmp_path / 'train' / 'mine.yaml'}: {message}"
