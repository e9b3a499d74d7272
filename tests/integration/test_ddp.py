"""Recipes under DistributedDataParallel: CPU processes on the gloo backend (torchrun).

* The GSC recipe with 2 processes in ``--debug`` (no DDP complaint about the shared projections).
* The same recipe, 2 processes x batch 1 against 1 process x batch 2 (same global batch, the
  manifest's order, no dropout): the same loss at every step, the same test metrics; the
  sharded test set is merged without its padding repeats.
* The Common Voice recipe with 2 processes: trains, decodes the sharded dev/test sets, writes one
  adapter-only checkpoint, and resumes.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TORCHRUN = Path(sys.executable).parent / "torchrun"
needs_torchrun = pytest.mark.skipif(
    not TORCHRUN.exists(), reason="torchrun is not installed beside this Python"
)


def run(command, cwd):
    # A deadlock between the processes (e.g. in checkpoint clean-up) shows up as a timeout.
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def torchrun(nproc, port):
    return [str(TORCHRUN), f"--nproc_per_node={nproc}", f"--master_port={port}"]


def gsc_args(tiny_ast_dir, output, prepared, data=REPO / "tests/samples/GSC"):
    return [
        str(REPO / "recipes/GSC/train.py"), str(REPO / "recipes/GSC/hparams/mambadapter.yaml"),
        f"--data_folder={data}", f"--pretrained_source={tiny_ast_dir}",
        f"--output_folder={output}", f"--prepared_folder={prepared}",
        "--device=cpu", "--max_length=100", "--num_workers=0",
    ]  # fmt: skip


def read_steps(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


@needs_torchrun
def test_gsc_mambadapter_debug_run_with_two_processes(tiny_ast_dir, tmp_path):
    output = tmp_path / "run"
    command = torchrun(2, 29533) + gsc_args(tiny_ast_dir, output, tmp_path / "prepared")
    result = run(command + ["--debug", "--distributed_backend=gloo"], tmp_path)
    log = (output / "train_log.txt").read_text()
    assert "epoch: 1" in log and "epoch: 2" in log and "test accuracy" in log
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["petl_config"]["method"] == "mambadapter"
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    # DDP raised nothing about unused or duplicated parameters (the shared projections are
    # registered once and used by every layer).
    assert "unused parameters" not in result.stderr.lower()


@pytest.fixture(scope="module")
def synthetic_gsc(tmp_path_factory):
    """Speech Commands layout, 8 training clips (4 steps of 2), 4 valid, 3 test (odd: 2 ranks)."""
    from tools.synthetic_data import make_gsc

    root = tmp_path_factory.mktemp("synthetic_gsc") / "speech_commands_v0.02"
    make_gsc(root, n_train=8, n_valid=4, n_test=3, seed=0, workers=1)
    return root


@needs_torchrun
def test_two_processes_follow_the_one_process_run_step_by_step(tiny_ast_dir, synthetic_gsc, tmp_path):
    """Same global batch (1 x 2 clips vs 2 x 1 clip), 2 epochs of the 8 training clips."""
    same = ["--sorting=none", "--adapter_dropout=0.0", "--number_of_epochs=2", "--lr=0.05"]
    runs = {}
    for nproc, batch in ((1, 2), (2, 1)):
        output = tmp_path / f"gpus{nproc}"
        command = gsc_args(tiny_ast_dir, output, tmp_path / f"prepared{nproc}", synthetic_gsc) + same
        command += [f"--batch_size={batch}"]
        command += [f"--step_log={output / 'steps.jsonl'}"]
        if nproc == 1:
            run([sys.executable] + command, tmp_path)
        else:
            run(torchrun(2, 29534) + command + ["--distributed_backend=gloo"], tmp_path)
        runs[nproc] = output
    one, two = (read_steps(runs[n] / "steps.jsonl") for n in (1, 2))
    assert [s["examples"] for s in one] == [s["examples"] for s in two] == [2] * 8
    assert [s["epoch"] for s in two] == [1] * 4 + [2] * 4
    losses_one = [s["loss"] for s in one]
    losses_two = [s["loss"] for s in two]
    assert losses_one == pytest.approx(losses_two, rel=1e-4, abs=1e-6)
    assert len(set(losses_one)) > 1  # the adapters train: the losses are not all equal

    metrics = [json.loads((runs[n] / "metrics.json").read_text()) for n in (1, 2)]
    # 3 test clips over 2 ranks: the sampler repeats one, the merged metrics hold each once.
    assert metrics[0]["test_clips"] == metrics[1]["test_clips"] == 3
    assert metrics[0]["test_loss"] == pytest.approx(metrics[1]["test_loss"], rel=1e-4)
    assert metrics[0]["confusion_matrix"] == metrics[1]["confusion_matrix"]
    assert metrics[0]["valid_accuracy"] == metrics[1]["valid_accuracy"]
    # Checkpoints are written by rank 0 only, in the one save folder.
    assert len(list((runs[2] / "save").glob("CKPT*"))) >= 1


@needs_torchrun
def test_common_voice_recipe_with_two_processes_trains_decodes_and_resumes(tiny_whisper_dir, tmp_path):
    recipe = REPO / "recipes/CommonVoice"
    command = torchrun(2, 29535) + [
        str(recipe / "train.py"), str(recipe / "hparams/mambadapter.yaml"),
        "--language=eo", f"--data_folder={REPO / 'tests/samples/CommonVoice/eo'}",
        f"--whisper_source={tiny_whisper_dir}", f"--output_root={tmp_path / 'out'}",
        "--device=cpu", "--precision=fp32", "--eval_precision=fp32", "--num_workers=0",
        "--rank=8", "--batch_size=2", "--test_beam_size=2", "--max_decode_ratio=0.01",
        "--distributed_backend=gloo", f"--step_log={tmp_path / 'steps.jsonl'}",
    ]  # fmt: skip
    run(command + ["--number_of_epochs=1"], recipe)
    output = tmp_path / "out/mambadapter_r8/eo/seed1"
    first_log = (output / "train_log.txt").read_text()
    assert "epoch: 1" in first_log and "test loss" in first_log
    steps = read_steps(tmp_path / "steps.jsonl")
    assert steps and all(s["examples"] <= 4 for s in steps)
    checkpoints = list((output / "save").glob("CKPT*"))
    assert len(checkpoints) == 1
    # Adapter-only: the checkpoint holds no frozen Whisper weight.
    assert (checkpoints[0] / "petl.ckpt").stat().st_size < 2_000_000

    # Resume: a second epoch starts from the first one's checkpoint.
    run(command + ["--number_of_epochs=2"], recipe)
    log = (output / "train_log.txt").read_text()
    assert log.count("epoch: 1,") == 1 and "epoch: 2," in log
    wer = (output / "wer_test.txt").read_text()
    # Every test utterance scored once: the halves of the two ranks merged.
    test_ids = [line.split(",")[0] for line in (tmp_path / "out/prepared/eo/test.csv").open()][1:]
    aligned = re.findall(r"^(common_voice_\w+), %WER", wer, re.M)
    assert sorted(aligned) == sorted(test_ids)
