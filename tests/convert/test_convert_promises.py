"""What docs/huggingface.md promises about failures, checked from outside (issue #24): each case
runs the real `alia-convert` (or `alia-train`) console script in a subprocess on real files, and
checks the exit code, that the error is exactly one line `alia-<tool>: error: ...` with no
traceback, that nothing is left under OUT_DIR (nor its `.partial-<pid>`), and that the input is
byte for byte as it was. The promises the other outside tests (test_to_hf.py's overwritten
checkpoint, tests/cli/test_doc_promises.py's damaged newest checkpoint and Ctrl-C) did not reach:

* to-hf of a checkpoint with a file removed or truncated: refused naming the file (Export);
* to-hf with a tokenizer that is not the trained one (sha256), or whose recorded path is gone:
  refused, naming `--tokenizer` (the OUT_DIR table, `tokenizer.model`);
* from-hf of a directory that does not match the model config: every config difference (shapes,
  head dim, eps, RoPE theta and scaling, max positions, biases, tied embeddings, activation) at
  once; another architecture; tensors missing, of the wrong shape and unexpected, at once; a
  shard missing or truncated; a tokenizer of another vocabulary; no tokenizer (Import);
* an existing non-empty OUT_DIR, both directions: refused, its files untouched (Both directions);
* without the [hf] extra, and mistakes in the command line: one line, exit 2 (the page's first
  paragraph, "Errors the user can fix");
* docs/configuration.md, "Layer implementation": a checkpoint written by alia-train that lacks
  its `_extra_state` entries resumes; one that lacks a real tensor is refused in one line naming
  the layer_impl it was written with, the checkpoint, config.yaml and metrics.jsonl untouched.
  Transformer Engine is not installed here: the TE side of a local <-> TE load is this
  difference between what a model asks for and what the checkpoint holds, not a TE model.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import cli, subprocess_env
from helpers import train_losses

TRAINED_STEP = 3  # the layout runs' last (and only) checkpoint


def _run(prog: str, *argv, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([cli(prog), *map(str, argv)], capture_output=True, text=True, timeout=300,
                          env=subprocess_env(**env))


def _refused(proc: subprocess.CompletedProcess, *expected: str, prog: str = "alia-convert") -> str:
    """The one error line of a refused command (exit 2, no traceback), holding each `expected`."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    shown = proc.stdout[-2000:] + proc.stderr[-4000:]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr + proc.stdout, shown
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), shown
    for text in expected:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    return lines[0]


