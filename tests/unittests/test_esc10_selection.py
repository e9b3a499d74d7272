"""ESC-10 in the ESC50 recipe's preparation (``esc50_prepare.prepare_esc50(..., esc10=True)``): only
the clips marked ``esc10=True``, their classes, the same fold rotation; a changed option prepares
again; a metadata file that marks nothing, or marks other classes, is refused with advice.
"""

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechbrain_mambadapter.recipe.dataprep import read_classes

ROOT = Path(__file__).resolve().parents[2]
COLUMNS = ["filename", "fold", "target", "category", "esc10", "src_file", "take"]
# (target, category, esc10) of the official meta/esc50.csv
CLASSES = [(0, "dog", True), (1, "rooster", True), (10, "rain", True), (2, "pig", False), (3, "cow", False)]


@pytest.fixture(scope="module")
def prepare():
    path = ROOT / "recipes" / "ESC50" / "esc50_prepare.py"
    spec = importlib.util.spec_from_file_location("esc50_prepare", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_esc50(folder, classes=CLASSES, mark=lambda esc10: str(esc10)):
    """An ESC-50-layout folder: one 0.1 s clip per class and fold."""
    (folder / "audio").mkdir(parents=True)
    (folder / "meta").mkdir()
    rows = []
    for target, category, esc10 in classes:
        for fold in range(1, 6):
            name = f"{fold}-{100 + target}-A-{target}.wav"
            sf.write(folder / "audio" / name, np.zeros(1600, dtype=np.float32), 16000)
            rows.append([name, fold, target, category, mark(esc10), 100 + target, "A"])
    with open(folder / "meta" / "esc50.csv", "w", newline="") as f:
        csv.writer(f).writerows([COLUMNS, *rows])
    return folder


def manifest(folder, split):
    with open(folder / f"{split}.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("fold", [1, 3])
def test_esc10_keeps_the_marked_clips_their_classes_and_the_folds(prepare, tmp_path, fold):
    data = write_esc50(tmp_path / "ESC-50-master")
    out = tmp_path / "prepared"
    prepare.prepare_esc50(str(data), str(out), fold=fold, esc10=True)
    assert read_classes(out) == ["dog", "rain", "rooster"]
    train_folds, valid_fold, test_fold = prepare.esc50_folds(fold)
    splits = {split: manifest(out, split) for split in ("train", "valid", "test")}
    for rows in splits.values():
        assert {row["label"] for row in rows} == {"dog", "rain", "rooster"}
        assert {row["esc10"] for row in rows} == {"True"}
    assert {int(row["fold"]) for row in splits["train"]} == set(train_folds)
    assert {int(row["fold"]) for row in splits["valid"]} == {valid_fold}
    assert {int(row["fold"]) for row in splits["test"]} == {test_fold}
    assert sum(len(rows) for rows in splits.values()) == 3 * 5


def test_switching_the_option_prepares_again(prepare, tmp_path):
    data = write_esc50(tmp_path / "ESC-50-master")
    out = tmp_path / "prepared"
    prepare.prepare_esc50(str(data), str(out), esc10=True)
    assert len(read_classes(out)) == 3
    prepare.prepare_esc50(str(data), str(out), esc10=False)
    assert len(read_classes(out)) == 5
    assert len(manifest(out, "test")) == 5


def test_a_folder_of_esc10_clips_only_works_without_the_option_too(prepare, tmp_path):
    """The ESC-10 release written in the ESC-50 layout: every row is an ESC-10 clip."""
    data = write_esc50(tmp_path / "ESC-10", classes=[c for c in CLASSES if c[2]])
    for esc10 in (True, False):
        out = tmp_path / f"prepared_{esc10}"
        prepare.prepare_esc50(str(data), str(out), esc10=esc10)
        assert read_classes(out) == ["dog", "rain", "rooster"]


def test_metadata_without_esc10_clips_is_refused(prepare, tmp_path):
    data = write_esc50(tmp_path / "ESC-50-master", mark=lambda esc10: "False")
    with pytest.raises(ValueError, match="marks no clip as esc10=True; use the official meta/esc50.csv"):
        prepare.prepare_esc50(str(data), str(tmp_path / "prepared"), esc10=True)


def test_esc10_marks_on_other_classes_are_refused(prepare, tmp_path):
    data = write_esc50(tmp_path / "ESC-50-master", mark=lambda esc10: "True")
    with pytest.raises(ValueError, match=r"marks clips of \['cow', 'pig'\] as esc10=True"):
        prepare.prepare_esc50(str(data), str(tmp_path / "prepared"), esc10=True)


def test_unknown_esc10_values_are_refused(prepare, tmp_path):
    data = write_esc50(tmp_path / "ESC-50-master", mark=lambda esc10: "yes" if esc10 else "False")
    with pytest.raises(ValueError, match=r"esc10 column of .* holds \['yes'\]"):
        prepare.prepare_esc50(str(data), str(tmp_path / "prepared"), esc10=True)
