"""Data pipeline: tokenizer, corpus -> Megatron indexed shards, language mixture, datasets.

Submodules are imported on demand: `alia-data tokenize` and its workers must not pay for
torch / megatron-core, so nothing heavy is imported here.
"""