def _digest(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def _nothing_left(out: Path) -> None:
    assert not out.exists(), sorted(out.rglob("*"))
    assert not list(out.parent.glob(out.name + ".partial-*"))


@pytest.fixture(scope="module")
def other_tokenizer(tmp_path_factory, sample_tokenizer) -> Path:
    """A SentencePiece model that is not the sample one: its last 96 pieces dropped (4000)."""
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(sample_tokenizer.read_bytes())
    del proto.pieces[-96:]
    path = tmp_path_factory.mktemp("other_tokenizer") / "other.model"
    path.write_bytes(proto.SerializeToString())
    return path


# ------------------------------------------------------------------------------------------
# to-hf


def _remove(path: Path) -> str:
    path.unlink()
    return f"file {path.name} is missing"


def _truncate(path: Path) -> str:
    size = path.stat().st_size
    os.truncate(path, size // 2)
    return f"file {path.name} has {size // 2} bytes, expected {size}"


@pytest.mark.multiproc
@pytest.mark.parametrize("damage", [_remove, _truncate], ids=["removed", "truncated"])
def test_to_hf_refuses_a_checkpoint_with_a_file_removed_or_truncated(layouts, tmp_path, damage):
    """Export: "A checkpoint given by path whose files do not match (one removed, truncated, or
    overwritten at the same size) is refused in one line naming the file, and nothing is
    written". A weight file of a trained (DP=2) checkpoint; the checkpoint is left as it is
    (not set aside, nothing added)."""
    ckpt = tmp_path / "ckpt"
    shutil.copytree(layouts / "tp1" / "checkpoints" / f"step_{TRAINED_STEP:08d}", ckpt)
    shards = sorted(ckpt.glob("*.distcp"))
    assert len(shards) == 2  # one per data-parallel rank
    said = damage(shards[-1])
    before = _digest(ckpt)
    proc = _run("alia-convert", "to-hf", ckpt, tmp_path / "hf")
    _refused(proc, str(ckpt), said)
    _nothing_left(tmp_path / "hf")
    assert _digest(ckpt) == before


@pytest.fixture(scope="module")
def moved_tokenizer(tmp_path_factory, hf_source) -> dict:
    """A from-hf checkpoint whose recorded tokenizer (OUT_DIR/tokenizer.model) was moved away."""
    from alia_train.convert.from_hf import import_from_hf

    root = tmp_path_factory.mktemp("moved_tokenizer")
    import_from_hf(hf_source, root / "ckpt", ["+model=tiny"], log=lambda *_: None)
    recorded = root / "ckpt" / "tokenizer.model"
    recorded.rename(root / "moved.model")
    return {"ckpt": root / "ckpt", "recorded": recorded}


@pytest.mark.parametrize("given", ["none", "other"])
def test_to_hf_refuses_a_tokenizer_that_is_gone_or_not_the_trained_one(moved_tokenizer, other_tokenizer,
                                                                      tmp_path, given):
    """The OUT_DIR table: tokenizer.model is the model the checkpoint was trained with, "its
    sha256 is verified; `--tokenizer` if it moved". Its recorded path gone and no --tokenizer,
    or --tokenizer of another model: one line naming --tokenizer, nothing written."""
    ckpt, out = moved_tokenizer["ckpt"], tmp_path / "hf"
    before = _digest(ckpt)
    if given == "none":
        proc = _run("alia-convert", "to-hf", ckpt, out)
        _refused(proc, f"tokenizer {moved_tokenizer['recorded']}: no such file", "pass --tokenizer PATH")
    else:
        proc = _run("alia-convert", "to-hf", ckpt, out, "--tokenizer", other_tokenizer)
        _refused(proc, f"tokenizer {other_tokenizer}: sha256 differs", "--tokenizer PATH")
    _nothing_left(out)
    assert _digest(ckpt) == before


# ------------------------------------------------------------------------------------------
# from-hf


def _edit_config(hf: Path, **changes) -> None:
    cfg = json.loads((hf / "config.json").read_text())
    (hf / "config.json").write_text(json.dumps({**cfg, **changes}))


def _edit_tensors(hf: Path, drop: str, cut: str, add: str) -> None:
    """In the shards transformers wrote: `drop` removed, `cut` one row short, `add` (a bias)
    added next to its weight; the index says so."""
    import torch
    from safetensors.torch import load_file, save_file

    index = json.loads((hf / "model.safetensors.index.json").read_text())
    where = index["weight_map"]
    home = {drop: where.pop(drop), cut: where[cut], add: where[add.replace(".bias", ".weight")]}
    where[add] = home[add]
    for fname in set(home.values()):
        tensors = load_file(str(hf / fname))
        tensors.pop(drop, None)
        if cut in tensors:
            tensors[cut] = tensors[cut][:-1].clone()
        if home[add] == fname:
            tensors[add] = torch.zeros(tensors[add.replace(".bias", ".weight")].shape[0], dtype=torch.bfloat16)
        save_file(tensors, str(hf / fname), metadata={"format": "pt"})
    (hf / "model.safetensors.index.json").write_text(json.dumps(index))


def _shard(hf: Path, i: int) -> Path:
    return sorted(hf.glob("model-*-of-*.safetensors"))[i]


LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 128}


def _config(hf, _other):
    _edit_config(hf, hidden_size=256, intermediate_size=384, num_hidden_layers=5, num_attention_heads=8,
                 num_key_value_heads=4, head_dim=48, rms_norm_eps=1e-6, rope_theta=500000.0, rope_scaling=LLAMA3,
                 max_position_embeddings=4096, attention_bias=True, mlp_bias=True, tie_word_embeddings=True,
                 hidden_act="gelu")
    return [], ["hidden_size is 256 but model.hidden_size is 128", "intermediate_size is 384 but model.ffn_hidden_size",
                "num_hidden_layers is 5 but model.num_layers is 4", "num_attention_heads is 8 but",
                "num_key_value_heads is 4 but model.num_query_groups is 2", "head_dim is 48",
                "rms_norm_eps is 1e-06 but model.norm_eps is 1e-05", "rope_theta is 500000.0 but",
                "rope scaling 'llama3' is not supported", "max_position_embeddings is 4096 but",
                "attention_bias is True", "mlp_bias is True", "tie_word_embeddings is True", "hidden_act is gelu",
                "choose the matching +model=NAME"]


def _architecture(hf, _other):
    _edit_config(hf, model_type="mistral", architectures=["MistralForCausalLM"])
    return [], ["MistralForCausalLM", "only LlamaForCausalLM"]


def _tensors(hf, _other):
    drop, cut = "model.layers.2.self_attn.k_proj.weight", "model.layers.1.mlp.up_proj.weight"
    _edit_tensors(hf, drop, cut, "model.layers.0.self_attn.q_proj.bias")
    return [], [f"missing tensors {drop}", f"{cut} is (351, 128), expected (352, 128)",
                "unexpected tensors model.layers.0.self_attn.q_proj.bias"]


def _missing_shard(hf, _other):
    shard = _shard(hf, 1)
    shard.unlink()
    return [], [f"missing safetensors shard(s): {shard.name}"]


def _truncated_shard(hf, _other):  # an interrupted download
    shard = _shard(hf, 2)
    os.truncate(shard, shard.stat().st_size // 2)
    return [], [f"{shard}: unreadable safetensors file"]


def _other_vocabulary(hf, other):
    return ["--tokenizer", other], [f"vocabulary mismatch: the tokenizer {other} has 4000 pieces",
                                    "vocab_size 4096"]


def _no_tokenizer(hf, _other):
    (hf / "tokenizer.model").unlink()
    return [], [f"{hf / 'tokenizer.model'}: no SentencePiece tokenizer.model", "pass --tokenizer PATH"]


FROM_HF_CASES = [_config, _architecture, _tensors, _missing_shard, _truncated_shard, _other_vocabulary, _no_tokenizer]


@pytest.mark.parametrize("case", FROM_HF_CASES, ids=lambda f: f.__name__.strip("_"))
def test_from_hf_refuses_what_does_not_match_in_one_line(hf_source, other_tokenizer, tmp_path, case):
    """Import: "Before anything is written, it is checked against the model config ... Each
    problem is named": the config's differences all at once, the weights' all at once, a shard
    missing or unreadable, the tokenizer's vocabulary; one line, exit 2, nothing under OUT_DIR,
    the Hugging Face directory untouched."""
    hf = tmp_path / "hf"
    shutil.copytree(hf_source, hf)
    extra, expected = case(hf, other_tokenizer)
    before = _digest(hf)
    proc = _run("alia-convert", "from-hf", hf, tmp_path / "ckpt", "+model=tiny", *extra)
    _refused(proc, *expected)
    _nothing_left(tmp_path / "ckpt")
    assert _digest(hf) == before


# ------------------------------------------------------------------------------------------
# both directions: OUT_DIR, the [hf] extra, the command line


@pytest.mark.parametrize("direction", ["to-hf", "from-hf"])
def test_an_existing_non_empty_out_dir_is_refused_and_left_alone(imported, hf_source, tmp_path, direction):
    """Both directions: "An existing non-empty OUT_DIR is refused", at once (before any import
    of torch: well under the ~3 s a conversion takes to start), its files as they were."""
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "mine.txt").write_text("keep me")
    (out / "sub" / "config.json").write_text("{}")
    source, model = (imported, []) if direction == "to-hf" else (hf_source, ["+model=tiny"])
    proc = _run("alia-convert", direction, source, out, *model, PYTHONPROFILEIMPORTTIME="1")
    profile = [line for line in proc.stderr.splitlines() if line.startswith("import time:")]
    imported_modules = {line.rsplit("|", 1)[1].strip() for line in profile}
    assert "alia_train.convert.staging" in imported_modules  # the profile is there: the check below can fail
    assert "torch" not in imported_modules
    proc.stderr = "\n".join(line for line in proc.stderr.splitlines() if line not in profile)
    _refused(proc, f"{out}: already exists and is not empty")
    assert _digest(out) == {"mine.txt": hashlib.sha256(b"keep me").hexdigest(),
                            "sub/config.json": hashlib.sha256(b"{}").hexdigest()}
    assert not list(tmp_path.glob("out.partial-*"))


@pytest.mark.parametrize("direction", ["to-hf", "from-hf"])
def test_without_the_hf_extra_it_says_so_in_one_line(imported, hf_source, tmp_path, direction):
    """"It needs the [hf] extra": without safetensors (a module on PYTHONPATH that fails to
    import as an absent one does), one line naming the extra and how to install it."""
    shim = tmp_path / "shim" / "safetensors"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'safetensors'\", name='safetensors')\n")
    path = os.pathsep.join(p for p in (str(shim.parent), os.environ.get("PYTHONPATH")) if p)
    source, model = (imported, []) if direction == "to-hf" else (hf_source, ["+model=tiny"])
    proc = _run("alia-convert", direction, source, tmp_path / "out", *model, PYTHONPATH=path)
    _refused(proc, "safetensors cannot be imported", f"alia-convert {direction} needs the [hf] extra",
             "pip install 'alia-train[hf]'")
    _nothing_left(tmp_path / "out")


