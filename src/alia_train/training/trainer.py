"""The training loop. A Trainer is complete once constructed: model, optimizer, checkpoints,
the resumed position and the datasets. Build it through alia_train.training.run, which also
holds the run lock and accepts the launch; the pieces it drives live next to it (step, batches,
evaluation, train_log, intervals, nonfinite, signals) and in alia_train.checkpoint / data."""

from __future__ import annotations

from pathlib import Path

import torch.distributed as dist
from megatron.core import parallel_state

from alia_train.checkpoint.resume import load_latest
from alia_train.checkpoint.state_dict import CheckpointMismatchError, TrainingProgress, TrainingState
from alia_train.checkpoint.writer import CheckpointWriter
from alia_train.config.load import to_yaml
from alia_train.config.schema import Config
from alia_train.exit_codes import EXIT_OK
from alia_train.fs import write_json_atomic
from alia_train.model.build import build_model
from alia_train.parallel.runtime import Runtime
from alia_train.training.batches import BatchReader, MicroBatchIterator
from alia_train.training.errors import RunError
from alia_train.training.evaluation import Evaluator
from alia_train.training.intervals import Every
from alia_train.training.nonfinite import NonfiniteSteps
from alia_train.training.optimizer import attach_schedule_hooks, build_optimizer, wrap_ddp
from alia_train.training.signals import StopDecision, release_stop_handler, stop_request
from alia_train.training.step import LossAccumulator, StepResult, StepShape, train_step
from alia_train.training.train_log import TrainLog


def _log(msg: str) -> None:
    if dist.get_rank() == 0:
        print(f"[alia-train] {msg}", flush=True)


