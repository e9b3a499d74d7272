"""tools/synthetic_data.py: the recipes' own preparation accepts its folders, layouts, determinism."""

import csv
import doctest
import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tools import synthetic_data as synthetic

ROOT = Path(__file__).resolve().parents[2]


def _load(path, name):
    # Names of their own in sys.modules, as in test_audio_prepare: a recipe run in the same
    # session imports its ``gsc_prepare`` etc. under the plain names.
    unique = f"_test_synthetic_data_{name}"
    spec = importlib.util.spec_from_file_location(unique, ROOT / path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[unique] = module
    spec.loader.exec_module(module)
    return module


gsc = _load("recipes/GSC/gsc_prepare.py", "gsc_prepare")
cvp = _load("recipes/CommonVoice/common_voice_prepare.py", "common_voice_prepare")

GSC_COUNTS = {"train": 35, "valid": 10, "test": 10}
CV_COUNTS = {"train": 6, "dev": 3, "test": 3}
CV_SECONDS = (1.0, 2.0)
CV_HEADER_V17 = (
    "client_id path sentence_id sentence sentence_domain up_votes down_votes age gender accents "
    "variant locale segment"
).split()
ESPERANTO_LETTERS = set("abcĉdefgĝhĥijĵklmnoprsŝtuŭvz")


def _read_csv(path, **kwargs):
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, **kwargs))


def _read_tsv(path):
    return _read_csv(path, delimiter="\t", quoting=csv.QUOTE_NONE)


def _files(folder):
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != synthetic.MARKER
    }


def _make_gsc(folder, workers=1, seed=0):
    return synthetic.make_gsc(folder, *GSC_COUNTS.values(), seed=seed, workers=workers)


def _make_cv(folder, workers=1):
    return synthetic.make_common_voice(
        folder,
        "eo",
        *CV_COUNTS.values(),
        min_seconds=CV_SECONDS[0],
        max_seconds=CV_SECONDS[1],
        workers=workers,
    )


@pytest.fixture(scope="module")
def gsc_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gsc") / "speech_commands_v0.02"
    _make_gsc(folder)
    return folder


@pytest.fixture(scope="module")
def cv_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cv") / "eo"
    _make_cv(folder)
    return folder


def test_gsc_is_accepted_by_the_recipe_preparation(gsc_folder, tmp_path):
    assert synthetic.GSC_WORDS == gsc.GSC_V2_WORDS
    gsc.prepare_gsc(gsc_folder, tmp_path)
    rows = {split: _read_csv(tmp_path / f"{split}.csv") for split in ("train", "valid", "test")}
    assert {split: len(r) for split, r in rows.items()} == GSC_COUNTS
    # One training clip per word (balanced), used in place (already 16 kHz mono PCM16), 1 s long.
    assert sorted(r["label"] for r in rows["train"]) == sorted(gsc.GSC_V2_WORDS)
    for split_rows in rows.values():
        for row in split_rows:
            assert float(row["duration"]) == 1.0
            assert Path(row["wav"]).is_relative_to(gsc_folder.resolve())
    assert (tmp_path / "skipped.txt").read_text() == ""


