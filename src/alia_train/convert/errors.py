"""The one exception type conversion raises for input the user must fix."""

from __future__ import annotations


class ConversionError(ValueError):
    """Bad input (a foreign architecture, mismatched shapes or vocab, missing files). The
    message says what is wrong and, where it can, how to fix it."""
