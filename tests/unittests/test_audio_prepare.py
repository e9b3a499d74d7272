"""Data preparation of the audio-classification recipes on ``tests/samples/`` and on broken copies of it.

The sample sets are read in place (preparation never writes into a data folder); every broken
input is built in a ``tmp_path`` copy.
"""

import csv
import doctest
import importlib.util
import logging
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from speechbrain_mambadapter.recipe import dataprep

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "tests" / "samples"


def _load(recipe, name):
    # A name of its own in sys.modules: doctest keeps only the functions whose module
    # inspect.getmodule finds, and a recipe run in the same session imports its own
    # ``esc50_prepare`` etc. under the plain name.
    unique = f"_test_audio_prepare_{name}"
    spec = importlib.util.spec_from_file_location(unique, ROOT / "recipes" / recipe / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[unique] = module
    spec.loader.exec_module(module)
    return module


esc50 = _load("ESC50", "esc50_prepare")
us8k = _load("UrbanSound8k", "urbansound8k_prepare")
gsc = _load("GSC", "gsc_prepare")
fsc = _load("FSC", "fsc_prepare")

# dataset -> (module, prepare function, sample folder, metadata file, URL named in errors)
DATASETS = {
    "ESC50": (esc50, esc50.prepare_esc50, "meta/esc50.csv", "github.com/karolpiczak/ESC-50"),
    "UrbanSound8k": (us8k, us8k.prepare_urbansound8k, "metadata/UrbanSound8K.csv", "urbansounddataset"),
    "GSC": (gsc, gsc.prepare_gsc, "validation_list.txt", "speech_commands_v0.02.tar.gz"),
    "FSC": (fsc, fsc.prepare_fsc, "data/valid_data.csv", "fluent.ai"),
}


def read_manifest(save_folder, split):
    with open(os.path.join(save_folder, f"{split}.csv"), newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def read_all(save_folder):
    return {split: read_manifest(save_folder, split) for split in dataprep.SPLITS}


def copy_sample(tmp_path, name):
    dst = tmp_path / "data" / name
    shutil.copytree(SAMPLES / name, dst)
    return dst


def wav_files(folder):
    return sorted(p for p in Path(folder).rglob("*.wav"))


def assert_valid_manifests(save_folder, columns):
    """Header, non-empty and disjoint splits, and 16 kHz mono audio whose length is the duration."""
    manifests = read_all(save_folder)
    with open(os.path.join(save_folder, "train.csv"), encoding="utf-8") as f:
        assert f.readline().strip().split(",") == columns
    ids = [set(r["ID"] for r in rows) for rows in manifests.values()]
    assert all(ids), "every split must be non-empty"
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2]), "splits must be disjoint"
    for rows in manifests.values():
        for row in rows:
            info = sf.info(row["wav"])
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16"), row["wav"]
            assert float(row["duration"]) == pytest.approx(info.frames / 16000, abs=1e-4)
    return manifests


# ESC-50


@pytest.mark.parametrize("fold", [1, 2, 3, 4, 5])
def test_esc50_fold_rotation(tmp_path, fold):
    before = sorted(p for p in (SAMPLES / "ESC50").rglob("*"))
    esc50.prepare_esc50(str(SAMPLES / "ESC50"), str(tmp_path), fold=fold)
    assert sorted(p for p in (SAMPLES / "ESC50").rglob("*")) == before, (
        "preparation wrote into the data folder"
    )
    manifests = assert_valid_manifests(tmp_path, esc50.MANIFEST_COLUMNS)
    folds = {split: {int(r["fold"]) for r in rows} for split, rows in manifests.items()}
    valid = 5 if fold == 1 else fold - 1
    assert folds == {"test": {fold}, "valid": {valid}, "train": set(range(1, 6)) - {fold, valid}}
    # Every clip of the metadata is in exactly one split; 3 classes x 5 folds.
    assert sum(len(rows) for rows in manifests.values()) == 15
    assert dataprep.read_classes(tmp_path) == ["church_bells", "clock_tick", "door_wood_knock"]
    assert {r["label"] for r in manifests["test"]} == {"church_bells", "clock_tick", "door_wood_knock"}
    # 0.2 s clips at 44.1 kHz become 3,200 samples at 16 kHz, written to the save folder.
    assert all(float(r["duration"]) == 0.2 for rows in manifests.values() for r in rows)
    assert all(r["wav"].startswith(str(tmp_path)) for rows in manifests.values() for r in rows)


