"""The layout rules shared by the validator and the planner's suggestions."""

from dataclasses import replace

import pytest

from alia_train.config import load_config
from alia_train.config.layout_rules import ParallelSplit, layout_problems
from alia_train.plan.parallel_layout import layout_from_config


def _split(cfg, **changes):
    return replace(ParallelSplit.of(cfg, 1), **changes)


# tiny: 4 layers, 4 heads, 2 query groups, FFN 352, GBS 8, micro batch 4
RULES = [
    (dict(tp=4, world_size=4), "parallel.tp: 4 does not divide model.num_query_groups 2"),
    (dict(pp=2, vpp=4, world_size=2), "parallel.pp: model.num_layers 4 is not divisible by pp x vpp = 8"),
    (dict(vpp=2), "parallel.vpp: interleaved pipeline stages need parallel.pp >= 2"),
    (dict(cp=3, world_size=3), "train.seq_length: 128 must be divisible by 2 x parallel.cp = 6"),
    (dict(tp=2, world_size=3), "parallel: world size 3 is not divisible by tp x pp x cp = 2"),
    (dict(world_size=3), "train.global_batch_size: 8 is not divisible by micro_batch_size x DP = 4 x 3"),
    (dict(pp=2, vpp=2, world_size=2, global_batch_size=3, micro_batch_size=1),
     "train.global_batch_size: the interleaved schedule needs the number of micro-batches per step (3)"),
    (dict(sp=True), "parallel.sp: sequence parallelism needs parallel.tp > 1"),
]


@pytest.mark.parametrize("changes, expected", RULES, ids=[r[1].split(":")[0] for r in RULES])
def test_each_rule_names_its_key(changes, expected):
    cfg = load_config(["+model=tiny"])
    found = layout_problems(cfg.model, _split(cfg, **changes))
    assert any(line.startswith(expected) for line in found), found


def test_the_planner_sees_the_same_layout():
    cfg = load_config(["+model=alia_40b", "parallel.vpp=3"])
    assert layout_from_config(cfg, 1024).split == ParallelSplit.of(cfg, 1024)
