"""The training loop: from a validated Config and an initialised runtime to metrics and
checkpoints. The pieces it drives live next to it (step, optimizer, batches, metrics, signals)
and in alia_train.checkpoint / alia_train.data."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
import torch.distributed as dist
from megatron.core import parallel_state

from alia_train.checkpoint.layout import remove_partials
from alia_train.checkpoint.manager import CheckpointManager, TrainingProgress
from alia_train.config.load import to_yaml
from alia_train.config.schema import Config
from alia_train.model.build import build_model
from alia_train.parallel.runtime import Runtime
from alia_train.training.batches import MicroBatchIterator
from alia_train.training.flops import mfu, training_flops_per_token
from alia_train.training.metrics import Console, MetricsSink
from alia_train.training.optimizer import attach_schedule_hooks, build_optimizer, wrap_ddp
from alia_train.training.signals import install_stop_handler, release_stop_handler
from alia_train.training.step import LossAccumulator, eval_step, train_step

EXIT_OK = 0
EXIT_NONFINITE = 3


class NonFiniteError(RuntimeError):
    pass


def _log(msg: str) -> None:
    if dist.get_rank() == 0:
        print(f"[alia-train] {msg}", flush=True)


class Trainer:
    def __init__(self, cfg: Config, rt: Runtime, tokenizer):
        self.cfg = cfg
        self.rt = rt
        self.tokenizer = tokenizer
        tr = cfg.train
        self.dp_size = parallel_state.get_data_parallel_world_size()
        self.dp_rank = parallel_state.get_data_parallel_rank()
        self.num_microbatches = tr.global_batch_size // (tr.micro_batch_size * self.dp_size)
        self.tokens_per_step = tr.global_batch_size * tr.seq_length

        chunks = build_model(cfg, tokenizer.vocab_size, rt.dtype, rt.device)
        self.model = wrap_ddp(cfg, chunks, rt.dtype)
        self.optimizer, self.scheduler = build_optimizer(cfg, self.model, rt.dtype)
        attach_schedule_hooks(self.model, self.optimizer)
        self.checkpoints = CheckpointManager(
            cfg, self.model, self.optimizer, self.scheduler,
            {"path": tokenizer.path, "sha256": tokenizer.sha256, "vocab_size": tokenizer.vocab_size},
            to_yaml(cfg),
        )
        self.progress = TrainingProgress()
        self.flops_per_token = training_flops_per_token(cfg.model, tr.seq_length, tokenizer.vocab_size)

    # ------------------------------------------------------------------ setup
    def resume(self) -> None:
        if dist.get_rank() == 0:
            # Left by a save that was interrupted; the run lock guarantees no save is running.
            for path in remove_partials(self.cfg.run.dir):
                _log(f"removed unfinished checkpoint {path.name}")
        dist.barrier()
        loaded = self.checkpoints.load_latest()
        if loaded is None:
            _log("no checkpoint to resume from: starting at step 0")
            return
        for path, why in loaded.skipped:
            _log(f"WARNING: skipping checkpoint {path}: {why}; falling back to an earlier one")
        self.progress = loaded.progress
        _log(
            f"resumed from {loaded.path} at step {self.progress.step} "
            f"(consumed samples {self.progress.consumed_samples}){loaded.note}"
        )

    def build_data(self) -> None:
        from alia_train.data.datasets import build_datasets

        tr = self.cfg.train
        train_samples = tr.steps * tr.global_batch_size
        evals = tr.steps // tr.eval_interval + 1 if tr.eval_interval else 0
        valid_samples = max(evals, 1) * tr.eval_iters * tr.global_batch_size
        self.data = build_datasets(self.cfg, self.tokenizer, train_samples=train_samples, valid_samples=valid_samples)
        self.languages = list(self.data.languages)
        self.acc = LossAccumulator(len(self.languages), self.rt.device)
        if dist.get_rank() == 0:
            mixture = {"languages": self.languages, "planned_shares": dict(self.data.planned_shares)}
            (Path(self.cfg.run.dir) / "mixture.json").write_text(json.dumps(mixture, indent=1))

    def _iterators(self, dataset, consumed: int) -> list[MicroBatchIterator]:
        mbs = self.cfg.train.micro_batch_size
        return [MicroBatchIterator(dataset, consumed, mbs, self.dp_rank, self.dp_size) for _ in self.model]

    # ------------------------------------------------------------------ evaluation
    def evaluate(self) -> dict:
        tr = self.cfg.train
        rec: dict = {"kind": "valid", "step": self.progress.step}
        total_loss, total_tokens = 0.0, 0.0
        for lang, dataset in self.data.valid.items():
            n_micro = min(tr.eval_iters * self.num_microbatches, len(dataset) // (tr.micro_batch_size * self.dp_size))
            if n_micro == 0:
                continue
            its = self._iterators(dataset, 0)
            loss_sum, tokens = eval_step(
                self.model, its, self.acc, num_microbatches=n_micro, seq_length=tr.seq_length,
                micro_batch_size=tr.micro_batch_size, device=self.rt.device,
            )
            loss = loss_sum / max(tokens, 1)
            rec[f"loss/{lang}"] = loss
            rec[f"ppl/{lang}"] = math.exp(min(loss, 50.0))
            total_loss += loss_sum
            total_tokens += tokens
        if total_tokens:
            rec["loss"] = total_loss / total_tokens
            rec["ppl"] = math.exp(min(rec["loss"], 50.0))
        return rec

    # ------------------------------------------------------------------ the loop
    def train(self) -> int:
        cfg, tr = self.cfg, self.cfg.train
        rank0 = dist.get_rank() == 0
        # Installed by alia-train's main already; release gives signals their default action.
        stop = install_stop_handler() if cfg.checkpoint.save_on_signal else release_stop_handler()
        console = Console(cfg.logging.console, tr.steps)
        # Records past the resumed step were written by a run that died before saving them.
        sink = MetricsSink(cfg.run.dir, console, self.rt.trackers, resume_step=self.progress.step) if rank0 else None
        its = self._iterators(self.data.train, self.progress.consumed_samples)
        interval_start, interval_steps, interval_tokens = time.perf_counter(), 0, 0
        interval_loss_sum = 0.0
        lang_sums = [0.0] * len(self.languages)
        lang_tokens = [0] * len(self.languages)
        exit_code, decision = EXIT_OK, None
        if self.rt.cuda:
            torch.cuda.reset_peak_memory_stats()
        try:
            while self.progress.step < tr.steps:
                result = train_step(
                    self.model, self.optimizer, self.scheduler, its, self.acc,
                    num_microbatches=self.num_microbatches, seq_length=tr.seq_length,
                    micro_batch_size=tr.micro_batch_size, device=self.rt.device,
                )
                if result.nonfinite:
                    msg = (
                        f"non-finite {result.nonfinite} at step {self.progress.step + 1} "
                        f"(loss {result.loss})"
                    )
                    if tr.on_nonfinite == "stop":
                        raise NonFiniteError(
                            msg + "; stopping without saving these weights. Resume from the last "
                            "checkpoint with a lower optim.lr, or set train.on_nonfinite=skip"
                        )
                    _log(f"WARNING: {msg}; step skipped (train.on_nonfinite=skip)")
                self.progress.step += 1
                self.progress.consumed_samples += tr.global_batch_size
                self.progress.consumed_tokens += self.tokens_per_step
                interval_steps += 1
                interval_tokens += result.tokens
                interval_loss_sum += result.loss * result.tokens
                for i in range(len(self.languages)):
                    lang_sums[i] += result.lang_loss_sum[i]
                    lang_tokens[i] += result.lang_tokens[i]
                self.checkpoints.finalize_pending(blocking=False)

                step = self.progress.step
                if step % cfg.logging.interval == 0 or step == tr.steps:
                    elapsed = time.perf_counter() - interval_start
                    rec = self._train_record(result, interval_steps, interval_loss_sum, interval_tokens, elapsed, lang_sums, lang_tokens)
                    if sink:
                        sink.write(rec)
                    interval_start, interval_steps, interval_tokens = time.perf_counter(), 0, 0
                    interval_loss_sum = 0.0
                    lang_sums = [0.0] * len(self.languages)
                    lang_tokens = [0] * len(self.languages)

                if tr.eval_interval and (step % tr.eval_interval == 0 or step == tr.steps) and self.data.valid:
                    eval_start = time.perf_counter()
                    rec = self.evaluate()
                    interval_start += time.perf_counter() - eval_start  # not training time
                    if sink:
                        sink.write(rec, show=False)
                        shown = ", ".join(f"{k[5:]} {v:.3f}" for k, v in rec.items() if k.startswith("loss/"))
                        console.message(f"validation step {step}: loss {rec.get('loss', float('nan')):.4f} ({shown})")

                ck = cfg.checkpoint
                decision = stop.agreed() if stop is not None else None
                if decision is not None:
                    _log(decision.announce(step))
                    warning = decision.kill_wait_warning(self.checkpoints.last_save_seconds)
                    if warning:
                        _log(warning)
                    self.checkpoints.save(self.progress, blocking=True)
                    exit_code = decision.exit_code
                    break
                if ck.interval and step % ck.interval == 0 and step < tr.steps:
                    self.checkpoints.save(self.progress)
            else:
                if self.checkpoints.last_saved_step != self.progress.step:
                    self.checkpoints.save(self.progress, blocking=True)
        finally:
            self.checkpoints.close()
            if sink:
                sink.close()
        if decision is not None:
            _log(decision.farewell(self.checkpoints.last_save_seconds))
        else:
            _log(f"training finished at step {self.progress.step}")
        return exit_code

    def _train_record(self, result, interval_steps: int, loss_sum: float, interval_tokens: int, elapsed: float, lang_sums, lang_tokens) -> dict:
        """One metrics record. `loss` and the per-language losses are token-weighted means over
        the steps since the last record (one step when logging.interval=1)."""
        cfg = self.cfg
        tokens_per_sec = interval_tokens / max(elapsed, 1e-9)
        rec = {
            "kind": "train",
            "step": self.progress.step,
            "loss": loss_sum / max(interval_tokens, 1),
            "lr": self.optimizer.param_groups[0]["lr"],
            "grad_norm": result.grad_norm,
            "tokens_per_sec": tokens_per_sec,
            "consumed_samples": self.progress.consumed_samples,
            "consumed_tokens": self.progress.consumed_tokens,
            "step_time": elapsed / max(1, interval_steps),
        }
        if result.skipped:
            rec["skipped"] = True
        for lang, s, t in zip(self.languages, lang_sums, lang_tokens):
            if t:
                rec[f"loss/{lang}"] = s / t
                rec[f"tokens/{lang}"] = t
        if self.rt.cuda:
            per_gpu = tokens_per_sec / dist.get_world_size()
            rec["tflops_per_gpu"] = per_gpu * self.flops_per_token / 1e12
            rec["mfu"] = mfu(per_gpu, self.flops_per_token, cfg.cluster.peak_tflops)
            rec["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
        return rec


def save_run_config(cfg: Config) -> None:
    """Write RUN_DIR/config.yaml atomically (temporary file, fsync, rename, fsync of the
    directory): readers see the previous file or the new one whole, never a truncated one (a
    full disk fails here, before the old file is touched)."""
    from alia_train.data.atomic import write_text_atomic

    run_dir = Path(cfg.run.dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "config.yaml", to_yaml(cfg))
