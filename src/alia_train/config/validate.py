"""Every check of a configuration, in one place, run before any process group starts.

Each problem becomes one line "key: what is wrong; how to fix it". All problems are reported
at once so a user fixes a config in one round trip, not one error per launch.
"""

from __future__ import annotations

from alia_train.config.load import ConfigError, available_models
from alia_train.config.schema import Config

_CHOICES = {
    "train.precision": ("auto", "bf16", "fp32"),
    "train.device": ("auto", "cuda", "cpu"),
    "train.recompute": ("none", "selective", "full"),
    "train.on_nonfinite": ("stop", "skip"),
    "optim.decay_style": ("cosine", "linear", "constant"),
    "logging.wandb.mode": ("online", "offline", "disabled"),
    "logging.console": ("auto", "progress", "plain"),
    "model.layer_impl": ("auto", "local", "te"),
}


def _get(cfg: Config, dotted: str):
    obj = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def config_problems(cfg: Config, world_size: int, cuda: bool, te_available: bool) -> list[str]:
    """All problems of `cfg` for a job of `world_size` processes; empty when it is valid."""
    p: list[str] = []
    m, par, tr, opt = cfg.model, cfg.parallel, cfg.train, cfg.optim

    if m.name not in available_models() and m.name != "custom":
        p.append(f"model.name: unknown model '{m.name}'; choose one of {', '.join(available_models())}")

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
        "logging.interval": cfg.logging.interval,
        "checkpoint.keep": cfg.checkpoint.keep,
    }
    for key, value in positive.items():
        if value is None or value <= 0:
            p.append(f"{key}: must be a positive integer, got {value}")
    if m.vocab_size is not None and m.vocab_size <= 0:
        p.append(f"model.vocab_size: must be positive (or null to take it from the tokenizer), got {m.vocab_size}")
    for key, value in {
        "model.init_std": m.init_std,
        "model.norm_eps": m.norm_eps,
        "optim.lr": opt.lr,
    }.items():
        if not value > 0:
            p.append(f"{key}: must be > 0, got {value}")
    for key, value in {
        "optim.min_lr": opt.min_lr,
        "optim.weight_decay": opt.weight_decay,
        "optim.warmup_steps": opt.warmup_steps,
        "optim.clip_grad": opt.clip_grad,
        "checkpoint.interval": cfg.checkpoint.interval,
        "train.eval_interval": tr.eval_interval,
    }.items():
        if value < 0:
            p.append(f"{key}: must be >= 0, got {value}")
    if opt.min_lr > opt.lr:
        p.append(f"optim.min_lr: {opt.min_lr} is above optim.lr {opt.lr}; set min_lr <= lr")
    if not (0 <= opt.adam_beta1 < 1 and 0 <= opt.adam_beta2 < 1):
        p.append(f"optim.adam_beta1/adam_beta2: must be in [0, 1), got {opt.adam_beta1}, {opt.adam_beta2}")
    if tr.eval_interval > 0 and tr.eval_iters <= 0:
        p.append(f"train.eval_iters: must be positive when train.eval_interval > 0, got {tr.eval_iters}")

    for key, choices in _CHOICES.items():
        value = _get(cfg, key)
        if value not in choices:
            p.append(f"{key}: '{value}' is not one of {', '.join(choices)}")

    if p:  # the divisibility checks below would only repeat these
        return p

    if m.num_attention_heads % m.num_query_groups:
        p.append(
            f"model.num_query_groups: {m.num_query_groups} does not divide "
            f"model.num_attention_heads {m.num_attention_heads}"
        )
    if m.hidden_size % m.num_attention_heads:
        p.append(f"model.hidden_size: {m.hidden_size} is not divisible by num_attention_heads {m.num_attention_heads}")
    if m.num_attention_heads % par.tp:
        p.append(f"parallel.tp: {par.tp} does not divide model.num_attention_heads {m.num_attention_heads}; use a divisor")
    if m.num_query_groups % par.tp:
        p.append(f"parallel.tp: {par.tp} does not divide model.num_query_groups {m.num_query_groups}; use a divisor")
    if m.ffn_hidden_size % par.tp:
        p.append(f"parallel.tp: {par.tp} does not divide model.ffn_hidden_size {m.ffn_hidden_size}")
    stages = par.pp * (par.vpp or 1)
    if m.num_layers % stages:
        p.append(
            f"parallel.pp: model.num_layers {m.num_layers} is not divisible by pp x vpp = {stages}; "
            "change parallel.pp or parallel.vpp"
        )
    if par.vpp is not None:
        if par.vpp < 1:
            p.append(f"parallel.vpp: must be >= 1 or null, got {par.vpp}")
        elif par.vpp > 1 and par.pp < 2:
            p.append("parallel.vpp: interleaved pipeline stages need parallel.pp >= 2; set parallel.vpp=null")
    if tr.seq_length > m.max_position_embeddings and m.rope_scaling_factor == 1.0:
        p.append(
            f"train.seq_length: {tr.seq_length} exceeds model.max_position_embeddings "
            f"{m.max_position_embeddings}; lower it or raise max_position_embeddings"
        )
    if tr.seq_length % (2 * par.cp) and par.cp > 1:
        p.append(f"train.seq_length: {tr.seq_length} must be divisible by 2 x parallel.cp = {2 * par.cp}")

    model_parallel = par.tp * par.pp * par.cp
    if world_size % model_parallel:
        p.append(
            f"parallel: world size {world_size} is not divisible by tp x pp x cp = {model_parallel}; "
            f"launch a multiple of {model_parallel} processes or change parallel.tp/pp/cp"
        )
    else:
        dp = world_size // model_parallel
        if tr.global_batch_size % (tr.micro_batch_size * dp):
            p.append(
                f"train.global_batch_size: {tr.global_batch_size} is not divisible by micro_batch_size x DP "
                f"= {tr.micro_batch_size} x {dp}; use a multiple of {tr.micro_batch_size * dp}"
            )
        elif par.vpp and par.vpp > 1 and (tr.global_batch_size // (tr.micro_batch_size * dp)) % par.pp:
            p.append(
                "train.global_batch_size: the interleaved schedule needs the number of micro-batches "
                f"per step ({tr.global_batch_size // (tr.micro_batch_size * dp)}) divisible by parallel.pp {par.pp}"
            )

    if par.sp and par.tp == 1:
        p.append("parallel.sp: sequence parallelism needs parallel.tp > 1; set parallel.sp=false")
    wants_cuda = tr.device == "cuda" or (tr.device == "auto" and cuda)
    if tr.device == "cuda" and not cuda:
        p.append("train.device: 'cuda' requested but no CUDA GPU is visible; use train.device=auto or cpu")
    if not wants_cuda:
        # Sequence parallelism and bf16 run on CPU too (slowly): the same megatron code paths
        # as on GPU, so that tests exercise what the recipes use.
        if par.cp > 1:
            p.append("parallel.cp: context parallelism needs GPUs; set parallel.cp=1")
        if m.layer_impl == "te":
            p.append("model.layer_impl: Transformer Engine layers need a GPU; use model.layer_impl=auto or local")
    if m.layer_impl == "te" and not te_available:
        p.append(
            "model.layer_impl: 'te' requested but transformer_engine is not importable; "
            "install the [te] extra or use model.layer_impl=auto"
        )
    if par.cp > 1 and not (te_available and wants_cuda):
        if wants_cuda:
            p.append("parallel.cp: context parallelism needs Transformer Engine attention; install the [te] extra")
    if par.overlap_param_gather and not par.distributed_optimizer:
        p.append("parallel.overlap_param_gather: needs parallel.distributed_optimizer=true")
    p += data_problems(cfg)
    return p


def data_problems(cfg: Config) -> list[str]:
    """data.* values that would otherwise fail only once the data is being built."""
    d, p = cfg.data, []
    try:
        split = [float(x) for x in d.split.replace("/", ",").split(",") if x.strip()]
    except ValueError:
        split = []
    if not 0 < len(split) <= 3 or any(x < 0 for x in split) or sum(split) <= 0:
        p.append(f"data.split: '{d.split}' is not train,valid,test percentages; e.g. data.split=98,2,0")
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
