"""What a checkpoint holds, and how it goes into and out of megatron-core's dist_checkpointing.

* sharded (every rank writes its part): the model (reloadable under any TP / PP / DP / CP
  layout), the optimizer state and the RNG states of every rank. The distributed optimizer's
  state comes in two forms (megatron-core's names):
  - routine, "dp_reshardable": each rank writes its own shard of the optimizer buffers as they
    are, with no exchange between ranks and no copy: a save's extra host memory is the rank's
    own part, shrinking as 1/DP, and a load reads only that part. It reloads under another
    DP or CP size, not under another TP / PP / VPP or bucketing (the shards follow megatron's
    buffer buckets);
  - portable, "fully_reshardable": each rank gathers its TP x PP stage's whole fp32 state over
    DP (about 61 GB per rank for alia_40b at TP4 PP2): reloadable under any layout. Written on
    request only (training/relayout.py, `alia-convert portable`);
* common (rank 0): step, consumed samples, LR scheduler, the resolved config, the tokenizer's
  identity, the parallel layout it was written with, the layer implementation ("local" or
  "te") and the optimizer's form (precision, distributed or not).

`writer.py` saves this state; `resume.py` decides which checkpoint to load and how.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from megatron.core import dist_checkpointing, parallel_state
from megatron.core.dist_checkpointing.mapping import ShardedObject
from megatron.core.dist_checkpointing.validation import StrictHandling

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

ROUTINE = "dp_reshardable"  # each rank its own optimizer shard: no exchange
PORTABLE = "fully_reshardable"  # gathered per stage: reloadable under any layout
OLDER_CHECKPOINTS = PORTABLE  # checkpoints that do not name their form were written this way


class CheckpointMismatchError(RuntimeError):
    """The checkpoint cannot be loaded into this run's model."""


class NotReshardable(Exception):
    """A routine checkpoint whose distributed-optimizer shards do not fit this run's layout:
    it must be rewritten in the portable form (on its own layout) first. Not a
    CheckpointMismatchError: training/run.py converts it where it can."""

    def __init__(self, path, saved_config_yaml: str | None, saved_layout: dict, own: bool):
        super().__init__(f"checkpoint {path}: its optimizer state reshards over DP / CP only")
        self.path, self.saved_config_yaml, self.saved_layout, self.own = path, saved_config_yaml, saved_layout, own


@dataclass
class TrainingProgress:
    step: int = 0
    consumed_samples: int = 0
    consumed_tokens: int = 0


def _metadata(sharding: str = ROUTINE) -> dict:
    return {"distrib_optim_sharding_type": sharding, "singleton_local_shards": False}


def rng_state(cuda: bool) -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if cuda:
        from megatron.core.tensor_parallel import get_cuda_rng_tracker

        state["cuda"] = torch.cuda.get_rng_state()
        state["megatron_tracker"] = get_cuda_rng_tracker().get_states()
    return state


def set_rng_state(state: dict, cuda: bool) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if cuda and "cuda" in state:
        from megatron.core.tensor_parallel import get_cuda_rng_tracker

        torch.cuda.set_rng_state(state["cuda"])
        get_cuda_rng_tracker().set_states(state["megatron_tracker"])


def parallel_layout() -> dict:
    """The job's parallel layout, as checkpoints record it."""
    return {
        "world_size": dist.get_world_size(),
        "tp": parallel_state.get_tensor_model_parallel_world_size(),
        "pp": parallel_state.get_pipeline_model_parallel_world_size(),
        "dp": parallel_state.get_data_parallel_world_size(),
        "cp": parallel_state.get_context_parallel_world_size(),
    }


def bucket_layout(optimizer) -> list | None:
    """The distributed optimizer's buckets (elements per bucket, of each buffer), which a routine
    checkpoint's shards follow; None without the distributed optimizer."""
    parts = getattr(optimizer, "chained_optimizers", None) or [optimizer]
    # per_bucket_numel_unpadded: per buffer, {(param dtype, grad dtype): [elements per bucket]}
    found = [[[list(numels) for numels in per_buffer.values()] for per_buffer in part.per_bucket_numel_unpadded]
             for part in parts if hasattr(part, "per_bucket_numel_unpadded")]
    return found or None


def stage_buckets(optimizer) -> dict:
    """Every TP x PP stage's bucket_layout, gathered from all ranks (a collective: every rank
    calls it), so that each rank judges a checkpoint by the same whole picture."""
    mine = (f"pp{parallel_state.get_pipeline_model_parallel_rank()}_tp{parallel_state.get_tensor_model_parallel_rank()}",
            bucket_layout(optimizer))
    everyone: list = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    return dict(sorted(everyone))


