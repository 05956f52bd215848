"""The language of an input from its path: `alia-data tokenize --lang-from-path RULE`.

Large corpora are often laid out by language (`web/es/part-0001.jsonl.zst`, `es_web.parquet`)
with no language field in the records. RULE is one of

    dir      the input's directory name          web/es/part-0001.jsonl.zst -> es
    name     its file name up to the first        es_web-0001.jsonl.gz       -> es
             '.', '_' or '-'
    REGEX    a regular expression whose first group is the language, searched in the
             absolute path, e.g. '/lang=([^/]+)/'

The Arrow files of a saved Hugging Face dataset are named data-00000-of-00003.arrow: for them
`dir` names the dataset's folder (or its split's, in a DatasetDict), and a REGEX sees the folder.
"""

from __future__ import annotations

import os
import re

from alia_train.data.documents import LANG_RE

RULES = {
    "dir": re.compile(r"([^/]+)/[^/]+$"),
    "name": re.compile(r"([^/._-]+)[^/]*$"),
}


class PathLangError(ValueError):
    """A rule that is no regular expression, or a path it gives no usable language."""


def compile_rule(rule: str) -> re.Pattern:
    if rule in RULES:
        return RULES[rule]
    try:
        pattern = re.compile(rule)
    except re.error as e:
        raise PathLangError(f"--lang-from-path '{rule}': not a regular expression ({e}); "
                            "give dir, name or a pattern with one (group)") from None
    if pattern.groups < 1:
        raise PathLangError(f"--lang-from-path '{rule}': has no (group) to take the language from, "
                            "e.g. '/lang=([^/]+)/'")
    return pattern


def path_language(path: str, rule: str) -> str:
    """The language RULE gives the input at `path`; an error naming the path when none."""
    match = compile_rule(rule).search(os.path.abspath(path).replace(os.sep, "/"))
    lang = match.group(1) if match else None
    if lang is None:
        raise PathLangError(f"input {path}: --lang-from-path '{rule}' finds no language in its path; "
                            "change the rule or give --lang")
    if not LANG_RE.match(lang):
        raise PathLangError(f"input {path}: --lang-from-path '{rule}' gives {lang!r}, not a language "
                            "(letters, digits, '_', '-' or '.'); change the rule")
    return lang
