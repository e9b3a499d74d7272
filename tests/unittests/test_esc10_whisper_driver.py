"""The ESC-10 x Whisper driver (``benchmarks/esc10_whisper.py``) without a GPU: the ESC-50 layout it
writes from the packed clips, the recipe command of a run, and the table's statistics.
"""

import csv

import numpy as np
import pytest
import soundfile as sf

from tests.scripts import load_script


@pytest.fixture(scope="module")
def driver():
    return load_script("benchmarks/esc10_whisper.py", "esc10_whisper")


def test_layout_holds_every_packed_clip_as_16_bit_wav(driver, tmp_path):
    clips = tmp_path / "esc10"
    clips.mkdir()
    names = ["1-100032-A-0", "2-109505-A-21"]
    for name in names:
        sf.write(clips / f"{name}.ogg", 0.1 * np.ones(16000, dtype=np.float32), 16000, format="OGG")
    (clips / "esc50.csv").write_text("filename,fold,target,category,esc10,src_file,take\n")
    driver.write_layout(clips, tmp_path / "ESC-10")
    for name in names:
        info = sf.info(tmp_path / "ESC-10" / "audio" / f"{name}.wav")
        assert (info.samplerate, info.subtype, info.frames) == (16000, "PCM_16", 16000)
    with open(tmp_path / "ESC-10" / "meta" / "esc50.csv") as f:
        assert next(csv.reader(f))[0] == "filename"


def test_a_run_is_the_recipe_with_esc10_and_the_method_overrides(driver, tmp_path):
    class Args:
        data_folder, results, assets, epochs, device, precision = "/d", "/r", "/a", 20, "cuda:0", "bf16"

    argv = driver.train_argv(
        Args, "whisper_mambadapter_no_mamba", "whisper_mambadapter", ("--use_mamba=False",), 3, 11
    )
    assert argv[0].endswith("recipes/ESC50/train.py") and argv[1].endswith("hparams/whisper_mambadapter.yaml")
    for flag in ("--esc10=True", "--n_classes=10", "--fold=3", "--seed=11", "--use_mamba=False"):
        assert flag in argv
    assert "--experiment=whisper_mambadapter_no_mamba" in argv


def test_summary_pairs_runs_by_fold_and_seed(driver):
    def run(experiment, fold, seed, accuracy):
        return {
            "experiment": experiment,
            "fold": fold,
            "seed": seed,
            "test_accuracy": accuracy,
            "trainable_parameters": 10,
            "checkpoint_epoch": 5,
        }

    runs = [run("whisper_mambadapter", f, 1, a) for f, a in [(1, 0.80), (2, 0.90), (3, 0.70)]]
    runs += [run("whisper_bottleneck", f, 1, a) for f, a in [(1, 0.85), (2, 0.94), (3, 0.76)]]
    rows = {row["experiment"]: row for row in driver.summarise(runs)}
    assert [r["experiment"] for r in driver.summarise(runs)] == ["whisper_bottleneck", "whisper_mambadapter"]
    bottleneck = rows["whisper_bottleneck"]
    assert bottleneck["accuracy_mean"] == pytest.approx(0.85)
    assert bottleneck["difference_mean"] == pytest.approx(0.05)  # every pair differs by 4 to 6 points
    assert bottleneck["difference_sem"] == pytest.approx(0.01 / 3**0.5)
    assert bottleneck["difference_p"] < 0.05
    assert "difference_mean" not in rows["whisper_mambadapter"]
    assert bottleneck["fold_means"] == {1: 0.85, 2: 0.94, 3: 0.76}
    table = driver.format_table(driver.summarise(runs))
    assert "| bottleneck | 10 | 85.00 ± 9.00 (3) | 85.0 94.0 76.0 | 5 | +5.00 ± 0.58" in table
