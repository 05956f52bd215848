"""Megatron DDP wrapping, the Adam optimizer (optionally distributed) and the LR schedule."""

from __future__ import annotations

import torch
from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads
from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

from alia_train.checkpoint.resume_rules import WSD, WSD_DECAY, wsd_decay_follows
from alia_train.config.derived import lr_schedule_steps
from alia_train.config.schema import Config, DecayStyle


def wrap_ddp(cfg: Config, chunks: list[torch.nn.Module], dtype: torch.dtype) -> list[DistributedDataParallel]:
    par = cfg.parallel
    ddp_config = DistributedDataParallelConfig(
        grad_reduce_in_fp32=not (dtype == torch.bfloat16 and par.grad_reduce_in_bf16),
        overlap_grad_reduce=par.overlap_grad_reduce,
        overlap_param_gather=par.overlap_param_gather,
        # As Megatron-LM: aligned all-gathers need the interleaved schedule, which dispatches them.
        align_param_gather=par.overlap_param_gather and par.align_param_gather and len(chunks) > 1,
        use_distributed_optimizer=par.distributed_optimizer,
        check_for_nan_in_grad=False,  # checked in the train step, with a clear message
        # None: megatron's default, max(40M, 1M x DP) parameters per bucket with overlap on.
        bucket_size=None,
    )
    tcfg = chunks[0].config
    return [
        # Only the first chunk buckets: with interleaving, Megatron-LM disables bucketing for
        # the others so their grads reduce in one go after the schedule.
        DistributedDataParallel(config=tcfg, ddp_config=ddp_config, module=c, disable_bucketing=i > 0)
        for i, c in enumerate(chunks)
    ]


def build_optimizer(cfg: Config, model: list[DistributedDataParallel], dtype: torch.dtype):
    opt = cfg.optim
    ocfg = OptimizerConfig(
        optimizer="adam",
        lr=opt.lr,
        min_lr=opt.min_lr,
        weight_decay=opt.weight_decay,
        adam_beta1=opt.adam_beta1,
        adam_beta2=opt.adam_beta2,
        adam_eps=opt.adam_eps,
        clip_grad=opt.clip_grad,
        bf16=dtype == torch.bfloat16,
        params_dtype=dtype,
        use_distributed_optimizer=cfg.parallel.distributed_optimizer,
    )
    # megatron's default groups put 1-D parameters (the RMSNorm weights) at weight decay 0.
    optimizer = get_megatron_optimizer(ocfg, model)
    if opt.fused_adam:
        use_fused_adam(optimizer)
    init_optimizer_state(optimizer)
    return optimizer, build_scheduler(cfg, optimizer)


def build_scheduler(cfg: Config, optimizer) -> LRSchedule:
    """The LR (and weight-decay) schedule of `optimizer`, in optimizer steps."""
    opt = cfg.optim
    warmup_steps, decay_steps = lr_schedule_steps(cfg)
    wsd = opt.decay_style == DecayStyle.wsd
    return LRSchedule(
        optimizer,
        init_lr=0.0,
        max_lr=opt.lr,
        min_lr=opt.min_lr,
        lr_warmup_steps=warmup_steps,
        lr_decay_steps=decay_steps,
        lr_decay_style=WSD if wsd else str(opt.decay_style),  # plain str: megatron stores it in the checkpoint
        start_wd=opt.weight_decay,
        end_wd=opt.weight_decay,
        wd_incr_steps=decay_steps,
        wd_incr_style="constant",
        # A resume keeps the checkpoint's schedule unless the config asks for its own.
        use_checkpoint_opt_param_scheduler=not opt.override_schedule,
        override_opt_param_scheduler=opt.override_schedule,
        wsd_decay_steps=opt.wsd_decay_steps if wsd else None,
        lr_wsd_decay_style=str(opt.wsd_decay_style) if wsd else None,
    )


