"""The runtime honours train.device wherever a run is assembled, not only in the alia-train CLI:
a benchmark or test that builds a run with train.device=cpu on a machine with a GPU gets a CPU
run in fp32, from the launch checks through the checkpoint's RNG state."""

from __future__ import annotations

import subprocess
import sys

from conftest import subprocess_env

# A machine "with a GPU": torch reports one, but none is there, so any CUDA call the run still
# made would fail (the run must not make one). torch's optimizers ask for the current
# accelerator's stream, which a real GPU would answer: that question alone is answered "none".
BUILD_ON_CPU_BESIDE_A_GPU = """
import sys
import torch
torch.cuda.is_available = lambda: True
torch.accelerator.current_accelerator = lambda check_available=False: None
from alia_train.config import load_config
from alia_train.parallel.launch_env import detect_launch_env
from alia_train.training.run import RunOptions, open_run

run_dir = sys.argv[1]
cfg = load_config(["+model=tiny", "model.num_layers=1", "train.steps=1", "train.global_batch_size=4",
                   "checkpoint.interval=1", "train.device=cpu", f"run.dir={run_dir}", f"data.cache_dir={run_dir}/cache"])
with open_run(cfg, detect_launch_env({}), RunOptions(trackers=False)) as trainer:
    print("runtime", trainer.rt.device.type, trainer.rt.dtype, trainer.rt.cuda)
    code = trainer.train()
    print("exit", code)
"""


def test_train_device_cpu_is_honoured_beside_a_gpu(tmp_path):
    proc = subprocess.run([sys.executable, "-c", BUILD_ON_CPU_BESIDE_A_GPU, str(tmp_path / "run")],
                          env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "runtime cpu torch.float32 False" in proc.stdout
    assert "exit 0" in proc.stdout and (tmp_path / "run" / "checkpoints" / "latest").exists()
