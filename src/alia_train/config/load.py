"""Compose the Hydra config tree into a typed `Config`.

We use Hydra's compose API rather than `@hydra.main`: the run directory is ours to choose
(`run.dir`), the working directory must not change under the user, and the same loader serves
alia-train, alia-plan and alia-convert.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import typing
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

    from hydra.core.config_store import ConfigStore

    # The typed schema is the base of the tree, so every key exists (overridable without "+")
    # and values are type-checked as they are composed.
    ConfigStore.instance().store(name="alia_train_schema", node=Config)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
            composed = compose(config_name="config", overrides=list(overrides))
    except HydraException as e:
        msg = _one_line(e)
        if msg.startswith("Could not override '"):
            key = msg.split("'")[1]
            raise ConfigError(_unknown_key_message(key)) from None
        raise ConfigError(f"config: {msg}") from None
    finally:
        GlobalHydra.instance().clear()
    unknown = _unknown_keys(OmegaConf.to_container(composed, resolve=False), Config)
    if unknown:
        raise ConfigError("\n".join(_unknown_key_message(k) for k in unknown))

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


def _unknown_keys(node, schema, prefix: str = "") -> list[str]:
    """Dotted keys of `node` that `schema` (a dataclass) does not define."""
    hints = typing.get_type_hints(schema)
    found = []
    for key, value in node.items():
        if key not in hints:
            found.append(prefix + key)
        elif dataclasses.is_dataclass(hints[key]) and isinstance(value, dict):
            found += _unknown_keys(value, hints[key], f"{prefix}{key}.")
    return found


def _unknown_key_message(key: str) -> str:
    close = difflib.get_close_matches(key, _all_keys(), n=1)
    hint = f"did you mean {close[0]}?" if close else "see docs/configuration.md for the keys"
    return f"{key}: unknown config key; {hint}"


def _all_keys(schema=Config, prefix: str = "") -> list[str]:
    keys = []
    for name, hint in typing.get_type_hints(schema).items():
        keys.append(prefix + name)
        if dataclasses.is_dataclass(hint):
            keys += _all_keys(hint, f"{prefix}{name}.")
    return keys


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
