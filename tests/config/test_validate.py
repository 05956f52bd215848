"""Each invalid configuration gives one line that names the key and how to fix it."""

import pytest

from alia_train.config import ConfigError, load_config
from alia_train.config.validate import config_problems


def problems(overrides, world_size=1, cuda=False, te=False):
    return config_problems(load_config(["+model=tiny", *overrides]), world_size, cuda, te)


def test_tiny_defaults_are_valid():
    assert problems([]) == []


def test_sequence_parallel_and_bf16_are_valid_on_cpu():
    # The GPU code path runs on CPU over gloo (tests/recipes trains every recipe that way).
    assert problems(["parallel.tp=2", "parallel.sp=true", "train.precision=bf16"], world_size=2) == []


@pytest.mark.parametrize("cuda", [False, True])
def test_context_parallelism_needs_neither_gpus_nor_transformer_engine(cuda):
    # The local layers' SDPA attention does CP (model/context_parallel.py), over gloo too.
    overrides = ["parallel.cp=2", "parallel.tp=2", "parallel.sp=true", "train.precision=bf16"]
    assert problems(overrides, world_size=4, cuda=cuda, te=False) == []


def test_published_layouts_valid_on_their_clusters():
    # 40B: TP4 PP2 (32k stage: + CP8) on 256 nodes x 4 GPUs; 7B: TP4 on 128 x 4; 2B: TP1 on 64 x 4.
    for name, world in (("alia_40b", 1024), ("alia_40b_32k", 1024), ("salamandra_7b", 512), ("salamandra_2b", 256)):
        cfg = load_config([f"+model={name}"])
        assert config_problems(cfg, world, cuda=True, te_available=False) == [], name


INVALID = [
    # (overrides, world size, cuda, key that must be named, words of the fix)
    (["parallel.tp=3"], 3, False, "parallel.tp", "divide model.num_attention_heads"),
    (["model.num_query_groups=3"], 1, False, "model.num_query_groups", "does not divide"),
    (["parallel.pp=3"], 3, False, "parallel.pp", "not divisible by pp x vpp"),
    (["parallel.pp=2", "parallel.vpp=4"], 2, False, "parallel.pp", "pp x vpp = 8"),
    (["train.global_batch_size=6"], 1, False, "train.global_batch_size", "multiple of 4"),
    (["parallel.tp=2"], 3, False, "parallel", "world size 3 is not divisible"),
    (["parallel.sp=true"], 1, True, "parallel.sp", "parallel.tp > 1"),
    (["train.device=cuda"], 1, False, "train.device", "no CUDA GPU"),
    (["model.layer_impl=te"], 1, True, "model.layer_impl", "transformer_engine is not importable"),
    (["train.steps=0"], 1, False, "train.steps", "positive"),
    (["train.micro_batch_size=-1"], 1, False, "train.micro_batch_size", "positive"),
    (["model.hidden_size=0"], 1, False, "model.hidden_size", "positive"),
    (["optim.lr=0"], 1, False, "optim.lr", "> 0"),
    (["optim.min_lr=1.0"], 1, False, "optim.min_lr", "min_lr <= lr"),
    (["train.seq_length=2048"], 1, False, "train.seq_length", "max_position_embeddings"),
    (["parallel.cp=2", "train.seq_length=126"], 2, False, "train.seq_length", "2 x parallel.cp = 4"),
    (["parallel.overlap_param_gather=true"], 1, False, "parallel.overlap_param_gather", "distributed_optimizer"),
    (["parallel.pp=2", "parallel.vpp=2", "train.global_batch_size=12"], 2, False, "train.global_batch_size", "divisible by parallel.pp"),
]
# Found only by megatron or torch at run time before they were checked here (#24):
RUN_TIME_FAILURES = [
    (["parallel.tp=2", "parallel.sp=true", "train.seq_length=127"], 2, False, "train.seq_length", "not divisible by parallel.tp 2"),
    (["model.hidden_size=132"], 1, False, "model.hidden_size", "odd head size 33"),
    (["model.rope_theta=0"], 1, False, "model.rope_theta", "> 0"),
    (["model.rope_scaling_factor=0"], 1, False, "model.rope_scaling_factor", "> 0"),
    (["optim.adam_eps=0"], 1, False, "optim.adam_eps", "> 0"),
    (["optim.decay_steps=0"], 1, False, "optim.decay_steps", "positive integer or null"),
    (["train.recompute=full", "train.recompute_num_layers=0"], 1, False, "train.recompute_num_layers", "positive"),
    (["data.split='0,100,0'"], 1, False, "data.split", "nothing to train on"),
    (["train.eval_interval=5", "data.split='100,0,0'"], 1, False, "train.eval_interval", "no validation part"),
    (["train.seed=-1"], 1, False, "train.seed", "must be in 0..2147483647"),
    (["run.dir="], 1, False, "run.dir", "is empty; give a path"),
    (["data.cache_dir="], 1, False, "data.cache_dir", "is empty; give a path"),
    (["data.tokenizer="], 1, False, "data.tokenizer", "is empty; give a path (or null)"),
    (["checkpoint.load="], 1, False, "checkpoint.load", "is empty; give a path (or null)"),
    (["cluster.peak_tflops=0"], 1, False, "cluster.peak_tflops", "must be > 0"),
    (["cluster.gpus_per_node=0"], 1, False, "cluster.gpus_per_node", "must be > 0"),
    (["cluster.assumed_mfu=5"], 1, False, "cluster.assumed_mfu", "(0, 1]"),
    (["train.seed=4294967296"], 1, False, "train.seed", "must be in 0..2147483647"),
    (["optim.warmup_steps=50", "optim.decay_steps=20"], 1, False, "optim.warmup_steps", "not below optim.decay_steps 20"),
]
INVALID += RUN_TIME_FAILURES


