"""What alia-plan says checkpoints cost (plan/checkpoint_cost.py), against hand computations
from published figures. The calibration against real checkpoints on disk is
test_checkpoint_calibration.py."""

from __future__ import annotations

import pytest

from alia_train.cli.plan import main
from alia_train.config.load import load_config
from alia_train.exit_codes import EXIT_OK
from alia_train.plan import plan_run
from alia_train.plan.checkpoint_cost import bytes_per_param, training_share

GIB = 2**30
MN5_40B = ["+model=alia_40b", "cluster=marenostrum5", "cluster.nodes=256"]
# ALIA-40B as alia-plan prints it (tests/plan/test_plan_cli.py): vocabulary 256,000 (a multiple
# of 128 x TP 4, so not padded), 5,054,537,728 parameters per GPU on the last stage (the larger).
PARAMS_40B = 40_433_885_184
LAST_STAGE_40B = 5_054_537_728


def _hand_40b() -> dict[str, float]:
    size = PARAMS_40B * (2 + 12)  # bf16 weights + fp32 main params, Adam m, v
    embedding_shard = 256_000 * 8192 // 4 * 2  # the largest tensor a rank may be given, bf16
    rank = LAST_STAGE_40B * 14 / 128 + embedding_shard  # its share over DP 128, + that tensor
    return {
        "size": size,
        "node": 4 * rank,
        "portable_node": 4 * (LAST_STAGE_40B * 12 + rank),  # + the stage's gathered optimizer state
        "save": size / min(600e9, 256 * 100e9),
        "load": size / min(1600e9, 256 * 100e9),
        "share": (size / 600e9) / (100 * 4_194_304 * 2.397e11 / (1024 * 989e12 * 0.4) + size / 600e9),
    }


def test_40b_on_256_mn5_nodes_prints_the_checkpoint_lines(capsys):
    assert main(MN5_40B) == EXIT_OK
    out = capsys.readouterr().out
    hand = _hand_40b()
    assert f"size on disk               {hand['size'] / 1e9:,.1f} GB ({PARAMS_40B:,} parameters as stored)" in out
    assert f"host memory per node       {hand['node'] / GIB:.1f} GiB of 512 GiB (1%) to save, the same to load" in out
    assert f"portable form, on request  {hand['portable_node'] / GIB:.1f} GiB of 512 GiB (45%) to save or load" in out
    assert f"save                       {hand['save']:.2f} s: 566.1 GB at min(file system 600, 256 node(s) x 100) GB/s" in out
    assert f"load                       {hand['load']:.2f} s: 566.1 GB at min(file system 1,600, 256 node(s) x 100) GB/s" in out
    assert f"checkpoint.interval 0      at the end and on a signal: {hand['share']:.2%} of the run" in out
    # The numbers themselves, so that a formatting change cannot hide a wrong figure.
    assert (round(hand["size"] / 1e9, 1), round(hand["node"] / GIB, 1), round(hand["portable_node"] / GIB, 1)) \
        == (566.1, 6.0, 231.9)
    assert (round(hand["save"], 2), round(hand["load"], 2)) == (0.94, 0.35)


def test_40b_plan_figures_match_the_hand_computation():
    cfg = load_config(MN5_40B)
    ck = plan_run(cfg, 1024, 256_000).checkpoint
    hand = _hand_40b()
    assert ck.size == hand["size"]
    assert ck.node_bytes == pytest.approx(hand["node"])
    assert ck.portable_node_bytes == pytest.approx(hand["portable_node"])
    assert ck.portable_rank_bytes / 1e9 == pytest.approx(62.3, abs=0.1)  # ~61 GB gathered + its share
    assert (ck.save_seconds, ck.load_seconds) == (pytest.approx(hand["save"]), pytest.approx(hand["load"]))


def test_bytes_per_parameter():
    """bf16: 2 + 12 with or without the distributed optimizer (Float16Optimizer keeps fp32 main
    params too); fp32: 4 + 12 distributed (megatron saves its "param" beside the moments), 4 + 8
    plain (the weights are the main params)."""
    assert bytes_per_param(bf16=True, distributed_optimizer=True) == (2, 12)
    assert bytes_per_param(bf16=True, distributed_optimizer=False) == (2, 12)
    assert bytes_per_param(bf16=False, distributed_optimizer=True) == (4, 12)
    assert bytes_per_param(bf16=False, distributed_optimizer=False) == (4, 8)


def test_few_nodes_are_bound_by_their_network():
    """2 nodes x 100 GB/s = 200 GB/s < the file system's 600: the network sets the time."""
    cfg = load_config(["+model=salamandra_2b", "cluster=marenostrum5", "cluster.nodes=2"])
    ck = plan_run(cfg, 8, 256_000, suggest=False).checkpoint
    assert ck.size == 2_253_490_176 * 14
    assert ck.save_seconds == pytest.approx(ck.size / 200e9)
    assert ck.load_seconds == pytest.approx(ck.size / 200e9)


def test_no_distributed_optimizer_has_no_portable_form_and_replicates_fp32_tensors():
    cfg = load_config([*MN5_40B, "parallel.distributed_optimizer=false", "parallel.overlap_param_gather=false"])
    ck = plan_run(cfg, 1024, 256_000, suggest=False).checkpoint
    assert ck.portable_rank_bytes is None
    # Its share, + the largest tensor in fp32 (Adam's moments are replicated over DP too).
    assert ck.rank_bytes == pytest.approx(LAST_STAGE_40B * 14 / 128 + 256_000 * 8192 / 4 * 4)


def test_unknown_machine_figures_are_said(capsys):
    """The local cluster knows no bandwidths nor host memory: the plan says what to set."""
    assert main(["+model=tiny"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "size on disk               25.0 MB (1,787,008 parameters as stored)" in out
    assert "(cluster.host_memory_gb unknown)" in out
    assert "save                       unknown: set cluster.filesystem_write_gb_s" in out
    assert "load                       unknown: set cluster.filesystem_read_gb_s" in out
    assert "checkpoint.interval" not in out


def test_more_than_a_node_has(capsys):
    assert main([*MN5_40B, "cluster.host_memory_gb=128"]) == EXIT_OK
    assert "231.9 GiB of 128 GiB (MORE than a node has) to save or load" in capsys.readouterr().out


def test_training_share():
    # 10 saves of 5 s next to 1,000 steps of 2 s: 50 / 2,050.
    assert training_share(5.0, 100, 2.0, 1000) == pytest.approx(50 / 2050)
    # 1,050 steps at an interval of 100: 11 saves, the last one at the end.
    assert training_share(5.0, 100, 2.0, 1050) == pytest.approx(55 / (2100 + 55))
    # Interval 0: one save, at the end.
    assert training_share(5.0, 0, 2.0, 1000) == pytest.approx(5 / 2005)


def test_one_process_writes_the_whole_checkpoint():
    """Its share (all of it) + the largest tensor would be more than there is: capped."""
    cfg = load_config(["+model=tiny"])
    ck = plan_run(cfg, 1, 4096, suggest=False).checkpoint
    assert ck.rank_bytes == ck.size == 1_787_008 * 14


def test_unknown_node_network_leaves_the_file_system_alone(capsys):
    assert main([*MN5_40B, "cluster.node_network_gb_s=null"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "save                       0.94 s: 566.1 GB at the file system's 600 GB/s" in out
