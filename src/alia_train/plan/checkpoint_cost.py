"""What a run's checkpoints cost: size on disk, host memory per node while one is saved or
loaded, seconds to save and to load at the cluster's file-system bandwidth, and the share of
training time the saves take at checkpoint.interval. From the config alone.

What a checkpoint holds (checkpoint/state_dict.py, megatron-core's dist_checkpointing), in bytes
per parameter, each tensor written once whatever the layout (replicas are written by one rank):
  model weights       2 (bf16) or 4 (fp32)
  optimizer state     the distributed optimizer: its fp32 main params 4 + Adam exp_avg,
                      exp_avg_sq 8 = 12, in bf16 and fp32 runs alike (megatron saves "param" with
                      the moments); without it, bf16: fp32 main params 4 + Adam 8 = 12, fp32: Adam
                      8 only (the model's weights are the main params)
  parameters          as stored: the embedding and output layer padded to the vocabulary the run
                      uses (make_vocab_size_divisible_by x TP), norms once
Not counted: RNG states, scheduler, config, the .metadata file, per-tensor headers: 0.2-0.3 MB
in the calibration runs, 0.4 % of their 60-75 MB (tests/plan/test_checkpoint_calibration.py
compares this figure with the files of real checkpoints).

Host memory. megatron's FullyParallelSaveStrategyWrapper (checkpoint/writer.py) shares out the
writing of replicated tensors among the data-parallel ranks (DP x CP) of a stage, greedily,
largest first, on top of what only one rank holds (its distributed-optimizer shard); each rank
stages what it writes in host memory (async saves copy it off the GPU; blocking ones too, the
same writer runs inline). So one rank holds at most
  stage bytes / (DP x CP)  +  the largest tensor it may be given
(the greedy bound: no rank ends more than one item above the mean), and never more than the
whole stage. A load (the fully parallel load of checkpoint/resume.py) reads each rank's share
into host memory, then to the GPU: the same figure. A node holds gpus_per_node ranks of one
stage (TP is innermost in megatron's rank order).

The portable (megatron "fully_reshardable") form of the distributed optimizer, reloadable under
any TP / PP / DP, all-gathers on every data-parallel rank the whole stage's fp32 main params and
Adam moments into host memory, 12 bytes per parameter of the stage, for a save and for a load
(megatron allocates the stage's whole state on every rank to load it), plus the rank's share
(megatron's default, distrib_optim_fully_reshardable_mem_efficient off: gathered on all ranks).

Time: size / min(aggregate file-system bandwidth, nodes x each node's network bandwidth): every
byte crosses one node's network links and the file system once. Both are peak figures, and the
file system is shared with other jobs: the seconds are lower bounds (the speeds upper bounds).
"""

from __future__ import annotations

from dataclasses import dataclass

from alia_train.config.schema import ClusterConfig, ModelConfig
from alia_train.model.params import count_params
from alia_train.plan.memory import stage_params
from alia_train.plan.parallel_layout import Layout

GB = 1e9  # file systems and networks are quoted in decimal units
GIB = 2**30  # host memory (cluster.host_memory_gb), read as GiB like cluster.gpu_memory_gb
FP32 = 4
ADAM_MOMENTS = 8  # exp_avg + exp_avg_sq, fp32
MAIN_PARAMS = 4  # fp32 main (master) params


@dataclass(frozen=True)
class CheckpointCost:
    params: int  # parameters as stored (vocabulary padded)
    weight_bytes: int  # per parameter: model weights
    optimizer_bytes: int  # per parameter: main params + Adam moments as saved
    nodes: int
    ranks_per_node: int
    rank_bytes: float  # the most a rank writes on a save (stages in host memory) or reads on a load
    portable_rank_bytes: float | None  # the fully reshardable form, per rank; None: no distributed optimizer
    host_memory_gib: float | None  # per node (cluster.host_memory_gb); None: unknown
    write_bytes_per_s: float | None  # min(file system, nodes x node network); None: file system unknown
    read_bytes_per_s: float | None
    network_bytes_per_s: float | None  # nodes x cluster.node_network_gb_s; None: unknown

    @property
    def size(self) -> float:
        """Bytes on disk: each stored parameter's weight and optimizer state, once."""
        return self.params * (self.weight_bytes + self.optimizer_bytes)

    @property
    def node_bytes(self) -> float:
        return self.ranks_per_node * self.rank_bytes

    @property
    def portable_node_bytes(self) -> float | None:
        return None if self.portable_rank_bytes is None else self.ranks_per_node * self.portable_rank_bytes

    @property
    def save_seconds(self) -> float | None:
        return None if self.write_bytes_per_s is None else self.size / self.write_bytes_per_s

    @property
    def load_seconds(self) -> float | None:
        return None if self.read_bytes_per_s is None else self.size / self.read_bytes_per_s


