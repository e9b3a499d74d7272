"""The Czech ASR driver (``benchmarks/czech_whisper.py``) without a GPU: what ``pack`` writes and
``assemble`` rebuilds, the recipe command of a run, and the table's statistics.
"""

import argparse
import json

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file, save_file

from tests.scripts import load_script


@pytest.fixture(scope="module")
def driver():
    return load_script("benchmarks/czech_whisper.py", "czech_whisper")


def test_pack_then_assemble_gives_back_the_model_and_the_clips(driver, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    for name in driver.MODEL_FILES:
        (model / name).write_text(json.dumps({"name": name}))
    torch.manual_seed(0)
    weights = {f"layer{i}.weight": torch.randn(40, 30) for i in range(6)}
    weights["embed"] = torch.randn(100, 30)
    save_file(weights, str(model / "model.safetensors"))
    data = tmp_path / "cs"
    (data / "clips").mkdir(parents=True)
    tone = 0.3 * np.sin(np.arange(22050) / 22050 * 2 * np.pi * 300).astype(np.float32)
    for name in ("a.ogg", "b.ogg"):
        sf.write(data / "clips" / name, tone, 22050, format="OGG")
    for name in ("train.tsv", "dev.tsv", "test.tsv", "README.txt"):
        (data / name).write_text(name)

    assets = tmp_path / "assets"
    driver.pack(argparse.Namespace(assets=str(assets), whisper_source=str(model), data_folder=str(data)))
    first = load_file(str(assets / "a" / "whisper-tiny.en" / "shard-1.safetensors"))
    second = load_file(str(assets / "b" / "shard-2.safetensors"))
    assert first and second and not set(first) & set(second)
    assert {v.dtype for v in (*first.values(), *second.values())} == {torch.float16}

    # On the GPU machine part a lies elsewhere (what a device call carries is not kept).
    (assets / "a").rename(tmp_path / "staged_a")
    driver.assemble(argparse.Namespace(assets=str(assets), part_a=str(tmp_path / "staged_a")))
    rebuilt = load_file(str(assets / "whisper-tiny.en" / "model.safetensors"))
    assert set(rebuilt) == set(weights)
    for key, value in weights.items():
        assert rebuilt[key].dtype == torch.float32
        assert torch.equal(rebuilt[key], value.half().float())
    assert json.loads((assets / "whisper-tiny.en" / "config.json").read_text()) == {"name": "config.json"}
    for name in ("a.ogg", "b.ogg"):
        info = sf.info(assets / "cs" / "clips" / name)
        assert (info.samplerate, info.subtype) == (16000, "OPUS")
        assert info.duration == pytest.approx(1.0, abs=0.05)
    assert (assets / "cs" / "test.tsv").read_text() == "test.tsv"


def test_a_run_is_the_recipe_with_the_method_settings_last(driver):
    args = argparse.Namespace(
        data_folder="/d", output="/r", device="cuda:0", precision="bf16", train_minutes=None, epochs=15,
        batch_size=None, lr=None, lr_final=None, test_beam_size=None, max_decode_ratio=0.1,
    )  # fmt: skip
    command = driver.train_command(args, "/w", "mambadapter", "frozen", 1, ("--number_of_epochs=0",))
    assert command[1:3] == ["train.py", "hparams/mambadapter.yaml"]
    for flag in ("--language=cs", "--language_token_id=null", "--whisper_source=/w", "--seed=1",
                 "--experiment=frozen", "--max_decode_ratio=0.1", "--number_of_epochs=0"):  # fmt: skip
        assert flag in command
    assert "--number_of_epochs=15" not in command  # the method's own setting wins
    assert not any(c.startswith("--lr=") for c in command)  # unset: the hparams file's


def test_summary_is_mean_and_sample_std_over_seeds(driver):
    runs = [
        {"experiment": "bottleneck_r64", "seed": s, "test_wer": w, "test_cer": c, "epoch_loaded": 9,
         "trainable_millions": 0.202}
        for s, w, c in ((1, 70.0, 30.0), (2, 72.0, 30.0), (3, 74.0, 30.0))
    ] + [{"experiment": "frozen", "seed": 1, "test_wer": 129.0, "test_cer": 98.1, "epoch_loaded": 0,
          "trainable_millions": 0.4}]  # fmt: skip
    rows = driver.summarise(runs)
    assert [r["experiment"] for r in rows] == ["frozen", "bottleneck_r64"]  # METHODS order
    frozen, bottleneck = rows
    assert frozen["trainable_millions"] == 0.0 and frozen["wer_std"] is None
    assert bottleneck["wer"] == pytest.approx(72.0) and bottleneck["wer_std"] == pytest.approx(2.0)
    assert bottleneck["cer_std"] == pytest.approx(0.0) and bottleneck["runs"] == 3


def test_a_run_folder_is_read_from_the_recipe_logs(driver, tmp_path):
    folder = tmp_path / "lora_r32" / "cs" / "seed2"
    folder.mkdir(parents=True)
    (folder / "train_log.txt").write_text(
        "epoch: 6, lr: 6.08e-04 - train loss: 1.56 - valid loss: 2.21, valid WER: 86.55, valid CER: 38.97\n"
        "Epoch loaded: 6 - test loss: 2.28, test WER: 88.56, test CER: 37.63\n"
    )
    (folder / "log.txt").write_text(
        "asr - Whisper with lora: 0.197M trainable parameters of 38.0M (0.52 %)\n"
    )
    run = driver.read_run(folder)
    assert (run["experiment"], run["seed"], run["epoch_loaded"]) == ("lora_r32", 2, 6)
    assert (run["test_wer"], run["test_cer"], run["trainable_millions"]) == (88.56, 37.63, 0.197)


def test_merge_keeps_earlier_runs_unless_redone(driver):
    earlier = [{"experiment": "lora_r32", "seed": s, "test_wer": 80.0 + s} for s in (1, 2)]
    new = [{"experiment": "lora_r32", "seed": 2, "test_wer": 70.0}, {"experiment": "frozen", "seed": 1}]
    merged = driver.merge_runs(new, earlier)
    keys = sorted((r["experiment"], r["seed"]) for r in merged)
    assert keys == [("frozen", 1), ("lora_r32", 1), ("lora_r32", 2)]
    assert [r["test_wer"] for r in merged if r["seed"] == 2] == [70.0]  # the new run wins
