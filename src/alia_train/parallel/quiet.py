"""Library noise off, installed by every CLI and by the run start-up (training/startup.py)
before megatron-core or torch is imported.

A tiny CPU run used to print ~19 warning lines per process from megatron-core and torch:
optional packages not installed (Transformer Engine, Apex, absl), deprecations of APIs we use on
purpose (GPTModel, MCore async save) and "No CUDA runtime" on CPU. Logs that cry wolf are not
read, so these are dropped here by message; the one fact that matters to a user (no Transformer
Engine / Apex: slower GPU kernels) is said once, on rank 0, by
alia_train.training.run.accelerator_note.

Anything else a library warns about still shows. `python -W ...` or PYTHONWARNINGS turn the
filtering off entirely (the user asked for warnings explicitly).
"""

from __future__ import annotations

import logging
import re
import sys
import warnings

# warnings.warn(...) texts, matched at the start of the message.
_WARNING_MESSAGES = (
    r"Transformer Engine and Apex are not installed",
    r"Apex is not installed",
    r"absl\.logging is not installed",
    r"full scope is deprecated",
    r"\w+ is experimental and still under active development",
    # torch.distributed.checkpoint, as megatron's dist_checkpointing drives it on load.
    r"torch\.distributed is disabled, unavailable or uninitialized",
    r"The argument order of load has been changed",
    r"Please use DTensor instead and we are deprecating ShardedTensor",
    # megatron's distributed optimizer in fp32 (CPU runs) keeps views of the parameters as its
    # main parameters and reads their .grad: harmless there, said once per step otherwise.
    r"The \.grad attribute of a Tensor that is not a leaf Tensor is being accessed",
)
# Library modules whose deprecation notices are about APIs alia-train pins and adapts to.
_LIBRARY_MODULES = r"(megatron|torch|transformer_engine)(\..*)?$"

# logging records: logger name -> message patterns.
_LOG_MESSAGES = {
    "megatron.core.models.gpt.gpt_model": (r"GPTModel IS DEPRECATED",),
    "megatron.core.dist_checkpointing.strategies.torch": (r"MCore's async save is deprecated",),
    "torch.utils.cpp_extension": (r"No CUDA runtime is found",),
    # megatron-core 0.19's DDP computes the distributed optimizer's layout itself when not given.
    "megatron.core.distributed.distributed_data_parallel": (r"full_param_layout not provided",),
}


class _DropMessages(logging.Filter):
    def __init__(self, patterns: tuple[str, ...]):
        super().__init__()
        self.pattern = re.compile("|".join(patterns))

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.search(record.getMessage())


def quiet_libraries() -> None:
    """Install the filters (idempotent). Must run before megatron.core is imported: some of
    these warnings fire at import time."""
    if sys.warnoptions:
        return
    for message in _WARNING_MESSAGES:
        warnings.filterwarnings("ignore", message=message)
    for category in (DeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category, module=_LIBRARY_MODULES)
    for name, patterns in _LOG_MESSAGES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(patterns))


def quiet_cpu_run() -> None:
    """Filters for GPU performance hints that mean nothing without a GPU."""
    if not sys.warnoptions:
        warnings.filterwarnings("ignore", message=r"When using async grad allreduce it is recommended to set")

