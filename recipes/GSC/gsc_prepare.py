"""Data preparation for Google Speech Commands v2 (Warden 2018): 105,829 one-second clips, 35 words.

Reads the official layout (``speech_commands_v0.02.tar.gz`` from
http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz, which unpacks *without* a top
folder: extract it into an empty folder, e.g. ``speech_commands_v0.02/``)::

    <word>/<speaker>_nohash_<n>.wav     16 kHz mono, one folder per word (35 words)
    validation_list.txt, testing_list.txt   one <word>/<file>.wav per line
    _background_noise_/                 long noise recordings: not a class, not a clip

and writes ``train.csv``, ``valid.csv``, ``test.csv`` (``ID,duration,wav,label,speaker``) and
``classes.txt`` to ``save_folder``. The split is the official one: a clip listed in
``testing_list.txt`` is test, one in ``validation_list.txt`` is validation, every other clip of a
word folder is training. The class list is always the 35 words (``GSC_V2_WORDS``), whichever
folders are present, so the classifier has the paper's 35 outputs. The clips are already 16 kHz
mono 16-bit and are used in place, not copied.

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
    preparation_done,
    prepare_audio,
    write_prepared,
)

logger = logging.getLogger(__name__)

GSC = DatasetInfo(
    "Speech Commands v2",
    "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz",
    "speech_commands_v0.02",
)
VALID_LIST = "validation_list.txt"
TEST_LIST = "testing_list.txt"
MANIFEST_COLUMNS = ["ID", "duration", "wav", "label", "speaker"]
GSC_V2_WORDS = (
    "backward bed bird cat dog down eight five follow forward four go happy house learn left marvin nine no "
    "off on one right seven sheila six stop three tree two up visual wow yes zero"
).split()
# The five words v0.02 added; a folder without them is most likely v0.01.
V2_ONLY_WORDS = ("backward", "follow", "forward", "learn", "visual")


def find_word_folders(data_folder):
    """The word folders of ``data_folder`` that are Speech Commands v2 classes, sorted.

    ``_background_noise_`` (and any folder starting with ``_`` or ``.``) is never a class;
    other unknown folders are ignored with a warning, and missing words are reported.

    Arguments
    ---------
    data_folder : str
        The Speech Commands folder.

    Returns
    -------
    list of str

    Example
    -------
    >>> import os, tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     for name in GSC_V2_WORDS + ["_background_noise_", "my_outputs"]:
    ...         os.mkdir(os.path.join(tmp, name))
    ...     words = find_word_folders(tmp)
    >>> len(words), "_background_noise_" in words, "my_outputs" in words
    (35, False, False)
    """
    folders = sorted(e.name for e in os.scandir(data_folder) if e.is_dir() and e.name[0] not in "_.")
    words = [f for f in folders if f in GSC_V2_WORDS]
    unknown = [f for f in folders if f not in GSC_V2_WORDS]
    if unknown:
        logger.warning("Speech Commands: ignoring folders that are not one of the 35 words: %s", unknown)
    missing = [w for w in GSC_V2_WORDS if w not in words]
    if missing and words:
        v1_hint = (
            " (this looks like v0.01; the recipe expects v0.02)"
            if all(w in missing for w in V2_ONLY_WORDS)
            else ""
        )
        logger.warning(
            "Speech Commands: %s has no folder for %d of the 35 words: %s%s",
            data_folder,
            len(missing),
            missing,
            v1_hint,
        )
    return words


def read_split_list(path):
    """The clip paths (``<word>/<file>.wav``, forward slashes) listed in a split file."""
    with open(path, encoding="utf-8") as f:
        return {line.strip().replace("\\", "/") for line in f if line.strip()}


def check_gsc_folder(data_folder):
    """Fail, naming what is missing and where to download it, unless ``data_folder`` is
    the unpacked Speech Commands v0.02 folder. Cheap: recipes call it before building their model.
    """
    check_data_folder(data_folder, GSC, [VALID_LIST, TEST_LIST])


def prepare_gsc(
    data_folder, save_folder, sample_rate=SAMPLE_RATE, max_skipped_fraction=0.01, skip_prep=False
):
    """Write the Speech Commands v2 manifests of the official train/validation/test split.

    Arguments
    ---------
    data_folder : str
        The unpacked Speech Commands v0.02 folder (word folders and the two split lists).
    save_folder : str
        Where ``train.csv``, ``valid.csv``, ``test.csv``, ``classes.txt`` and ``skipped.txt`` go
        (and converted audio, for clips that are not 16 kHz mono 16-bit).
    sample_rate : int
        Sampling rate of the prepared audio.
    max_skipped_fraction : float
        Missing or unreadable clips (including ones a split list names but the folder lacks) are
        skipped and listed in ``skipped.txt``; more than this fraction aborts the preparation.
    skip_prep : bool
        If True, do nothing.

    Example
    -------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     prepare_gsc(tmp, tmp)
    Traceback (most recent call last):
     ...
    FileNotFoundError: Speech Commands v2: data_folder ... has no validation_list.txt. Download ...
    """
    if skip_prep:
        return
    options = {
        "data_folder": os.path.abspath(data_folder),
        "sample_rate": sample_rate,
        "max_skipped_fraction": max_skipped_fraction,
    }
    if preparation_done(save_folder, options):
        logger.info("Speech Commands already prepared in %s with the same options; skipping.", save_folder)
        return
    check_gsc_folder(data_folder)
    words = find_word_folders(data_folder)
    if not words:
        raise FileNotFoundError(
            f"{GSC.name}: data_folder {data_folder} has none of the 35 word folders "
            f"({', '.join(GSC_V2_WORDS[:4])}, ...). {GSC.advice('the word folders')}"
        )
    valid_list = read_split_list(os.path.join(data_folder, VALID_LIST))
    test_list = read_split_list(os.path.join(data_folder, TEST_LIST))
    both = sorted(valid_list & test_list)
    if both:
        raise ValueError(
            f"{GSC.name}: {VALID_LIST} and {TEST_LIST} both list {both[:5]}; the official lists are "
            f"disjoint. Restore the original files. {GSC.advice(VALID_LIST)}"
        )
    begin_preparation(save_folder)

    # Clips on disk, plus listed clips that are missing (so that they are reported, not ignored).
    clips = {
        f"{word}/{name}"
        for word in words
        for name in os.listdir(os.path.join(data_folder, word))
        if name.endswith(".wav")
    }
    clips |= {c for c in valid_list | test_list if c.split("/")[0] in GSC_V2_WORDS}
    entries = []
    for clip in sorted(clips):
        word, name = clip.split("/", 1)
        stem = os.path.splitext(name)[0]
        split = "test" if clip in test_list else "valid" if clip in valid_list else "train"
        entries.append(
            {
                "ID": f"{word}_{stem}",
                "split": split,
                "src": clip,
                "label": word,
                "speaker": stem.split("_nohash_")[0],
            }
        )
    audio = prepare_audio(
        [e["src"] for e in entries], data_folder, save_folder, GSC, sample_rate, max_skipped_fraction
    )
    write_prepared(save_folder, entries, audio, MANIFEST_COLUMNS, GSC_V2_WORDS, options, GSC)