def architecture_differences(saved: dict, current: ModelConfig) -> list[str]:
    return [
        f"model.{f}: checkpoint has {saved.get(f)}, config has {getattr(current, f)}"
        for f in ARCHITECTURE_FIELDS
        if saved.get(f) != getattr(current, f)
    ]


class TrainingState:
    """The model, optimizer and schedule of a run, as state dicts for dist_checkpointing."""

    def __init__(self, cfg: Config, model: list, optimizer, scheduler, tokenizer_identity: dict,
                 config_yaml: str, rt):
        from alia_train.model.spec import resolve_layer_impl

        self.cfg, self.model, self.optimizer, self.scheduler = cfg, model, optimizer, scheduler
        self.tokenizer_identity, self.config_yaml = tokenizer_identity, config_yaml
        self.cuda, self.bf16 = rt.cuda, rt.derived.bf16  # resolved once, by the runtime
        self.layer_impl = resolve_layer_impl(cfg.model.layer_impl, rt.cuda)

    def modules(self) -> list:
        # The unwrapped model (not the DDP wrapper), so keys carry no "module." prefix and
        # match Megatron-LM's checkpoints.
        return [chunk.module for chunk in self.model]

    def model_key(self, i: int) -> str:
        return "model" if len(self.model) == 1 else f"model{i}"

    def sharded(self, is_loading: bool, include_optimizer: bool, include_rng: bool, sharding: str = ROUTINE) -> dict:
        """The sharded state dict; `sharding`: the distributed optimizer's form (ROUTINE or
        PORTABLE), the checkpoint's own when loading."""
        sd: dict = {}
        for i, module in enumerate(self.modules()):
            sd[self.model_key(i)] = module.sharded_state_dict(metadata=_metadata(sharding))
        if include_optimizer:
            sd["optimizer"] = self.optimizer.sharded_state_dict(sd, is_loading=is_loading, metadata=_metadata(sharding))
        if include_rng:
            sd["rng_state"] = ShardedObject(
                "rng_state", rng_state(self.cuda), (dist.get_world_size(),), (dist.get_rank(),), replica_id=0
            )
        return sd

    def common(self, progress: TrainingProgress, sharding: str = ROUTINE) -> dict:
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
            "layout": parallel_layout(),
            "layer_impl": self.layer_impl,
            "optimizer_form": self.optimizer_form(sharding),
        }

    def optimizer_form(self, sharding: str = ROUTINE) -> dict:
        """What shapes the optimizer state: bf16 keeps fp32 main weights beside the model's; the
        distributed optimizer's form, and for the routine form the buckets it follows."""
        distributed = bool(self.cfg.parallel.distributed_optimizer)
        return {"precision": "bf16" if self.bf16 else "fp32", "distributed": distributed,
                "sharding": sharding if distributed else None,
                "buckets": stage_buckets(self.optimizer) if distributed and sharding == ROUTINE else None}


def load_sharded(sd: dict, path, strategy, saved_impl: str, current_impl: str) -> dict:
    """dist_checkpointing.load that tolerates absent `_extra_state` entries (local <-> TE) and
    refuses, in one line, a checkpoint that lacks any real tensor of the model."""
    state, _not_requested, absent = dist_checkpointing.load(
        sd, str(path), strategy, strict=StrictHandling.RETURN_UNEXPECTED
    )
    problem = absent_keys_problem(absent, saved_impl, current_impl)
    if problem:
        raise CheckpointMismatchError(f"checkpoint {path}: {problem}")
    return state


def absent_keys_problem(absent: set[str], saved_impl: str, current_impl: str) -> str | None:
    """Keys this model asked for that the checkpoint lacks. Transformer Engine layers keep an
    `_extra_state` (FP8 metadata) that megatron's local layers do not have: those are left at the
    model's fresh value, which is what TE holds before its first FP8 step. Anything else absent
    means the checkpoint does not hold this model."""
    real = sorted(k for k in absent if not k.endswith("_extra_state"))
    if not real:
        return None
    impl = (f"it was written with model.layer_impl={saved_impl}, this run uses {current_impl}; "
            if saved_impl != current_impl else "")
    return (f"{len(real)} tensor(s) of this model are not in it (e.g. {real[0]}); {impl}"
            f"load it with the model.* settings and model.layer_impl={saved_impl} it was written with")


def load_model_state(module, state: dict) -> None:
    """load_state_dict that tolerates absent `_extra_state` entries only (see absent_keys_problem)."""
    from megatron.core.transformer.module import Float16Module

    if isinstance(module, Float16Module):  # its load_state_dict returns nothing
        module = module.module
    result = module.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("_extra_state")]
    if missing or result.unexpected_keys:
        raise CheckpointMismatchError(
            f"checkpoint does not match the model: missing {missing[:3]}, unexpected {result.unexpected_keys[:3]}"
        )
