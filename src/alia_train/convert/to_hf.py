"""alia-train checkpoint (any layout) -> Hugging Face LlamaForCausalLM directory.

Streams: each megatron tensor is read (one layer at a time), cut into its Hugging Face pieces
and appended to a safetensors shard whose header was written up front; peak memory is about
one layer's largest tensor, whatever the model size.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from alia_train.checkpoint import directory
from alia_train.convert import mapping as mp
from alia_train.convert.errors import ConversionError
from alia_train.convert.hf_config import arch_of, generation_config, llama_config, model_config_from_yaml, write_json
from alia_train.convert.safetensors_io import Entry, ShardWriter, plan_shards, shard_names, write_index
from alia_train.convert.staging import check_output_dir, staged_output
from alia_train.convert.tokenizer import check_tokenizer_file, write_hf_tokenizer

if TYPE_CHECKING:
    from alia_train.convert.dist_reader import DistCheckpointReader
# dist_reader imports torch.distributed.checkpoint (~1 s): only once the checkpoint's files are
# verified, so that a damaged one is refused that much sooner.

DEFAULT_SHARD_BYTES = 5 * 2**30


@dataclass
class ExportResult:
    out_dir: Path
    checkpoint: Path
    step: int
    num_shards: int


def verify_checksums(path: Path) -> str | None:
    """directory.verify with every file's CRC-32, as alia-train checks before it loads: a file
    overwritten at the same size passes the size check alone. Threads split the files the way
    ranks do (zlib and reads release the GIL): about one read of the checkpoint, at disk speed."""
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        found = pool.map(lambda i: directory.verify(path, deep=(i, workers)), range(workers))
        return next((p for p in found if p), None)


def resolve_checkpoint(source: str | Path, log: Callable[[str], None]) -> Path:
    """A checkpoint dir as given, or the newest undamaged one of a run dir."""
    try:
        candidates = directory.load_candidates(str(source))
    except FileNotFoundError:
        raise ConversionError(
            f"{source}: no checkpoint found (expected a run dir with checkpoints/ or a checkpoint dir)"
        ) from None
    skipped = []
    for path in candidates:
        problem = verify_checksums(path) if (path / directory.COMPLETE).exists() else None
        if problem is None:
            if not (path / ".metadata").is_file():
                problem = "not a torch_dist checkpoint (no .metadata)"
        if problem is None:
            for p, why in skipped:
                log(f"WARNING: skipping damaged checkpoint {p}: {why}")
            return path
        skipped.append((path, problem))
    raise ConversionError("no usable checkpoint: " + "; ".join(f"{p}: {why}" for p, why in skipped))


def check_checkpoint_tensors(reader: DistCheckpointReader, a: mp.Arch) -> None:
    missing = [k for k in (mp.EMBEDDING, mp.OUTPUT, mp.FINAL_NORM, *mp.LAYER_KEYS) if not reader.has_tensor(k)]
    if missing:
        raise ConversionError(
            f"{reader.path}: not a checkpoint of an alia-train GPT model (no {', '.join(missing)}); "
            "tied or pipeline-incomplete checkpoints are not supported"
        )
    problems = []
    for key, shape in a.megatron_layer_shapes().items():
        want = (a.num_layers, *shape)
        if reader.shape(key) != want:
            problems.append(f"{key} is {reader.shape(key)}, expected {want}")
    for key in (mp.EMBEDDING, mp.OUTPUT):
        rows, cols = reader.shape(key)
        if rows < a.vocab_size or cols != a.hidden_size:
            problems.append(f"{key} is {(rows, cols)}, expected ({a.vocab_size}+ padding, {a.hidden_size})")
    if reader.shape(mp.FINAL_NORM) != (a.hidden_size,):
        problems.append(f"{mp.FINAL_NORM} is {reader.shape(mp.FINAL_NORM)}, expected ({a.hidden_size},)")
    if problems:
        raise ConversionError(f"{reader.path}: tensors do not match the recorded model config: " + "; ".join(problems))


def hf_tensors(reader: DistCheckpointReader, a: mp.Arch) -> Iterator[tuple[str, torch.Tensor]]:
    """Hugging Face tensors in `mapping.hf_shapes` order, one megatron read at a time."""
    yield mp.HF_EMBED, reader.read_rows(mp.EMBEDDING, a.vocab_size)  # padding rows dropped
    for layer in range(a.num_layers):
        n = mp.hf_layer_names(layer)
        yield n["input_layernorm"], reader.read_layer(mp.QKV_NORM, layer)
        q, k, v = mp.split_qkv(reader.read_layer(mp.QKV, layer), a)
        yield n["q"], q
        yield n["k"], k
        yield n["v"], v
        yield n["o"], reader.read_layer(mp.PROJ, layer)
        yield n["post_attention_layernorm"], reader.read_layer(mp.FC1_NORM, layer)
        gate, up = mp.split_fc1(reader.read_layer(mp.FC1, layer), a)
        yield n["gate"], gate
        yield n["up"], up
        yield n["down"], reader.read_layer(mp.FC2, layer)
    yield mp.HF_NORM, reader.read_rows(mp.FINAL_NORM, a.hidden_size)
    yield mp.HF_LM_HEAD, reader.read_rows(mp.OUTPUT, a.vocab_size)


def _write_weights(
    stage: Path, reader: DistCheckpointReader, a: mp.Arch, dtype: torch.dtype, max_shard_bytes: int
) -> int:
    entries = [Entry(name, shape, dtype) for name, shape in mp.hf_shapes(a).items()]
    shards = plan_shards(entries, max_shard_bytes)
    names = shard_names(len(shards))
    stream = hf_tensors(reader, a)
    for shard, fname in zip(shards, names):
        writer = ShardWriter(stage / fname, shard)
        try:
            for _ in shard:
                name, tensor = next(stream)
                writer.write(name, tensor.to(dtype))
        except BaseException:
            writer.abort()
            raise
        writer.close()
    write_index(stage, shards, names)
    return len(shards)


def export_to_hf(
    source: str | Path,
    out_dir: str | Path,
    *,
    dtype: torch.dtype = torch.bfloat16,
    tokenizer: str | Path | None = None,
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
    log: Callable[[str], None] = print,
) -> ExportResult:
    final = check_output_dir(out_dir)  # fail before reading anything
    ckpt = resolve_checkpoint(source, log)
    from alia_train.convert.dist_reader import DistCheckpointReader

    reader = DistCheckpointReader(ckpt)
    common = reader.common_state()
    for key in ("config_yaml", "model_config", "tokenizer"):
        if key not in common:
            raise ConversionError(f"{ckpt}: the checkpoint's common state has no '{key}' (not written by alia-train)")
    m = model_config_from_yaml(common["config_yaml"])
    recorded = common["model_config"]
    diffs = [f for f, v in recorded.items() if hasattr(m, f) and v != getattr(m, f)]
    if diffs:
        raise ConversionError(f"{ckpt}: config_yaml and model_config disagree on {', '.join(diffs)}")
    tok = common["tokenizer"]
    vocab = tok.get("vocab_size")
    if not isinstance(vocab, int):
        raise ConversionError(f"{ckpt}: the checkpoint does not record its tokenizer's vocabulary size")
    a = arch_of(m, vocab)
    check_checkpoint_tensors(reader, a)
    tok_bytes = check_tokenizer_file(tokenizer or tok.get("path") or "", tok.get("sha256"), vocab)
    step = int(common.get("progress", {}).get("step", 0))
    log(f"exporting {ckpt} (step {step}, {m.num_layers} layers, vocab {vocab}) to {out_dir} as {dtype}")

    with staged_output(out_dir) as stage:
        special = write_hf_tokenizer(tok_bytes, stage, m.max_position_embeddings)
        write_json(stage / "config.json", llama_config(m, vocab, special, dtype))
        write_json(stage / "generation_config.json", generation_config(special))
        num_shards = _write_weights(stage, reader, a, dtype, max_shard_bytes)
    log(f"wrote {final} ({num_shards} safetensors shard(s))")
    return ExportResult(final, ckpt, step, num_shards)
