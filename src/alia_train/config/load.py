"""Compose the Hydra config tree into a typed `Config`.

We use Hydra's compose API rather than `@hydra.main`: the run directory is ours to choose
(`run.dir`), the working directory must not change under the user, and the same loader serves
alia-train, alia-plan and alia-convert.
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException, ValidationError

import alia_train.config.messages as messages
from alia_train.config.schema import Config


class ConfigError(ValueError):
    """A configuration the user must fix. The message has one line per problem."""


# Users' own config directories (Hydra's `--config-dir`), searched after the packaged tree, the
# way `@hydra.main` does. Set by every `load_config` call, so `available_models()` afterwards
# (the validator, a CLI's help) sees the same tree the config was composed from.
_user_dirs: list[Path] = []


def config_dir() -> Path:
    """The `configs/` tree: inside the installed wheel, or at the repo root in a checkout."""
    packaged = Path(__file__).resolve().parent.parent / "configs"
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parents[3] / "configs"
    if checkout.is_dir():
        return checkout
    raise ConfigError(f"cannot find the configs/ directory (looked in {packaged} and {checkout})")


def use_config_dirs(dirs: Sequence[str | os.PathLike] = ()) -> list[Path]:
    """Check and remember the users' config directories; returns them absolute."""
    found = []
    for d in dirs:
        path = Path(d).expanduser().absolute()
        if not path.is_dir():
            what = "is not a directory" if path.exists() else "does not exist"
            raise ConfigError(
                f"--config-dir: {path} {what}; give a directory holding config groups "
                "(e.g. DIR/data/my_mix.yaml, DIR/model/my_model.yaml)"
            )
        found.append(path)
    _user_dirs[:] = found
    return found


def search_dirs() -> list[Path]:
    return [config_dir(), *_user_dirs]


def group_options(group: str) -> list[str]:
    """Names a config group can take (`data=NAME`), packaged and from --config-dir."""
    return sorted({p.stem for d in search_dirs() for p in (d / group).glob("*.yaml")})


def group_file(group: str, name: str, config_dirs: Sequence[str | os.PathLike] = ()) -> Path:
    """The file of option `name` of config `group` (packaged first, then config_dirs), for
    tools that read one group file without composing the whole tree (alia-data mixture)."""
    use_config_dirs(config_dirs)
    for d in search_dirs():
        if (d / group / f"{name}.yaml").is_file():
            return d / group / f"{name}.yaml"
    raise ConfigError(_no_option(group, name))


def _no_option(group: str, name: str) -> str:
    options = ", ".join(group_options(group)) or "none"
    return (f"{group}: no option '{name}' in config group {group} (available: {options}); "
            f"put your own in DIR/{group}/{name}.yaml and add --config-dir DIR")


def available_models() -> list[str]:
    return group_options("model")


def config_groups() -> list[str]:
    """alia-train's config groups (`configs/GROUP/NAME.yaml`: a section of the schema, packaged
    or from --config-dir); configs/ also holds other tools' groups (eval: alia-eval's task sets)."""
    from dataclasses import fields

    sections = {f.name for f in fields(Config)}
    return sorted({p.name for d in search_dirs() for p in d.iterdir()
                   if p.is_dir() and p.name in sections and any(p.glob("*.yaml"))})


def _model_hint() -> str:
    names = ", ".join(available_models())
    return f"pick a model with +model=NAME (available: {names}), e.g. `alia-train +model=tiny`"


def load_config(overrides: list[str], config_dirs: Sequence[str | os.PathLike] = ()) -> Config:
    """Compose configs/config.yaml with `overrides` (Hydra syntax) into a typed Config;
    `config_dirs` are searched for config groups too (`--config-dir`)."""
    use_config_dirs(config_dirs)
    parsed = _parse_overrides(overrides)
    _check_model_choice(parsed)
    composed = _compose(list(overrides), parsed)
    unknown = _unknown_keys(OmegaConf.to_container(composed, resolve=False), Config)
    if unknown:
        raise ConfigError("\n".join(messages.unknown_key(k) for k in unknown))
    cfg = _typed(composed)
    _absolutize_paths(cfg)
    return cfg


