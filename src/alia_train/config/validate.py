"""Every check of a configuration, in one place, run before any process group starts.

Each problem becomes one line "key: what is wrong; how to fix it". All problems are reported
at once so a user fixes a config in one round trip, not one error per launch. Types and
choices are checked earlier, when the config is composed (load.py); the checks here are of
values and of how they fit together, grouped by concern.
"""

from __future__ import annotations

import dataclasses

import alia_train.config.messages as messages
from alia_train.config.derived import lr_schedule_steps, uses_cuda
from alia_train.config.layout_rules import ParallelSplit, layout_problems
from alia_train.config.load import ConfigError, available_models
from alia_train.config.schema import ClusterConfig, Config, DecayStyle, Device, LayerImpl


def config_problems(cfg: Config, world_size: int, cuda: bool, te_available: bool) -> list[str]:
    """All problems of `cfg` for a job of `world_size` processes; empty when it is valid."""
    p = model_name_problems(cfg) + range_problems(cfg) + choice_problems(cfg) + empty_path_problems(cfg)
    if p:  # the divisibility checks below would only repeat these
        return p
    p += model_shape_problems(cfg)
    p += layout_problems(cfg.model, ParallelSplit.of(cfg, world_size))
    p += sequence_problems(cfg)
    p += device_problems(cfg, cuda, te_available)
    p += optimizer_layout_problems(cfg)
    p += data_problems(cfg)
    return p


def model_name_problems(cfg: Config) -> list[str]:
    name = cfg.model.name
    if name not in available_models() and name != "custom":
        return [f"model.name: unknown model '{name}'; choose one of {', '.join(available_models())}"]
    return []


def empty_path_problems(cfg: Config) -> list[str]:
    """`run.dir=` (an empty value) would mean the working directory: checkpoints and caches
    written among the user's files. Null is the way to say "none" where a key allows it."""
    paths = {"run.dir": cfg.run.dir, "data.cache_dir": cfg.data.cache_dir, "data.tokenizer": cfg.data.tokenizer,
             "checkpoint.load": cfg.checkpoint.load}
    return [f"{key}: is empty; give a path{' (or null)' if key in ('data.tokenizer', 'checkpoint.load') else ''}"
            for key, value in paths.items() if value is not None and not str(value).strip()]


def range_problems(cfg: Config) -> list[str]:
    """Sizes that must be positive, rates and intervals that must not be negative."""
    m, par, tr, opt = cfg.model, cfg.parallel, cfg.train, cfg.optim
    positive = {
        "model.num_layers": m.num_layers,
        "model.hidden_size": m.hidden_size,
        "model.ffn_hidden_size": m.ffn_hidden_size,
        "model.num_attention_heads": m.num_attention_heads,
        "model.num_query_groups": m.num_query_groups,
        "model.make_vocab_size_divisible_by": m.make_vocab_size_divisible_by,
        "model.max_position_embeddings": m.max_position_embeddings,
        "parallel.tp": par.tp,
        "parallel.pp": par.pp,
        "parallel.cp": par.cp,
        "train.steps": tr.steps,
        "train.global_batch_size": tr.global_batch_size,
        "train.micro_batch_size": tr.micro_batch_size,
        "train.seq_length": tr.seq_length,
        "train.loss_chunk_size": tr.loss_chunk_size,
        "train.max_skipped_steps": tr.max_skipped_steps,
        "train.recompute_num_layers": tr.recompute_num_layers,
        "logging.interval": cfg.logging.interval,
        "checkpoint.keep": cfg.checkpoint.keep,
    }
    p = [f"{key}: must be a positive integer, got {value}" for key, value in positive.items()
         if value is None or value <= 0]
    if opt.decay_steps is not None and opt.decay_steps <= 0:
        # megatron's scheduler asserts decay steps > 0; and 0 would silently mean train.steps.
        p.append(f"optim.decay_steps: must be a positive integer or null (train.steps), got {opt.decay_steps}")
    if m.vocab_size is not None and m.vocab_size <= 0:
        p.append(f"model.vocab_size: must be positive (or null to take it from the tokenizer), got {m.vocab_size}")
    # RoPE's base and scaling divide, Adam's eps divides: 0 gives inf/NaN at the first step.
    above_zero = {"model.init_std": m.init_std, "model.norm_eps": m.norm_eps, "optim.lr": opt.lr,
                  "model.rope_theta": m.rope_theta, "model.rope_scaling_factor": m.rope_scaling_factor,
                  "optim.adam_eps": opt.adam_eps}
    p += [f"{key}: must be > 0, got {value}" for key, value in above_zero.items() if not value > 0]
    not_negative = {
        "optim.min_lr": opt.min_lr,
        "optim.weight_decay": opt.weight_decay,
        "optim.warmup_steps": opt.warmup_steps,
        "optim.clip_grad": opt.clip_grad,
        "checkpoint.interval": cfg.checkpoint.interval,
        "train.eval_interval": tr.eval_interval,
    }
    p += [f"{key}: must be >= 0, got {value}" for key, value in not_negative.items() if value < 0]
    if not 0 <= tr.seed <= MAX_SEED:  # torch and numpy take 32-bit seeds; megatron adds rank offsets
        p.append(f"train.seed: must be in 0..{MAX_SEED}, got {tr.seed}")
    return p + optimizer_value_problems(cfg) + cluster_value_problems(cfg)


