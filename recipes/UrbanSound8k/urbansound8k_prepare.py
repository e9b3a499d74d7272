"""Data preparation for UrbanSound8K (Salamon et al. 2014): 8,732 clips (<= 4 s), 10 classes, 10 folds.

Reads the official layout (``UrbanSound8K/`` from https://urbansounddataset.weebly.com/urbansound8k.html)::

    metadata/UrbanSound8K.csv   slice_file_name,fsID,start,end,salience,fold,classID,class
    audio/fold1 ... audio/fold10/<fsID>-<classID>-<occurrence>-<slice>.wav
                                (mixed sampling rates, bit depths and channel counts)

and writes ``train.csv``, ``valid.csv``, ``test.csv`` (``ID,duration,wav,label,fold,fsID,salience``),
``classes.txt`` (the sorted class names) and 16 kHz mono copies of the clips to ``save_folder``.

Fold protocol: ``fold=k`` tests on fold k and trains on the other nine. The checkpoint is chosen
on a validation split taken *from those nine training folds*, never from the test fold (the
paper's code selected on the test fold). The validation split is drawn per class, whole source
recordings at a time: the ``fsID`` groups of each class are shuffled with ``random.Random(split_seed)``
and moved to validation until they hold ``valid_fraction`` of that class's training clips
(a class's last recording always stays in training). Grouping by ``fsID`` keeps slices of one
recording out of both sides, the same reason the official folds are built by recording.
The split depends only on the metadata, ``fold``, ``valid_fraction`` and ``split_seed``, so it is
the same for every method and training seed.

Authors
 * speechbrain-mambadapter contributors 2026
"""

import logging
import os
import random
from collections import defaultdict

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

US8K = DatasetInfo("UrbanSound8K", "https://urbansounddataset.weebly.com/urbansound8k.html", "UrbanSound8K")
METADATA = os.path.join("metadata", "UrbanSound8K.csv")
METADATA_COLUMNS = ["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"]
MANIFEST_COLUMNS = ["ID", "duration", "wav", "label", "fold", "fsID", "salience"]
NUM_FOLDS = 10
# The official classes by classID (metadata/UrbanSound8K.csv): a class that is not its classID's
# name is an edited file, which would otherwise add a class.
CLASSES = (
    "air_conditioner car_horn children_playing dog_bark drilling engine_idling gun_shot jackhammer siren "
    "street_music"
).split()


def validation_recordings(rows, valid_fraction, split_seed):
    """The ``fsID`` of the training recordings that form the validation split.

    Arguments
    ---------
    rows : list of dict
        Metadata rows of the training folds (``fsID``, ``class``, ``slice_file_name``).
    valid_fraction : float
        Share of each class's training clips to move to validation (0 < valid_fraction < 1).
    split_seed : int
        Seed of the shuffle; the same seed gives the same split.

    Returns
    -------
    set of str

    Example
    -------
    >>> rows = [{"fsID": str(i // 2), "class": "siren", "slice_file_name": f"{i}.wav"} for i in range(20)]
    >>> picked = validation_recordings(rows, 0.1, split_seed=0)
    >>> len(picked), picked == validation_recordings(rows, 0.1, split_seed=0)
    (1, True)
    """
    if not 0.0 < valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be strictly between 0 and 1, got {valid_fraction}.")
    clips = defaultdict(list)
    for row in sorted(rows, key=lambda r: r["slice_file_name"]):
        clips[row["fsID"]].append(row)
    recordings_of = defaultdict(list)
    for fs_id, group in clips.items():
        recordings_of[group[0]["class"]].append(fs_id)
    rng = random.Random(split_seed)
    picked = set()
    for label in sorted(recordings_of):
        recordings = sorted(recordings_of[label])
        rng.shuffle(recordings)
        target = valid_fraction * sum(len(clips[r]) for r in recordings)
        taken = 0
        for fs_id in recordings[:-1]:
            if taken >= target:
                break
            picked.add(fs_id)
            taken += len(clips[fs_id])
    return picked


