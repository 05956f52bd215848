"""One rank of a job: its device, precision and derived sizes (resolved once), then its
process groups and seeds.

    rt = resolve_runtime(cfg, launch)   # what runs where; starts nothing
    start_process_groups(cfg, rt)       # torch.distributed, megatron's groups, seeds
    ...
    shutdown()

Both are called by the run start-up (training/startup.py and training/run.py), never by a
caller of its own: everything downstream reads `rt`, not torch.cuda or the config's "auto".
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from alia_train.config.derived import Derived, derive
from alia_train.config.schema import Config, Device
from alia_train.parallel.launch_env import LaunchEnv, cuda_device_index, ranks_on_this_node


@dataclass(frozen=True)
class Runtime:
    launch: LaunchEnv
    derived: Derived  # sizes, and train.device / train.precision resolved
    device: torch.device
    dtype: torch.dtype
    gpu_visible: bool  # this process sees a CUDA GPU (whether or not the run uses it)

    @property
    def cuda(self) -> bool:
        return self.derived.cuda


def resolve_runtime(cfg: Config, launch: LaunchEnv) -> Runtime:
    """The device train.device names (auto: the GPU when there is one) and the precision
    train.precision resolves to there. The one place that asks torch whether there is a GPU."""
    if cfg.train.device == Device.cpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # no CUDA context, even beside a GPU
    gpu_visible = torch.cuda.is_available()
    derived = derive(cfg, launch.world_size, gpu_visible)
    if derived.cuda and gpu_visible:
        device = torch.device("cuda", cuda_device_index(launch.local_rank, torch.cuda.device_count()))
    else:
        device = torch.device("cpu")
    dtype = torch.bfloat16 if derived.bf16 else torch.float32
    return Runtime(launch=launch, derived=derived, device=device, dtype=dtype, gpu_visible=gpu_visible)


def start_process_groups(cfg: Config, rt: Runtime) -> None:
    """torch.distributed (NCCL on GPU, gloo on CPU), megatron's parallel groups and seeds."""
    from alia_train.parallel import cpu_compat, megatron_fixes

    megatron_fixes.install()
    launch = rt.launch
    if rt.cuda:
        torch.cuda.set_device(rt.device)
    else:
        cpu_compat.install()  # also where a GPU is present but train.device=cpu
        # Each rank of a multi-process CPU job gets its share of the cores.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, ranks_on_this_node(launch.world_size))))

    if not dist.is_initialized():
        # A single process needs no rendezvous: an in-process store, no TCP port that another
        # process could take between choosing it and binding it.
        rendezvous = ({"store": dist.HashStore()} if launch.world_size == 1
                      else {"init_method": f"tcp://{launch.master_addr}:{launch.master_port}"})
        dist.init_process_group(
            backend="nccl" if rt.cuda else "gloo",
            rank=launch.rank,
            world_size=launch.world_size,
            timeout=timedelta(minutes=30),
            device_id=rt.device if rt.cuda else None,
            **rendezvous,
        )
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

    par = cfg.parallel
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=par.tp,
        pipeline_model_parallel_size=par.pp,
        virtual_pipeline_model_parallel_size=rt.derived.virtual_pipeline_size,
        context_parallel_size=par.cp,
    )
    torch.manual_seed(cfg.train.seed)
    model_parallel_cuda_manual_seed(cfg.train.seed)


def shutdown() -> None:
    if dist.is_initialized():
        from megatron.core import parallel_state

        parallel_state.destroy_model_parallel()
        dist.destroy_process_group()
