"""to-hf: exported models give alia-train's logits, from any layout, and work offline."""

from __future__ import annotations

import json
import socket

import pytest
import torch

from alia_train.convert.errors import ConversionError
from alia_train.convert.to_hf import export_to_hf
from conftest import scratch

pytestmark = pytest.mark.multiproc
QUIET = {"log": lambda *_: None}


def _hf_logits(hf_dir, tokens: torch.Tensor) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    with torch.no_grad():
        return model(tokens).logits[0]


@pytest.fixture(scope="module")
def exports(request, layouts, tmp_path_factory):
    """fp32 export of each trained layout: the run dir for TP=1 (its latest checkpoint), an
    explicit checkpoint dir for the others."""
    root = scratch(request, tmp_path_factory, "exports")
    out = {}
    for name in ("tp1", "tp2", "pp2"):
        source = layouts / name if name == "tp1" else layouts / name / "checkpoints" / "step_00000003"
        out[name] = export_to_hf(source, root / name, dtype=torch.float32, **QUIET).out_dir
    return out


@pytest.mark.parametrize("name", ["tp1", "tp2", "pp2"])
def test_logits_match_alia_train(name, layouts, exports):
    ref = torch.load(layouts / name / "logits.pt")
    assert ref["step"] == 3  # trained, not freshly initialised
    logits = _hf_logits(exports[name], ref["tokens"])
    vocab = logits.shape[-1]
    assert vocab == 4096 and ref["logits"].shape[-1] > vocab  # padding rows dropped
    diff = (logits - ref["logits"][:, :vocab]).abs().max().item()
    print(f"{name}: max |logits diff| = {diff:.3g}")
    assert logits.std() > 0.1
    assert diff < 1e-4


# Llama 3.1's frequency-wise scaling with the same factor: leaves the fast rotations alone.
LLAMA3_SCALING = {"rope_type": "llama3", "factor": 2.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 512}


@pytest.mark.parametrize("wrong", [None, LLAMA3_SCALING], ids=["no-scaling", "llama3"])
def test_rope_scaling_must_be_linear(wrong, layouts, exports, tmp_path):
    """The pp2 run trained with model.rope_scaling_factor=2 (megatron's position interpolation):
    its export says linear scaling, and any other mapping gives transformers other logits, far
    beyond the parity tolerance of test_logits_match_alia_train."""
    import shutil

    cfg = json.loads((exports["pp2"] / "config.json").read_text())
    assert cfg["rope_scaling"] == {"type": "linear", "rope_type": "linear", "factor": 2.0}
    other = tmp_path / "other"
    shutil.copytree(exports["pp2"], other)
    (other / "config.json").write_text(json.dumps({**cfg, "rope_scaling": wrong}))
    ref = torch.load(layouts / "pp2" / "logits.pt")
    logits = _hf_logits(other, ref["tokens"])
    diff = (logits - ref["logits"][:, : logits.shape[-1]]).abs().max().item()
    print(f"pp2 with rope_scaling {wrong and wrong['rope_type']}: max |logits diff| = {diff:.3g}")
    assert diff > 30 * 1e-4  # measured ~1.3e-2 either way; the parity tolerance is 1e-4


def test_config_and_files(exports):
    out = exports["tp1"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"]
    assert (cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]) == (128, 352, 4)
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["vocab_size"]) == (4, 2, 4096)
    assert (cfg["bos_token_id"], cfg["eos_token_id"], cfg["pad_token_id"]) == (1, 2, 3)
    assert cfg["tie_word_embeddings"] is False and cfg["rope_scaling"] is None
    assert cfg["rms_norm_eps"] == 1e-5 and cfg["rope_theta"] == 10000.0 and cfg["max_position_embeddings"] == 1024
    pp2 = json.loads((exports["pp2"] / "config.json").read_text())
    assert pp2["rope_scaling"]["factor"] == 2.0
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {"model-00001-of-00001.safetensors"}
    for f in ("generation_config.json", "tokenizer.model", "tokenizer.json", "tokenizer_config.json"):
        assert (out / f).is_file(), f


