"""Validation: the loss per language on the held-out split, every train.eval_interval steps and
at the last step."""

from __future__ import annotations

import math
from dataclasses import replace

from alia_train.training.batches import BatchReader
from alia_train.training.intervals import Every
from alia_train.training.step import LossAccumulator, StepShape, eval_step


class Evaluator:
    def __init__(self, model, valid: dict, reader: BatchReader, acc: LossAccumulator, shape: StepShape,
                 eval_iters: int, every: Every):
        """`valid`: language -> validation dataset; each is read from its start every time."""
        self.model = model
        self.valid = valid
        self.reader = reader
        self.acc = acc
        self.shape = shape
        self.eval_iters = eval_iters
        self.every = every

    def due(self, step: int) -> bool:
        return bool(self.valid) and self.every.due(step)

    def run(self, step: int) -> dict:
        """The validation record of `step`: loss and perplexity per language and overall
        (token-weighted)."""
        rec: dict = {"kind": "valid", "step": step}
        total_loss, total_tokens = 0.0, 0.0
        for lang, dataset in self.valid.items():
            n_micro = min(self.eval_iters * self.shape.num_microbatches, self.reader.microbatches_in(dataset))
            if n_micro == 0:
                continue
            loss_sum, tokens = eval_step(self.model, self.reader.iterators(dataset), self.acc,
                                         replace(self.shape, num_microbatches=n_micro))
            loss = loss_sum / max(tokens, 1)
            rec[f"loss/{lang}"] = loss
            rec[f"ppl/{lang}"] = math.exp(min(loss, 50.0))
            total_loss += loss_sum
            total_tokens += tokens
        if total_tokens:
            rec["loss"] = total_loss / total_tokens
            rec["ppl"] = math.exp(min(rec["loss"], 50.0))
        return rec
