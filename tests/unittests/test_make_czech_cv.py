"""The Czech Common Voice converter (``tools/make_czech_cv.py``) on a small fake Fish Fillets tree:
dialogue parsing, the clips kept, a split that never puts a test or dev sentence in training, and
a folder the Common Voice recipe's preparation reads.
"""

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tools.make_czech_cv import find_clips, read_dialogs, split_of, write_common_voice

ROOT = Path(__file__).resolve().parents[2]
# (level, id, speaker, Czech); the same sentence twice, once with other punctuation and case.
DIALOGS = [
    ("city", "vit-hs-klid1", "font_statue", "Občané. Zachovejte klid a rozvahu."),
    ("city", "vit-m-hlava", "font_small", 'Tohle je \\"hlava\\" města.'),
    ("city", "vit-v-ano", "font_big", "Ano, jistě."),
    ("city", "vit-m-ano", "font_small", "ano jistě"),
    ("city", "z-c-1", "", ""),  # a sound effect: no text
    ("city", "bez-zvuku", "font_big", "Tahle věta nemá nahrávku."),
] + [
    ("cave", f"m-{i}", "font_small" if i % 2 else "font_big", f"Věta číslo {i} o rybách.") for i in range(40)
]


@pytest.fixture(scope="module")
def game_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fillets-ng")
    levels = {}
    for level, dialog_id, speaker, czech in DIALOGS:
        levels.setdefault(level, []).append(
            f'dialogId("{dialog_id}", "{speaker}", "English.")\ndialogStr("{czech}")\n\n'
        )
        if dialog_id != "bez-zvuku":
            (root / "sound" / level / "cs").mkdir(parents=True, exist_ok=True)
            tone = 0.1 * np.sin(np.arange(8000) / 16000 * 2 * np.pi * 220).astype(np.float32)
            sf.write(root / "sound" / level / "cs" / f"{dialog_id}.ogg", tone, 16000, format="OGG")
    for level, entries in levels.items():
        (root / "script" / level).mkdir(parents=True)
        (root / "script" / level / "dialogs_cs.lua").write_text("".join(entries), encoding="utf-8")
    return root


def read_tsv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def test_dialogues_are_read_with_their_escapes(game_root):
    dialogs = read_dialogs(game_root / "script" / "city" / "dialogs_cs.lua")
    assert dialogs["vit-m-hlava"] == ("font_small", "English.", 'Tohle je "hlava" města.')
    assert dialogs["z-c-1"] == ("", "English.", "")


def test_clips_need_a_recording_and_a_text(game_root):
    ids = {clip["id"] for clip in find_clips(game_root)}
    assert "z-c-1" not in ids and "bez-zvuku" not in ids
    assert len(ids) == len(DIALOGS) - 2


def test_no_test_or_dev_sentence_is_in_training(game_root, tmp_path):
    counts = write_common_voice(find_clips(game_root), tmp_path / "cs")
    rows = {split: read_tsv(tmp_path / "cs" / f"{split}.tsv") for split in ("train", "dev", "test")}
    assert sum(len(r) for r in rows.values()) == len(DIALOGS) - 2
    assert all(counts[split]["clips"] == len(rows[split]) for split in rows)
    normalize = importlib.import_module("tools.make_czech_cv")._normalize_text()
    sentences = {
        split: {normalize(r["sentence"], "cs") for r in split_rows} for split, split_rows in rows.items()
    }
    assert not sentences["train"] & (sentences["dev"] | sentences["test"])
    assert not sentences["dev"] & sentences["test"]
    assert rows["test"] and rows["dev"], "40 sentences put none in test or dev: the shares are off"
    # One sentence, two spellings: one split.
    (split,) = {s for s, split_rows in rows.items() for r in split_rows if r["path"].endswith("ano.ogg")}
    assert sum(r["path"].endswith("ano.ogg") for r in rows[split]) == 2
    for split_rows in rows.values():
        for row in split_rows:
            assert (tmp_path / "cs" / "clips" / row["path"]).is_file() and row["locale"] == "cs"
            assert split_of(normalize(row["sentence"], "cs")) in rows


def test_the_recipe_preparation_reads_the_folder(game_root, tmp_path):
    write_common_voice(find_clips(game_root), tmp_path / "cs")
    path = ROOT / "recipes" / "CommonVoice" / "common_voice_prepare.py"
    spec = importlib.util.spec_from_file_location("common_voice_prepare", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.prepare_common_voice(str(tmp_path / "cs"), str(tmp_path / "prepared"), "cs")
    with open(tmp_path / "prepared" / "test.csv", newline="", encoding="utf-8") as f:
        prepared = list(csv.DictReader(f))
    assert prepared and all(float(row["duration"]) == pytest.approx(0.5, abs=0.01) for row in prepared)


def test_a_tree_without_czech_recordings_is_refused_with_advice(tmp_path):
    with pytest.raises(FileNotFoundError, match="Run without --root to download and unpack both packages"):
        find_clips(tmp_path)
