"""Save and load training state with megatron-core dist_checkpointing (torch_dist format).

What a checkpoint holds:
* sharded (every rank writes its part; reloadable under another TP / PP / DP layout): the model,
  the optimizer state (the distributed optimizer in the reshardable "fully_reshardable"
  form), and the RNG states of every rank;
* common (rank 0): step, consumed samples, LR scheduler, the resolved config, the tokenizer's
  identity and the layout it was written with.
Publishing (atomic rename, `latest`, retention) is in `layout.py`.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from megatron.core import dist_checkpointing, parallel_state
from megatron.core.dist_checkpointing.mapping import ShardedObject
from megatron.core.dist_checkpointing.serialization import (
    get_default_load_sharded_strategy,
    get_default_save_sharded_strategy,
)
from megatron.core.dist_checkpointing.strategies.async_utils import AsyncCallsQueue
from megatron.core.dist_checkpointing.strategies.fully_parallel import (
    FullyParallelLoadStrategyWrapper,
    FullyParallelSaveStrategyWrapper,
)

from alia_train.checkpoint import layout
from alia_train.config.schema import Config, ModelConfig

# Fields that define the network; a checkpoint whose values differ cannot be loaded.
ARCHITECTURE_FIELDS = (
    "num_layers",
    "hidden_size",
    "ffn_hidden_size",
    "num_attention_heads",
    "num_query_groups",
    "norm_eps",
    "rope_theta",
)

_DISTOPT_SHARDING = "fully_reshardable"  # reloadable under any TP / PP / DP


class CheckpointMismatchError(RuntimeError):
    """The checkpoint cannot be loaded into this run's model."""


@dataclass
class TrainingProgress:
    step: int = 0
    consumed_samples: int = 0
    consumed_tokens: int = 0


@dataclass
class LoadedCheckpoint:
    path: Path
    progress: TrainingProgress
    skipped: list[tuple[Path, str]]  # (checkpoint, why) passed over before this one


def _rank() -> int:
    return dist.get_rank()


def _metadata() -> dict:
    return {"distrib_optim_sharding_type": _DISTOPT_SHARDING, "singleton_local_shards": False}


def _rng_state() -> dict:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
        from megatron.core.tensor_parallel import get_cuda_rng_tracker

        state["megatron_tracker"] = get_cuda_rng_tracker().get_states()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"])
        from megatron.core.tensor_parallel import get_cuda_rng_tracker

        get_cuda_rng_tracker().set_states(state["megatron_tracker"])


def _layout() -> dict:
    return {
        "world_size": dist.get_world_size(),
        "tp": parallel_state.get_tensor_model_parallel_world_size(),
        "pp": parallel_state.get_pipeline_model_parallel_world_size(),
        "dp": parallel_state.get_data_parallel_world_size(),
    }


def architecture_differences(saved: dict, current: ModelConfig) -> list[str]:
    return [
        f"model.{f}: checkpoint has {saved.get(f)}, config has {getattr(current, f)}"
        for f in ARCHITECTURE_FIELDS
        if saved.get(f) != getattr(current, f)
    ]


def _fault_injection_pause() -> None:
    """Fault injection for the crash-safety tests: ALIA_TRAIN_FAULT_PAUSE_BEFORE_PUBLISH=SECONDS
    holds a save after its files are written and before it is published, so a test can kill the
    run exactly then. Unset in normal use."""
    seconds = os.environ.get("ALIA_TRAIN_FAULT_PAUSE_BEFORE_PUBLISH")
    if seconds:
        print(f"[alia-train] fault injection: pausing {seconds}s before publishing", flush=True)
        time.sleep(float(seconds))