def cluster_value_problems(cfg: Config) -> list[str]:
    """The machine's figures: sizes and speeds positive, the checkpoint-cost figures null (unknown) or positive."""
    cl = cfg.cluster
    figures = {"cluster.host_memory_gb": cl.host_memory_gb, "cluster.filesystem_write_gb_s": cl.filesystem_write_gb_s,
               "cluster.filesystem_read_gb_s": cl.filesystem_read_gb_s, "cluster.node_network_gb_s": cl.node_network_gb_s}
    p = [f"{key}: must be > 0 (or null: unknown), got {value}" for key, value in figures.items()
         if value is not None and not value > 0]
    # MFU and alia-plan's durations divide by these (a GPU run's first log line would be the error).
    sizes = {"cluster.gpus_per_node": cl.gpus_per_node, "cluster.nodes": cl.nodes,
             "cluster.gpu_memory_gb": cl.gpu_memory_gb, "cluster.peak_tflops": cl.peak_tflops}
    p += [f"{key}: must be > 0, got {value}" for key, value in sizes.items() if not value > 0]
    if not 0 < cl.assumed_mfu <= 1:
        p.append(f"cluster.assumed_mfu: a fraction of the peak in (0, 1], e.g. 0.4, got {cl.assumed_mfu}")
    return p


MAX_SEED = 2**31 - 1


def optimizer_value_problems(cfg: Config) -> list[str]:
    opt, tr, p = cfg.optim, cfg.train, []
    if opt.min_lr > opt.lr:
        p.append(f"optim.min_lr: {opt.min_lr} is above optim.lr {opt.lr}; set min_lr <= lr")
    if not (0 <= opt.adam_beta1 < 1 and 0 <= opt.adam_beta2 < 1):
        p.append(f"optim.adam_beta1/adam_beta2: must be in [0, 1), got {opt.adam_beta1}, {opt.adam_beta2}")
    if tr.eval_interval > 0 and tr.eval_iters <= 0:
        p.append(f"train.eval_iters: must be positive when train.eval_interval > 0, got {tr.eval_iters}")
    if opt.decay_steps is not None and opt.decay_steps > 0 and opt.warmup_steps >= opt.decay_steps:
        # Both set on purpose and contradicting: warmup is part of decay_steps (megatron would
        # be handed a warmup longer than the schedule; training/optimizer.py would clamp it).
        p.append(f"optim.warmup_steps: {opt.warmup_steps} is not below optim.decay_steps {opt.decay_steps} "
                 "(the warmup is part of decay_steps); lower optim.warmup_steps or raise optim.decay_steps")
    return p + wsd_problems(cfg)


def wsd_problems(cfg: Config) -> list[str]:
    """optim.wsd_decay_steps: needed by decay_style=wsd, inside the steps after warmup, and
    nowhere else (a model file's decay_style wins over an optim group such as optim=anneal)."""
    opt = cfg.optim
    warmup, steps = lr_schedule_steps(cfg)
    if opt.decay_style != DecayStyle.wsd:
        if opt.wsd_decay_steps is None:
            return []
        return [f"optim.wsd_decay_steps: used only with optim.decay_style=wsd, and decay_style is "
                f"{opt.decay_style}; set optim.decay_style=wsd (a model file's decay_style wins over optim=...)"]
    after_warmup = steps - warmup
    if opt.wsd_decay_steps is None:
        return [f"optim.wsd_decay_steps: needed with optim.decay_style=wsd (the steps of the final decay), "
                f"e.g. optim.wsd_decay_steps={max(1, steps // 5)}"]
    if not 0 < opt.wsd_decay_steps <= after_warmup:
        return [f"optim.wsd_decay_steps: must be in 1..{after_warmup} (the steps after warmup of "
                f"{'optim.decay_steps' if opt.decay_steps else 'train.steps'} {steps}), got {opt.wsd_decay_steps}"]
    return []


def choice_problems(node, prefix: str = "") -> list[str]:
    """Choice keys (Enums in the schema) holding something else. Composed configs cannot (the
    loader refuses), but one built or changed in Python can."""
    p = []
    for f in dataclasses.fields(node):
        value, key = getattr(node, f.name), prefix + f.name
        allowed = messages.choices(messages.type_at(key))
        if allowed and value not in allowed:
            p.append(messages.not_a_choice(key, value, allowed))
        elif dataclasses.is_dataclass(value):
            p += choice_problems(value, key + ".")
    return p