def bytes_per_param(bf16: bool, distributed_optimizer: bool) -> tuple[int, int]:
    """(model weights, optimizer state) bytes per parameter in a checkpoint (module docstring)."""
    weights = 2 if bf16 else FP32
    if distributed_optimizer or bf16:
        return weights, MAIN_PARAMS + ADAM_MOMENTS
    return weights, ADAM_MOMENTS


def largest_tensor(m: ModelConfig, padded_vocab: int, lay: Layout, stage: int) -> float:
    """Elements of the largest single tensor one rank of `stage` holds: the TP shard of the
    embedding (first stage) or output layer (last stage), or of a layer's fused QKV, fused
    SwiGLU FC1 (gate + up) or FC2 weight."""
    h = m.hidden_size
    head_dim = h // m.num_attention_heads
    qkv = (h + 2 * m.num_query_groups * head_dim) * h
    largest = max(qkv, 2 * m.ffn_hidden_size * h, m.ffn_hidden_size * h) / lay.tp
    if stage in (0, lay.pp - 1):
        largest = max(largest, padded_vocab * h / lay.tp)
    return largest


def _rank_bytes(m: ModelConfig, padded_vocab: int, lay: Layout, weight_b: int, opt_b: int) -> float:
    """The most one rank writes on a save (or reads on a load), over the bounding stages: its
    share of the stage, stage bytes / (DP x CP), plus the largest tensor the greedy share-out
    may put on it. With the distributed optimizer only the weights are replicated (each rank's
    optimizer shard is its own); without it, the fp32 optimizer tensors are replicated too."""
    item_bytes = weight_b if lay.distributed_optimizer else FP32
    shares = lay.dp * lay.cp

    def one(stage: int) -> float:
        stage_bytes = stage_params(m, padded_vocab, lay, stage) * (weight_b + opt_b)
        return min(stage_bytes / shares + largest_tensor(m, padded_vocab, lay, stage) * item_bytes, stage_bytes)

    return max(one(s) for s in sorted({0, lay.pp - 1}))


def _bandwidth(fs_gb_s: float | None, network: float | None) -> float | None:
    """Bytes/s: the file system's aggregate figure, capped by the nodes' network; None when the
    file system's figure is unknown (the network alone would say nothing of the disks)."""
    if fs_gb_s is None:
        return None
    return fs_gb_s * GB if network is None else min(fs_gb_s * GB, network)


def checkpoint_cost(m: ModelConfig, padded_vocab: int, lay: Layout, cl: ClusterConfig) -> CheckpointCost:
    """The checkpoint of `m` trained with layout `lay` on cluster `cl` (module docstring)."""
    weight_b, opt_b = bytes_per_param(lay.bf16, lay.distributed_optimizer)
    rank = _rank_bytes(m, padded_vocab, lay, weight_b, opt_b)
    portable = None
    if lay.distributed_optimizer:  # the stage's gathered fp32 main params + Adam moments, + its share
        stage = max(stage_params(m, padded_vocab, lay, s) for s in sorted({0, lay.pp - 1}))
        portable = stage * (MAIN_PARAMS + ADAM_MOMENTS) + rank
    nodes = -(-lay.world_size // cl.gpus_per_node)  # the job's (cluster.nodes for alia-plan)
    network = None if cl.node_network_gb_s is None else nodes * cl.node_network_gb_s * GB
    return CheckpointCost(
        params=count_params(m, padded_vocab).total,
        weight_bytes=weight_b,
        optimizer_bytes=opt_b,
        nodes=nodes,
        ranks_per_node=min(cl.gpus_per_node, lay.world_size),
        rank_bytes=rank,
        portable_rank_bytes=portable,
        host_memory_gib=cl.host_memory_gb,
        write_bytes_per_s=_bandwidth(cl.filesystem_write_gb_s, network),
        read_bytes_per_s=_bandwidth(cl.filesystem_read_gb_s, network),
        network_bytes_per_s=network,
    )


def training_share(save_seconds: float, interval: int, step_seconds: float, steps: int) -> float:
    """The share of the run's time spent in blocking saves: one save every `interval` steps
    (0: one save, at the end), each `save_seconds`, next to `steps` steps of `step_seconds`."""
    saves = -(-steps // interval) if interval > 0 else 1  # the last one also ends the run
    training = steps * step_seconds
    return saves * save_seconds / (training + saves * save_seconds)
