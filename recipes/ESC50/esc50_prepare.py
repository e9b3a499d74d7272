"""Data preparation for ESC-50 (Piczak 2015): 2,000 five-second clips, 50 classes, 5 folds; or
its official ESC-10 subset (400 clips, 10 classes, same folds) with ``esc10=True``.

Reads the official layout (``ESC-50-master/`` from https://github.com/karolpiczak/ESC-50)::

    meta/esc50.csv      filename,fold,target,category,esc10,src_file,take
    audio/<fold>-<src_file>-<take>-<target>.wav     44.1 kHz mono

and writes ``train.csv``, ``valid.csv``, ``test.csv`` (``ID,duration,wav,label,fold,esc10``),
``classes.txt`` (the sorted categories) and 16 kHz mono copies of the clips to ``save_folder``.

Fold protocol (5-fold rotation: train on 3 folds, validate on 1, test on 1): ``fold=k`` tests on
fold k, validates on the fold before it (k-1, and 5 for k=1), and trains on the other three.
These are exactly the (train, valid, test) triples of the paper's code (Cappellazzo et al. 2024,
``folds_test = [5, 1, 2, 3, 4]`` with ``folds_valid = [4, 5, 1, 2, 3]``), so per-fold results are
comparable with theirs; over the five runs every fold is tested once and validated on once.

ESC-10 (``esc10=True``, in the recipes ``--esc10=True --n_classes=10``): the clips whose ``esc10``
column is ``True`` (dog, rooster, rain, sea_waves, crackling_fire, crying_baby, sneezing,
clock_tick, helicopter, chainsaw), with the same fold rotation. A data folder holding only those
clips in the ESC-50 layout works too.

Authors
 * speechbrain-mambadapter contributors 2026
"""

import logging
import os

from speechbrain_mambadapter.recipe.dataprep import (
    SAMPLE_RATE,
    DatasetInfo,
    begin_preparation,
    check_data_folder,
    check_official_labels,
    parse_fold,
    preparation_done,
    prepare_audio,
    read_metadata_csv,
    write_prepared,
)

logger = logging.getLogger(__name__)

ESC50 = DatasetInfo("ESC-50", "https://github.com/karolpiczak/ESC-50", "ESC-50-master")
METADATA = os.path.join("meta", "esc50.csv")
METADATA_COLUMNS = ["filename", "fold", "target", "category", "esc10", "src_file", "take"]
MANIFEST_COLUMNS = ["ID", "duration", "wav", "label", "fold", "esc10"]
NUM_FOLDS = 5
ESC10_CLASSES = (
    "chainsaw clock_tick crackling_fire crying_baby dog helicopter rain rooster sea_waves sneezing"
).split()
# The official classes by target (meta/esc50.csv): a category that is not its target's name is
# an edited file, which would otherwise add a class.
CLASSES = (
    "dog rooster pig cow frog cat hen insects sheep crow "
    "rain sea_waves crackling_fire crickets chirping_birds water_drops wind pouring_water toilet_flush "
    "thunderstorm crying_baby sneezing clapping breathing coughing footsteps laughing brushing_teeth "
    "snoring drinking_sipping door_wood_knock mouse_click keyboard_typing door_wood_creaks can_opening "
    "washing_machine vacuum_cleaner clock_alarm clock_tick glass_breaking helicopter chainsaw siren "
    "car_horn engine train church_bells airplane fireworks hand_saw"
).split()


def esc50_folds(fold):
    """The (train folds, valid fold, test fold) of run ``fold``.

    Example
    -------
    >>> esc50_folds(1)
    ([2, 3, 4], 5, 1)
    >>> esc50_folds(5)
    ([1, 2, 3], 4, 5)
    """
    if fold not in range(1, NUM_FOLDS + 1):
        raise ValueError(f"ESC-50 has folds 1 to {NUM_FOLDS}; got fold={fold!r}. Pass --fold=1 ... --fold=5.")
    valid = (fold - 2) % NUM_FOLDS + 1
    train = [f for f in range(1, NUM_FOLDS + 1) if f not in (fold, valid)]
    return train, valid, fold