def model_shape_problems(cfg: Config) -> list[str]:
    m, p = cfg.model, []
    if m.num_attention_heads % m.num_query_groups:
        p.append(
            f"model.num_query_groups: {m.num_query_groups} does not divide "
            f"model.num_attention_heads {m.num_attention_heads}"
        )
    if m.hidden_size % m.num_attention_heads:
        p.append(f"model.hidden_size: {m.hidden_size} is not divisible by num_attention_heads {m.num_attention_heads}")
    elif (m.hidden_size // m.num_attention_heads) % 2:
        # RoPE rotates pairs of channels: an odd head size fails in the first forward.
        p.append(f"model.hidden_size: {m.hidden_size} / num_attention_heads {m.num_attention_heads} gives an odd "
                 f"head size {m.hidden_size // m.num_attention_heads}; RoPE needs an even one")
    return p


def sequence_problems(cfg: Config) -> list[str]:
    m, tr = cfg.model, cfg.train
    if tr.seq_length > m.max_position_embeddings and m.rope_scaling_factor == 1.0:
        return [
            f"train.seq_length: {tr.seq_length} exceeds model.max_position_embeddings "
            f"{m.max_position_embeddings}; lower it or raise max_position_embeddings"
        ]
    return []


def device_problems(cfg: Config, cuda: bool, te_available: bool) -> list[str]:
    """GPU-only features asked for where they cannot run. Sequence parallelism, context
    parallelism and bf16 run on CPU too (slowly): the same megatron code paths as on GPU, so
    tests exercise the recipes'. Context parallelism needs no Transformer Engine: the local
    layers' SDPA attention does it (model/context_parallel.py), TE layers use TE's own."""
    tr, impl, p = cfg.train, cfg.model.layer_impl, []
    wants_cuda = uses_cuda(tr.device, cuda)
    if tr.device == Device.cuda and not cuda:
        p.append("train.device: 'cuda' requested but no CUDA GPU is visible; use train.device=auto or cpu")
    if tr.device == Device.auto and not cuda and cfg.cluster.name != ClusterConfig.name:
        # A cluster's job without a GPU would start every rank on the CPU over gloo (a torch
        # built for a newer CUDA than the node's driver sees no GPU): say so instead.
        p.append(f"train.device: cluster={cfg.cluster.name} is a GPU cluster, but {_torch_sees_no_gpu()}; "
                 "install the torch build for the node's driver (docs/cluster.md, ALIA_TORCH_INDEX_URL), "
                 "or set train.device=cpu to run on the CPU anyway")
    if not wants_cuda and impl == LayerImpl.te:
        p.append("model.layer_impl: Transformer Engine layers need a GPU; use model.layer_impl=auto or local")
    if impl == LayerImpl.te and not te_available:
        p.append(
            "model.layer_impl: 'te' requested but transformer_engine is not importable; "
            "install the [te] extra or use model.layer_impl=auto"
        )
    return p


def _torch_sees_no_gpu() -> str:
    import torch

    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build"
    return (f"torch {torch.__version__} (built for CUDA {torch.version.cuda}) sees no GPU: no GPU on this "
            "node, or an NVIDIA driver older than that CUDA needs (nvidia-smi shows the driver)")


def optimizer_layout_problems(cfg: Config) -> list[str]:
    par = cfg.parallel
    if par.overlap_param_gather and not par.distributed_optimizer:
        return ["parallel.overlap_param_gather: needs parallel.distributed_optimizer=true"]
    return []


def data_problems(cfg: Config) -> list[str]:
    """data.* values that would otherwise fail only once the data is being built."""
    d, p = cfg.data, []
    try:
        split = [float(x) for x in d.split.replace("/", ",").split(",") if x.strip()]
    except ValueError:
        split = []
    if not 0 < len(split) <= 3 or any(x < 0 for x in split) or sum(split) <= 0:
        p.append(f"data.split: '{d.split}' is not train,valid,test percentages; e.g. data.split=98,2,0")
    elif split[0] == 0:
        p.append(f"data.split: '{d.split}' leaves nothing to train on; give the training part a share, "
                 "e.g. data.split=98,2,0")
    elif cfg.train.eval_interval > 0 and (len(split) < 2 or split[1] == 0):
        # Validation would be skipped without a word: no sample is in the valid part.
        p.append(f"train.eval_interval: {cfg.train.eval_interval} but data.split '{d.split}' has no validation "
                 "part; give it a share (e.g. data.split=98,2,0) or set train.eval_interval=0")
    multipliers = {f"data.multipliers.{k}": v for k, v in d.multipliers.items()}
    multipliers["data.default_multiplier"] = d.default_multiplier
    multipliers.update({f"data.sources[{i}].multiplier": s.multiplier for i, s in enumerate(d.sources)})
    for key, value in multipliers.items():
        if value is not None and not value >= 0:
            p.append(f"{key}: must be >= 0 (0 leaves the language out), got {value}")
    return p


def validate(cfg: Config, world_size: int, cuda: bool, te_available: bool) -> None:
    problems = config_problems(cfg, world_size, cuda, te_available)
    if problems:
        raise ConfigError("\n".join(problems))
