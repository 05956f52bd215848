"""Compose the Hydra config tree into a typed `Config`.

We use Hydra's compose API rather than `@hydra.main`: the run directory is ours to choose
(`run.dir`), the working directory must not change under the user, and the same loader serves
alia-train, alia-plan and alia-convert.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from alia_train.config.schema import Config


class ConfigError(ValueError):
    """A configuration the user must fix. The message has one line per problem."""


def config_dir() -> Path:
    """The `configs/` tree: inside the installed wheel, or at the repo root in a checkout."""
    packaged = Path(__file__).resolve().parent.parent / "configs"
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parents[3] / "configs"
    if checkout.is_dir():
        return checkout
    raise ConfigError(f"cannot find the configs/ directory (looked in {packaged} and {checkout})")


def available_models() -> list[str]:
    return sorted(p.stem for p in (config_dir() / "model").glob("*.yaml"))


def _model_hint() -> str:
    names = ", ".join(available_models())
    return f"pick a model with +model=NAME (available: {names}), e.g. `alia-train +model=tiny`"


def load_config(overrides: list[str]) -> Config:
    """Compose configs/config.yaml with `overrides` (Hydra syntax) into a typed Config."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    model_overrides = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] == "model"]
    for o in model_overrides:
        name = o.split("=", 1)[1] if "=" in o else ""
        if name not in available_models():
            raise ConfigError(f"model: unknown model '{name}'; {_model_hint()}")
    if not model_overrides:
        raise ConfigError(f"model: no model chosen; {_model_hint()}")

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
            composed = compose(config_name="config", overrides=list(overrides))
    except HydraException as e:
        raise ConfigError(f"config: {_one_line(e)}") from None
    finally:
        GlobalHydra.instance().clear()

    schema = OmegaConf.structured(Config)
    try:
        merged = OmegaConf.merge(schema, composed)
        OmegaConf.resolve(merged)
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "config"
        raise ConfigError(f"{key}: {_one_line(e)}") from None
    assert isinstance(cfg, Config)
    _absolutize_paths(cfg)
    return cfg


def _absolutize_paths(cfg: Config) -> None:
    # Relative paths mean "relative to where the command was started", for every rank alike.
    cfg.run.dir = os.path.abspath(cfg.run.dir)
    cfg.data.cache_dir = os.path.abspath(cfg.data.cache_dir)
    if cfg.data.tokenizer:
        cfg.data.tokenizer = os.path.abspath(cfg.data.tokenizer)
    if cfg.checkpoint.load:
        cfg.checkpoint.load = os.path.abspath(cfg.checkpoint.load)


def _one_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return " ".join(line.strip() for line in text if line.strip() and not line.startswith("full_key"))


def to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.create(asdict(cfg)))


def from_yaml(path: str | os.PathLike) -> Config:
    """Read back a config.yaml written by `to_yaml` (e.g. from a run dir or a checkpoint)."""
    merged = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(path))
    cfg = OmegaConf.to_object(merged)
    assert isinstance(cfg, Config)
    return cfg