def select_esc10(rows, metadata_file):
    """The rows of the official ESC-10 subset: those whose ``esc10`` column is ``True``.

    Arguments
    ---------
    rows : list of dict
        ``meta/esc50.csv`` rows.
    metadata_file : str
        Where they come from (named in errors).

    Returns
    -------
    list of dict
        The ESC-10 rows, in their order.

    Example
    -------
    >>> rows = [{"filename": "1-100032-A-0.wav", "category": "dog", "esc10": "True"},
    ...         {"filename": "1-100210-A-36.wav", "category": "vacuum_cleaner", "esc10": "False"}]
    >>> [row["filename"] for row in select_esc10(rows, "meta/esc50.csv")]
    ['1-100032-A-0.wav']
    >>> select_esc10(rows[1:], "meta/esc50.csv")
    Traceback (most recent call last):
     ...
    ValueError: ESC-10: meta/esc50.csv marks no clip as esc10=True; ...
    """
    values = {row["esc10"] for row in rows}
    if not values <= {"True", "False"}:
        raise ValueError(
            f"ESC-10: the esc10 column of {metadata_file} holds {sorted(values - {'True', 'False'})}; "
            "the official file has True or False only. Restore meta/esc50.csv from the ESC-50 release."
        )
    selected = [row for row in rows if row["esc10"] == "True"]
    if not selected:
        raise ValueError(
            f"ESC-10: {metadata_file} marks no clip as esc10=True; use the official meta/esc50.csv "
            "(it marks the 400 ESC-10 clips), or run without --esc10=True for ESC-50."
        )
    foreign = sorted({row["category"] for row in selected} - set(ESC10_CLASSES))
    if foreign:
        raise ValueError(
            f"ESC-10: {metadata_file} marks clips of {foreign} as esc10=True, which are not ESC-10 "
            f"classes ({', '.join(ESC10_CLASSES)}); restore meta/esc50.csv from the ESC-50 release."
        )
    return selected


def check_esc50_folder(data_folder):
    """Fail, naming what is missing and where to download it, unless ``data_folder`` is
    the unpacked ESC-50-master folder. Cheap: recipes call it before building their model.
    """
    check_data_folder(data_folder, ESC50, [METADATA, "audio"])


def prepare_esc50(
    data_folder,
    save_folder,
    fold=1,
    sample_rate=SAMPLE_RATE,
    max_skipped_fraction=0.01,
    esc10=False,
    skip_prep=False,
):
    """Write the ESC-50 manifests of one fold of the 5-fold rotation.

    Arguments
    ---------
    data_folder : str
        The unpacked ``ESC-50-master`` folder (holds ``meta/esc50.csv`` and ``audio/``).
    save_folder : str
        Where ``train.csv``, ``valid.csv``, ``test.csv``, ``classes.txt``, ``skipped.txt`` and the
        16 kHz audio go.
    fold : int
        Test fold, 1 to 5 (see ``esc50_folds``).
    sample_rate : int
        Sampling rate of the prepared audio.
    max_skipped_fraction : float
        Missing or unreadable clips are skipped and listed in ``skipped.txt``; more than this
        fraction of all clips aborts the preparation.
    esc10 : bool
        Only the official ESC-10 subset (``select_esc10``): 400 clips, 10 classes.
    skip_prep : bool
        If True, do nothing.

    Example
    -------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     prepare_esc50(tmp, tmp)
    Traceback (most recent call last):
     ...
    FileNotFoundError: ESC-50: data_folder ... has no meta/esc50.csv. Download ESC-50 from ...
    """
    if skip_prep:
        return
    train_folds, valid_fold, test_fold = esc50_folds(fold)
    options = {
        "data_folder": os.path.abspath(data_folder),
        "fold": fold,
        "sample_rate": sample_rate,
        "max_skipped_fraction": max_skipped_fraction,
        "esc10": bool(esc10),
    }
    if preparation_done(save_folder, options):
        logger.info(
            "ESC-50 fold %d already prepared in %s with the same options; skipping.", fold, save_folder
        )
        return
    check_esc50_folder(data_folder)
    metadata_file = os.path.join(data_folder, METADATA)
    rows = read_metadata_csv(metadata_file, METADATA_COLUMNS, ESC50)
    check_official_labels(rows, "category", "target", CLASSES, metadata_file, ESC50)
    if esc10:
        rows = select_esc10(rows, metadata_file)
    begin_preparation(save_folder)

    split_of = {test_fold: "test", valid_fold: "valid", **{f: "train" for f in train_folds}}
    entries = []
    for row in rows:
        row_fold = parse_fold(row["fold"], NUM_FOLDS, row["filename"], metadata_file, ESC50)
        entries.append(
            {
                "ID": os.path.splitext(row["filename"])[0],
                "split": split_of[row_fold],
                "src": os.path.join("audio", row["filename"]),
                "label": row["category"],
                "fold": row_fold,
                "esc10": row["esc10"],
            }
        )
    logger.info(
        "ESC-50 fold %d: train folds %s, valid fold %d, test fold %d", fold, train_folds, valid_fold, fold
    )
    audio = prepare_audio(
        [e["src"] for e in entries], data_folder, save_folder, ESC50, sample_rate, max_skipped_fraction
    )
    classes = sorted({row["category"] for row in rows})
    write_prepared(save_folder, entries, audio, MANIFEST_COLUMNS, classes, options, ESC50)