class Trainer:
    def __init__(self, cfg: Config, rt: Runtime, tokenizer, *, with_data: bool = True):
        """Builds the model and optimizer, resumes (the run's latest complete checkpoint, else
        checkpoint.load) and, `with_data`, builds the datasets. Without data the caller feeds
        its own micro-batches to `step` (counted as language 0). Raises RunError when the
        checkpoint cannot be resumed."""
        self.cfg, self.rt, self.tokenizer = cfg, rt, tokenizer
        tr = cfg.train
        derived = rt.derived
        self.tokens_per_step = derived.tokens_per_step
        self.shape = StepShape(derived.num_microbatches, tr.seq_length, tr.micro_batch_size, rt.device)
        chunks = build_model(cfg, tokenizer.vocab_size, rt.dtype, rt.device)
        self.model = wrap_ddp(cfg, chunks, rt.dtype)
        self.reader = BatchReader(tr.micro_batch_size, parallel_state.get_data_parallel_rank(),
                                  parallel_state.get_data_parallel_world_size(), len(self.model))
        self.optimizer, self.scheduler = build_optimizer(cfg, self.model, rt.dtype)
        attach_schedule_hooks(self.model, self.optimizer)
        self.state = TrainingState(
            cfg, self.model, self.optimizer, self.scheduler,
            {"path": tokenizer.path, "sha256": tokenizer.sha256, "vocab_size": tokenizer.vocab_size},
            to_yaml(cfg), rt,
        )
        self.checkpoints = CheckpointWriter(self.state)
        # Routine saves on the way; the last step's (and a stop request's) are the loop's.
        self.saves = Every(cfg.checkpoint.interval, tr.steps, at_last=False)
        self.nonfinite = NonfiniteSteps(tr.on_nonfinite, tr.max_skipped_steps)
        self.progress = self._resume()
        self.data = self._build_data() if with_data else None
        self.languages: list[str] = list(self.data.languages) if self.data else []
        self.acc = LossAccumulator(max(len(self.languages), 1), rt.device)
        self.evaluator = Evaluator(self.model, self.data.valid if self.data else {}, self.reader, self.acc,
                                   self.shape, tr.eval_iters, Every(tr.eval_interval, tr.steps))
        self._closed = False

    # ------------------------------------------------------------------ set-up
    def _resume(self) -> TrainingProgress:
        """By the rules of checkpoint/resume.py, said in a line or two."""
        try:
            loaded = load_latest(self.state)
        except (CheckpointMismatchError, FileNotFoundError) as e:
            raise RunError(str(e)) from e
        for path in loaded.removed_partials:
            _log(f"removed unfinished checkpoint {path.name}")
        if loaded.path is None:
            _log("no checkpoint to resume from: starting at step 0")
            return TrainingProgress()
        for path, why in loaded.skipped:
            _log(f"WARNING: skipping checkpoint {path}: {why}; falling back to an earlier one")
        p = loaded.progress
        _log(f"resumed from {loaded.path} at step {p.step} (consumed samples {p.consumed_samples}){loaded.note}")
        return p

    def _build_data(self):
        from alia_train.data.datasets import build_datasets

        tr = self.cfg.train
        # Enough samples from the resumed position to the last step: steps x GBS, more when the
        # run kept another run's data position (checkpoint.load without reset_data) or GBS grew.
        # The count sizes the dataset only: sample i is the same whatever it is (sample_order.py).
        p = self.progress
        remaining = max(tr.steps - p.step, 0) * tr.global_batch_size
        train_samples = max(tr.steps * tr.global_batch_size, p.consumed_samples + remaining)
        evals = tr.steps // tr.eval_interval + 1 if tr.eval_interval else 0
        valid_samples = max(evals, 1) * tr.eval_iters * tr.global_batch_size
        data = build_datasets(self.cfg, self.tokenizer, train_samples=train_samples, valid_samples=valid_samples)
        if dist.get_rank() == 0:
            mixture = {"languages": list(data.languages), "planned_shares": dict(data.planned_shares)}
            write_json_atomic(Path(self.cfg.run.dir) / "mixture.json", mixture, indent=1)
        return data

    # ------------------------------------------------------------------ steps
    def batches(self, consumed_samples: int = 0) -> list[MicroBatchIterator]:
        """This rank's micro-batches of the training set from `consumed_samples` on."""
        return self.reader.iterators(self.data.train, consumed_samples)

    def step(self, iterators: list) -> StepResult:
        """One optimizer step on the next micro-batches of `iterators` (progress is the loop's)."""
        return train_step(self.model, self.optimizer, self.scheduler, iterators, self.acc, self.shape)

    # ------------------------------------------------------------------ the loop
    def train(self, trackers: list = ()) -> int:
        """Train from the resumed step to train.steps, logging to `trackers` too (W&B,
        TensorBoard: training/tracking.py); EXIT_OK, or a stop request's exit code once its
        checkpoint is saved. Raises NonFiniteError (train.on_nonfinite=stop).

        Checkpoints: every `checkpoint.interval` steps on the way (0: none), in the background
        with async_save; at the last step unless just saved, and on a stop request (SIGUSR1 /
        SIGTERM) at the next step boundary, both waiting until published. No save while the
        weights may hold a non-finite update (nonfinite.py): it waits for a finite step."""
        # The handler the start-up installed (startup.py), or the signals' default actions back.
        stop = stop_request() if self.cfg.checkpoint.save_on_signal else release_stop_handler()
        its = self.batches(self.progress.consumed_samples)
        log = TrainLog(self.cfg, list(trackers), self.languages, self.progress.step,
                       self.tokenizer.vocab_size, self.rt.cuda)
        decision, save_owed = None, False
        try:
            while self.progress.step < self.cfg.train.steps:
                result = self.step(its)
                self._advance(result)
                log.add(result)
                self.checkpoints.finalize_pending(blocking=False)
                step = self.progress.step
                if log.due(step):
                    log.write_train(result, self.progress, self.optimizer.param_groups[0]["lr"])
                if self.evaluator.due(step):
                    with log.meter.paused():
                        rec = self.evaluator.run(step)
                    log.write_validation(rec)
                decision = stop.agreed() if stop is not None else None
                if decision is not None:
                    self._save_on_stop(decision, step)
                    break
                # A save due in a run of non-finite steps waits for a finite one (nonfinite.py).
                save_owed = (save_owed or self.saves.due(step)) and step < self.saves.last
                if save_owed and not self.nonfinite.weights_suspect:
                    self.checkpoints.save(self.progress)
                    save_owed = False
            else:
                if self.nonfinite.weights_suspect:
                    _log(self.nonfinite.unsaved_note(self.progress.step))
                elif self.checkpoints.last_saved_step != self.progress.step:  # unless just saved
                    self.checkpoints.save(self.progress, blocking=True)
        finally:
            self.close()
            log.close()
        _log(decision.farewell(self.checkpoints.last_save_seconds) if decision is not None
             else f"training finished at step {self.progress.step}")
        return decision.exit_code if decision is not None else EXIT_OK

    def _advance(self, result: StepResult) -> None:
        """Count the step done (a skipped one too: its samples are not trained on again)."""
        warning = self.nonfinite.check(result, self.progress.step + 1)
        if warning:
            _log(warning)
        self.progress.step += 1
        self.progress.consumed_samples += self.cfg.train.global_batch_size
        self.progress.consumed_tokens += self.tokens_per_step

    def _save_on_stop(self, decision: StopDecision, step: int) -> None:
        _log(decision.announce(step))
        warning = decision.kill_wait_warning(self.checkpoints.last_save_seconds)
        if warning:
            _log(warning)
        self.checkpoints.save(self.progress, blocking=True)

    def close(self) -> None:
        """Wait for a checkpoint still being written (idempotent)."""
        if not self._closed:
            self._closed = True
            self.checkpoints.close()