USAGE = [
    (["to-hf", "{src}"], "the following arguments are required: OUT_DIR; see `alia-convert to-hf --help`"),
    (["to-hf", "{src}", "{out}", "--max-shard-size", "5XB"], "argument --max-shard-size: not a size: '5XB'"),
    (["from-hf", "{hf}", "{out}", "+model=tiny", "--dtype", "fp16"], "argument --dtype: invalid choice: 'fp16'"),
]


@pytest.mark.parametrize("argv, expected", USAGE, ids=["no-out-dir", "shard-size", "dtype"])
def test_a_mistake_in_the_command_line_is_one_line(imported, hf_source, tmp_path, argv, expected):
    """"Errors the user can fix print `alia-convert: error: ...` and exit with code 2": also
    those argparse finds (it prints a usage block and `alia-convert to-hf: error:`)."""
    names = {"{src}": str(imported), "{hf}": str(hf_source), "{out}": str(tmp_path / "out")}
    _refused(_run("alia-convert", *(names.get(a, a) for a in argv)), expected)
    _nothing_left(tmp_path / "out")


# ------------------------------------------------------------------------------------------
# alia-train: a checkpoint that lacks tensors (docs/configuration.md, "Layer implementation")


def _remove_tensors(ckpt: Path, dropped) -> list[str]:
    """The checkpoint as if written without the model tensors `dropped(key)` selects: their
    entries taken out of torch_dist's .metadata, and COMPLETE's size and CRC-32 of .metadata
    made to match, as a save would have written them. Returns the keys taken out."""
    from alia_train.checkpoint.directory import COMPLETE, file_crc32

    meta = ckpt / ".metadata"
    md = pickle.loads(meta.read_bytes())
    keys = sorted(k for k in md.state_dict_metadata if not k.startswith("optimizer") and dropped(k))
    for key in keys:
        del md.state_dict_metadata[key]
    md.storage_data = {i: s for i, s in md.storage_data.items() if i.fqn not in keys}
    meta.write_bytes(pickle.dumps(md))
    manifest = json.loads((ckpt / COMPLETE).read_text())
    manifest["files"][".metadata"], manifest["crc32"][".metadata"] = meta.stat().st_size, file_crc32(meta)
    (ckpt / COMPLETE).write_text(json.dumps(manifest, indent=1))
    return keys


