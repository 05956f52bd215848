"""Train (or load) tiny models under several parallel layouts in ONE torchrun launch and write
alia-train's own logits for fixed tokens next to each checkpoint.

    python -m torch.distributed.run --nproc_per_node=2 layout_runs.py JOBS.json

JOBS.json: {"root": DIR, "common": [overrides], "text": str, "jobs": [{"name", "overrides",
"train": bool}]}. For each job: DIR/NAME is the run dir; the logits of the model as it stands
after training (or after loading `checkpoint.load`) go to DIR/NAME/logits.pt from the rank that
holds the last pipeline stage. Layouts run one after another in the same processes, which
pays torch/megatron start-up once for all of them.
"""

from __future__ import annotations

import json
import sys

import torch


def forward_logits(model: list, tokens: torch.Tensor) -> torch.Tensor | None:
    """Full-vocabulary (padded) logits [s, vocab] on the last pipeline stage, else None."""
    from megatron.core import parallel_state
    from megatron.core.pipeline_parallel import get_forward_backward_func
    from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

    for chunk in model:
        chunk.eval()
    seq = tokens.shape[1]
    positions = torch.arange(seq).unsqueeze(0)

    def step(data_iterator, chunk):
        return chunk(next(data_iterator), positions, None), None

    with torch.no_grad():
        out = get_forward_backward_func()(
            forward_step_func=step,
            data_iterator=[iter([tokens]) for _ in model] if len(model) > 1 else iter([tokens]),
            model=model if len(model) > 1 else model[0],
            num_microbatches=1, seq_length=seq, micro_batch_size=1, forward_only=True,
        )
    if not parallel_state.is_pipeline_last_stage():
        return None
    return gather_from_tensor_model_parallel_region(out[0])[0].float()


def main() -> None:
    import torch.distributed as dist

    from alia_train.config import load_config
    from alia_train.parallel.launch_env import detect_launch_env
    from alia_train.parallel.runtime import shutdown
    from alia_train.training.run import RunOptions, open_run

    spec = json.loads(open(sys.argv[1]).read())
    launch = detect_launch_env()
    for job in spec["jobs"]:
        run_dir = f"{spec['root']}/{job['name']}"
        cfg = load_config([*spec["common"], f"run.dir={run_dir}", *job["overrides"]])
        train = job.get("train", True)
        # As alia-train starts a run; a job that only loads a checkpoint builds no datasets.
        with open_run(cfg, launch, RunOptions(with_data=train, keep_process_group=True)) as trainer:
            if train:
                trainer.train()
            tokenizer = trainer.tokenizer
            tokens = torch.tensor([[tokenizer.bos, *tokenizer.encode(spec["text"])]], dtype=torch.long)
            logits = forward_logits(trainer.model, tokens)
            from megatron.core import parallel_state  # imported by the start-up (open_run)

            # One writer: the last stage's first tensor-parallel and data-parallel rank.
            if logits is not None and parallel_state.get_tensor_model_parallel_rank() == 0 \
                    and parallel_state.get_data_parallel_rank() == 0:
                torch.save({"tokens": tokens, "logits": logits, "step": trainer.progress.step,
                            "layout": {"tp": cfg.parallel.tp, "pp": cfg.parallel.pp}}, f"{run_dir}/logits.pt")
            dist.barrier()
    shutdown()


if __name__ == "__main__":
    main()
