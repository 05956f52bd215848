"""alia-train: pretraining of multilingual Salamandra/ALIA-family decoders on megatron-core."""

__version__ = "0.1.0"