def _resume(layouts, layout_overrides, tmp_path, dropped) -> tuple[Path, list[str], dict, subprocess.CompletedProcess]:
    """A copy of the TP=1 layout run (local layers, DP=2), its checkpoint stripped of `dropped`,
    resumed by alia-train (one process) for one more step."""
    run_dir = tmp_path / "run"
    shutil.copytree(layouts / "tp1", run_dir)
    keys = _remove_tensors(run_dir / "checkpoints" / f"step_{TRAINED_STEP:08d}", dropped)
    before = _digest(run_dir)
    proc = _run("alia-train", *layout_overrides, f"train.steps={TRAINED_STEP + 1}", f"run.dir={run_dir}")
    return run_dir, keys, before, proc


@pytest.mark.multiproc
def test_a_checkpoint_without_its_extra_state_resumes(layouts, layout_overrides, tmp_path):
    """"Transformer Engine's `_extra_state` entries (FP8 metadata) are left at their fresh value
    when the checkpoint lacks them": every `_extra_state` entry taken out of a local
    checkpoint (the local model asks for its linears' ones, as a TE model asks for more), and
    alia-train resumes it at its step and trains on."""
    run_dir, keys, _, proc = _resume(layouts, layout_overrides, tmp_path, lambda k: "._extra_state" in k)
    assert len(keys) >= 4 and proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"resumed from {run_dir / 'checkpoints' / f'step_{TRAINED_STEP:08d}'} at step {TRAINED_STEP}" in proc.stdout
    assert TRAINED_STEP + 1 in train_losses(run_dir)


@pytest.mark.multiproc
def test_a_checkpoint_without_a_real_tensor_is_refused_naming_its_layer_impl(layouts, layout_overrides, tmp_path):
    """"any other missing tensor is refused in one line naming the `layer_impl` it was written
    with": the final norm taken out. Refused before training, exit 2; the checkpoint is not
    called damaged (not set aside), and config.yaml, metrics.jsonl and the checkpoint stay as
    they were."""
    run_dir, keys, before, proc = _resume(layouts, layout_overrides, tmp_path,
                                          lambda k: k == "decoder.final_layernorm.weight")
    assert keys == ["decoder.final_layernorm.weight"]
    _refused(proc, f"checkpoint {run_dir / 'checkpoints' / f'step_{TRAINED_STEP:08d}'}: 1 tensor(s) of this model",
             "decoder.final_layernorm.weight", "model.layer_impl=local it was written with", prog="alia-train")
    assert "WARNING" not in proc.stdout and "damaged" not in proc.stdout + proc.stderr
    assert _digest(run_dir) == before
