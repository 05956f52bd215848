"""Sequence parallelism observed itself, not only through loss parity (which holds with SP on or
off): at TP 2 the hidden states between layers hold seq/TP tokens on each rank, and megatron's
finalize step all-reduces the norm weights' gradients over TP, so each rank ends with the
gradient of the whole sequence, the one the run without SP computes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import BIN, subprocess_env

sys.path.insert(0, str(Path(__file__).parent))
from sequence_parallel_worker import HIDDEN, LAYERS, MICRO_BATCH, SEQ  # noqa: E402

TP = 2
pytestmark = [pytest.mark.multiproc]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    """One 2-process gloo launch for the whole file: a step with SP and one without, per rank."""
    out = tmp_path_factory.mktemp("sp")
    worker = Path(__file__).with_name("sequence_parallel_worker.py")
    cmd = [str(BIN / "torchrun"), "--standalone", f"--nproc_per_node={TP}", str(worker), str(out)]
    proc = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-4000:]
    return [torch.load(out / f"rank{r}.pt") for r in range(TP)]


@pytest.mark.parametrize("sp, seq", [(True, SEQ // TP), (False, SEQ)], ids=["sp", "no_sp"])
def test_hidden_states_between_layers_hold_seq_over_tp_tokens_with_sp(ranks, sp, seq):
    for rank in ranks:
        shapes = rank[sp]["shapes"]
        assert len(shapes) == 2 * LAYERS + 1  # both norms of each layer and the final norm
        assert set(shapes.values()) == {(seq, MICRO_BATCH, HIDDEN)}, shapes


def test_norm_weight_gradients_are_all_reduced_over_tp(ranks):
    """With SP each rank's norms see half the sequence: without the all-reduce each rank would
    keep the gradient of its half."""
    sp_grads = [rank[True]["grads"] for rank in ranks]
    reference = ranks[0][False]["grads"]
    assert sp_grads[0].keys() == reference.keys() and len(reference) == 2 * LAYERS + 1
    for name, expected in reference.items():
        assert expected.abs().max() > 0, name
        apart = (sp_grads[0][name] - sp_grads[1][name]).abs().max().item()
        assert apart == 0, f"{name}: TP ranks' gradients differ by up to {apart:.2e}"
        error = (sp_grads[0][name] - expected).abs().max() / expected.abs().max()
        assert error < 1e-5, f"{name}: relative error {error:.2e} against the run without SP"