def test_esc50_rotation_tests_and_validates_each_fold_once():
    runs = [esc50.esc50_folds(k) for k in range(1, 6)]
    assert sorted(test for _, _, test in runs) == [1, 2, 3, 4, 5]
    assert sorted(valid for _, valid, _ in runs) == [1, 2, 3, 4, 5]
    for train, valid, test in runs:
        assert sorted(train + [valid, test]) == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="--fold=1 ... --fold=5"):
        esc50.esc50_folds(6)


def test_esc50_is_idempotent_and_redoes_on_option_change(tmp_path, monkeypatch):
    save = tmp_path / "save"
    esc50.prepare_esc50(str(SAMPLES / "ESC50"), str(save), fold=1)
    converted = {p: p.stat().st_mtime_ns for p in wav_files(save / "audio")}
    assert len(converted) == 15

    def must_not_run(*args, **kwargs):
        raise AssertionError("preparation ran again with unchanged options")

    with monkeypatch.context() as m:
        m.setattr(esc50, "prepare_audio", must_not_run)
        esc50.prepare_esc50(str(SAMPLES / "ESC50"), str(save), fold=1)
        esc50.prepare_esc50(str(tmp_path / "does-not-exist"), str(save), fold=1, skip_prep=True)

    # A new fold rewrites the manifests but reuses the converted audio.
    esc50.prepare_esc50(str(SAMPLES / "ESC50"), str(save), fold=3)
    assert {int(r["fold"]) for r in read_manifest(save, "test")} == {3}
    assert {p: p.stat().st_mtime_ns for p in wav_files(save / "audio")} == converted

    # A new sample rate converts again.
    esc50.prepare_esc50(str(SAMPLES / "ESC50"), str(save), fold=3, sample_rate=8000)
    assert all(sf.info(r["wav"]).samplerate == 8000 for r in read_manifest(save, "train"))


