"""Hugging Face LlamaForCausalLM directory -> alia-train checkpoint to start training from.

Everything is checked before anything is written: architecture and shapes against the model
config (+model=NAME plus overrides), the tokenizer's vocabulary against the embedding, every
safetensors shard and tensor. The checkpoint is then written tensor chunk by tensor chunk
(see dist_writer), so memory stays at about one tensor.

Output, usable as `alia-train +model=NAME checkpoint.load=OUT_DIR`:

    OUT_DIR/
        config.yaml                  the resolved config the checkpoint was made for
        tokenizer.model              the model's SentencePiece tokenizer
        checkpoints/step_00000000/   model weights only (no optimizer, no scheduler: a
        checkpoints/latest           training run loads the weights and starts fresh)

The checkpoint's global tensors are layout-independent; only the vocabulary padding follows
`parallel.tp`, and megatron reloads the embedding under any other padding as well.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from alia_train.checkpoint import directory
from alia_train.config.load import load_config, to_yaml
from alia_train.config.schema import Config, ModelConfig
from alia_train.convert import mapping as mp
from alia_train.convert.errors import ConversionError
from alia_train.convert.hf_config import arch_of, check_llama_config, read_hf_config
from alia_train.convert.safetensors_io import SafetensorsCheckpoint
from alia_train.convert.staging import check_output_dir, staged_output
from alia_train.convert.tokenizer import load_proto
from alia_train.data.tokenizer import file_sha256
from alia_train.model.params import padded_vocab_size

if TYPE_CHECKING:
    from alia_train.convert.dist_writer import TensorSpec
# dist_reader / dist_writer import torch.distributed.checkpoint (~1 s): only once the input is
# checked, so that a refused import is said that much sooner.

# Buffers some exporters include; they are recomputed, never loaded.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


@dataclass
class ImportResult:
    out_dir: Path
    checkpoint: Path
    dtype: torch.dtype


def check_hf_tensors(st: SafetensorsCheckpoint, a: mp.Arch) -> None:
    expected = mp.hf_shapes(a)
    present = set(st.names())
    problems = []
    missing = [n for n in expected if n not in present]
    if missing:
        hint = " (tied embeddings are not supported)" if missing == [mp.HF_LM_HEAD] else ""
        problems.append(f"missing tensors {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}{hint}")
    wrong = [f"{n} is {st.shape(n)}, expected {s}" for n, s in expected.items() if n in present and st.shape(n) != s]
    problems += wrong[:6]
    unexpected = sorted(n for n in present - set(expected) if not n.endswith(_IGNORED_SUFFIXES))
    if unexpected:
        problems.append(f"unexpected tensors {', '.join(unexpected[:6])}{' ...' if len(unexpected) > 6 else ''}")
    if problems:
        raise ConversionError(f"{st.directory}: weights do not match the model config: " + "; ".join(problems))


def _layer_specs(st: SafetensorsCheckpoint, a: mp.Arch, dtype: torch.dtype) -> list[TensorSpec]:
    """The layer-stacked megatron tensors, one chunk per layer (two for fc1: gate, up)."""
    from alia_train.convert.dist_writer import Chunk, TensorSpec

    L = a.num_layers
    shapes = a.megatron_layer_shapes()
    specs = {key: TensorSpec(key, (L, *shape), dtype) for key, shape in shapes.items()}

    def one(name: str) -> Callable[[], torch.Tensor]:
        return lambda: st.get(name).unsqueeze(0)

    for layer in range(L):
        n = mp.hf_layer_names(layer)

        def qkv(n=n) -> torch.Tensor:
            return mp.fuse_qkv(st.get(n["q"]), st.get(n["k"]), st.get(n["v"]), a).unsqueeze(0)

        simple = {
            mp.QKV_NORM: n["input_layernorm"], mp.PROJ: n["o"],
            mp.FC1_NORM: n["post_attention_layernorm"], mp.FC2: n["down"],
        }
        for key, name in simple.items():
            specs[key].chunks.append(Chunk((layer,) + (0,) * len(shapes[key]), (1, *shapes[key]), one(name)))
        specs[mp.QKV].chunks.append(Chunk((layer, 0, 0), (1, *shapes[mp.QKV]), qkv))
        # [gate; up] as two chunks, as megatron itself stores the SwiGLU weight.
        f, h = a.ffn_hidden_size, a.hidden_size
        specs[mp.FC1].chunks.append(Chunk((layer, 0, 0), (1, f, h), one(n["gate"])))
        specs[mp.FC1].chunks.append(Chunk((layer, f, 0), (1, f, h), one(n["up"])))
    return list(specs.values())


def _vocab_spec(
    key: str, name: str, st: SafetensorsCheckpoint, a: mp.Arch, padded: int, dtype: torch.dtype
) -> TensorSpec:
    from alia_train.convert.dist_writer import Chunk, TensorSpec

    spec = TensorSpec(key, (padded, a.hidden_size), dtype)
    spec.chunks.append(Chunk((0, 0), (a.vocab_size, a.hidden_size), lambda: st.get(name)))
    if padded > a.vocab_size:  # padding rows: never used by the tokenizer
        rows = padded - a.vocab_size
        spec.chunks.append(Chunk((a.vocab_size, 0), (rows, a.hidden_size), lambda: torch.zeros(rows, a.hidden_size)))
    return spec


def tensor_specs(st: SafetensorsCheckpoint, a: mp.Arch, padded_vocab: int, dtype: torch.dtype) -> list[TensorSpec]:
    from alia_train.convert.dist_writer import Chunk, TensorSpec

    return [
        _vocab_spec(mp.EMBEDDING, mp.HF_EMBED, st, a, padded_vocab, dtype),
        *_layer_specs(st, a, dtype),
        TensorSpec(mp.FINAL_NORM, (a.hidden_size,), dtype, [Chunk((0,), (a.hidden_size,), lambda: st.get(mp.HF_NORM))]),
        _vocab_spec(mp.OUTPUT, mp.HF_LM_HEAD, st, a, padded_vocab, dtype),
    ]


def _checkpoint_dtype(st: SafetensorsCheckpoint, requested: torch.dtype | None) -> torch.dtype:
    if requested is not None:
        return requested
    found = {st.dtype(n) for n in st.names() if not n.endswith(_IGNORED_SUFFIXES)}
    # Keep the source precision (so exporting again gives back the same bits); mixed -> fp32.
    return found.pop() if len(found) == 1 else torch.float32


def common_state(cfg: Config, tokenizer_path: Path, tokenizer_sha: str, vocab: int, source: Path) -> dict:
    par = cfg.parallel
    return {
        # No "scheduler" / optimizer state: alia-train loads the model only and starts at step 0.
        "progress": {"step": 0, "consumed_samples": 0, "consumed_tokens": 0},
        "config_yaml": to_yaml(cfg),
        # Every model field: a superset of the manager's ARCHITECTURE_FIELDS (it compares only
        # those), without importing megatron here.
        "model_config": {f.name: getattr(cfg.model, f.name) for f in fields(ModelConfig)},
        "tokenizer": {"path": str(tokenizer_path), "sha256": tokenizer_sha, "vocab_size": vocab},
        "layout": {"world_size": par.tp * par.pp * par.cp, "tp": par.tp, "pp": par.pp, "dp": 1},
        "source": {"format": "huggingface", "path": str(source)},
    }


def extra_state_objects(num_layers: int) -> dict[str, None]:
    from alia_train.convert.dist_writer import object_key

    return {
        object_key(f"{module}._extra_state", (layer,), (num_layers,)): None
        for module in mp.EXTRA_STATE_MODULES
        for layer in range(num_layers)
    }


def import_from_hf(
    hf_dir: str | Path,
    out_dir: str | Path,
    overrides: list[str],
    *,
    dtype: torch.dtype | None = None,
    tokenizer: str | Path | None = None,
    log: Callable[[str], None] = print,
    config_dirs: Sequence[str] = (),
) -> ImportResult:
    final = check_output_dir(out_dir)
    hf_dir = Path(hf_dir).absolute()
    if not hf_dir.is_dir():
        raise ConversionError(f"{hf_dir}: no such directory")
    cfg = load_config(overrides, config_dirs)  # config_dirs: the CLI's --config-dir
    # The recorded config describes OUT_DIR as it will be: a run dir with its own tokenizer.
    cfg.run.dir = str(final)
    cfg.data.tokenizer = str(final / "tokenizer.model")
    hf = read_hf_config(hf_dir)
    vocab = check_llama_config(hf, cfg.model)

    tok_src = Path(tokenizer).absolute() if tokenizer else hf_dir / "tokenizer.model"
    if not tok_src.is_file():
        raise ConversionError(
            f"{tok_src}: no SentencePiece tokenizer.model (alia-train trains with one); pass --tokenizer PATH"
        )
    pieces = len(load_proto(tok_src.read_bytes()).pieces)
    if pieces != vocab:
        raise ConversionError(
            f"vocabulary mismatch: the tokenizer {tok_src} has {pieces} pieces but config.json has vocab_size {vocab}"
        )
    a = arch_of(cfg.model, vocab)
    st = SafetensorsCheckpoint(hf_dir)
    check_hf_tensors(st, a)
    out_dtype = _checkpoint_dtype(st, dtype)
    padded = padded_vocab_size(vocab, cfg.model.make_vocab_size_divisible_by, cfg.parallel.tp)
    log(f"importing {hf_dir} ({a.num_layers} layers, vocab {vocab} padded to {padded}) into {final} as {out_dtype}")

    from alia_train.convert.dist_reader import COMMON_STATE_KEY
    from alia_train.convert.dist_writer import write_dist_checkpoint

    with staged_output(final) as stage:
        shutil.copyfile(tok_src, stage / "tokenizer.model")
        (stage / "config.yaml").write_text(to_yaml(cfg))
        target = directory.partial_dir(stage, 0)
        target.mkdir(parents=True)
        objects = {
            COMMON_STATE_KEY: common_state(cfg, final / "tokenizer.model", file_sha256(tok_src), vocab, hf_dir),
            **extra_state_objects(a.num_layers),
        }
        write_dist_checkpoint(target, tensor_specs(st, a, padded, out_dtype), objects)
        directory.publish(stage, 0, {"source": str(hf_dir)})
    ckpt = final / "checkpoints" / directory.step_dir_name(0)
    log(f"wrote {ckpt}; train from it with: alia-train {' '.join(overrides)} checkpoint.load={final} "
        f"data.tokenizer={final / 'tokenizer.model'}")
    return ImportResult(final, ckpt, out_dtype)

