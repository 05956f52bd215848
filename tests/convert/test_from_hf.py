"""from-hf: Hugging Face weights become a checkpoint alia-train trains from; bad input is
refused before anything is written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from alia_train.convert.errors import ConversionError
from alia_train.convert.from_hf import import_from_hf
from alia_train.convert.to_hf import export_to_hf

QUIET = {"log": lambda *_: None}


def test_round_trip_is_bit_exact(hf_source, imported, tmp_path, same_weights):
    back = export_to_hf(imported, tmp_path / "back", **QUIET).out_dir  # bf16 in, bf16 out
    same_weights(hf_source, back)
    assert (back / "tokenizer.model").read_bytes() == (hf_source / "tokenizer.model").read_bytes()


def test_round_trip_fp32_with_vocab_padding(hf_source, tmp_path, same_weights):
    """fp32 source, TP=2 and a padding multiple that adds rows: the padding is dropped again."""
    from safetensors.torch import load_file, save_file

    src = tmp_path / "src32"
    shutil.copytree(hf_source, src)
    for f in src.glob("*.safetensors"):  # the same weights, as fp32
        save_file({k: v.float() for k, v in load_file(str(f)).items()}, str(f), metadata={"format": "pt"})
    overrides = ["+model=tiny", "parallel.tp=2", "model.make_vocab_size_divisible_by=100"]
    ckpt = import_from_hf(src, tmp_path / "ckpt", overrides, **QUIET)
    assert ckpt.dtype == torch.float32
    from alia_train.convert.dist_reader import DistCheckpointReader

    assert DistCheckpointReader(ckpt.checkpoint).shape("embedding.word_embeddings.weight") == (4200, 128)
    back = export_to_hf(tmp_path / "ckpt", tmp_path / "back", dtype=torch.float32, **QUIET).out_dir
    same_weights(src, back)


def test_checkpoint_layout(imported):
    from alia_train.checkpoint import directory

    ckpt = imported / "checkpoints" / "step_00000000"
    assert directory.verify(ckpt) is None
    assert (imported / "checkpoints" / "latest").read_text().strip() == "step_00000000"
    assert (imported / "tokenizer.model").is_file() and (imported / "config.yaml").is_file()
    from alia_train.convert.dist_reader import DistCheckpointReader

    common = DistCheckpointReader(ckpt).common_state()
    assert "scheduler" not in common and "optimizer" not in common  # a fresh optimizer on load
    assert common["tokenizer"]["path"] == str(imported / "tokenizer.model")
    assert common["model_config"]["num_layers"] == 4


@pytest.mark.multiproc
def test_alia_train_loads_it_at_tp2(layouts, hf_source):
    """alia-train (checkpoint.load=OUT_DIR, TP=2, another vocab padding) computes the same
    logits as transformers on the original weights."""
    from transformers import AutoModelForCausalLM

    ref = torch.load(layouts / "imported_tp2" / "logits.pt")
    assert ref["step"] == 0 and ref["layout"]["tp"] == 2
    model = AutoModelForCausalLM.from_pretrained(hf_source, dtype=torch.float32)
    with torch.no_grad():
        logits = model(ref["tokens"]).logits[0]
    diff = (logits - ref["logits"][:, : logits.shape[-1]]).abs().max().item()
    print(f"from-hf at TP=2: max |logits diff| = {diff:.3g}")
    assert diff < 1e-4


@pytest.mark.parametrize("key", ["rope_parameters", "rope_scaling"])
def test_linear_rope_scaling_maps_to_the_scaling_factor(hf_source, tmp_path, key):
    """Linear RoPE scaling, written as transformers 5 (rope_parameters) or 4 (rope_scaling)
    does, is model.rope_scaling_factor: a config without it is refused, and the checkpoint
    exports the same scaling again."""
    from alia_train.convert.hf_config import model_config_from_yaml

    scaling = {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}
    src = _edit_config(hf_source, tmp_path / "scaled", **{key: scaling})
    _refused(src, tmp_path / "plain", r"rope_scaling.factor is 2.0 but model.rope_scaling_factor is 1.0")
    ckpt = tmp_path / "ckpt"
    import_from_hf(src, ckpt, ["+model=tiny", "model.rope_scaling_factor=2.0"], **QUIET)
    assert model_config_from_yaml((ckpt / "config.yaml").read_text()).rope_scaling_factor == 2.0
    back = export_to_hf(ckpt, tmp_path / "back", **QUIET).out_dir
    rope = json.loads((back / "config.json").read_text())["rope_scaling"]
    assert (rope["rope_type"], rope["factor"]) == ("linear", 2.0)


def test_refuses_llama3_rope_scaling(hf_source, tmp_path):
    llama3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
              "original_max_position_embeddings": 128, "rope_theta": 10000.0}
    bad = _edit_config(hf_source, tmp_path / "llama3", rope_parameters=llama3)
    _refused(bad, tmp_path / "out", "rope scaling 'llama3' is not supported",
             ["+model=tiny", "model.rope_scaling_factor=8.0"])


# ------------------------------------------------------------------ bad input


def _edit_config(src: Path, dst: Path, **changes) -> Path:
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg.update(changes)
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def _refused(hf_dir: Path, out: Path, match: str, overrides=("+model=tiny",), **kwargs) -> None:
    with pytest.raises(ConversionError, match=match):
        import_from_hf(hf_dir, out, list(overrides), **kwargs, **QUIET)
    assert not out.exists()
    assert not list(out.parent.glob(out.name + ".partial-*"))


def test_refuses_other_architecture(hf_source, tmp_path):
    bad = _edit_config(hf_source, tmp_path / "gpt2", model_type="gpt2", architectures=["GPT2LMHeadModel"])
    _refused(bad, tmp_path / "out", "GPT2LMHeadModel")


def test_refuses_other_shapes(hf_source, tmp_path):
    _refused(hf_source, tmp_path / "out", "hidden_size is 128 but model.hidden_size is 2048", ["+model=salamandra_2b"])


def test_refuses_mismatched_vocab(hf_source, tmp_path):
    bad = _edit_config(hf_source, tmp_path / "vocab", vocab_size=5000)
    _refused(bad, tmp_path / "out", "vocabulary mismatch")


def test_refuses_wrong_tensor_shape(hf_source, tmp_path):
    from safetensors.torch import load_file, save_file

    bad = tmp_path / "shape"
    shutil.copytree(hf_source, bad)
    index = json.loads((bad / "model.safetensors.index.json").read_text())["weight_map"]
    name = "model.layers.1.mlp.up_proj.weight"
    f = bad / index[name]
    tensors = load_file(str(f))
    tensors[name] = tensors[name][:-1]
    save_file(tensors, str(f), metadata={"format": "pt"})
    _refused(bad, tmp_path / "out", r"up_proj.weight is \(351, 128\)")


def test_refuses_missing_shard(hf_source, tmp_path):
    bad = tmp_path / "shard"
    shutil.copytree(hf_source, bad)
    missing = sorted(bad.glob("model-*.safetensors"))[1]
    missing.unlink()
    _refused(bad, tmp_path / "out", f"missing safetensors shard.*{missing.name}")


def test_refuses_tied_embeddings(hf_source, tmp_path):
    bad = _edit_config(hf_source, tmp_path / "tied", tie_word_embeddings=True)
    _refused(bad, tmp_path / "out", "tie_word_embeddings")


def test_refuses_existing_output(hf_source, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ConversionError, match="already exists"):
        import_from_hf(hf_source, out, ["+model=tiny"], **QUIET)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_cli_from_hf_errors(hf_source, tmp_path, capsys):
    from alia_train.cli.convert import main

    assert main(["from-hf", str(hf_source), str(tmp_path / "out")]) == 2
    assert "+model=NAME" in capsys.readouterr().err
    assert main(["from-hf", str(hf_source), str(tmp_path / "out"), "+model=tiny", "--dtype", "fp32"]) == 0
    assert (tmp_path / "out" / "checkpoints" / "step_00000000" / "COMPLETE").is_file()