def test_gsc_layout(gsc_folder):
    clip_name = re.compile(r"^[0-9a-f]{8}_nohash_\d+\.wav$")
    clips = sorted(p for p in gsc_folder.rglob("*.wav") if p.parent.name != "_background_noise_")
    assert len(clips) == sum(GSC_COUNTS.values())
    assert {p.name for p in gsc_folder.iterdir() if p.is_dir()} == set(gsc.GSC_V2_WORDS) | {
        "_background_noise_"
    }
    for clip in clips:
        assert clip_name.match(clip.name), clip.name
        info = sf.info(clip)
        assert (info.format, info.subtype, info.channels, info.samplerate, info.frames) == (
            "WAV",
            "PCM_16",
            1,
            16000,
            16000,
        )
    lists = {
        split: (gsc_folder / name).read_text(encoding="utf-8").splitlines()
        for split, name in (("valid", "validation_list.txt"), ("test", "testing_list.txt"))
    }
    rel_clips = {clip.relative_to(gsc_folder).as_posix() for clip in clips}
    speakers = {}
    for split in ("valid", "test"):
        assert len(lists[split]) == GSC_COUNTS[split]
        assert set(lists[split]) <= rel_clips
        speakers[split] = {line.split("/")[1].split("_nohash_")[0] for line in lists[split]}
    train = rel_clips - set(lists["valid"]) - set(lists["test"])
    speakers["train"] = {rel.split("/")[1].split("_nohash_")[0] for rel in train}
    # As in the release, a speaker's clips are all in one split.
    assert not speakers["train"] & speakers["valid"]
    assert not speakers["train"] & speakers["test"]
    assert not speakers["valid"] & speakers["test"]
    noise = sorted((gsc_folder / "_background_noise_").glob("*.wav"))
    assert len(noise) == 2 and all(sf.info(p).samplerate == 16000 for p in noise)


def _band_spectrum(path):
    """Log power in 50 Hz bands, smoothed over about 100 Hz (speakers shift the tones by up to
    4 % of each other), centred and scaled to unit norm."""
    wav, _ = sf.read(path)
    power = np.abs(np.fft.rfft(wav))[:8000] ** 2
    kernel = np.exp(-0.5 * (np.arange(-6, 7) / 2) ** 2)
    bands = np.log(np.convolve(power.reshape(160, 50).sum(axis=1), kernel, "same"))
    bands -= bands.mean()
    return bands / np.linalg.norm(bands)


def test_gsc_words_are_separable(gsc_folder):
    """A nearest-centroid classifier on band spectra, fitted on one training clip per word,
    names the word of the held-out clips (chance: 1 in 35), so a real classifier can learn them."""
    listed = set()
    for name in ("validation_list.txt", "testing_list.txt"):
        listed |= set((gsc_folder / name).read_text(encoding="utf-8").splitlines())
    clips = [p for p in gsc_folder.glob("*/*.wav") if p.parent.name != "_background_noise_"]
    held_out = [p for p in clips if p.relative_to(gsc_folder).as_posix() in listed]
    centroids = {p.parent.name: _band_spectrum(p) for p in clips if p not in held_out}
    words = sorted(centroids)
    matrix = np.stack([centroids[w] for w in words])
    correct = sum(words[int(np.argmax(matrix @ _band_spectrum(p)))] == p.parent.name for p in held_out)
    assert correct / len(held_out) >= 0.9


def test_gsc_is_deterministic_whatever_the_workers(gsc_folder, tmp_path):
    _make_gsc(tmp_path / "two_workers", workers=2)
    assert _files(tmp_path / "two_workers") == _files(gsc_folder)
    _make_gsc(tmp_path / "other_seed", seed=1)
    first = sorted(gsc_folder.glob("yes/*.wav"))[0].read_bytes()
    assert first not in {p.read_bytes() for p in (tmp_path / "other_seed").glob("yes/*.wav")}


