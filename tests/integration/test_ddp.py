"""A classification recipe under DistributedDataParallel: two CPU processes on the gloo backend."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


TORCHRUN = Path(sys.executable).parent / "torchrun"


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed beside this Python")
def test_gsc_mambadapter_debug_run_with_two_processes(tiny_ast_dir, tmp_path):
    torchrun = str(TORCHRUN)
    output = tmp_path / "run"
    command = [
        torchrun, "--nproc_per_node=2", "--master_port=29533",
        str(REPO / "recipes/GSC/train.py"), str(REPO / "recipes/GSC/hparams/mambadapter.yaml"),
        f"--data_folder={REPO / 'tests/samples/GSC'}", f"--pretrained_source={tiny_ast_dir}",
        f"--output_folder={output}", f"--prepared_folder={tmp_path / 'prepared'}",
        "--debug", "--distributed_backend=gloo", "--device=cpu", "--max_length=100",
    ]  # fmt: skip
    # A deadlock between the processes (e.g. in checkpoint clean-up) shows up as a timeout.
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = (output / "train_log.txt").read_text()
    assert "epoch: 1" in log and "epoch: 2" in log and "test accuracy" in log
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["petl_config"]["method"] == "mambadapter"
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    # DDP raised nothing about unused or duplicated parameters (the shared projections are
    # registered once and used by every layer).
    assert "unused parameters" not in result.stderr.lower()
