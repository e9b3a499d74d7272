"""Common Voice data preparation: subsets, determinism, headers, caching, normalisation, bad input."""

import csv
import doctest
import importlib.util
import json
import logging
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "tests" / "samples" / "CommonVoice"


def _load_module():
    spec = importlib.util.spec_from_file_location(
        "common_voice_prepare", ROOT / "recipes" / "CommonVoice" / "common_voice_prepare.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cvp = _load_module()

HEADER_V1 = "client_id path sentence up_votes down_votes age gender accent locale segment".split()
HEADER_V13 = "client_id path sentence up_votes down_votes age gender accents variant locale segment".split()
HEADER_V17 = (
    "client_id path sentence_id sentence sentence_domain up_votes down_votes age gender accents "
    "variant locale segment"
).split()


def _copy_sample(tmp_path, language="eo"):
    folder = tmp_path / "cv" / language
    shutil.copytree(SAMPLES / language, folder)
    return folder


def _read_csv(path):
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _read_tsv(path):
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def _write_tsv(path, header, rows):
    lines = ["\t".join(header)] + ["\t".join(row.get(name, "") for name in header) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _synthetic_release(folder, language, durations_by_split, seed_offset=0):
    """A release whose clips are empty files and whose durations sit in the cache, so that the
    budgets of the real protocol (600/60/60 minutes) can be tested in a second."""
    (folder / "clips").mkdir(parents=True)
    durations = {}
    for split, split_durations in durations_by_split.items():
        rows = []
        for i, duration in enumerate(split_durations):
            clip = f"common_voice_{language}_{split}_{i + seed_offset}.mp3"
            (folder / "clips" / clip).touch()
            durations[clip] = duration
            rows.append({"client_id": "c", "path": clip, "sentence": f"vorto {i}", "locale": language})
        _write_tsv(folder / f"{split}.tsv", HEADER_V13, rows)
    return durations


def _prefill_cache(save_folder, durations):
    save_folder.mkdir(parents=True, exist_ok=True)
    (save_folder / cvp.CLIP_CHECKS_CACHE).write_text(json.dumps(durations), encoding="utf-8")


def _cycle(values, n):
    return [values[i % len(values)] for i in range(n)]


def test_doctests():
    assert doctest.testmod(cvp, optionflags=doctest.ELLIPSIS).failed == 0


def test_protocol_budgets(tmp_path, caplog):
    # 9,000 train clips of 2-12 s (~875 min), 1,000 dev and test clips (~97 min each).
    pattern = [2.0, 4.5, 6.0, 8.0, 12.0, 3.5, 9.9, 5.0]
    durations = _synthetic_release(
        tmp_path / "eo",
        "eo",
        {"train": _cycle(pattern, 9000), "dev": _cycle(pattern, 1000), "test": _cycle(pattern, 1000)},
    )
    save = tmp_path / "save"
    _prefill_cache(save, durations)
    with caplog.at_level(logging.INFO):
        cvp.prepare_common_voice(tmp_path / "eo", save, "eo")
    for split, minutes in (("train", 600), ("dev", 60), ("test", 60)):
        rows = _read_csv(save / f"{split}.csv")
        total = sum(float(row["duration"]) for row in rows)
        assert minutes * 60 - 10.0 < total <= minutes * 60, split
        assert all(float(row["duration"]) <= 10.0 for row in rows)
        assert len({row["ID"] for row in rows}) == len(rows)
    assert "were over 10.0 s and dropped" in caplog.text


def test_short_split_taken_whole(tmp_path, caplog):
    # Like CKB: less train audio than the 600 minutes asked for.
    durations = _synthetic_release(
        tmp_path / "ckb", "ckb", {"train": [5.0] * 600, "dev": [5.0] * 20, "test": [5.0] * 20}
    )
    save = tmp_path / "save"
    _prefill_cache(save, durations)
    with caplog.at_level(logging.INFO):
        cvp.prepare_common_voice(tmp_path / "ckb", save, "ckb", max_duration=10.0)
    assert len(_read_csv(save / "train.csv")) == 600
    assert "train: only 50.0 minutes" in caplog.text
    assert "taking all of them" in caplog.text


def test_max_duration_drops_long_clips(tmp_path, caplog):
    durations = _synthetic_release(
        tmp_path / "rw", "rw", {"train": [3.0, 11.0, 4.0, 25.0], "dev": [1.0], "test": [1.0]}
    )
    save = tmp_path / "save"
    _prefill_cache(save, durations)
    with caplog.at_level(logging.INFO):
        cvp.prepare_common_voice(tmp_path / "rw", save, "rw")
    assert sorted(float(row["duration"]) for row in _read_csv(save / "train.csv")) == [3.0, 4.0]
    assert "2 of the 4 rows visited were over 10.0 s" in caplog.text


def test_seed_determinism(tmp_path):
    durations = _synthetic_release(
        tmp_path / "kab", "kab", {"train": [5.0] * 400, "dev": [5.0] * 100, "test": [5.0] * 100}
    )

    def selection(save, seed, folder=tmp_path / "kab"):
        _prefill_cache(save, durations)
        cvp.prepare_common_voice(folder, save, "kab", 10, 2, 2, seed=seed)
        return [row["ID"] for row in _read_csv(save / "train.csv")]

    first = selection(tmp_path / "a", seed=0)
    assert len(first) == 120
    assert selection(tmp_path / "b", seed=0) == first
    assert set(selection(tmp_path / "c", seed=1)) != set(first)
    # The selection does not depend on the row order of the tsv.
    reordered = tmp_path / "reordered" / "kab"
    shutil.copytree(tmp_path / "kab", reordered)
    rows = _read_tsv(reordered / "train.tsv")
    _write_tsv(reordered / "train.tsv", HEADER_V13, rows[::-1])
    assert selection(tmp_path / "d", seed=0, folder=reordered) == first


@pytest.mark.parametrize("header", [HEADER_V1, HEADER_V13, HEADER_V17], ids=["v1-v7", "v13-v16", "v17+"])
def test_header_variants(tmp_path, header):
    folder = _copy_sample(tmp_path)
    for split in cvp.SPLITS:
        rows = _read_tsv(folder / f"{split}.tsv")
        _write_tsv(folder / f"{split}.tsv", header, rows)
    cvp.prepare_common_voice(folder, tmp_path / "save", "eo")
    rows = _read_csv(tmp_path / "save" / "test.csv")
    assert {row["ID"]: row["wrd"] for row in rows}["common_voice_eo_40000017"] == (
        "ankaŭ montri pedantajn sugestojn"
    )
    assert len(rows) == 6


def test_header_without_sentence(tmp_path):
    folder = _copy_sample(tmp_path)
    _write_tsv(folder / "dev.tsv", ["client_id", "path", "text"], [{"path": "x.mp3"}])
    with pytest.raises(ValueError, match="'path' and 'sentence'"):
        cvp.prepare_common_voice(folder, tmp_path / "save", "eo")


def test_samples_load_in_speechbrain(tmp_path):
    import soundfile as sf
    from speechbrain.dataio.dataio import read_audio
    from speechbrain.dataio.dataset import DynamicItemDataset

    folder = _copy_sample(tmp_path, "ab")
    save = tmp_path / "save"
    cvp.prepare_common_voice(folder, save, "ab")
    dataset = DynamicItemDataset.from_csv(save / "train.csv")
    assert len(dataset) == 9
    cache = json.loads((save / cvp.CLIP_CHECKS_CACHE).read_text(encoding="utf-8"))
    assert len(cache) == 21
    for row in _read_csv(save / "train.csv"):
        audio = read_audio(row["wav"])
        rate = sf.info(row["wav"]).samplerate
        assert abs(len(audio) / rate - float(row["duration"])) < 0.06
        assert row["wrd"] == row["wrd"].lower() and row["wrd"].strip() == row["wrd"]


def test_durations_cached(tmp_path, monkeypatch):
    folder = _copy_sample(tmp_path)
    save = tmp_path / "save"
    cvp.prepare_common_voice(folder, save, "eo", seed=0)
    calls = []
    real_check = cvp.check_clip
    monkeypatch.setattr(cvp, "check_clip", lambda path: calls.append(path) or real_check(path))
    cvp.prepare_common_voice(folder, save, "eo", seed=3)
    assert calls == []


def test_idempotent(tmp_path, monkeypatch, caplog):
    folder = _copy_sample(tmp_path)
    save = tmp_path / "save"
    cvp.prepare_common_voice(folder, save, "eo", train_minutes=0.2)
    first = (save / "train.csv").read_text(encoding="utf-8")

    def fail(*args, **kwargs):
        raise AssertionError("prepared again although nothing changed")

    with monkeypatch.context() as patch:
        patch.setattr(cvp, "select_subset", fail)
        with caplog.at_level(logging.INFO):
            cvp.prepare_common_voice(folder, save, "eo", train_minutes=0.2)
    assert "skipping preparation" in caplog.text
    # A changed option redoes the work.
    cvp.prepare_common_voice(folder, save, "eo", train_minutes=0.4)
    second = (save / "train.csv").read_text(encoding="utf-8")
    assert len(second.splitlines()) > len(first.splitlines())
    # So does a changed tsv.
    rows = _read_tsv(folder / "train.tsv")
    _write_tsv(folder / "train.tsv", HEADER_V17, rows[:2])
    cvp.prepare_common_voice(folder, save, "eo", train_minutes=0.4)
    assert len(_read_csv(save / "train.csv")) <= 2
    # skip_prep does nothing at all, even on a folder that does not exist.
    cvp.prepare_common_voice(tmp_path / "nowhere", tmp_path / "other", "eo", skip_prep=True)
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize(
    "language, raw, expected",
    [
        ("eo", "Ĉu vi parolas Esperanton? Jes, iom!", "ĉu vi parolas esperanton jes iom"),
        ("eo", "La kor’ de l' mondo – «bela».", "la kor' de l' mondo bela"),
        ("eo", "Ǔ estas ne ŭ; GIF-bilda ŝargilo", "ŭ estas ne ŭ gif-bilda ŝargilo"),
        ("rw", "Ndagiye kwa Mama n’abana, ejo.", "ndagiye kwa mama n'abana ejo"),
        ("rw", "'Muraho' - ni byiza!", "muraho ni byiza"),
        ("kab", "Yenna-yas: «Azul fell-awen!»", "yenna-yas azul fell-awen"),
        ("kab", "Εlaxir γef yemma.", "ɛlaxir ɣef yemma"),
        ("ab", "Аимадара аҵыхәтәантәи аҭыҧ ахышәарақәа:", "аимадара аҵыхәтәантәи аҭыԥ ахышәарақәа"),
        ("ab", "Аҧсуа бызшәa, Abkhaz!", "аԥсуа бызшәа abkhaz"),
        ("ab", "ҕəрa", "ӷәра"),
        ("ckb", "كوردي، زمانێكی جوانە.", "کوردی زمانێکی جوانە"),
        ("ckb", "ئه\u200cمه‌ ١٢٣ ـــ تاقيكردنه‌وه‌یه؟", "ئەمە 123 تاقیکردنەوەیە"),
        ("ckb", "سَلام", "سلام"),
    ],
)
def test_normalize_text(language, raw, expected):
    assert cvp.normalize_text(raw, language) == expected


def test_normalize_text_is_idempotent():
    for language in ("ab", "ckb", "eo", "kab", "rw"):
        for split in ("train", "test"):
            sample = SAMPLES / ("ab" if language == "ab" else "eo") / f"{split}.tsv"
            for row in _read_tsv(sample):
                once = cvp.normalize_text(row["sentence"], language)
                assert cvp.normalize_text(once, language) == once


def test_missing_tsv(tmp_path):
    folder = _copy_sample(tmp_path)
    (folder / "dev.tsv").unlink()
    with pytest.raises(FileNotFoundError, match=r"has no dev\.tsv.*--data_folder"):
        cvp.prepare_common_voice(folder, tmp_path / "save", "eo")


def test_missing_clip_skipped(tmp_path, caplog):
    folder = _copy_sample(tmp_path)
    (folder / "clips" / "common_voice_eo_40000003.mp3").unlink()
    with caplog.at_level(logging.WARNING):
        cvp.prepare_common_voice(folder, tmp_path / "save", "eo", max_skipped_fraction=0.2)
    ids = [row["ID"] for row in _read_csv(tmp_path / "save" / "train.csv")]
    assert len(ids) == 8 and "common_voice_eo_40000003" not in ids
    assert "common_voice_eo_40000003.mp3" in caplog.text and "missing" in caplog.text
    report = (tmp_path / "save" / cvp.SKIPPED_FILE).read_text(encoding="utf-8")
    assert report.startswith("train\tcommon_voice_eo_40000003.mp3\tis listed in train.tsv but missing")


def test_many_missing_clips_fail(tmp_path):
    folder = _copy_sample(tmp_path)
    for clip in (folder / "clips").glob("*.mp3"):
        clip.unlink()
    with pytest.raises(RuntimeError, match=r"fully extracted.*--max_skipped_fraction=1.0 \(a key of"):
        cvp.prepare_common_voice(folder, tmp_path / "save", "eo")


def test_empty_sentence_skipped(tmp_path, caplog):
    folder = _copy_sample(tmp_path)
    rows = _read_tsv(folder / "train.tsv")
    rows[0]["sentence"] = ""
    rows[1]["sentence"] = " ... ?"
    _write_tsv(folder / "train.tsv", HEADER_V17, rows)
    with caplog.at_level(logging.WARNING):
        cvp.prepare_common_voice(folder, tmp_path / "save", "eo")
    ids = [row["ID"] for row in _read_csv(tmp_path / "save" / "train.csv")]
    assert len(ids) == 7
    assert "skipped 2 rows whose sentence is empty" in caplog.text
    assert "common_voice_eo_40000000.mp3" in caplog.text


def test_language_folder_missing(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        cvp.prepare_common_voice(tmp_path / "cv" / "kab", tmp_path / "save", "kab")
    message = str(error.value)
    assert str(tmp_path / "cv" / "kab") in message
    assert "clips/*.mp3, train.tsv, dev.tsv and test.tsv" in message
    assert "--data_folder" in message


def test_locale_mismatch(tmp_path):
    folder = _copy_sample(tmp_path, "ab")
    with pytest.raises(ValueError, match="--language=ab"):
        cvp.prepare_common_voice(folder, tmp_path / "save", "eo")
