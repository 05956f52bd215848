"""Process groups, devices and seeds for one rank of a job."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist

from alia_train.config.derived import derive
from alia_train.config.schema import Config
from alia_train.parallel.launch_env import LaunchEnv


@dataclass
class Runtime:
    launch: LaunchEnv
    device: torch.device
    dtype: torch.dtype
    cuda: bool
    trackers: list = field(default_factory=list)


def init_runtime(cfg: Config, launch: LaunchEnv) -> Runtime:
    """torch.distributed (NCCL on GPU, gloo on CPU), megatron's parallel groups and seeds."""
    from alia_train.parallel import cpu_compat, megatron_fixes

    megatron_fixes.install()
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(launch.local_rank)
        device = torch.device("cuda", launch.local_rank)
    else:
        cpu_compat.install()
        device = torch.device("cpu")
        # Each rank of a multi-process CPU job gets its share of the cores.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, _local_world_size(launch))))
    derived = derive(cfg, launch.world_size, cuda)
    dtype = torch.bfloat16 if derived.bf16 else torch.float32

    if not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if cuda else "gloo",
            init_method=f"tcp://{launch.master_addr}:{launch.master_port}",
            rank=launch.rank,
            world_size=launch.world_size,
            timeout=timedelta(minutes=30),
            device_id=device if cuda else None,
        )
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

    par = cfg.parallel
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=par.tp,
        pipeline_model_parallel_size=par.pp,
        virtual_pipeline_model_parallel_size=derived.virtual_pipeline_size,
        context_parallel_size=par.cp,
    )
    torch.manual_seed(cfg.train.seed)
    model_parallel_cuda_manual_seed(cfg.train.seed)
    return Runtime(launch=launch, device=device, dtype=dtype, cuda=cuda)


def _local_world_size(launch: LaunchEnv) -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE") or os.environ.get("SLURM_NTASKS_PER_NODE", "1").split("(")[0] or 1)


def shutdown() -> None:
    if dist.is_initialized():
        from megatron.core import parallel_state

        parallel_state.destroy_model_parallel()
        dist.destroy_process_group()
