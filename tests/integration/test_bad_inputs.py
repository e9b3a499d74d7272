"""Bad inputs fail early and clearly, or are skipped and listed; resumed runs are exact.

Each test builds its broken input from the sample sets (``tests/samples``): a clip shorter than
one analysis window, unreadable, empty and truncated clips, a metadata file with a byte-order
mark, a category typo, a tsv that is not UTF-8, a split whose rows all drop out, a save folder
that cannot be written. Then runs killed in the middle of an epoch (one per recipe family) are
restarted and must end with the weights of an uninterrupted run.
"""

import importlib.util
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors import safe_open

from tests.recipe_runs import ROOT, run_recipe

SAMPLES = ROOT / "tests" / "samples"


def load_module(recipe, name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "recipes" / recipe / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


esc50_prepare = load_module("ESC50", "esc50_prepare")
common_voice_prepare = load_module("CommonVoice", "common_voice_prepare")


@pytest.fixture(autouse=True)
def no_environment_report(monkeypatch):
    """``create_experiment_directory`` shells out to ``pip freeze`` (about 1 s a run) for env.log."""
    import speechbrain.utils.logger

    monkeypatch.setattr(speechbrain.utils.logger, "get_environment_description", lambda: "not collected\n")


@pytest.fixture
def esc50(tmp_path):
    """A copy of the ESC-50 samples (15 clips: 3 classes x 5 folds)."""
    folder = tmp_path / "ESC-50-master"
    shutil.copytree(SAMPLES / "ESC50", folder)
    return folder


@pytest.fixture
def common_voice(tmp_path):
    """A copy of the Common Voice ``eo`` samples."""
    folder = tmp_path / "eo"
    shutil.copytree(SAMPLES / "CommonVoice" / "eo", folder)
    return folder


def test_clip_shorter_than_one_window_is_skipped_and_named(esc50, tmp_path):
    clip = esc50 / "audio" / "1-13135-A-38.wav"  # a test clip (fold 1)
    sf.write(clip, np.zeros(300, dtype=np.float32), 44100)  # 6.8 ms
    # Above the threshold (1 of 15 clips): preparation stops, naming the clip and the key.
    with pytest.raises(
        RuntimeError, match=r"1-13135-A-38.wav: is 0.00\d s long.*--max_skipped_fraction=0.07"
    ):
        esc50_prepare.prepare_esc50(esc50, tmp_path / "strict")
    # Below it: the clip is skipped, listed with its reason, and absent from the test manifest.
    save = tmp_path / "tolerant"
    esc50_prepare.prepare_esc50(esc50, save, max_skipped_fraction=0.1)
    assert "audio/1-13135-A-38.wav\tis 0.00" in (save / "skipped.txt").read_text()
    assert "1-13135-A-38" not in (save / "test.csv").read_text()
    assert (save / "test.csv").read_text().count("\n") == 3  # header + the other two test clips


def test_unreadable_clip_with_max_skipped_fraction_from_the_command_line(esc50, tiny_ast_dir, tmp_path):
    (esc50 / "audio" / "2-100066-A-30.wav").write_bytes(os.urandom(2000))
    output, prepared = tmp_path / "out", tmp_path / "prepared"
    flags = [f"--data_folder={esc50}", f"--output_folder={output}", f"--prepared_folder={prepared}"]
    flags += [f"--pretrained_source={tiny_ast_dir}", "--n_classes=3", "--num_workers=0", "--max_length=100"]
    run_recipe("ESC50", "bottleneck", *flags, "--debug", "--max_skipped_fraction=0.1")
    assert "audio/2-100066-A-30.wav\tcannot be decoded" in (prepared / "skipped.txt").read_text()
    assert json.loads((output / "metrics.json").read_text())["test_clips"] == 3  # fold 1's three clips


def test_metadata_with_a_byte_order_mark_is_read(esc50, tmp_path):
    metadata = esc50 / "meta" / "esc50.csv"
    metadata.write_bytes(b"\xef\xbb\xbf" + metadata.read_bytes())
    esc50_prepare.prepare_esc50(esc50, tmp_path / "save")
    assert (tmp_path / "save" / "classes.txt").read_text().split() == [
        "church_bells",
        "clock_tick",
        "door_wood_knock",
    ]


def test_category_typo_is_refused_naming_the_line(esc50, tmp_path):
    metadata = esc50 / "meta" / "esc50.csv"
    lines = metadata.read_text().splitlines()
    lines[4] = lines[4].replace("door_wood_knock", "door_wood_knok")
    metadata.write_text("\n".join(lines) + "\n")
    with pytest.raises(
        ValueError, match=r"esc50.csv line 5 gives category 'door_wood_knok' for target 30; .*"
    ):
        esc50_prepare.prepare_esc50(esc50, tmp_path / "save")


def test_empty_and_random_bytes_mp3_are_skipped_with_their_reason(common_voice, tmp_path):
    (common_voice / "clips" / "common_voice_eo_40000001.mp3").write_bytes(b"")
    (common_voice / "clips" / "common_voice_eo_40000002.mp3").write_bytes(os.urandom(3000))
    with pytest.raises(RuntimeError, match=r"train: 2 of the 9 clips visited are missing or unusable"):
        common_voice_prepare.prepare_common_voice(common_voice, tmp_path / "strict", "eo")
    save = tmp_path / "save"
    common_voice_prepare.prepare_common_voice(common_voice, save, "eo", max_skipped_fraction=0.3)
    report = (save / "skipped.txt").read_text()
    assert "train\tcommon_voice_eo_40000001.mp3\tis empty (0 bytes)" in report
    assert "train\tcommon_voice_eo_40000002.mp3\tcannot be decoded as audio" in report
    assert "40000001" not in (save / "train.csv").read_text()


def test_truncated_mp3_is_skipped_not_trusted_by_its_header(common_voice, tmp_path):
    # soundfile writes a VBR mp3 whose header counts its frames; cut to a third, the header still
    # says 1.76 s while about a third decodes.
    clip = common_voice / "clips" / "common_voice_eo_40000003.mp3"
    time = np.arange(int(1.76 * 16000)) / 16000
    sf.write(clip, (0.3 * np.sin(2 * np.pi * 440 * time)).astype(np.float32), 16000, format="MP3")
    clip.write_bytes(clip.read_bytes()[: clip.stat().st_size // 3])
    assert sf.info(str(clip)).duration == pytest.approx(1.76, abs=0.01)
    save = tmp_path / "save"
    common_voice_prepare.prepare_common_voice(common_voice, save, "eo", max_skipped_fraction=0.2)
    assert (
        "common_voice_eo_40000003.mp3\tis truncated: its header says 1.76 s"
        in (save / "skipped.txt").read_text()
    )


def test_tsv_that_is_not_utf8_names_the_file_and_line(common_voice, tmp_path):
    tsv = common_voice / "train.tsv"
    lines = tsv.read_bytes().split(b"\n")
    lines[3] = lines[3].replace(b"\t", b"\t\xff", 1)
    tsv.write_bytes(b"\n".join(lines))
    with pytest.raises(
        ValueError, match=r"train.tsv is not UTF-8 text: line 4, column \d+ holds the byte 0xff"
    ):
        common_voice_prepare.prepare_common_voice(common_voice, tmp_path / "save", "eo")


def test_split_whose_rows_all_drop_is_an_error_not_an_empty_manifest(common_voice, tmp_path):
    tsv = common_voice / "dev.tsv"
    header, *rows = tsv.read_text(encoding="utf-8").splitlines()
    column = header.split("\t").index("sentence")
    punctuation_only = []
    for row in rows:
        fields = row.split("\t")
        fields[column] = "... ?!"
        punctuation_only.append("\t".join(fields))
    tsv.write_text("\n".join([header, *punctuation_only]) + "\n", encoding="utf-8")
    save = tmp_path / "save"
    with pytest.raises(
        ValueError, match=r"dev: no utterance is left of the \d+ rows of dev.tsv visited \(\d+ with an"
    ):
        common_voice_prepare.prepare_common_voice(common_voice, save, "eo")
    # Nothing marks the folder prepared: a rerun with a fixed tsv prepares it.
    assert not (save / "prepare_options.json").exists() and not (save / "dev.csv").exists()
    shutil.copy(SAMPLES / "CommonVoice" / "eo" / "dev.tsv", tsv)
    common_voice_prepare.prepare_common_voice(common_voice, save, "eo")
    assert (save / "dev.csv").read_text().count("\n") > 1


def test_unwritable_save_folder_stops_before_training(esc50, tiny_ast_dir, tmp_path, monkeypatch):
    import speechbrain_mambadapter.recipe.brain as brain

    output = tmp_path / "out"
    save = output / "save"

    def refuse(dir=None, **kwargs):
        # What the OS answers for a read-only folder (this test may run as root, who may write).
        if Path(dir) == save:
            raise PermissionError(13, "Permission denied")
        return real(dir=dir, **kwargs)

    real = brain.tempfile.NamedTemporaryFile
    monkeypatch.setattr(brain.tempfile, "NamedTemporaryFile", refuse)
    flags = [f"--data_folder={esc50}", f"--output_folder={output}", f"--prepared_folder={tmp_path / 'prep'}"]
    flags += [f"--pretrained_source={tiny_ast_dir}", "--n_classes=3", "--num_workers=0", "--max_length=100"]
    with pytest.raises(
        PermissionError, match=f"Cannot write to {save} \\(Permission denied\\).*--output_folder"
    ):
        run_recipe("ESC50", "bottleneck", *flags)
    assert not (output / "train_log.txt").exists(), "an epoch ran before the check"


def petl_weights(output):
    """The trained tensors of a run's latest end-of-epoch checkpoint: PETL weights (+ head)."""
    latest = max(
        (
            c
            for c in (output / "save").glob("CKPT+*")
            if "end-of-epoch: true" in (c / "CKPT.yaml").read_text()
        ),
        key=lambda c: c.stat().st_mtime,
    )
    tensors = {}
    with safe_open(str(latest / "petl.ckpt"), framework="pt") as f:
        tensors.update({k: f.get_tensor(k) for k in f.keys()})
    if (latest / "classifier.ckpt").exists():
        tensors.update({f"head.{k}": v for k, v in torch.load(latest / "classifier.ckpt").items()})
    return tensors


class Killed(Exception):
    """Stands for the process being killed (SIGKILL) right after a checkpoint."""


def kill_after_intra_epoch_checkpoint(monkeypatch, which):
    """Make the ``which``-th mid-epoch checkpoint the last thing the run does."""
    import speechbrain as sb

    save = sb.Brain._save_intra_epoch_ckpt
    count = {"saves": 0}

    def save_then_die(brain):
        save(brain)
        count["saves"] += 1
        if count["saves"] == which:
            raise Killed

    monkeypatch.setattr(sb.Brain, "_save_intra_epoch_ckpt", save_then_die)


def test_classification_run_killed_mid_epoch_resumes_exactly(tiny_ast_dir, tmp_path, monkeypatch):
    from tests.integration.test_classification_recipes import write_tone_dataset

    data = tmp_path / "tones"
    write_tone_dataset(data)

    def flags(output):
        # MambAdapter with dropout and SpecAugment: resuming must restore the random generators.
        return [
            f"--data_folder={data}",
            f"--prepared_folder={tmp_path / 'prepared'}",
            f"--output_folder={output}",
            f"--pretrained_source={tiny_ast_dir}",
            "--n_classes=3",
            "--num_workers=0",
            "--max_length=100",
            "--number_of_epochs=2",
            "--batch_size=3",  # 9 training clips: 3 steps per epoch
            "--ckpt_interval_minutes=0",
            "--ckpt_interval_steps=1",
        ]

    run_recipe("ESC50", "mambadapter", *flags(tmp_path / "whole"))
    with monkeypatch.context() as patch:
        kill_after_intra_epoch_checkpoint(patch, which=4)  # epoch 2, after its first step
        with pytest.raises(Killed):
            run_recipe("ESC50", "mambadapter", *flags(tmp_path / "killed"))
    run_recipe("ESC50", "mambadapter", *flags(tmp_path / "killed"))

    whole, resumed = petl_weights(tmp_path / "whole"), petl_weights(tmp_path / "killed")
    assert sorted(whole) == sorted(resumed)
    assert [k for k in whole if not torch.equal(whole[k], resumed[k])] == []
    metrics = [json.loads((tmp_path / run / "metrics.json").read_text()) for run in ("whole", "killed")]
    assert metrics[0]["test_loss"] == metrics[1]["test_loss"]
    assert metrics[0]["confusion_matrix"] == metrics[1]["confusion_matrix"]


def test_common_voice_run_killed_mid_epoch_resumes_exactly(tiny_whisper_dir, tmp_path, monkeypatch):
    def flags(root):
        return [
            "--language=eo",
            f"--data_folder={SAMPLES / 'CommonVoice' / 'eo'}",
            f"--whisper_source={tiny_whisper_dir}",
            f"--output_root={root}",
            "--device=cpu",
            "--precision=fp32",
            "--eval_precision=fp32",
            "--num_workers=0",
            "--batch_size=3",  # 9 training utterances: 3 steps
            "--rank=8",
            "--number_of_epochs=1",
            "--max_decode_ratio=0.005",
            "--test_beam_size=2",
            "--ckpt_interval_minutes=0",
            "--ckpt_interval_steps=1",
        ]

    run_recipe("CommonVoice", "mambadapter", *flags(tmp_path / "whole"))
    with monkeypatch.context() as patch:
        kill_after_intra_epoch_checkpoint(patch, which=2)
        with pytest.raises(Killed):
            run_recipe("CommonVoice", "mambadapter", *flags(tmp_path / "killed"))
    run_recipe("CommonVoice", "mambadapter", *flags(tmp_path / "killed"))

    outputs = [next((tmp_path / run).glob("*/eo/seed*")) for run in ("whole", "killed")]
    whole, resumed = petl_weights(outputs[0]), petl_weights(outputs[1])
    assert sorted(whole) == sorted(resumed)
    assert [k for k in whole if not torch.equal(whole[k], resumed[k])] == []
    wer = [(output / "wer_test.txt").read_text().split("\n")[0] for output in outputs]
    assert wer[0] == wer[1]


def test_missing_data_folder_is_a_one_line_usage_message(tmp_path):
    with pytest.raises(SystemExit) as stop:
        run_recipe("CommonVoice", "mambadapter", "--language=ab", f"--output_root={tmp_path}")
    message = str(stop.value)
    assert message.count("\n") == 0
    expected = "needs --data_folder=... (locale folder of a release: clips/, train.tsv, ...)."
    assert message.endswith(f"hparams/mambadapter.yaml {expected}")


@pytest.mark.parametrize("recipe", ["ESC50", "CommonVoice"])
def test_wrong_data_folder_fails_before_any_model_loads(recipe, tmp_path):
    # A model source that does not exist: had the model been built first, its error would show.
    flags = [f"--data_folder={tmp_path / 'nowhere'}", f"--output_root={tmp_path}", "--language=ab"]
    flags += [f"--pretrained_source={tmp_path / 'no_model'}", f"--whisper_source={tmp_path / 'no_model'}"]
    flags = (
        flags
        if recipe == "CommonVoice"
        else [f for f in flags if not f.startswith(("--language", "--whisper"))]
    )
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'nowhere'}.* does not exist"):
        run_recipe(recipe, "mambadapter", *flags)