def test_interrupted_preparation_is_redone(tmp_path, monkeypatch):
    save = tmp_path / "save"
    esc50.prepare_esc50(str(SAMPLES / "ESC50"), str(save), fold=1)
    calls = []

    def crash(*args, **kwargs):
        calls.append("crash")
        raise KeyboardInterrupt

    def spy(*args, **kwargs):
        calls.append("spy")
        return dataprep.prepare_audio(*args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(esc50, "prepare_audio", crash)
        with pytest.raises(KeyboardInterrupt):
            esc50.prepare_esc50(str(SAMPLES / "ESC50"), str(save), fold=2)
        # The fold-1 manifests are still on disk, but an interrupted run must not pass for done.
        m.setattr(esc50, "prepare_audio", spy)
        esc50.prepare_esc50(str(SAMPLES / "ESC50"), str(save), fold=1)
    assert calls == ["crash", "spy"]
    assert {int(r["fold"]) for r in read_manifest(save, "test")} == {1}


# UrbanSound8K


@pytest.mark.parametrize("fold", [1, 4, 7, 10])
def test_us8k_fold_protocol(tmp_path, fold):
    us8k.prepare_urbansound8k(str(SAMPLES / "UrbanSound8k"), str(tmp_path), fold=fold)
    manifests = assert_valid_manifests(tmp_path, us8k.MANIFEST_COLUMNS)
    assert {int(r["fold"]) for r in manifests["test"]} == {fold}
    assert fold not in {int(r["fold"]) for r in manifests["train"] + manifests["valid"]}
    assert sum(len(rows) for rows in manifests.values()) == 22
    # Validation: whole recordings from the training folds, at least 10% of each class's clips.
    train_ids = {r["fsID"] for r in manifests["train"]}
    valid_ids = {r["fsID"] for r in manifests["valid"]}
    assert not train_ids & valid_ids
    for label in ("car_horn", "street_music"):
        n_valid = sum(r["label"] == label for r in manifests["valid"])
        n_train = sum(r["label"] == label for r in manifests["train"])
        assert n_valid >= 0.1 * (n_valid + n_train) and n_train > 0
    assert dataprep.read_classes(tmp_path) == ["car_horn", "street_music"]


def training_rows(test_fold):
    with open(SAMPLES / "UrbanSound8k" / "metadata" / "UrbanSound8K.csv", newline="") as f:
        return [r for r in csv.DictReader(f) if r["fold"] != str(test_fold)]


def test_us8k_validation_split_is_seeded_and_stratified():
    training = training_rows(1)
    clips_of = {label: sum(r["class"] == label for r in training) for label in ("car_horn", "street_music")}
    for seed in range(20):
        picked = us8k.validation_recordings(training, 0.1, seed)
        assert picked == us8k.validation_recordings(training, 0.1, seed)
        for label, n_clips in clips_of.items():
            n_valid = sum(r["class"] == label and r["fsID"] in picked for r in training)
            # At least 10% of the class, and no more recordings than needed (the largest has 2 clips).
            assert 0.1 * n_clips <= n_valid < 0.1 * n_clips + 2
    splits = {frozenset(us8k.validation_recordings(training, 0.1, seed)) for seed in range(20)}
    assert len(splits) > 1, "the seed must drive the split"
    # A class's last recording always stays in training, whatever the fraction.
    picked = us8k.validation_recordings(training, 0.99, 0)
    for label in ("car_horn", "street_music"):
        assert {r["fsID"] for r in training if r["class"] == label} - picked
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        us8k.validation_recordings(training, 0.0, 0)


def test_us8k_valid_split_keeps_slices_of_one_recording_together(tmp_path):
    # Find a seed that sends a two-slice recording to validation, then check both slices went.
    training = training_rows(1)
    seed = next(s for s in range(50) if "212288" in us8k.validation_recordings(training, 0.3, s))
    us8k.prepare_urbansound8k(
        str(SAMPLES / "UrbanSound8k"), str(tmp_path), fold=1, valid_fraction=0.3, split_seed=seed
    )
    manifests = read_all(tmp_path)
    assert sorted(r["ID"] for r in manifests["valid"] if r["fsID"] == "212288") == [
        "212288-9-0-0",
        "212288-9-0-1",
    ]
    for fs_id in ("212288", "318759"):  # the two recordings with two slices
        sides = {split for split, rows in manifests.items() for r in rows if r["fsID"] == fs_id}
        assert len(sides) == 1, f"slices of recording {fs_id} ended up in {sides}"


def test_us8k_mixed_formats_become_16k_mono(tmp_path):
    data = SAMPLES / "UrbanSound8k"
    formats = {(sf.info(p).samplerate, sf.info(p).channels, sf.info(p).subtype) for p in wav_files(data)}
    assert (44100, 2, "PCM_16") in formats and len(formats) >= 6
    us8k.prepare_urbansound8k(str(data), str(tmp_path), fold=1)
    row = next(r for r in read_manifest(tmp_path, "test") if r["ID"] == "43389-9-0-0")
    stereo, rate = sf.read(data / "audio" / "fold1" / "43389-9-0-0.wav", dtype="float32")
    expected = torchaudio.functional.resample(torch.from_numpy(stereo.mean(axis=1)), rate, 16000).numpy()
    got, got_rate = sf.read(row["wav"], dtype="float32")
    assert got_rate == 16000 and got.ndim == 1
    np.testing.assert_allclose(got, expected, atol=2e-4)


# Speech Commands v2


def test_gsc_official_split(tmp_path):
    data = SAMPLES / "GSC"
    gsc.prepare_gsc(str(data), str(tmp_path))
    manifests = assert_valid_manifests(tmp_path, gsc.MANIFEST_COLUMNS)
    listed = {
        split: {line.strip() for line in open(data / name) if line.strip()}
        for split, name in (("valid", "validation_list.txt"), ("test", "testing_list.txt"))
    }
    for split in ("valid", "test"):
        got = {os.path.relpath(r["wav"], data) for r in manifests[split]}
        assert got == listed[split]
    assert {os.path.relpath(r["wav"], data) for r in manifests["train"]}.isdisjoint(
        listed["valid"] | listed["test"]
    )
    assert not any("_background_noise_" in r["wav"] for rows in manifests.values() for r in rows)
    # Speakers never cross splits, labels are the folder names, 16 kHz clips are used in place.
    speakers = [{r["speaker"] for r in rows} for rows in manifests.values()]
    assert not (speakers[0] & speakers[1] or speakers[0] & speakers[2] or speakers[1] & speakers[2])
    assert all(r["label"] == Path(r["wav"]).parent.name for rows in manifests.values() for r in rows)
    assert all(r["wav"].startswith(str(data)) for rows in manifests.values() for r in rows)
    # The class list is always the 35 words, sorted, even with 3 word folders on disk.
    classes = dataprep.read_classes(tmp_path)
    assert classes == sorted(gsc.GSC_V2_WORDS) and len(classes) == 35
    assert {r["label"] for r in manifests["train"]} == {"one", "two", "zero"}


def test_gsc_word_folders(tmp_path, caplog):
    for name in gsc.GSC_V2_WORDS + ["_background_noise_", ".cache", "exp"]:
        (tmp_path / name).mkdir()
    (tmp_path / "LICENSE").write_text("x")
    with caplog.at_level(logging.WARNING):
        assert gsc.find_word_folders(str(tmp_path)) == sorted(gsc.GSC_V2_WORDS)
    assert "exp" in caplog.text and "_background_noise_" not in caplog.text
    caplog.clear()
    for word in gsc.V2_ONLY_WORDS:
        (tmp_path / word).rmdir()
    with caplog.at_level(logging.WARNING):
        assert len(gsc.find_word_folders(str(tmp_path))) == 30
    assert "v0.01" in caplog.text


def test_gsc_listed_but_missing_clip_is_reported(tmp_path):
    data = copy_sample(tmp_path, "GSC")
    missing = (data / "testing_list.txt").read_text().split()[0]
    (data / missing).unlink()
    save = tmp_path / "save"
    gsc.prepare_gsc(str(data), str(save), max_skipped_fraction=0.2)
    assert (save / "skipped.txt").read_text() == f"{missing}\tfile not found\n"
    assert len(read_manifest(save, "test")) == 2


# Fluent Speech Commands


def test_fsc_official_split_and_intents(tmp_path):
    data = SAMPLES / "FSC"
    fsc.prepare_fsc(str(data), str(tmp_path))
    manifests = assert_valid_manifests(tmp_path, fsc.MANIFEST_COLUMNS)
    for split, rows in manifests.items():
        official = list(csv.DictReader(open(data / "data" / f"{split}_data.csv", newline="")))
        assert [os.path.relpath(r["wav"], data) for r in rows] == [o["path"] for o in official]
        assert [r["transcription"] for r in rows] == [o["transcription"] for o in official]
        for row in rows:
            assert row["label"] == f"{row['action']}_{row['object']}_{row['location']}"
    expected = ["activate_lights_none", "change language_none_none", "deactivate_lights_kitchen"]
    assert dataprep.read_classes(tmp_path) == expected
    speakers = [{r["speaker"] for r in rows} for rows in manifests.values()]
    assert all(len(s) == 1 for s in speakers) and len(set.union(*speakers)) == 3


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_second_call_skips_and_changed_options_redo(tmp_path, monkeypatch, name):
    module, prepare, _, _ = DATASETS[name]
    save = tmp_path / "save"
    prepare(str(SAMPLES / name), str(save))
    calls = []

    def spy(*args, **kwargs):
        calls.append(args[0])
        return dataprep.prepare_audio(*args, **kwargs)

    monkeypatch.setattr(module, "prepare_audio", spy)
    prepare(str(SAMPLES / name), str(save))
    assert calls == []
    prepare(str(SAMPLES / name), str(save), max_skipped_fraction=0.5)
    assert len(calls) == 1
    prepare(str(SAMPLES / name), str(save), max_skipped_fraction=0.5)
    assert len(calls) == 1


# Bad input, for every dataset


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_wrong_folder(tmp_path, name):
    _, prepare, marker, url = DATASETS[name]
    with pytest.raises(FileNotFoundError) as err:
        prepare(str(tmp_path / "nowhere"), str(tmp_path / "save"))
    message = str(err.value)
    assert "does not exist" in message and url in message and "--data_folder=" in message
    assert not (tmp_path / "save").exists()


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_parent_folder_gets_a_suggestion(tmp_path, name):
    data = copy_sample(tmp_path, name)
    _, prepare, marker, url = DATASETS[name]
    with pytest.raises(FileNotFoundError, match=re.escape(f"did you mean --data_folder={data}?")):
        prepare(str(data.parent), str(tmp_path / "save"))


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_missing_metadata(tmp_path, name):
    data = copy_sample(tmp_path, name)
    _, prepare, marker, url = DATASETS[name]
    (data / marker).unlink()
    with pytest.raises(FileNotFoundError) as err:
        prepare(str(data), str(tmp_path / "save"))
    message = str(err.value)
    assert f"has no {marker}" in message and url in message and "--data_folder=" in message


def test_metadata_with_wrong_header(tmp_path):
    data = copy_sample(tmp_path, "ESC50")
    meta = data / "meta" / "esc50.csv"
    meta.write_text(meta.read_text().replace("category", "class_name", 1))
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['category'\]"):
        esc50.prepare_esc50(str(data), str(tmp_path / "save"))


def test_metadata_with_bad_fold(tmp_path):
    data = copy_sample(tmp_path, "UrbanSound8k")
    meta = data / "metadata" / "UrbanSound8K.csv"
    lines = meta.read_text().splitlines()
    fields = lines[1].split(",")
    fields[5] = "11"
    meta.write_text("\n".join([lines[0], ",".join(fields)] + lines[2:]) + "\n")
    with pytest.raises(ValueError, match=f"gives fold '11' for {fields[0]}; official folds are 1 to 10"):
        us8k.prepare_urbansound8k(str(data), str(tmp_path / "save"))


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_corrupt_and_missing_audio_are_skipped_and_reported(tmp_path, caplog, name):
    data = copy_sample(tmp_path, name)
    _, prepare, _, _ = DATASETS[name]
    clips = [p for p in wav_files(data) if "_background_noise_" not in str(p)]
    corrupt, missing, empty = clips[0], clips[-1], clips[len(clips) // 2]
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEthis is not audio" * 3)
    missing.unlink()
    sf.write(empty, np.zeros((0,), dtype=np.float32), 16000)
    save = tmp_path / "save"
    with caplog.at_level(logging.WARNING):
        prepare(str(data), str(save), max_skipped_fraction=0.34)
    reasons = dict(line.split("\t") for line in (save / "skipped.txt").read_text().splitlines())
    rel = {p: p.relative_to(data).as_posix() for p in (corrupt, missing, empty)}
    assert reasons[rel[corrupt]].startswith("cannot be decoded")
    assert reasons[rel[missing]] == "file not found"
    assert reasons[rel[empty]] == "has no samples"
    assert len(reasons) == 3
    assert "skipped 3 of" in caplog.text and rel[corrupt] in caplog.text
    kept = [r["wav"] for rows in read_all(save).values() for r in rows]
    assert not [w for w in kept for bad in rel.values() if w.endswith(bad)]
    assert sum(len(rows) for rows in read_all(save).values()) == len(clips) - 3


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_too_many_bad_files_abort(tmp_path, name):
    data = copy_sample(tmp_path, name)
    _, prepare, _, url = DATASETS[name]
    clips = [p for p in wav_files(data) if "_background_noise_" not in str(p)]
    clips[0].unlink()
    save = tmp_path / "save"
    with pytest.raises(RuntimeError) as err:
        prepare(str(data), str(save))  # default max_skipped_fraction=0.01
    message = str(err.value)
    assert f"1 of {len(clips)} audio files" in message and "max_skipped_fraction=0.01" in message
    assert str(save / "skipped.txt") in message and url in message
    assert not (save / dataprep.OPTIONS_FILE).exists()


def test_44k_stereo_clip_is_resampled_and_downmixed(tmp_path):
    data = copy_sample(tmp_path, "ESC50")
    clip = data / "audio" / "3-13138-A-46.wav"
    t = np.arange(int(0.2 * 44100)) / 44100
    left = 0.5 * np.sin(2 * np.pi * 440 * t)
    right = -0.25 * np.sin(2 * np.pi * 440 * t)
    sf.write(clip, np.stack([left, right], axis=1).astype(np.float32), 44100, subtype="PCM_16")
    save = tmp_path / "save"
    esc50.prepare_esc50(str(data), str(save), fold=3)
    (row,) = [r for r in read_manifest(save, "test") if r["ID"] == "3-13138-A-46"]
    got, rate = sf.read(row["wav"], dtype="float32")
    assert rate == 16000 and got.ndim == 1 and got.shape[0] == 3200
    stereo = sf.read(clip, dtype="float32")[0]
    expected = torchaudio.functional.resample(torch.from_numpy(stereo.mean(axis=1)), 44100, 16000).numpy()
    np.testing.assert_allclose(got, expected, atol=2e-4)
    # The mix, not one channel: a 440 Hz tone of amplitude (0.5 - 0.25) / 2.
    assert np.abs(got[400:-400]).max() == pytest.approx(0.125, abs=5e-3)


def test_invalid_options_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="--fold=1 ... --fold=10"):
        us8k.prepare_urbansound8k(str(SAMPLES / "UrbanSound8k"), str(tmp_path), fold=0)
    with pytest.raises(ValueError, match="valid_fraction must be strictly between 0 and 1"):
        us8k.prepare_urbansound8k(str(SAMPLES / "UrbanSound8k"), str(tmp_path), valid_fraction=1.0)
    with pytest.raises(ValueError, match="max_skipped_fraction must be between 0 and 1"):
        gsc.prepare_gsc(str(SAMPLES / "GSC"), str(tmp_path), max_skipped_fraction=2)


@pytest.mark.parametrize(
    "module", [esc50, us8k, gsc, fsc], ids=lambda m: m.__name__.removeprefix("_test_audio_prepare_")
)
def test_recipe_doctests(module):
    # The recipes are not on the doctest path of pytest.ini; run their examples here.
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
