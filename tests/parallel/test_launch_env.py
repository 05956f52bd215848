"""alia_train.parallel.launch_env: the CUDA device a task takes, and the Slurm rendezvous port.
(That common.sh computes the same port: tests/slurm/test_slurm_scripts.py.)"""

from __future__ import annotations

import pytest

from alia_train.parallel.launch_env import cuda_device_index, detect_launch_env, slurm_master_port


@pytest.mark.parametrize("local_rank", [0, 1, 3])
def test_a_task_that_sees_one_gpu_takes_it(local_rank):
    # --gpus-per-task=1 / --gpu-bind=single:1: each task's only device is cuda:0.
    assert cuda_device_index(local_rank, 1) == 0


@pytest.mark.parametrize("local_rank", [0, 1, 3])
def test_a_task_that_sees_the_node_takes_its_local_rank(local_rank):
    assert cuda_device_index(local_rank, 4) == local_rank


@pytest.mark.parametrize(("local_rank", "count"), [(2, 2), (4, 4), (7, 2), (0, 0)])
def test_a_local_rank_without_its_gpu_is_a_clear_error(local_rank, count):
    with pytest.raises(ValueError, match=rf"local rank {local_rank} but only {count} GPU\(s\) visible.*--gpus-per-task"):
        cuda_device_index(local_rank, count)


def test_slurm_port_comes_from_the_job_id_unless_given():
    env = {"SLURM_PROCID": "1", "SLURM_NTASKS": "2", "SLURM_LOCALID": "1", "SLURM_JOB_ID": "123456",
           "SLURM_JOB_NODELIST": "gs[01-02]"}
    launch = detect_launch_env(env)
    assert (launch.source, launch.master_addr, launch.master_port) == ("slurm", "gs01", slurm_master_port(123456))
    assert detect_launch_env({**env, "MASTER_PORT": "29400"}).master_port == 29400
