"""Hugging Face interoperability: alia-train checkpoints <-> LlamaForCausalLM directories.

* `to_hf.export_to_hf`: a checkpoint of any layout -> config.json, safetensors, tokenizer;
* `from_hf.import_from_hf`: Hugging Face Llama weights -> a checkpoint to train from.

Both stream tensor by tensor and write their output directory all at once (see `staging`).
The pieces: `mapping` (names and tensor cuts), `dist_reader` / `dist_writer` (torch_dist
checkpoints), `safetensors_io`, `hf_config`, `tokenizer` (SentencePiece -> tokenizer.json).
"""

from alia_train.convert.errors import ConversionError

__all__ = ["ConversionError"]
