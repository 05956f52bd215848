"""What the training loop reports, and when: a train record every logging.interval steps (and
at the last step) with the token-weighted means since the previous one, and the validation
records. Global rank 0 writes them (training/metrics.py: metrics.jsonl, console, trackers)."""

from __future__ import annotations

import torch
import torch.distributed as dist

from alia_train.checkpoint.state_dict import TrainingProgress
from alia_train.config.schema import Config
from alia_train.model.flops import mfu, palm_flops_per_token, training_flops_per_token
from alia_train.training.intervals import Every, Interval, IntervalMeter
from alia_train.training.metrics import Console, MetricsSink
from alia_train.training.step import StepResult


def train_record(interval: Interval, result: StepResult, progress: TrainingProgress, lr: float,
                 languages: list[str]) -> dict:
    """One train record. `loss` and the per-language losses are token-weighted means over the
    interval (one step when logging.interval=1); grad_norm and `skipped` are the last step's."""
    rec = {
        "kind": "train",
        "step": progress.step,
        "loss": interval.loss,
        "lr": lr,
        "grad_norm": result.grad_norm,
        "tokens_per_sec": interval.tokens_per_sec,
        "consumed_samples": progress.consumed_samples,
        "consumed_tokens": progress.consumed_tokens,
        "step_time": interval.step_time,
    }
    if result.skipped:
        rec["skipped"] = True
    for lang, s, t in zip(languages, interval.lang_loss_sums, interval.lang_tokens):
        if t:
            rec[f"loss/{lang}"] = s / t
            rec[f"tokens/{lang}"] = t
    return rec


class TrainLog:
    def __init__(self, cfg: Config, trackers: list, languages: list[str], resume_step: int, vocab_size: int,
                 cuda: bool):
        """`resume_step`: where this launch started; metrics.jsonl's records past it are dropped
        (a launch that died before saving them wrote them; they are logged again)."""
        tr = cfg.train
        self.every = Every(cfg.logging.interval, tr.steps)
        self.languages = languages
        self.meter = IntervalMeter(len(languages))
        self.cuda = cuda
        self.peak_tflops = cfg.cluster.peak_tflops
        self.flops_per_token = training_flops_per_token(cfg.model, tr.seq_length, vocab_size)
        self.palm_flops_per_token = palm_flops_per_token(cfg.model, tr.seq_length, vocab_size)
        self.console = Console(cfg.logging.console, tr.steps)
        self.sink = None
        if dist.get_rank() == 0:
            self.sink = MetricsSink(cfg.run.dir, self.console, trackers, resume_step=resume_step)
        if cuda:
            torch.cuda.reset_peak_memory_stats()

    def due(self, step: int) -> bool:
        return self.every.due(step)

    def add(self, result: StepResult) -> None:
        self.meter.add(result)

    def write_train(self, result: StepResult, progress: TrainingProgress, lr: float) -> None:
        """The record of the interval ending now; starts the next interval."""
        interval = self.meter.take()
        rec = train_record(interval, result, progress, lr, self.languages)
        if self.cuda:
            per_gpu = interval.tokens_per_sec / dist.get_world_size()
            rec["tflops_per_gpu"] = per_gpu * self.flops_per_token / 1e12
            rec["mfu"] = mfu(per_gpu, self.flops_per_token, self.peak_tflops)
            # PaLM's convention (causal attention not halved), as torchtitan / Nanotron report
            rec["tflops_per_gpu_palm"] = per_gpu * self.palm_flops_per_token / 1e12
            rec["mfu_palm"] = mfu(per_gpu, self.palm_flops_per_token, self.peak_tflops)
            rec["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
        if self.sink:
            self.sink.write(rec)

    def write_validation(self, rec: dict) -> None:
        if self.sink:
            self.sink.write(rec, show=False)
            shown = ", ".join(f"{k[5:]} {v:.3f}" for k, v in rec.items() if k.startswith("loss/"))
            self.console.message(f"validation step {rec['step']}: loss {rec.get('loss', float('nan')):.4f} ({shown})")

    def close(self) -> None:
        """Closes metrics.jsonl, the console and the trackers."""
        if self.sink:
            self.sink.close()
