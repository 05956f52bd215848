"""Convert HF_DIR -> checkpoint -> Hugging Face in this fresh process and report how far the
peak resident memory rose above what the imports took (JSON on stdout).

    python memory_probe.py HF_DIR WORK_DIR OVERRIDE...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak() -> float:
    """Restart the peak-RSS count from now (Linux: "5" > clear_refs); returns the RSS now."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # then the peak includes the imports' transient peak: the test stays conservative
    return _status_mb("VmRSS")


def peak_mb() -> float:
    return _status_mb("VmHWM")


def main() -> None:
    hf_dir, work, overrides = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
    # Everything conversion imports, loaded before the baseline is taken.
    import hydra  # noqa: F401
    import omegaconf  # noqa: F401
    import sentencepiece  # noqa: F401
    import tokenizers  # noqa: F401
    import torch

    from alia_train.config import load_config
    from alia_train.convert import dist_reader, dist_writer  # noqa: F401  (imported by the conversions, after their checks)
    from alia_train.convert.from_hf import import_from_hf
    from alia_train.convert.to_hf import export_to_hf

    load_config(overrides)
    base = reset_peak()
    import_from_hf(hf_dir, work / "ckpt", overrides, log=lambda *_: None)
    after_import = peak_mb()
    export_to_hf(work / "ckpt", work / "hf", dtype=torch.bfloat16, max_shard_bytes=100 * 2**20, log=lambda *_: None)
    print(json.dumps({"base_mb": base, "from_hf_mb": after_import - base, "to_hf_mb": peak_mb() - base}))


if __name__ == "__main__":
    main()
