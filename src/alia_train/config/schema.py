"""Typed configuration of a run.

Hydra composes the YAML files in `configs/` into one tree; `load.py` turns that tree into
these dataclasses (unknown keys are an error there). Every check of the values lives in
`validate.py`, so this file only says what exists and what it defaults to.

These defaults are the only ones: the group files in `configs/` hold only what an option
changes (cluster=marenostrum5, data=sample) and the model files their recipes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


# Choices. Member names equal their values: OmegaConf parses a YAML / command-line value by the
# member's name, and a StrEnum compares equal to its string, so `precision == "bf16"` holds.
class LayerImpl(StrEnum):
    auto = "auto"
    local = "local"
    te = "te"


class DecayStyle(StrEnum):
    cosine = "cosine"
    linear = "linear"
    constant = "constant"
    wsd = "wsd"


class WsdDecayStyle(StrEnum):  # megatron-core's names (OptimizerParamScheduler)
    linear = "linear"
    cosine = "cosine"
    exponential = "exponential"
    minus_sqrt = "minus_sqrt"


class Precision(StrEnum):
    auto = "auto"
    bf16 = "bf16"
    fp32 = "fp32"


class Device(StrEnum):
    auto = "auto"
    cuda = "cuda"
    cpu = "cpu"


class Recompute(StrEnum):
    none = "none"
    selective = "selective"
    full = "full"


class LossImpl(StrEnum):
    plain = "plain"
    chunked = "chunked"


class CompileBackend(StrEnum):
    inductor = "inductor"  # generated kernels: Triton on a GPU, C++ on the CPU
    aot_eager = "aot_eager"  # the same traced graphs run by eager kernels: a quick check of the tracing


class OnNonfinite(StrEnum):
    stop = "stop"
    skip = "skip"


class WandbMode(StrEnum):
    online = "online"
    offline = "offline"
    disabled = "disabled"


class ConsoleMode(StrEnum):
    auto = "auto"
    progress = "progress"
    plain = "plain"


@dataclass
class RunConfig:
    # Where config.yaml, metrics.jsonl and checkpoints/ go. Relative paths are taken from the
    # directory the command was started in.
    dir: str = "runs/${run.name}"
    name: str = "${model.name}"


@dataclass
class ModelConfig:
    name: str = "???"
    num_layers: int = 0
    hidden_size: int = 0
    ffn_hidden_size: int = 0
    num_attention_heads: int = 0
    # Key/value heads (GQA). Equal to num_attention_heads for plain multi-head attention.
    num_query_groups: int = 0
    # Vocabulary of the tokenizer, before padding. None: taken from the tokenizer file.
    vocab_size: int | None = None
    make_vocab_size_divisible_by: int = 128
    max_position_embeddings: int = 8192
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling_factor: float = 1.0
    init_std: float = 0.02
    # "auto": Transformer Engine's layers when TE imports and a GPU is present, else "local"
    # (megatron-core's own layers with a PyTorch SDPA core attention).
    layer_impl: LayerImpl = LayerImpl.auto


@dataclass
class ParallelConfig:
    tp: int = 1
    pp: int = 1
    # Virtual pipeline stages per pipeline rank (interleaved schedule); None = not interleaved.
    vpp: int | None = None
    cp: int = 1
    # Sequence parallelism (needs tp > 1; runs on GPU and, over gloo, on CPU).
    sp: bool = False
    distributed_optimizer: bool = False
    overlap_grad_reduce: bool = False
    overlap_param_gather: bool = False
    # With overlap_param_gather and an interleaved schedule (vpp): every pipeline stage starts
    # its parameter all-gathers together (Megatron-LM's default); ignored otherwise.
    align_param_gather: bool = True
    # Reduce gradients in bf16 (the Salamandra recipe) instead of fp32.
    grad_reduce_in_bf16: bool = False


@dataclass
class OptimConfig:
    lr: float = 3e-4
    min_lr: float = 3e-5
    warmup_steps: int = 100
    # Decays from the end of warmup to train.steps (or to decay_steps when set).
    decay_style: DecayStyle = DecayStyle.cosine
    decay_steps: int | None = None
    # decay_style=wsd (warmup-stable-decay): optim.lr from the end of warmup, then the last
    # wsd_decay_steps steps before train.steps (or decay_steps) decay to min_lr.
    wsd_decay_steps: int | None = None
    wsd_decay_style: WsdDecayStyle = WsdDecayStyle.linear
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_eps: float = 1e-8
    # Applied to weight matrices only; norms (and biases, if any) are not decayed.
    weight_decay: float = 0.1
    clip_grad: float = 1.0
    # torch's fused AdamW kernel (one kernel for all parameters) instead of its foreach or
    # per-parameter loops; used where megatron falls back to torch's AdamW (no apex / TE).
    fused_adam: bool = True
    # On resume, the LR schedule (lr, min_lr, warmup, decay steps and style, weight decay)
    # continues as saved in the checkpoint, and the resume says which of these settings differ.
    # true: this run's values apply from the resumed step on (megatron's
    # override_opt_param_scheduler), e.g. to decay over a longer train.steps. A wsd run resumed
    # in its stable phase takes this run's decay (train.steps, wsd_*) without it.
    override_schedule: bool = False


@dataclass
class TrainConfig:
    steps: int = 100
    global_batch_size: int = 8
    micro_batch_size: int = 1
    seq_length: int = 256
    seed: int = 1234
    # "auto": bf16 on GPU, fp32 on CPU.
    precision: Precision = Precision.auto
    # "auto": cuda when available, else cpu.
    device: Device = Device.auto
    # "selective": the attention core only; "full": whole layers.
    recompute: Recompute = Recompute.none
    recompute_num_layers: int = 1
    # Output layer + cross entropy: "plain" (megatron's, holds the logits of every token) or
    # "chunked" (model/chunked_loss.py: loss_chunk_size rows of logits at a time, the
    # backward recomputes them: less memory, one more output-layer matmul).
    loss_impl: LossImpl = LossImpl.plain
    loss_chunk_size: int = 1024
    # Evaluation on the validation split every eval_interval steps (0 = never), eval_iters
    # global batches each time.
    eval_interval: int = 0
    eval_iters: int = 2
    # What to do on a NaN/Inf loss or grad norm: stop, or skip the step.
    on_nonfinite: OnNonfinite = OnNonfinite.stop
    # With on_nonfinite=skip: how many non-finite steps in a row are skipped; one more stops the
    # run (exit 3, those weights not saved), as a model that keeps diverging will not recover.
    max_skipped_steps: int = 10
    # On a GPU, refuse to start a run that the memory planner says does not fit (alia-plan's
    # estimate, with suggested layouts). false: start anyway.
    check_memory: bool = True
    # torch.compile each transformer layer (inductor; also on CPU). Off by default, as in
    # Megatron-LM and torchtitan (opt-in there too); see docs/performance.md.
    compile: bool = False
    # torch.compile's backend for train.compile (as torchtitan's compile.backend). aot_eager
    # traces the same graphs without generating kernels: the GPU check's CPU rehearsal uses it.
    compile_backend: CompileBackend = CompileBackend.inductor
    # megatron's compiled SwiGLU (bias_activation_fusion, no Transformer Engine needed), on GPU
    # (Megatron-LM's default); CPU runs keep the plain activation, where compiling costs more.
    fused_swiglu: bool = True


@dataclass
class DataSource:
    # Prefix of a Megatron indexed dataset (PREFIX.bin / PREFIX.idx).
    path: str = "???"
    lang: str = "???"
    # Overrides the language multiplier for this one source.
    multiplier: float | None = None


@dataclass
class DataConfig:
    # SentencePiece model; None = the tokenizer shipped with the sample corpus.
    tokenizer: str | None = None
    sources: list[DataSource] = field(default_factory=list)
    # Separate validation prefixes; when empty, `split` carves validation out of sources.
    valid_sources: list[DataSource] = field(default_factory=list)
    # Sampling multipliers per language (Salamandra: co-official languages 2x, code 0.5x).
    multipliers: dict[str, float] = field(
        default_factory=lambda: {"es": 2.0, "ca": 2.0, "eu": 2.0, "gl": 2.0, "code": 0.5}
    )
    default_multiplier: float = 1.0
    # train,valid,test percentages when valid_sources is empty (data=sample sets 95,5,0: its
    # corpus is small, so validation takes a larger share).
    split: str = "98,2,0"
    # Where shards and dataset index caches are written when the sample corpus is prepared.
    cache_dir: str = "${run.dir}/data_cache"
    # Prepare (tokenize) the shipped sample corpus when sources is empty.
    use_sample: bool = True


@dataclass
class CheckpointConfig:
    interval: int = 0  # 0 = only at the end and on signal
    keep: int = 3
    # Start from another run's checkpoint (a run dir or a checkpoint dir) while run.dir has none
    # of its own; the run's own checkpoints always win, so restarts resume exactly.
    load: str | None = None
    async_save: bool = False
    # One-shot, with `load` only: fresh optimizer + LR schedule from step 0 / data from sample 0.
    # Ignored once the run has checkpoints of its own.
    reset_optimizer: bool = False
    reset_data: bool = False
    save_on_signal: bool = True


@dataclass
class WandbConfig:
    mode: WandbMode = WandbMode.disabled
    project: str = "alia-train"
    entity: str | None = None
    name: str | None = None


@dataclass
class LoggingConfig:
    interval: int = 10
    # "auto": progress display in a terminal, plain lines otherwise.
    console: ConsoleMode = ConsoleMode.auto
    wandb: WandbConfig = field(default_factory=WandbConfig)
    tensorboard: bool = False


@dataclass
class ClusterConfig:
    name: str = "local"
    gpus_per_node: int = 1
    nodes: int = 1
    gpu_memory_gb: float = 80.0
    # Dense bf16 peak used for MFU (H100 SXM).
    peak_tflops: float = 989.0
    # MFU assumed by the planner's time estimates.
    assumed_mfu: float = 0.40
    # For alia-plan's checkpoint costs (null = unknown): host memory per node (GiB), the file
    # system's aggregate write / read bandwidth (GB/s) and each node's network bandwidth (GB/s).
    host_memory_gb: float | None = None
    filesystem_write_gb_s: float | None = None
    filesystem_read_gb_s: float | None = None
    node_network_gb_s: float | None = None


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
