"""``--inference_mode`` and ``--train_mode`` on the command line of the recipes, on CPU.

A CPU run of a GPU configuration (``--inference_mode=cuda_graph --train_mode=cuda_graph``)
trains and evaluates eagerly and says so once per setting in its log; an unknown value stops the
recipe with the accepted values. One classification recipe and the Common Voice recipe, in
``--debug`` on ``tests/samples/``, in this process (as
tests/integration/test_classification_recipes.py and test_common_voice_recipe.py run them).
The GPU runs, whose results must match eager ones: tests/gpu/test_cuda_graphs.py.
"""

import json
import math
import re
import runpy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "tests" / "samples"
WARNING = "inference_mode=cuda_graph needs the model on a CUDA device"
TRAIN_WARNING = "train_mode=cuda_graph needs the model on a CUDA device"


@pytest.fixture(autouse=True)
def no_environment_report(monkeypatch):
    """``create_experiment_directory`` shells out to ``pip freeze`` (about 1 s a run) for env.log."""
    import speechbrain.utils.logger

    monkeypatch.setattr(
        speechbrain.utils.logger, "get_environment_description", lambda: "not collected in tests\n"
    )


def run_script(train, argv, monkeypatch):
    """``python <train> <argv>``, in this process."""
    with monkeypatch.context() as patch:
        patch.setattr(sys, "argv", [str(train), *argv])
        patch.syspath_prepend(str(train.parent))
        runpy.run_path(str(train), run_name="__main__")


def run_esc50(output, tiny_ast_dir, monkeypatch, *flags):
    run_script(
        ROOT / "recipes" / "ESC50" / "train.py",
        [
            str(ROOT / "recipes" / "ESC50" / "hparams" / "mambadapter.yaml"),
            f"--data_folder={SAMPLES / 'ESC50'}",
            f"--prepared_folder={output.parent / 'prepared'}",
            f"--output_folder={output}",
            f"--pretrained_source={tiny_ast_dir}",
            "--n_classes=3",
            "--num_workers=0",
            "--max_length=100",
            "--device=cpu",
            *flags,
        ],
        monkeypatch,
    )


def test_classification_recipe_on_cpu_runs_a_cuda_graph_configuration_eagerly(
    tiny_ast_dir, tmp_path, monkeypatch
):
    output = tmp_path / "out"
    flags = ["--debug", "--inference_mode=cuda_graph", "--train_mode=cuda_graph"]
    run_esc50(output, tiny_ast_dir, monkeypatch, *flags)
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["test_clips"] > 0 and math.isfinite(metrics["test_loss"])
    assert re.search(r"train loss: [0-9.e+-]+, .*valid loss", (output / "train_log.txt").read_text())
    log = (output / "log.txt").read_text()
    assert log.count(WARNING) == 1 and log.count(TRAIN_WARNING) == 1


def test_unknown_inference_mode_stops_the_recipe(tiny_ast_dir, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"inference_mode must be one of \('eager', 'cuda_graph'\)"):
        run_esc50(tmp_path / "out", tiny_ast_dir, monkeypatch, "--debug", "--inference_mode=graph")


def test_unknown_train_mode_stops_the_recipe(tiny_ast_dir, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"train_mode must be one of \('eager', 'cuda_graph'\), got 'graph'"):
        run_esc50(tmp_path / "out", tiny_ast_dir, monkeypatch, "--debug", "--train_mode=graph")


def test_common_voice_recipe_on_cpu_runs_a_cuda_graph_configuration_eagerly(
    tiny_whisper_dir, tmp_path, monkeypatch
):
    recipe = ROOT / "recipes" / "CommonVoice"
    run_script(
        recipe / "train.py",
        [
            str(recipe / "hparams" / "bottleneck.yaml"),
            "--language=eo",
            f"--data_folder={SAMPLES / 'CommonVoice' / 'eo'}",
            f"--whisper_source={tiny_whisper_dir}",
            f"--output_root={tmp_path}",
            "--device=cpu",
            "--debug",
            "--debug_epochs=1",
            "--debug_batches=1",
            "--precision=fp32",
            "--eval_precision=fp32",
            "--num_workers=0",
            "--batch_size=2",
            "--max_decode_ratio=0.005",
            "--test_beam_size=2",
            "--inference_mode=cuda_graph",
            "--train_mode=cuda_graph",
        ],
        monkeypatch,
    )
    (output,) = tmp_path.glob("*/eo/seed*")
    wer = (output / "wer_test.txt").read_text(encoding="utf-8")
    assert re.search(r"%WER [0-9.]+ \[ \d+ / [1-9]\d*,", wer)
    assert re.search(
        r"train loss: [0-9.e+-]+ - valid loss: [0-9.e+-]+, valid WER", (output / "train_log.txt").read_text()
    )
    log = (output / "log.txt").read_text()
    assert log.count(WARNING) == 1 and log.count(TRAIN_WARNING) == 1