@pytest.mark.parametrize("overrides, world, cuda, key, fix", INVALID, ids=[" ".join(c[0]) for c in INVALID])
def test_invalid_config_named(overrides, world, cuda, key, fix):
    found = problems(overrides, world, cuda)
    assert found, f"{overrides} should be rejected"
    line = next((p for p in found if p.startswith(key + ":")), None)
    assert line is not None, f"no line for {key}: {found}"
    assert fix in line
    assert "\n" not in line


@pytest.mark.parametrize("overrides, world, cuda, key, fix", RUN_TIME_FAILURES,
                         ids=[" ".join(c[0]) for c in RUN_TIME_FAILURES])
def test_the_real_command_refuses_what_megatron_or_torch_would_fail_on(overrides, world, cuda, key, fix, tmp_path):
    """From outside: `alia-train` in a subprocess as rank 0 of `world` (torchrun's variables;
    a refused launch stops before any rendezvous), one line naming the key, exit 2."""
    import subprocess

    from conftest import cli, subprocess_env

    env = subprocess_env(RANK="0", LOCAL_RANK="0", WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world))
    proc = subprocess.run([cli("alia-train"), "+model=tiny", f"run.dir={tmp_path}/run", *overrides],
                          env=env, capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and lines and all(line.startswith("alia-train: error: ") for line in lines), proc.stderr
    assert any(line.startswith(f"alia-train: error: {key}:") and fix in line for line in lines), proc.stderr
    assert not (tmp_path / "run").exists()


def test_all_problems_reported_at_once():
    found = problems(["train.steps=0", "optim.lr=-1", "checkpoint.interval=-1"])
    keys = {line.split(":")[0] for line in found}
    assert {"train.steps", "optim.lr", "checkpoint.interval"} <= keys


@pytest.mark.parametrize("override, line", [
    ("train.recompute=some", "train.recompute: 'some' is not one of none, selective, full"),
    ("logging.wandb.mode=cloud", "logging.wandb.mode: 'cloud' is not one of online, offline, disabled"),
])
def test_a_choice_outside_its_enum_is_refused_when_composed(override, line):
    # Choices are Enums in the schema: a wrong one never reaches the validator.
    with pytest.raises(ConfigError) as e:
        load_config(["+model=tiny", override])
    assert str(e.value) == line


def test_a_choice_set_in_python_is_still_checked():
    cfg = load_config(["+model=tiny"])
    cfg.train.precision = "fp16"
    cfg.logging.console = "fancy"
    assert config_problems(cfg, 1, False, False) == [
        "train.precision: 'fp16' is not one of auto, bf16, fp32",
        "logging.console: 'fancy' is not one of auto, progress, plain",
    ]


def test_cli_exits_2_before_starting(tmp_path):
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "alia_train.cli.train", "+model=tiny", "parallel.tp=3", f"run.dir={tmp_path}/r"],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 2
    assert "alia-train: error: parallel.tp: 3 does not divide model.num_attention_heads 4" in out.stderr
    assert not (tmp_path / "r").exists(), "nothing may be written for an invalid config"


def test_a_gpu_cluster_without_a_gpu_is_refused_in_one_line():
    """train.device=auto on a cluster config where torch sees no GPU (a torch built for a newer
    CUDA than the driver) would start every rank on the CPU over gloo: refused, the fix named."""
    import torch

    cfg = load_config(["+model=tiny", "cluster=marenostrum5"])
    (problem,) = [p for p in config_problems(cfg, 1, cuda=False, te_available=False) if p.startswith("train.device")]
    assert "cluster=marenostrum5 is a GPU cluster" in problem and torch.__version__ in problem
    assert "ALIA_TORCH_INDEX_URL" in problem and "train.device=cpu" in problem and "\n" not in problem
    assert not config_problems(cfg, 1, cuda=True, te_available=False)  # the same on a GPU: fine
    assert not config_problems(load_config(["+model=tiny", "cluster=marenostrum5", "train.device=cpu"]), 1,
                               cuda=False, te_available=False)  # on the CPU on purpose
    assert not config_problems(load_config(["+model=tiny"]), 1, cuda=False, te_available=False)  # local


@pytest.mark.parametrize("key", ["cluster.host_memory_gb", "cluster.filesystem_write_gb_s",
                                 "cluster.filesystem_read_gb_s", "cluster.node_network_gb_s"])
def test_checkpoint_cost_figures_are_null_or_positive(key):
    """The machine's figures for alia-plan's checkpoint costs: null means unknown, 0 or less is
    refused in one line (a zero bandwidth would divide by zero in the plan)."""
    assert problems([f"{key}=null"]) == []
    assert problems([f"{key}=12.5"]) == []
    for bad in ("0", "-1"):
        assert problems([f"{key}={bad}"]) == [f"{key}: must be > 0 (or null: unknown), got {float(bad)}"]


def test_marenostrum5_checkpoint_figures_are_valid():
    cfg = load_config(["+model=tiny", "cluster=marenostrum5", "train.device=cpu"])
    cl = cfg.cluster
    assert (cl.host_memory_gb, cl.node_network_gb_s, cl.filesystem_read_gb_s, cl.filesystem_write_gb_s) \
        == (512, 100, 1600, 600)
    assert config_problems(cfg, 1, cuda=False, te_available=False) == []
