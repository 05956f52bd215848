"""Read a data config for `alia-data mixture` without composing a whole training config.

Accepted: a YAML file with DataConfig's fields (like configs/data/*.yaml), a full run config
(its `data:` section is used, e.g. a run's config.yaml), or `PREFIX.stats.json` files written
by `alia-data tokenize` (their outputs become the sources). Overrides use Hydra's
`key=value` syntax relative to the data config (`multipliers.eu=3`, `data.split=90,10,0`).
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from alia_train.config.load import ConfigError, drop_retired_keys, read_config_file
from alia_train.config.schema import Config, DataConfig
from alia_train.data.manifest import PUBLISHING


class DataConfigError(ValueError):
    pass


def sources_from_stats(path: str) -> list[dict]:
    if not Path(path).is_file():
        raise DataConfigError(f"stats file {path}: no such file")
    try:
        stats = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataConfigError(f"{path}: not a stats file written by alia-data tokenize ({e})") from None
    if isinstance(stats, dict) and stats.get("state") == PUBLISHING:
        raise DataConfigError(f"{path}: alia-data tokenize was stopped while publishing this shard set; "
                              "run the same alia-data tokenize command again")
    try:
        return [{"path": o["path"], "lang": lang} for lang, o in sorted(stats["outputs"].items())]
    except (KeyError, TypeError, AttributeError) as e:
        raise DataConfigError(f"{path}: not a stats file written by alia-data tokenize (no outputs: {e})") from None


def _data_section(path: str) -> dict:
    if path.endswith(".json"):
        return {"sources": sources_from_stats(path)}
    if not Path(path).is_file():
        raise DataConfigError(f"data config {path}: no such file")
    try:
        tree = read_config_file(path)
    except (OSError, ValueError, yaml.YAMLError) as e:
        if isinstance(e, ConfigError):  # YAML, but not a mapping
            raise DataConfigError(f"data config {path}: expected a mapping of DataConfig fields") from None
        raise DataConfigError(f"data config {path}: not valid YAML ({e})") from None
    if isinstance(tree.get("data"), dict):
        return tree["data"]
    return tree


def load_data_config(paths: list[str], overrides: list[str] | None = None) -> DataConfig:
    """Merge the given files (sources concatenate) and overrides into a typed DataConfig."""
    data: dict = {}
    sources: list = []
    for p in paths:
        section = drop_retired_keys({"data": _data_section(p)})["data"]  # older runs' config.yaml
        sources += list(section.pop("sources", []) or [])
        data.update(section)
    if sources:
        data["sources"] = sources
    dotlist = []
    for o in overrides or []:
        key, sep, value = o.lstrip("+").partition("=")
        if not sep:
            raise DataConfigError(f"override {o!r}: expected key=value")
        key = key.removeprefix("data.")
        dotlist.append(f"data.{key}={value}")
    try:
        # A whole Config, so that interpolations like ${run.dir} in cache_dir resolve; the
        # model is irrelevant here but mandatory in the schema, and a run name is not its name.
        merged = OmegaConf.merge(
            OmegaConf.structured(Config), {"model": {"name": "unused"}, "run": {"name": "default"}, "data": data},
            OmegaConf.from_dotlist(dotlist),
        )
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "data"
        msg = " ".join(str(e).split("\n")[0].split())
        raise DataConfigError(f"{key}: {msg}") from None
    assert isinstance(cfg, Config)
    return cfg.data
