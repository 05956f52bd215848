"""Fixes for megatron-core bugs that alia-train hits on every machine (GPU or CPU).

Each fix names the bug, the versions it was seen in, and is as small as the bug allows. They
are installed once per process by `start_process_groups` (parallel/runtime.py) and are independent of CUDA (what adapts
megatron-core to machines without CUDA is `cpu_compat.py`, not this module).

* Distributed optimizer resume without apex / Transformer Engine (megatron-core 0.19.2):
  `DistributedOptimizer.load_parameter_state_from_fully_reshardable` skips torch Adam's "step"
  entry of the saved state ("handled separately"), but `_set_main_param_and_optimizer_states`
  then looks that key up in what was loaded and raises KeyError('step'): every resume of a run
  with `parallel.distributed_optimizer=true` and torch's Adam fails. Keys the checkpoint does
  not carry are now left as the optimizer's own `load_state_dict` set them.
  The per-rank form (`load_parameter_state_from_dp_reshardable`) does carry a "step" entry, but
  as a LocalNonpersistentObject: on load it is this process's step from before the load, and
  copying it back undid the step that `load_state_dict` had just restored from the param
  groups (Adam's bias correction restarted: a resume was no longer exact). "step" is now never
  taken from the per-parameter tensors; the param groups carry it.
* Same path, same versions: `DistributedOptimizer.load_state_dict` gives every parameter's
  state one shared "step" tensor; torch's Adam increments each parameter's step in place, so
  after a resume the step count (and Adam's bias correction) advances once per parameter per
  iteration. Each parameter now gets its own copy.
* Grad norm without apex / Transformer Engine (megatron-core 0.19.2, a cost rather than a
  wrong result): the fallback `utils.local_multi_tensor_l2_norm` that `clip_grads` then uses
  builds `torch.tensor(list of per-tensor norms)`, one device-to-host copy (a sync on a GPU)
  per gradient tensor, every step. Replaced by one `torch._foreach_norm` and a norm of the
  stacked results, on the device: the same value (each tensor's norm in its own dtype, as
  megatron's) and no sync of its own. With apex or TE installed megatron uses their kernel and
  this leaves it alone.
"""

from __future__ import annotations

import functools

import torch

_installed = False


class _MissingAsNone(dict):
    """A state dict whose absent keys read as None (megatron skips non-tensor entries)."""

    def __missing__(self, key):
        return None


def _fix_distopt_step_on_load() -> None:
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    original = DistributedOptimizer._set_main_param_and_optimizer_states

    @functools.wraps(original)
    def set_states(self, model_param, tensors):
        return original(self, model_param, _MissingAsNone({k: v for k, v in tensors.items() if k != "step"}))

    DistributedOptimizer._set_main_param_and_optimizer_states = set_states


def _fix_distopt_shared_step() -> None:
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    original = DistributedOptimizer.load_state_dict

    @functools.wraps(original)
    def load_state_dict(self, state_dict):
        result = original(self, state_dict)
        for state in self.optimizer.state.values():
            if "step" in state:
                state["step"] = state["step"].clone()
        return result

    DistributedOptimizer.load_state_dict = load_state_dict


def _foreach_l2_norm(chunk_size, noop_flag, tensor_lists, per_tensor, *args):
    """megatron's `local_multi_tensor_l2_norm` (same arguments and result: the norm of all
    tensors as a [1] fp32 tensor, and None) without a host sync."""
    tensors = [t for tensor_list in tensor_lists for t in tensor_list]
    norms = torch._foreach_norm(tensors)
    total = torch.linalg.vector_norm(torch.stack(norms).float())
    return total.reshape(1), None


def _fix_grad_norm_fallback() -> None:
    from megatron.core import utils
    from megatron.core.optimizer import clip_grads

    if clip_grads.l2_norm_impl is utils.local_multi_tensor_l2_norm:
        clip_grads.l2_norm_impl = _foreach_l2_norm


def install() -> None:
    global _installed
    if _installed:
        return
    _fix_distopt_step_on_load()
    _fix_distopt_shared_step()
    _fix_grad_norm_fallback()
    _installed = True
