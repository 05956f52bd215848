"""Whether Transformer Engine imports here: without megatron-core, so that the launch checks
(training/launch_checks.py) can ask before megatron's ~2 s import."""

from __future__ import annotations


def transformer_engine_available() -> bool:
    try:
        import transformer_engine.pytorch  # noqa: F401
    except Exception:  # not installed, or built for another torch / CUDA: the same for us
        return False
    return True