def check_urbansound8k_folder(data_folder):
    """Fail, naming what is missing and where to download it, unless ``data_folder`` is
    the unpacked UrbanSound8K folder. Cheap: recipes call it before building their model.
    """
    check_data_folder(data_folder, US8K, [METADATA, "audio"])


def prepare_urbansound8k(
    data_folder,
    save_folder,
    fold=1,
    valid_fraction=0.1,
    split_seed=0,
    sample_rate=SAMPLE_RATE,
    max_skipped_fraction=0.01,
    skip_prep=False,
):
    """Write the UrbanSound8K manifests of one fold of the 10-fold protocol.

    Arguments
    ---------
    data_folder : str
        The unpacked ``UrbanSound8K`` folder (holds ``metadata/UrbanSound8K.csv`` and ``audio/``).
    save_folder : str
        Where ``train.csv``, ``valid.csv``, ``test.csv``, ``classes.txt``, ``skipped.txt`` and the
        16 kHz audio go.
    fold : int
        Test fold, 1 to 10.
    valid_fraction : float
        Share of each class's training clips held out for validation (whole recordings).
    split_seed : int
        Seed of the validation split (independent of the training seed).
    sample_rate : int
        Sampling rate of the prepared audio.
    max_skipped_fraction : float
        Missing or unreadable clips are skipped and listed in ``skipped.txt``; more than this
        fraction of all clips aborts the preparation.
    skip_prep : bool
        If True, do nothing.

    Example
    -------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     prepare_urbansound8k(tmp, tmp, fold=11)
    Traceback (most recent call last):
     ...
    ValueError: UrbanSound8K has folds 1 to 10; got fold=11. Pass --fold=1 ... --fold=10.
    """
    if skip_prep:
        return
    if fold not in range(1, NUM_FOLDS + 1):
        raise ValueError(
            f"UrbanSound8K has folds 1 to {NUM_FOLDS}; got fold={fold!r}. Pass --fold=1 ... --fold=10."
        )
    options = {
        "data_folder": os.path.abspath(data_folder),
        "fold": fold,
        "valid_fraction": valid_fraction,
        "split_seed": split_seed,
        "sample_rate": sample_rate,
        "max_skipped_fraction": max_skipped_fraction,
    }
    if preparation_done(save_folder, options):
        logger.info(
            "UrbanSound8K fold %d already prepared in %s with the same options; skipping.", fold, save_folder
        )
        return
    check_urbansound8k_folder(data_folder)
    metadata_file = os.path.join(data_folder, METADATA)
    rows = read_metadata_csv(metadata_file, METADATA_COLUMNS, US8K)
    check_official_labels(rows, "class", "classID", CLASSES, metadata_file, US8K)
    for row in rows:
        row["fold"] = parse_fold(row["fold"], NUM_FOLDS, row["slice_file_name"], metadata_file, US8K)
    begin_preparation(save_folder)

    valid_ids = validation_recordings([r for r in rows if r["fold"] != fold], valid_fraction, split_seed)
    entries = []
    for row in rows:
        if row["fold"] == fold:
            split = "test"
        else:
            split = "valid" if row["fsID"] in valid_ids else "train"
        entries.append(
            {
                "ID": os.path.splitext(row["slice_file_name"])[0],
                "split": split,
                "src": os.path.join("audio", f"fold{row['fold']}", row["slice_file_name"]),
                "label": row["class"],
                "fold": row["fold"],
                "fsID": row["fsID"],
                "salience": row["salience"],
            }
        )
    logger.info(
        "UrbanSound8K fold %d: test fold %d, validation = %d recordings of the training folds (seed %d)",
        fold,
        fold,
        len(valid_ids),
        split_seed,
    )
    audio = prepare_audio(
        [e["src"] for e in entries], data_folder, save_folder, US8K, sample_rate, max_skipped_fraction
    )
    classes = sorted({row["class"] for row in rows})
    write_prepared(save_folder, entries, audio, MANIFEST_COLUMNS, classes, options, US8K)
