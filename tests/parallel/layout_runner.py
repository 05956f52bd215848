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
    from megatron.core import parallel_state

    from alia_train.config import load_config
    from alia_train.config.validate import validate
    from alia_train.data.tokenizer import load_tokenizer
    from alia_train.parallel.launch_env import detect_launch_env
    from alia_train.parallel.runtime import init_runtime, shutdown
    from alia_train.training.trainer import Trainer, save_run_config

    launch = detect_launch_env()
    for name, overrides in spec["runs"].items():
        run_dir = next((o.split("=", 1)[1] for o in overrides if o.startswith("run.dir=")), f"{spec['out']}/{name}")
        overrides = [o for o in overrides if not o.startswith("run.dir=")]
        cfg = load_config([*spec["common"], *overrides, f"run.dir={run_dir}"])
        validate(cfg, launch.world_size, cuda=False, te_available=False)
        tokenizer = load_tokenizer(cfg.data.tokenizer)
        rt = init_runtime(cfg, launch)
        if launch.rank == 0:
            save_run_config(cfg)
        trainer = Trainer(cfg, rt, tokenizer)
        trainer.resume()
        trainer.build_data()
        trainer.train()
        parallel_state.destroy_model_parallel()
    shutdown()


if __name__ == "__main__":
    main()
