"""The model lm-evaluation-harness scores: a transformers LlamaForCausalLM built in this process
from a checkpoint's tensors (no export written), on the chosen device(s).

Why in memory rather than `alia-convert to-hf` to a temporary directory and back: the export
writes the weights once and transformers reads them back, so a checkpoint costs two passes over
its weights on disk and that much temporary space (80 GB for the 40B in bf16); in memory it is
one read of the checkpoint. The logits are the same (the export is the same code:
convert/to_hf.hf_tensors). docs/evaluation.md has the measured times of both
(`alia-eval --via export` keeps the export path for comparison).

Devices: `cpu`, or `cuda` = the GPUs this process sees. A model that fits on one GPU (weights
under 85 % of its memory) goes there whole; a larger one (the 40B in bf16, 80 GB, on 64 GB
GPUs) is split by layers over all visible GPUs (accelerate's device map, as lm-eval's
`parallelize=True`): one process, the GPUs in turn.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from alia_train.eval.errors import EvalError

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}
ONE_GPU_SHARE = 0.85  # of a GPU's memory the weights may take for the model to go there whole


@dataclass
class ModelSource:
    """What a checkpoint gives: its Hugging Face config and tensors (cli/eval.py reads them
    through alia_train.convert) and its tokenizer, written as Hugging Face files on demand."""

    step: int
    config: dict  # config.json of LlamaForCausalLM
    tensors: Callable[[], Iterator[tuple[str, torch.Tensor]]]
    tokenizer_sha: str
    write_tokenizer: Callable[[Path], None]


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EvalError(f"--device {device}: this machine has no CUDA GPU torch can use; use --device cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise EvalError(f"--device {device}: expected auto, cpu, cuda or cuda:N")
    return device


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    if dtype == "auto":
        return torch.float32 if device == "cpu" else torch.bfloat16
    return DTYPES[dtype]


def weight_bytes(config: dict, dtype: torch.dtype) -> int:
    h, f, n, v = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"], config["vocab_size"]
    kv = config["num_key_value_heads"] * (h // config["num_attention_heads"])
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * f + 2 * h
    return (n * per_layer + 2 * v * h + h) * torch.tensor([], dtype=dtype).element_size()


def device_map(config: dict, dtype: torch.dtype, device: str) -> dict | str:
    """{"": device} for one device; "balanced" over the visible GPUs when one GPU is too small."""
    if device != "cuda":
        return {"": device}
    gpus = torch.cuda.device_count()
    need = weight_bytes(config, dtype)
    one = torch.cuda.get_device_properties(0).total_memory
    if need <= ONE_GPU_SHARE * one:
        return {"": "cuda:0"}
    if need > ONE_GPU_SHARE * one * gpus:
        raise EvalError(
            f"the model's weights ({need / 2**30:.0f} GiB in {str(dtype).removeprefix('torch.')}) do not fit the "
            f"{gpus} visible GPU(s) of {one / 2**30:.0f} GiB; run on a node with "
            f"{math.ceil(need / (ONE_GPU_SHARE * one))} such GPUs (scripts/slurm/eval.sh asks for the node's 4)"
        )
    return "balanced"


def build_model(source: ModelSource, dtype: torch.dtype, device: str):
    """LlamaForCausalLM with the checkpoint's weights, in eval mode, placed per device_map."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**{k: v for k, v in source.config.items() if k not in ("torch_dtype", "dtype")})
    state = {name: tensor.to(dtype) for name, tensor in source.tensors()}
    model = LlamaForCausalLM.from_pretrained(
        None, config=config, state_dict=state, dtype=dtype, device_map=device_map(source.config, dtype, device)
    )
    del state
    return model.eval()


def model_from_dir(path: Path, config: dict, dtype: torch.dtype, device: str):
    """The same model from an exported directory (`--via export`)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, device_map=device_map(config, dtype, device))
    return model.eval()


def tokenizer(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def harness_model(model, tok, batch_size: int | str, max_batch_size: int, progress: bool):
    """lm-eval's HFLM around the model already placed (device taken from the model); its
    progress bars only when asked for (lm-eval's evaluator has no switch for them)."""
    from lm_eval.models.huggingface import HFLM

    class _HFLM(HFLM):
        def loglikelihood(self, requests, disable_tqdm: bool = False):
            return super().loglikelihood(requests, disable_tqdm=disable_tqdm or not progress)

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            return super().loglikelihood_rolling(requests, disable_tqdm=disable_tqdm or not progress)

        def generate_until(self, requests, disable_tqdm: bool = False):
            return super().generate_until(requests, disable_tqdm=disable_tqdm or not progress)

    return _HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size, max_batch_size=max_batch_size)
