"""NFC normalisation rules for SentencePiece.

SentencePiece ships NFKC-family rules only (nmt_nfkc, nfkc, ...); NFKC would fold
compatibility characters (ligatures, superscripts, full-width forms) that Salamandra keeps.
SentencePiece accepts custom rules as a TSV of "source code points <TAB> target code points"
and applies them by longest match, so NFC becomes: every canonically decomposed or partially
composed spelling of a character -> its composed form, plus NFC's singleton replacements
(e.g. U+212B ANGSTROM SIGN -> U+00C5). Canonical reordering of several combining marks is
not expressible this way; such sequences stay as written.
"""

from __future__ import annotations

import os
import unicodedata


def nfc_rules() -> dict[str, str]:
    rules: dict[str, str] = {}
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        c = chr(cp)
        composed = unicodedata.normalize("NFC", c)
        if composed != c:
            rules[c] = composed  # singleton or a character NFC never produces
            continue
        decomposed = unicodedata.normalize("NFD", c)
        if decomposed == c:
            continue
        # d0 d1 d2 ... -> c, and NFC(d0 d1) d2 ... -> c, etc.
        for k in range(len(decomposed)):
            head = unicodedata.normalize("NFC", decomposed[: k + 1]) if k else decomposed[0]
            src = head + decomposed[k + 1 :]
            if src != c:
                rules.setdefault(src, c)
    return rules


def write_nfc_tsv(path: str | os.PathLike) -> int:
    """Write the rules in SentencePiece's `normalization_rule_tsv` format; return their count."""
    rules = nfc_rules()
    with open(path, "w", encoding="ascii") as f:
        for src, dst in sorted(rules.items()):
            f.write(" ".join(f"{ord(ch):X}" for ch in src) + "\t" + " ".join(f"{ord(ch):X}" for ch in dst) + "\n")
    return len(rules)
