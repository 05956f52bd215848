"""Train several configurations one after another inside one process group.

    python layout_runner.py SPEC.json            (single process)
    torchrun --nproc_per_node=2 layout_runner.py SPEC.json

SPEC: {"common": [overrides...], "runs": {"name": [overrides...]}, "out": DIR}. Each run writes
DIR/name/metrics.jsonl, unless its overrides name a `run.dir` (runs sharing one continue it). Sharing the process lets one launch (and one ~10 s import of torch and
megatron) cover several layouts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    from alia_train.config import load_config
    from alia_train.parallel.launch_env import detect_launch_env
    from alia_train.parallel.runtime import shutdown
    from alia_train.training.run import RunOptions, train

    launch = detect_launch_env()
    # As alia-train starts a run (checks, lock, resume, launch record), minus W&B / TensorBoard,
    # keeping the process group for the next run.
    options = RunOptions(trackers=False, keep_process_group=True)
    for name, overrides in spec["runs"].items():
        run_dir = next((o.split("=", 1)[1] for o in overrides if o.startswith("run.dir=")), f"{spec['out']}/{name}")
        overrides = [o for o in overrides if not o.startswith("run.dir=")]
        cfg = load_config([*spec["common"], *overrides, f"run.dir={run_dir}"])
        train(cfg, launch, options)
    shutdown()


if __name__ == "__main__":
    main()