def test_default_dtype_is_bf16_and_sharded(layouts, tmp_path):
    from safetensors import safe_open

    out = export_to_hf(layouts / "tp1", tmp_path / "bf16", max_shard_bytes=1_000_000, **QUIET)
    assert out.num_shards > 1
    index = json.loads((out.out_dir / "model.safetensors.index.json").read_text())
    name, fname = next(iter(index["weight_map"].items()))
    with safe_open(str(out.out_dir / fname), "pt") as f:
        assert f.get_tensor(name).dtype == torch.bfloat16
    assert json.loads((out.out_dir / "config.json").read_text())["torch_dtype"] == "bfloat16"


def test_generate_offline(exports, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def no_network(*args, **kwargs):
        raise OSError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    out = exports["tp1"]
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    inputs = tok(["El català és"], return_tensors="pt")
    assert inputs["input_ids"][0, 0].item() == tok.bos_token_id == 1
    generated = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert generated.shape[1] > inputs["input_ids"].shape[1]
    text = tok.decode(generated[0], skip_special_tokens=True)
    assert text.startswith("El català és") and len(text) > len("El català és")


def test_cli_to_hf(layouts, tmp_path, capsys):
    from alia_train.cli.convert import main

    args = ["to-hf", str(layouts / "tp2"), str(tmp_path / "cli"), "--dtype", "fp32", "--max-shard-size", "2MB"]
    assert main(args) == 0
    assert len(list((tmp_path / "cli").glob("model-*-of-*.safetensors"))) > 1
    # An existing, non-empty OUT_DIR is refused before anything is read.
    assert main(["to-hf", str(layouts / "tp2"), str(tmp_path / "cli")]) == 2
    assert "already exists" in capsys.readouterr().err


def test_tokenizer_must_be_the_trained_one(layouts, tmp_path):
    other = tmp_path / "other.model"
    other.write_bytes(b"not the tokenizer this model was trained with")
    with pytest.raises(ConversionError, match="sha256"):
        export_to_hf(layouts / "tp1", tmp_path / "out", tokenizer=other, **QUIET)
    assert not (tmp_path / "out").exists()


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(ConversionError, match="no checkpoint found"):
        export_to_hf(tmp_path / "run", tmp_path / "out", **QUIET)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("marker", [True, False])
def test_damaged_checkpoint_writes_nothing(layouts, tmp_path, marker):
    """With its COMPLETE marker, damage is caught before reading; without it, reading fails
    half-way through the export, and the staging directory is removed all the same."""
    import shutil

    ckpt = tmp_path / "ckpt"
    shutil.copytree(layouts / "tp2" / "checkpoints" / "step_00000003", ckpt)
    if not marker:
        (ckpt / "COMPLETE").unlink()
    # Cut the file holding the output layer (exported last) in the middle of it.
    from alia_train.convert.dist_reader import DistCheckpointReader

    storage = DistCheckpointReader(ckpt).metadata.storage_data
    info = next(v for k, v in storage.items() if k.fqn == "output_layer.weight")
    shard = ckpt / info.relative_path
    shard.write_bytes(shard.read_bytes()[: info.offset + info.length // 2])
    with pytest.raises(ConversionError, match="bytes, expected" if marker else "cannot read checkpoint"):
        export_to_hf(ckpt, tmp_path / "out", **QUIET)
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob("out.partial-*"))


def test_cli_refuses_a_checkpoint_overwritten_at_the_same_size(layouts, tmp_path):
    """64 bytes of a weight zeroed in place: sizes still match COMPLETE, only the CRC-32 that
    alia-train checks before loading tells. The real command refuses in one line naming the
    file, and leaves no export (nor a partial one)."""
    import shutil
    import subprocess

    from alia_train.convert.dist_reader import DistCheckpointReader
    from conftest import cli, subprocess_env

    ckpt = tmp_path / "ckpt"
    shutil.copytree(layouts / "tp1" / "checkpoints" / "step_00000003", ckpt)
    storage = DistCheckpointReader(ckpt).metadata.storage_data
    info = next(v for k, v in storage.items() if k.fqn == "output_layer.weight")
    with open(ckpt / info.relative_path, "r+b") as f:
        f.seek(info.offset + info.length // 2)
        f.write(bytes(64))
    proc = subprocess.run([cli("alia-convert"), "to-hf", str(ckpt), str(tmp_path / "out")],
                          capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("alia-convert: error: ")
    assert f"file {info.relative_path} is corrupted (CRC-32" in proc.stderr
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("out.partial-*"))
