"""Data preparation for Fluent Speech Commands (Lugosch et al. 2019): 30,043 utterances, 31 intents.

Reads the official layout (``fluent_speech_commands_dataset/``, from
https://fluent.ai/fluent-speech-commands-a-dataset-for-spoken-language-understanding-research/)::

    data/train_data.csv, data/valid_data.csv, data/test_data.csv
        ,path,speakerId,transcription,action,object,location     (first column: a row index)
    wavs/speakers/<speakerId>/<utterance>.wav                  16 kHz mono

and writes ``train.csv``, ``valid.csv``, ``test.csv``
(``ID,duration,wav,label,speaker,transcription,action,object,location``) and ``classes.txt`` to
``save_folder``. The split is the official one (the three CSV files, speaker-disjoint). The label
is the intent, ``<action>_<object>_<location>`` (e.g. ``change language_Chinese_none``): 31
distinct intents in the official data. Clips already 16 kHz mono 16-bit are used in place.

Authors
 * speechbrain-mambadapter contributors 2026
"""

import logging
import os

from speechbrain_mambadapter.recipe.dataprep import (
    SAMPLE_RATE,
    SPLITS,
    DatasetInfo,
    begin_preparation,
    check_data_folder,
    preparation_done,
    prepare_audio,
    read_metadata_csv,
    write_prepared,
)

logger = logging.getLogger(__name__)

FSC = DatasetInfo(
    "Fluent Speech Commands",
    "https://fluent.ai/fluent-speech-commands-a-dataset-for-spoken-language-understanding-research/",
    "fluent_speech_commands_dataset",
)
METADATA_COLUMNS = ["path", "speakerId", "transcription", "action", "object", "location"]
MANIFEST_COLUMNS = [
    "ID",
    "duration",
    "wav",
    "label",
    "speaker",
    "transcription",
    "action",
    "object",
    "location",
]
NUM_INTENTS = 31


def intent_label(row):
    """The intent class of a metadata row: action, object and location joined by ``_``.

    Example
    -------
    >>> intent_label({"action": "change language", "object": "Chinese", "location": "none"})
    'change language_Chinese_none'
    """
    return f"{row['action']}_{row['object']}_{row['location']}"


def metadata_path(split):
    """The official metadata file of ``split`` (train/valid/test), relative to the data folder."""
    return os.path.join("data", f"{split}_data.csv")


def check_fsc_folder(data_folder):
    """Fail, naming what is missing and where to download it, unless ``data_folder`` is
    the unpacked fluent_speech_commands_dataset folder. Cheap: recipes call it before building their model.
    """
    check_data_folder(data_folder, FSC, [metadata_path(split) for split in SPLITS] + ["wavs"])


def prepare_fsc(
    data_folder, save_folder, sample_rate=SAMPLE_RATE, max_skipped_fraction=0.01, skip_prep=False
):
    """Write the Fluent Speech Commands manifests of the official split, labelled by intent.

    Arguments
    ---------
    data_folder : str
        The unpacked ``fluent_speech_commands_dataset`` folder (holds ``data/`` and ``wavs/``).
    save_folder : str
        Where ``train.csv``, ``valid.csv``, ``test.csv``, ``classes.txt`` and ``skipped.txt`` go
        (and converted audio, for clips that are not 16 kHz mono 16-bit).
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
    ...     prepare_fsc(tmp, tmp)
    Traceback (most recent call last):
     ...
    FileNotFoundError: Fluent Speech Commands: data_folder ... has no data/train_data.csv. Download ...
    """
    if skip_prep:
        return
    options = {
        "data_folder": os.path.abspath(data_folder),
        "sample_rate": sample_rate,
        "max_skipped_fraction": max_skipped_fraction,
    }
    if preparation_done(save_folder, options):
        logger.info(
            "Fluent Speech Commands already prepared in %s with the same options; skipping.", save_folder
        )
        return
    check_fsc_folder(data_folder)
    rows_of = {
        split: read_metadata_csv(os.path.join(data_folder, metadata_path(split)), METADATA_COLUMNS, FSC)
        for split in SPLITS
    }
    begin_preparation(save_folder)

    entries = []
    for split, rows in rows_of.items():
        for row in rows:
            src = row["path"].replace("\\", "/")
            entries.append(
                {
                    "ID": f"{row['speakerId']}_{os.path.splitext(os.path.basename(src))[0]}",
                    "split": split,
                    "src": src,
                    "label": intent_label(row),
                    "speaker": row["speakerId"],
                    "transcription": row["transcription"],
                    "action": row["action"],
                    "object": row["object"],
                    "location": row["location"],
                }
            )
    classes = sorted({e["label"] for e in entries})
    unseen = sorted(
        {e["label"] for e in entries if e["split"] != "train"}
        - {e["label"] for e in entries if e["split"] == "train"}
    )
    if unseen:
        logger.warning("Fluent Speech Commands: intents in valid/test but never in train: %s", unseen)
    if len(classes) != NUM_INTENTS:
        logger.info(
            "Fluent Speech Commands: %d intents (the official data has %d)", len(classes), NUM_INTENTS
        )
    audio = prepare_audio(
        [e["src"] for e in entries], data_folder, save_folder, FSC, sample_rate, max_skipped_fraction
    )
    write_prepared(save_folder, entries, audio, MANIFEST_COLUMNS, classes, options, FSC)