class CheckpointManager:
    def __init__(self, cfg: Config, model: list, optimizer, scheduler, tokenizer_identity: dict, config_yaml: str):
        self.cfg = cfg
        self.run_dir = cfg.run.dir
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.tokenizer_identity = tokenizer_identity
        self.config_yaml = config_yaml
        self.async_queue = AsyncCallsQueue() if cfg.checkpoint.async_save else None
        self.last_saved_step: int | None = None
        self.last_save_seconds: float = 0.0  # time the training loop was blocked by the last save

    # ---------------------------------------------------------------- state dicts
    def _sharded_state_dict(self, is_loading: bool, include_optimizer: bool, include_rng: bool) -> dict:
        sd: dict = {}
        # The unwrapped GPTModel (not the DDP wrapper), so keys carry no "module." prefix and
        # match Megatron-LM's checkpoints.
        if len(self.model) == 1:
            sd["model"] = self.model[0].module.sharded_state_dict(metadata=_metadata())
        else:
            for i, chunk in enumerate(self.model):
                sd[f"model{i}"] = chunk.module.sharded_state_dict(metadata=_metadata())
        if include_optimizer:
            sd["optimizer"] = self.optimizer.sharded_state_dict(sd, is_loading=is_loading, metadata=_metadata())
        if include_rng:
            sd["rng_state"] = ShardedObject(
                "rng_state", _rng_state(), (dist.get_world_size(),), (_rank(),), replica_id=0
            )
        return sd

    def _dp_group(self):
        return parallel_state.get_data_parallel_group(with_context_parallel=True)

    # ---------------------------------------------------------------- saving
    def save(self, progress: TrainingProgress, *, blocking: bool = False) -> None:
        """Write a checkpoint of `progress.step`. With async_save (and not `blocking`), files are
        written in the background and published once every rank has finished."""
        start = time.perf_counter()
        self.finalize_pending(blocking=True)  # one save in flight at a time
        step = progress.step
        target = layout.partial_dir(self.run_dir, step)
        if _rank() == 0:
            layout.checkpoints_dir(self.run_dir).mkdir(parents=True, exist_ok=True)
            if target.exists():
                import shutil

                shutil.rmtree(target)
            target.mkdir()
        dist.barrier()
        sd = self._sharded_state_dict(is_loading=False, include_optimizer=True, include_rng=True)
        sd.update(self._common_state(progress))
        strategy = FullyParallelSaveStrategyWrapper(get_default_save_sharded_strategy(), self._dp_group())
        use_async = self.async_queue is not None and not blocking
        request = dist_checkpointing.save(
            sd, str(target), strategy, async_sharded_save=use_async, async_strategy="mcore"
        )

        def publish() -> None:
            # Runs on every rank once all ranks' files are written.
            _fault_injection_pause()
            if _rank() == 0:
                layout.publish(self.run_dir, step, {"layout": _layout()})
                layout.apply_retention(self.run_dir, self.cfg.checkpoint.keep)
            dist.barrier()

        if use_async:
            request.add_finalize_fn(publish)
            self.async_queue.schedule_async_request(request)
        else:
            publish()
        self.last_saved_step = step
        self.last_save_seconds = time.perf_counter() - start

    def finalize_pending(self, blocking: bool = False) -> None:
        if self.async_queue is not None:
            self.async_queue.maybe_finalize_async_calls(blocking=blocking)

    def close(self) -> None:
        if self.async_queue is not None:
            self.async_queue.maybe_finalize_async_calls(blocking=True)
            self.async_queue.close()

    def _common_state(self, progress: TrainingProgress) -> dict:
        return {
            "progress": {
                "step": progress.step,
                "consumed_samples": progress.consumed_samples,
                "consumed_tokens": progress.consumed_tokens,
            },
            "scheduler": self.scheduler.state_dict(),
            "config_yaml": self.config_yaml,
            "model_config": {f: getattr(self.cfg.model, f) for f in ARCHITECTURE_FIELDS},
            "tokenizer": self.tokenizer_identity,
            "layout": _layout(),
        }

    # ---------------------------------------------------------------- loading
    def find_resume_candidates(self) -> tuple[list[Path], bool]:
        """(checkpoints to try, whether they belong to this run). The run's own checkpoints win
        over `checkpoint.load`, so a restarted job continues where it stopped."""
        own = layout.candidates(self.run_dir)
        if own:
            return own, True
        if self.cfg.checkpoint.load:
            return layout.load_candidates(self.cfg.checkpoint.load), False
        return [], True

    def load_latest(self) -> LoadedCheckpoint | None:
        candidates, own = self.find_resume_candidates()
        skipped: list[tuple[Path, str]] = []
        for path in candidates:
            problem = layout.verify(path) if (path / layout.COMPLETE).exists() or own else None
            if problem is None:
                problem = self._load_problem(path)
            if problem is None:
                progress = self._load(path, fresh_start=not own)
                return LoadedCheckpoint(path, progress, skipped)
            skipped.append((path, problem))
        if skipped and not own:
            raise FileNotFoundError(f"checkpoint.load: {skipped[0][0]}: {skipped[0][1]}")
        if skipped:
            raise FileNotFoundError(
                "no usable checkpoint in run.dir: "
                + "; ".join(f"{p.name}: {why}" for p, why in skipped)
                + " (move the checkpoints away or choose another run.dir)"
            )
        return None

    def _load_problem(self, path: Path) -> str | None:
        try:
            common = dist_checkpointing.load_common_state_dict(str(path))
        except Exception as e:  # unreadable metadata: treat as damaged, fall back
            return f"unreadable ({type(e).__name__}: {e})"
        diffs = architecture_differences(common.get("model_config", {}), self.cfg.model)
        saved_tok = common.get("tokenizer") or {}
        if saved_tok and saved_tok.get("sha256") != self.tokenizer_identity["sha256"]:
            diffs.append(
                f"data.tokenizer: checkpoint was trained with {saved_tok.get('path')} "
                f"(vocab {saved_tok.get('vocab_size')}, sha256 {str(saved_tok.get('sha256'))[:12]}), this run uses "
                f"{self.tokenizer_identity['path']} (vocab {self.tokenizer_identity['vocab_size']}); "
                "set data.tokenizer to the checkpoint's tokenizer"
            )
        if diffs:
            raise CheckpointMismatchError(
                f"checkpoint {path} has another model architecture: " + "; ".join(diffs)
            )
        return None

    def _load(self, path: Path, fresh_start: bool) -> TrainingProgress:
        ck = self.cfg.checkpoint
        common = dist_checkpointing.load_common_state_dict(str(path))
        has_optimizer = "scheduler" in common
        load_optimizer = has_optimizer and not ck.reset_optimizer and not fresh_start
        same_layout = common.get("layout", {}) == _layout()
        sd = self._sharded_state_dict(is_loading=True, include_optimizer=load_optimizer, include_rng=same_layout and load_optimizer)
        strategy = FullyParallelLoadStrategyWrapper(get_default_load_sharded_strategy(str(path)), self._dp_group())
        state = dist_checkpointing.load(sd, str(path), strategy)
        if len(self.model) == 1:
            self.model[0].module.load_state_dict(state["model"])
        else:
            for i, chunk in enumerate(self.model):
                chunk.module.load_state_dict(state[f"model{i}"])
        progress = TrainingProgress()
        if load_optimizer:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(common["scheduler"])
            saved = common["progress"]
            progress = TrainingProgress(saved["step"], saved["consumed_samples"], saved.get("consumed_tokens", 0))
            if "rng_state" in state:
                _set_rng_state(state["rng_state"])
        if ck.reset_data:
            progress.consumed_samples = 0
        return progress
