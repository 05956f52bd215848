"""Process groups, devices and seeds for one rank of a job."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist

from alia_train.config.derived import derive
from alia_train.config.schema import Config
from alia_train.parallel.launch_env import LaunchEnv, cuda_device_index, ranks_on_this_node


@dataclass
class Runtime:
    launch: LaunchEnv
    device: torch.device
    dtype: torch.dtype
    cuda: bool
    trackers: list = field(default_factory=list)


def init_runtime(cfg: Config, launch: LaunchEnv) -> Runtime:
    """torch.distributed (NCCL on GPU, gloo on CPU), megatron's parallel groups and seeds, on
    the device train.device names (auto: the GPU when there is one) in the precision
    train.precision resolves to there. Whoever builds a run gets the same answer: the CLI, the
    benchmarks and the tests all come through here."""
    from alia_train.parallel import cpu_compat, megatron_fixes

    megatron_fixes.install()
    derived = derive(cfg, launch.world_size, torch.cuda.is_available())
    cuda = derived.cuda
    if cuda:
        device = torch.device("cuda", cuda_device_index(launch.local_rank, torch.cuda.device_count()))
        torch.cuda.set_device(device)
    else:
        cpu_compat.install()  # also where a GPU is present but train.device=cpu
        device = torch.device("cpu")
        # Each rank of a multi-process CPU job gets its share of the cores.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, ranks_on_this_node(launch.world_size))))
    dtype = torch.bfloat16 if derived.bf16 else torch.float32

    if not dist.is_initialized():
        # A single process needs no rendezvous: an in-process store, no TCP port that another
        # process could take between choosing it and binding it.
        rendezvous = ({"store": dist.HashStore()} if launch.world_size == 1
                      else {"init_method": f"tcp://{launch.master_addr}:{launch.master_port}"})
        dist.init_process_group(
            backend="nccl" if cuda else "gloo",
            rank=launch.rank,
            world_size=launch.world_size,
            timeout=timedelta(minutes=30),
            device_id=device if cuda else None,
            **rendezvous,
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



def shutdown() -> None:
    if dist.is_initialized():
        from megatron.core import parallel_state

        parallel_state.destroy_model_parallel()
        dist.destroy_process_group()
