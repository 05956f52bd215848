"""One-line messages for configuration mistakes, named by key and saying what the key expects.

Hydra and OmegaConf report a wrong value as "Error merging override train.steps=abc" or
"Value 'abc' of type 'str' could not be converted to Integer ... full_key: ...": correct, but it
does not say what to write instead. Here the expected type is read from the typed schema
(`schema.py`), so every key gets the same kind of message without a list to maintain.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import re
import types
import typing

from alia_train.config.schema import Config

# Keys that existed once and are gone: still accepted in old config.yaml files, refused (with
# this reason) on the command line.
RETIRED_KEYS = {
    "data.num_workers": "it was never read (data loading runs in the training processes)",
}

_SCALARS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _strip_optional(hint) -> tuple[object, bool]:
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else hint), True
    return hint, False


def type_at(key: str):
    """The schema's type hint of a dotted key (`data.sources[0].lang` too), or None if unknown."""
    hint = Config
    for part in re.sub(r"\[\d+\]", ".[]", key).split("."):
        hint, _ = _strip_optional(hint)
        origin = typing.get_origin(hint)
        if dataclasses.is_dataclass(hint):
            hints = typing.get_type_hints(hint)
            if part not in hints:
                return None
            hint = hints[part]
        elif origin is dict:
            hint = typing.get_args(hint)[1]
        elif origin is list and part == "[]":
            hint = typing.get_args(hint)[0]
        else:
            return None
    return hint


def choices(hint) -> list[str] | None:
    """The allowed values of a choice key (an Enum in the schema), else None."""
    hint, _ = _strip_optional(hint)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return [member.value for member in hint]
    return None


def not_a_choice(key: str, value: object, allowed: list[str]) -> str:
    return f"{key}: '{value}' is not one of {', '.join(allowed)}"


def describe(hint) -> str:
    """What a value of this type looks like, for "expects ...": "an integer", "a number or null"."""
    hint, optional = _strip_optional(hint)
    origin = typing.get_origin(hint)
    if choices(hint):
        text = "one of " + ", ".join(choices(hint))
    elif hint in _SCALARS:
        text = _SCALARS[hint]
    elif origin is list:
        (item,) = typing.get_args(hint)
        if dataclasses.is_dataclass(item):
            fields = ", ".join(f"{f.name}: ..." for f in dataclasses.fields(item))
            text = f"a list of {{{fields}}} entries"
        else:
            text = f"a list of {describe(item).removeprefix('a ').removeprefix('an ')}s"
    elif origin is dict:
        text = f"a mapping of names to {describe(typing.get_args(hint)[1]).removeprefix('a ')}s"
    elif dataclasses.is_dataclass(hint):
        text = "a group of keys (set them one by one, e.g. key.field=value)"
    else:
        text = str(hint)
    return text + (" or null" if optional else "")


def _example(key: str, hint) -> str:
    """ '; e.g. key=DEFAULT' for scalar keys whose schema default is a plain value."""
    base, _ = _strip_optional(hint)
    if base not in _SCALARS or "[" in key:
        return ""
    node = Config()
    for part in key.split("."):
        node = getattr(node, part, None)
    if node is None or isinstance(node, (list, dict)) or "${" in str(node):
        return ""
    value = str(node).lower() if isinstance(node, bool) else node
    return f"; e.g. {key}={value}"


def wrong_value(key: str, value: str) -> str:
    """`key: expects an integer, got 'abc'; e.g. key=100`."""
    hint = type_at(key)
    if hint is None:
        return f"{key}: invalid value {value!r}; see docs/configuration.md"
    if choices(hint):
        return not_a_choice(key, value, choices(hint))
    return f"{key}: expects {describe(hint)}, got {value!r}{_example(key, hint)}"


def missing_value(key: str) -> str:
    hint = type_at(key)
    what = f" ({describe(hint)})" if hint is not None else ""
    return f"{key}: has no value; set it{what}, see docs/configuration.md"


def all_keys(schema=Config, prefix: str = "") -> list[str]:
    keys = []
    for name, hint in typing.get_type_hints(schema).items():
        keys.append(prefix + name)
        if dataclasses.is_dataclass(hint):
            keys += all_keys(hint, f"{prefix}{name}.")
    return keys


def unknown_key(key: str) -> str:
    if key in RETIRED_KEYS:
        return f"{key}: this key was removed: {RETIRED_KEYS[key]}; drop it from your command or config"
    close = difflib.get_close_matches(re.sub(r"\[\d+\]", "", key), all_keys(), n=1)
    hint = f"did you mean {close[0]}?" if close else "see docs/configuration.md for the keys"
    return f"{key}: unknown config key; {hint}"