def _parse_overrides(overrides: list[str]) -> list:
    """Hydra's parse of each override, or a ConfigError naming the malformed one."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    parsed = []
    for text in overrides:
        try:
            o = parser.parse_override(text)
        except HydraException as e:
            why = _one_line(e).split(" See https://")[0]
            raise ConfigError(
                f"{text!r}: not a valid override ({why}); write key=value (e.g. train.steps=100), "
                "quoting values with spaces or brackets: 'key=\"a b\"'"
            ) from None
        if not o.key_or_group:
            raise ConfigError(f"{text!r}: the key is missing; write key=value, e.g. train.steps=100")
        parsed.append(o)
    return parsed


def _check_model_choice(parsed: list) -> None:
    chosen = [o for o in parsed if o.key_or_group == "model" and not o.is_delete()]
    for o in chosen:
        name = o.value()
        if not (o.is_add() or o.is_force_add()):
            raise ConfigError(f"model: choose the model with +model={name} (with '+': the tree has no default model)")
        if not isinstance(name, str) or name not in available_models():
            raise ConfigError(f"model: unknown model '{name}'; {_model_hint()}")
    if not chosen:
        raise ConfigError(f"model: no model chosen; {_model_hint()}")


def _searchpath_override() -> list[str]:
    if not _user_dirs:
        return []
    quoted = ",".join("'" + f"file://{d}".replace("\\", "\\\\").replace("'", "\\'") + "'" for d in _user_dirs)
    return [f"hydra.searchpath=[{quoted}]"]


def _compose(overrides: list[str], parsed: list):
    from hydra import compose, initialize_config_dir
    from hydra.core.config_store import ConfigStore
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException, MissingConfigException

    # The typed schema is the base of the tree, so every key exists (overridable without "+")
    # and values are type-checked as they are composed.
    ConfigStore.instance().store(name="alia_train_schema", node=Config)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
            return compose(config_name="config", overrides=overrides + _searchpath_override())
    except MissingConfigException as e:
        raise ConfigError(_missing_option_message(e)) from None
    except HydraException as e:
        raise ConfigError(_compose_error_message(e, parsed)) from None
    except yaml.YAMLError as e:  # a group file of one's own, most likely
        raise ConfigError(f"config: not valid YAML: {_one_line(e)}; fix that file") from None
    except (ValueError, TypeError, OSError) as e:
        raise ConfigError(f"config: {_one_line(e)}") from None
    finally:
        GlobalHydra.instance().clear()


def _missing_option_message(e) -> str:
    group, _, name = (e.missing_cfg_file or "").rpartition("/")
    if not group:
        return f"config: {_one_line(e).split(' Config search path')[0]}"
    return _no_option(group, name)


def _compose_error_message(e: Exception, parsed: list) -> str:
    msg = _one_line(e)
    cause = e.__cause__
    if msg.startswith("Could not override '"):
        key = msg.split("'")[1]
        if isinstance(cause, ConfigKeyError) and getattr(cause, "key", None) not in (None, key.split(".")[-1]):
            hint = messages.type_at(key)
            expects = f"; {key} expects {messages.describe(hint)}" if hint is not None else ""
            return f"{key}: unknown key '{cause.key}' in the value{expects}"
        return messages.unknown_key(key)
    ambiguous = re.match(r"Ambiguous value for argument '([^'=]+)=", msg)
    if ambiguous:  # key=a,b: a sweep to Hydra
        return f"{ambiguous.group(1)}: a value with commas must be quoted, e.g. \"{ambiguous.group(1)}='a,b'\" (or a list: [a,b])"
    twice = re.search(r"(\S+) appears more than once in the final defaults list", msg)
    if twice:
        return f"{twice.group(1)}: chosen more than once; keep one of the {twice.group(1)}=... overrides"
    in_file = re.match(r"In '([^']+)': (\w+) raised while composing config: (.*)", msg)
    if in_file:
        return _group_file_error(*in_file.groups())
    if msg.startswith("Error merging override "):
        text = msg.removeprefix("Error merging override ")
        for o in parsed:
            if o.input_line == text:
                return messages.wrong_value(o.key_or_group, text.partition("=")[2])
    return f"config: {msg.split(' Config search path')[0]}"


def _group_file_error(option: str, kind: str, detail: str) -> str:
    """A group file (`data/my_mix`) whose content does not fit the schema."""
    group, _, name = option.rpartition("/")
    where = next((d / group / f"{name}.yaml" for d in search_dirs() if (d / group / f"{name}.yaml").is_file()),
                 f"{option}.yaml")
    key = re.search(r"full_key: (\S+)", detail)
    if kind == "ConfigKeyError" and key and key.group(1).startswith(f"{group}.{group}"):
        return (f"{where}: its keys land under {group}.{group}; start a {group} file with "
                "`# @package _global_` as configs/model/*.yaml do, or drop the top-level "
                f"`{group}:` from it")
    if kind == "ConfigKeyError" and key:
        return f"{where}: {messages.unknown_key(key.group(1))}"
    got = _REFUSED_VALUE.match(detail)
    if kind == "ValidationError" and key and got:
        return f"{where}: {messages.wrong_value(key.group(1), got.group(1) or got.group(2))}"
    return f"{where}: {detail.split(' full_key:')[0]}; fix that file"


# How OmegaConf words a value the schema refuses: a wrong type, or a choice outside its Enum.
_REFUSED_VALUE = re.compile(r"Value '(.*)' of type|Invalid value '(.*)', expected one of")


def _typed(composed) -> Config:
    schema = OmegaConf.structured(Config)
    try:
        merged = OmegaConf.merge(schema, composed)
        OmegaConf.resolve(merged)
        cfg = OmegaConf.to_object(merged)
    except MissingMandatoryValue as e:
        raise ConfigError(messages.missing_value(e.full_key or "config")) from None
    except ConfigKeyError as e:
        raise ConfigError(messages.unknown_key(e.full_key or str(e.key))) from None
    except ValidationError as e:
        got = _REFUSED_VALUE.match(str(e.msg))
        if e.full_key and got:
            raise ConfigError(messages.wrong_value(e.full_key, got.group(1) or got.group(2))) from None
        raise ConfigError(f"{e.full_key or 'config'}: {_one_line(e)}") from None
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "config"
        raise ConfigError(f"{key}: {_one_line(e)}") from None
    assert isinstance(cfg, Config)
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


def _all_keys(schema=Config, prefix: str = "") -> list[str]:
    return messages.all_keys(schema, prefix)


def _absolutize_paths(cfg: Config) -> None:
    # Relative paths mean "relative to where the command was started", for every rank alike. A
    # blank one stays blank (abspath would make it that directory): config/validate.py refuses it.
    def absolute(path: str | None) -> str | None:
        return os.path.abspath(path) if path and path.strip() else path

    cfg.run.dir = absolute(cfg.run.dir)
    cfg.data.cache_dir = absolute(cfg.data.cache_dir)
    cfg.data.tokenizer = absolute(cfg.data.tokenizer)
    cfg.checkpoint.load = absolute(cfg.checkpoint.load)


def _one_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return " ".join(line.strip() for line in text if line.strip() and not line.startswith("full_key"))


def to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.create(asdict(cfg)))


def config_tree(text: str) -> dict:
    """A saved config (a run's config.yaml, a checkpoint's `config_yaml`) as a plain tree, values
    as written. The one parser of saved configs: the typed reader below, the report, the
    resume checks and the converter all read through it. Raises yaml.YAMLError for text that
    is not YAML, ConfigError for YAML that is not a mapping of config sections."""
    tree = yaml.safe_load(text)
    if not isinstance(tree, dict):
        raise ConfigError("config.yaml: not a mapping of config sections")
    return tree


def read_config_file(path: str | os.PathLike) -> dict:
    """`config_tree` of a config.yaml file."""
    return config_tree(Path(path).read_text(encoding="utf-8"))


def from_yaml(path: str | os.PathLike) -> Config:
    """A config.yaml written by `to_yaml` (a run dir's) as a typed Config; keys that were
    removed from the schema since are dropped, so older runs' files still load."""
    return config_from_yaml_text(Path(path).read_text(encoding="utf-8"), str(path))


def config_from_yaml_text(text: str, source: str = "config.yaml") -> Config:
    """`from_yaml` of the text itself (a checkpoint keeps its run's config.yaml)."""
    tree = drop_retired_keys(config_tree(text))
    try:
        cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), tree))
    except OmegaConfBaseException as e:
        raise ConfigError(f"{source}: {getattr(e, 'full_key', None) or 'config'}: {_one_line(e)}") from None
    assert isinstance(cfg, Config)
    return cfg


def drop_retired_keys(tree: dict) -> dict:
    """`tree` (a whole config) without keys that were removed from the schema."""
    for dotted in messages.RETIRED_KEYS:
        *parents, leaf = dotted.split(".")
        section = tree
        for part in parents:
            section = section.get(part) if isinstance(section, dict) else None
        if isinstance(section, dict):
            section.pop(leaf, None)
    return tree