class LRSchedule(OptimizerParamScheduler):
    """megatron's scheduler, stepped once per optimizer step (the schedule counts steps, not
    samples), plus what its state dict leaves out: a wsd decay's length and style, saved so that
    a resume continues them. A wsd run resumed in its stable phase takes this run's decay
    (resume_rules.wsd_decay_follows): more train.steps move the decay to the new end."""

    def state_dict(self) -> dict:
        return {**super().state_dict(), "wsd_decay_steps": self.wsd_decay_steps,
                "lr_wsd_decay_style": self.lr_wsd_decay_style}

    def load_state_dict(self, state_dict: dict) -> None:
        ours = {name: getattr(self, name) for name in WSD_DECAY}
        keep_ours = self.override_opt_param_scheduler or wsd_decay_follows(state_dict, self)
        if not keep_ours:  # megatron keeps the saved style and decay steps: the saved decay goes with them
            self.wsd_decay_steps = state_dict.get("wsd_decay_steps", self.wsd_decay_steps)
            self.lr_wsd_decay_style = state_dict.get("lr_wsd_decay_style", self.lr_wsd_decay_style)
        super().load_state_dict(state_dict)
        if keep_ours:
            for name, value in ours.items():
                setattr(self, name, value)
            self.step(increment=0)  # the LR of the resumed step under this run's decay


def attach_schedule_hooks(model: list[DistributedDataParallel], optimizer) -> None:
    """The hooks megatron's pipeline schedules call (as Megatron-LM's training.py sets them)."""
    config = model[0].config
    config.grad_scale_func = optimizer.scale_loss
    no_sync = [m.no_sync for m in model]
    config.no_sync_func = no_sync[0] if len(no_sync) == 1 else no_sync
    if model[0].ddp_config.overlap_grad_reduce:
        sync = [m.start_grad_sync for m in model]
        config.grad_sync_func = sync[0] if len(sync) == 1 else sync
    if model[0].ddp_config.align_param_gather:
        psync = [m.start_param_sync for m in model]
        config.param_sync_func = psync[0] if len(psync) == 1 else psync
    config.finalize_model_grads_func = finalize_model_grads


def _torch_adams(optimizer) -> list[torch.optim.Adam]:
    """The torch Adam/AdamW inside megatron's optimizer (none when it uses apex's or Transformer
    Engine's FusedAdam, which are fused already; none on a rank without parameters)."""
    inner = [getattr(o, "optimizer", None) for o in getattr(optimizer, "chained_optimizers", [optimizer])]
    return [o for o in inner if isinstance(o, torch.optim.Adam)]


@torch.no_grad()
def _make_fused(adam: torch.optim.Adam) -> None:
    """One fused kernel per step. A loaded state dict brings its own group settings (and a CPU
    `step`), so this runs again after every load_state_dict."""
    adam.defaults.update(fused=True, foreach=False)
    for group in adam.param_groups:
        group.update(fused=True, foreach=False)
        for p in group["params"]:
            state = adam.state.get(p, {})
            if "step" in state:  # fused kernels read `step` as an fp32 tensor on the param's device
                state["step"] = state["step"].to(device=p.device, dtype=torch.float32)


def use_fused_adam(optimizer) -> None:
    """megatron-core without apex / Transformer Engine falls back to torch's AdamW with its
    default implementation (foreach on GPU, a loop per parameter on CPU) and no way to ask for
    torch's fused one; switch its param groups to `fused=True` (optim.fused_adam)."""
    for adam in _torch_adams(optimizer):
        _make_fused(adam)
        adam.register_load_state_dict_post_hook(_make_fused)


@torch.no_grad()
def init_optimizer_state(optimizer) -> None:
    """Give Adam its state (step 0, zero moments) before the first step, as torch's Adam would
    at its first step.

    Without apex or Transformer Engine, megatron's distributed optimizer reads `step` from the
    torch optimizer's state to build a checkpoint's state dict, also when that dict is only the
    template for loading: resuming a run before any step of this process asserts. The values
    are exactly what the first step would create, so training is unchanged.
    """
    for megatron_opt in getattr(optimizer, "chained_optimizers", [optimizer]):
        inner = megatron_opt.optimizer
        for group in inner.param_groups:
            on_device = group.get("fused") or group.get("capturable")
            for p in group["params"]:
                state = inner.state[p]
                if state:
                    continue
                state["step"] = torch.zeros((), dtype=torch.float32, device=p.device if on_device else "cpu")
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