def test_output_folder_policy(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not written by tools/synthetic_data.py"):
        synthetic.make_gsc(foreign, 35, 1, 1, workers=1)
    assert (foreign / "notes.txt").read_text() == "mine"

    ours = tmp_path / "ours"
    first = synthetic.make_gsc(ours, 35, 1, 1, workers=1)
    (ours / "extra.txt").write_text("left by a user")
    again = synthetic.make_gsc(ours, 35, 1, 1, workers=1)
    assert again["reused"] and not first["reused"]
    assert (ours / "extra.txt").is_file(), "an identical call must leave the folder as it is"
    synthetic.make_gsc(ours, 36, 1, 1, seed=1, workers=1)
    assert not (ours / "extra.txt").exists(), "other options rewrite the folder from scratch"
    assert len([p for p in ours.glob("*/*.wav") if p.parent.name != "_background_noise_"]) == 38


def test_common_voice_is_accepted_by_the_recipe_preparation(cv_folder, tmp_path):
    cvp.prepare_common_voice(cv_folder, tmp_path, "eo", train_minutes=1, dev_minutes=1, test_minutes=1)
    tsv = {split: {r["path"]: r for r in _read_tsv(cv_folder / f"{split}.tsv")} for split in CV_COUNTS}
    for split, count in CV_COUNTS.items():
        rows = _read_csv(tmp_path / f"{split}.csv")
        assert len(rows) == count
        for row in rows:
            source = tsv[split][f"{row['ID']}.mp3"]
            assert CV_SECONDS[0] - 0.01 <= float(row["duration"]) <= CV_SECONDS[1] + 0.01
            assert row["spk_id"] == source["client_id"]
            # Normalisation only lower-cases and drops the full stop: the text is clean.
            assert row["wrd"] == source["sentence"].lower().rstrip(".")
            assert 3 <= len(row["wrd"].split()) <= 10
            assert set(row["wrd"]) <= ESPERANTO_LETTERS | {" "}


def test_common_voice_layout(cv_folder):
    clip_name = re.compile(r"^common_voice_eo_\d{8}\.mp3$")
    speakers = {}
    listed = []
    for split, count in CV_COUNTS.items():
        with open(cv_folder / f"{split}.tsv", encoding="utf-8") as f:
            assert f.readline().rstrip("\n").split("\t") == CV_HEADER_V17
        rows = _read_tsv(cv_folder / f"{split}.tsv")
        assert len(rows) == count
        assert {r["locale"] for r in rows} == {"eo"}
        assert all(re.fullmatch(r"[0-9a-f]{128}", r["client_id"]) for r in rows)
        speakers[split] = {r["client_id"] for r in rows}
        listed += [r["path"] for r in rows]
    assert not speakers["train"] & speakers["dev"] and not speakers["train"] & speakers["test"]
    assert not speakers["dev"] & speakers["test"]
    assert sorted(listed) == sorted(p.name for p in (cv_folder / "clips").iterdir())
    for name in listed:
        assert clip_name.match(name), name
        info = sf.info(cv_folder / "clips" / name)
        assert (info.format, info.channels, info.samplerate) == ("MP3", 1, 48000)
        assert CV_SECONDS[0] - 0.01 <= info.duration <= CV_SECONDS[1] + 0.01


def test_common_voice_is_deterministic_whatever_the_workers(cv_folder, tmp_path):
    _make_cv(tmp_path / "eo", workers=2)
    assert _files(tmp_path / "eo") == _files(cv_folder)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"language": "xx"}, "No alphabet for language 'xx'"),
        ({"min_seconds": 3.0, "max_seconds": 2.0}, "min_seconds <= max_seconds"),
        ({"n_dev": 0}, "n_dev must be at least 1"),
        ({"sample_rate": 8000}, "cannot be stored in MP3"),
    ],
)
def test_common_voice_rejects_bad_options(tmp_path, kwargs, message):
    arguments = {"root": tmp_path / "cv", "language": "eo", "n_train": 2, "n_dev": 1, "n_test": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        synthetic.make_common_voice(**arguments, workers=1)


@pytest.mark.parametrize("language", sorted(synthetic.ALPHABETS))
def test_vocabulary_survives_normalisation(language):
    """Every pseudo-word is one word of letters that the recipe's normalisation keeps as it is."""
    for word in synthetic.vocabulary(language):
        assert cvp.normalize_text(word, language) == word


def test_command_line(tmp_path, capsys):
    summary = synthetic.main(["gsc", "--out", str(tmp_path / "gsc"), "--train", "35", "--valid", "1",
                              "--test", "1", "--workers", "1"])  # fmt: skip
    assert summary["clips"] == {"train": 35, "valid": 1, "test": 1}
    assert "35 train, 1 valid, 1 test clips" in capsys.readouterr().out


def test_doctests():
    result = doctest.testmod(synthetic, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
