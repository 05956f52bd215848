"""Run under torchrun (gloo, 2 processes): one training step of a shrunk tiny model at TP 2, with
and without sequence parallelism, through the real run path (open_run: megatron DDP, its
finalize step, the optimizer). Saves, per rank, the input shape of every norm and every norm
weight's gradient after the step, for tests/model/test_sequence_parallel.py to check.

Usage: torchrun --nproc_per_node 2 sequence_parallel_worker.py OUT_DIR
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

SEQ, MICRO_BATCH, HIDDEN, LAYERS = 32, 2, 128, 2


@dataclass(frozen=True)
class RandomTokens:
    """A stand-in tokenizer (no SentencePiece, no data set: the step is fed below)."""

    vocab_size: int = 256
    path: str = "random-tokens"
    sha256: str = "-"


def batch(vocab: int) -> dict:
    """The same micro-batch on both TP ranks (as the data loader gives them)."""
    import torch

    tokens = torch.randint(0, vocab, (MICRO_BATCH, SEQ + 1), generator=torch.Generator().manual_seed(7))
    return {
        "tokens": tokens[:, :-1].contiguous(),
        "labels": tokens[:, 1:].contiguous(),
        "loss_mask": torch.ones(MICRO_BATCH, SEQ),
        "position_ids": torch.arange(SEQ).expand(MICRO_BATCH, SEQ).contiguous(),
        "lang_id": torch.zeros(MICRO_BATCH, dtype=torch.long),
    }


def one_step(out: Path, sp: bool) -> dict:
    from alia_train.config import load_config
    from alia_train.model.norm import RMSNorm
    from alia_train.parallel.launch_env import detect_launch_env
    from alia_train.training.run import RunOptions, open_run

    cfg = load_config([
        "+model=tiny", f"model.num_layers={LAYERS}", f"model.hidden_size={HIDDEN}", "parallel.tp=2",
        f"parallel.sp={str(sp).lower()}", f"train.seq_length={SEQ}", f"train.micro_batch_size={MICRO_BATCH}",
        f"train.global_batch_size={MICRO_BATCH}", "train.steps=1", "checkpoint.save_on_signal=false",
        # No clipping: it would scale the gradients in place after the finalize step.
        "optim.clip_grad=0", f"run.dir={out}/sp_{sp}",
    ])
    options = RunOptions(trackers=False, with_data=False, tokenizer=RandomTokens(), keep_process_group=True)
    with open_run(cfg, detect_launch_env(), options) as trainer:
        norms = {name: m for name, m in trainer.model[0].module.named_modules() if isinstance(m, RMSNorm)}
        shapes: dict[str, tuple] = {}
        for name, norm in norms.items():
            norm.register_forward_hook(lambda m, args, output, name=name: shapes.__setitem__(name, tuple(args[0].shape)))
        result = trainer.step([iter([batch(RandomTokens.vocab_size)])])
        # main_grad: the gradient megatron's finalize step left for the optimizer.
        grads = {name: norm.weight.main_grad.detach().clone() for name, norm in norms.items()}
    return {"shapes": shapes, "grads": grads, "loss": result.loss}


def main(out: Path) -> None:
    import torch
    import torch.distributed as dist

    from alia_train.parallel.runtime import shutdown

    results = {sp: one_step(out, sp) for sp in (True, False)}
    torch.save(results, out / f"rank{dist.get_rank()}.pt")
    shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
