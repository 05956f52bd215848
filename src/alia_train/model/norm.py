"""RMSNorm for megatron's local (non-Transformer-Engine) layer spec.

megatron-core's own local norm (`WrappedTorchNorm`) is a bare `torch.nn.RMSNorm`: its weight is
created in fp32 whatever the model's dtype (torch then falls back to the unfused kernel in a
bf16 model, and keeps an fp32 copy of every normalised activation), and it refuses sequence
parallelism. This one:

* creates its weight in `config.params_dtype`, so a bf16 model normalises in one fused call;
* under sequence parallelism, marks the weight `sequence_parallel` exactly as megatron marks
  its own norms: each tensor-parallel rank then sees only its slice of the sequence, and
  megatron's `finalize_model_grads` all-reduces the weight's gradient over the TP group.

It follows megatron's `LayerNormBuilder` protocol (`config=, hidden_size=, eps=`), so it is
given to `TransformerLayerSubmodules` (both norms of every layer) and to
`TransformerBlockSubmodules.layer_norm` (the block's final norm) by name, and nothing depends
on whether apex or Transformer Engine happen to be importable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from megatron.core.transformer import TransformerConfig


class RMSNorm(torch.nn.Module):
    def __init__(self, config: TransformerConfig, hidden_size: int, eps: float = 1e-5, **_unused):
        super().__init__()
        if config.normalization != "RMSNorm":
            raise ValueError(f"alia_train RMSNorm built for normalization={config.normalization!r}")
        self.eps = eps
        self.hidden_size = hidden_size
        device = "cpu" if config.use_cpu_initialization else torch.cuda.current_device()
        self.weight = torch.nn.Parameter(torch.ones(hidden_size, dtype=config.params_dtype, device=device))
        # Read by megatron's finalize_model_grads (`_allreduce_non_tensor_model_parallel_grads`).
        self.weight.sequence_parallel = config.sequence_parallel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (self.hidden_size,), self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.hidden_size}, eps={self.eps}, dtype={self.weight.dtype}"
