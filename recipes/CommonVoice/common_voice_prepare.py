"""Data preparation for Common Voice ASR, one locale of a release (CL-MASR protocol).

Reads ``<data_folder>/{train,dev,test}.tsv`` and ``<data_folder>/clips/*.mp3`` of one locale of a
Common Voice release (e.g. ``cv-corpus-15.0-2023-09-08/eo``) and writes ``train.csv``, ``dev.csv``
and ``test.csv`` (``ID,duration,wav,spk_id,wrd``) in ``save_folder``::

    python common_voice_prepare.py --data_folder=/data/cv-corpus-15.0-2023-09-08/eo \\
        --save_folder=results/eo --language=eo

Subsets (as in CL-MASR, Della Libera et al. 2023): 600 minutes of train audio, 60 of dev and 60
of test, drawn from the official ``train``/``dev``/``test`` splits. Rows are ordered by
``sha256(f"{seed}:{clip}")`` (the same on every platform and Python version, and independent of
the row order of the tsv) and taken in that order, skipping clips longer than ``max_duration``,
until the next clip would exceed the budget. A split that holds less (CKB's train has about 484
minutes) is taken whole, and the shortfall is logged. Every clip visited is decoded (through
soundfile), not trusted by its header: a clip that cannot be decoded, has no samples, is shorter
than one 25 ms analysis window or decodes to less than 90 % of its header's duration (a truncated
download) is skipped; so is a clip listed in a tsv but missing from ``clips/``. Skipped clips are
listed with their reason in ``save_folder/skipped.txt``; more than ``max_skipped_fraction`` of a
split's visited rows stops the preparation, naming them. A split left with no utterance is an
error, never an empty CSV. The decoded durations are cached in ``save_folder/clip_checks.json``.

Accepted tsv headers (columns are found by name; only ``path`` and ``sentence`` are required):

- v1 to v7: ``client_id path sentence up_votes down_votes age gender accent locale segment``
- v8 to v12: the same with ``accents``; v13 to v16 add ``variant`` before ``locale``
- v17 and later: ``client_id path sentence_id sentence sentence_domain up_votes down_votes age
  gender accents variant locale segment``

Text normalisation (:func:`normalize_text`; the recipe applies the same function to its
hypotheses, so references and hypotheses are scored alike). For every language, in order:

1. Unicode NFKC (folds full-width forms, ligatures and Arabic presentation forms), then the
   language's character map below;
2. apostrophe variants (’ ‘ ʼ ʻ ´ ` ′) become ``'``; lower case (``str.lower``);
3. punctuation and symbols (Unicode categories P*, S*) become spaces, except the word-internal
   marks of the language (kept only between two letters); zero-width and other format
   characters are removed;
4. runs of white space become one space; leading and trailing spaces are removed.

Per language:

- ``ab`` (Abkhaz, Cyrillic): old code points of Abkhaz letters map to the current ones
  (ҧ U+04A7 -> ԥ U+0525, ҕ U+0495 -> ӷ U+04F7, Latin ə -> Cyrillic ә), and Latin letters that
  look like Cyrillic ones (a c e o p x y k) become Cyrillic in words that contain Cyrillic;
  word-internal hyphen kept.
- ``ckb`` (Central Kurdish, Arabic script): Arabic yeh/alef maksura -> Farsi yeh (ی), Arabic kaf
  -> keheh (ک), heh (ه) followed by ZWNJ or ending a word -> ae (ە); tatweel and Arabic
  diacritics (U+064B-U+0652) removed; Arabic-Indic digits -> 0-9.
- ``eo`` (Esperanto): ǔ (u caron) -> ŭ; the elision apostrophe (``l'``, ``dom'``) is kept after
  a letter; word-internal hyphen kept.
- ``kab`` (Kabyle, Latin): Greek ε/γ -> ɛ/ɣ (a common substitution in typed Kabyle);
  word-internal hyphen kept (it attaches affixes: ``yenna-yas``).
- ``rw`` (Kinyarwanda): word-internal apostrophe kept (``n'abana``).

Other languages get the common rules only. This is stricter than CL-MASR's own preprocessing
(which removed only commas and quotes and kept case): Whisper is trained and scored here on
lower-case, unpunctuated text, so WER measures words, not punctuation.

Authors
 * speechbrain-mambadapter contributors 2026
"""

import argparse
import csv
import hashlib
import json
import logging
import math
import re
import sys
import unicodedata
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import soundfile as sf
from tqdm import tqdm

from speechbrain_mambadapter.recipe.dataprep import MIN_DURATION, DatasetInfo, read_text

logger = logging.getLogger(__name__)

COMMON_VOICE = DatasetInfo("Common Voice", "https://commonvoice.mozilla.org/datasets", "<release>/<locale>")

SPLITS = ("train", "dev", "test")
CSV_FIELDS = ("ID", "duration", "wav", "spk_id", "wrd")
CLIP_CHECKS_CACHE = "clip_checks.json"
SKIPPED_FILE = "skipped.txt"
OPTIONS_FILE = "prepare_options.json"
# Bump when normalize_text or the selection rule changes, so that old CSVs are rebuilt.
PREPARE_VERSION = 2
# A clip decoding to less than this share of its header's duration was cut short (a damaged download).
MIN_DECODED_SHARE = 0.9
# How many clips an error or warning names.
REPORT_EXAMPLES = 5
# A progress bar on a terminal only, so that logs of batch jobs stay readable.
_TQDM_OPTIONS = {"disable": not sys.stderr.isatty(), "mininterval": 2.0}

_APOSTROPHES = dict.fromkeys(map(ord, "\u2019\u2018\u02bc\u02bb\u00b4`\u2032"), "'")
_AB_HOMOGLYPHS = dict(zip(map(ord, "aceopxyk"), "асеорхук"))
_CHAR_MAPS: Dict[str, Dict[int, str]] = {
    "ab": {0x04A7: "\u0525", 0x04A6: "\u0524", 0x0495: "\u04f7", 0x0494: "\u04f6", 0x0259: "\u04d9"},
    "ckb": {
        0x064A: "\u06cc",
        0x0649: "\u06cc",
        0x0643: "\u06a9",
        0x0640: "",
        **{cp: "" for cp in range(0x064B, 0x0653)},
        **{0x0660 + i: str(i) for i in range(10)},
        **{0x06F0 + i: str(i) for i in range(10)},
    },
    "eo": {0x01D4: "\u016d", 0x01D3: "\u016c"},
    "kab": {0x03B5: "\u025b", 0x0395: "\u0190", 0x03B3: "\u0263", 0x0393: "\u0194"},
}
# Marks that belong to words in a language's orthography: kept between two letters.
_WORD_INTERNAL = {"ab": "-", "ckb": "", "eo": "-'", "kab": "-", "rw": "'"}


def normalize_text(text: str, language: str) -> str:
    """Normalises a transcript (reference or hypothesis) of ``language``; the rules are listed
    in this module's docstring.

    Arguments
    ---------
    text : str
        The raw text.
    language : str
        Common Voice locale code (``ab``, ``ckb``, ``eo``, ``kab``, ``rw``; any other code gets
        the common rules only).

    Returns
    -------
    str
        Lower-case words separated by single spaces (empty if nothing is left).

    Example
    -------
    >>> normalize_text("Ĉu vi parolas Esperanton? Jes, iom!", "eo")
    'ĉu vi parolas esperanton jes iom'
    >>> normalize_text("Ndagiye kwa Mama n’abana.", "rw")
    "ndagiye kwa mama n'abana"
    >>> normalize_text("Yenna-yas: «Azul!»", "kab")
    'yenna-yas azul'
    >>> normalize_text("Аҧсуа бызшәa - Abkhaz", "ab")
    'аԥсуа бызшәа abkhaz'
    """
    text = unicodedata.normalize("NFKC", text)
    if language == "ckb":
        # Heh followed by ZWNJ, or ending a word, is how Sorani "ە" was typed before it had a
        # key of its own ("h" is "ھ"/"ه" only before a letter).
        text = re.sub("\u0647(\u200c|\\b)", "\u06d5", text)
    text = text.translate(_CHAR_MAPS.get(language, {})).translate(_APOSTROPHES).lower()
    if language == "ab":
        text = " ".join(
            word.translate(_AB_HOMOGLYPHS) if re.search("[\u0400-\u052f]", word) else word
            for word in text.split()
        )
    keep = _WORD_INTERNAL.get(language, "")
    chars = []
    for i, char in enumerate(text):
        category = unicodedata.category(char)
        if category == "Cf":
            continue
        if category[0] in "PS":
            before = text[i - 1] if i > 0 else " "
            after = text[i + 1] if i + 1 < len(text) else " "
            internal = char in keep and before.isalpha() and after.isalpha()
            elision = language == "eo" and char == "'" and before.isalpha()
            chars.append(char if internal or elision else " ")
        else:
            chars.append(char)
    return " ".join("".join(chars).split())


def _options_fingerprint(data_folder: Path, options: dict) -> dict:
    """What the CSVs depend on: the options and the size of each tsv."""
    tsv_sizes = {split: (data_folder / f"{split}.tsv").stat().st_size for split in SPLITS}
    return {**options, "tsv_sizes": tsv_sizes, "version": PREPARE_VERSION}


def check_common_voice_folder(data_folder: Path, language: str) -> None:
    """Fail, naming what is missing and where to download it, unless ``data_folder`` is the
    folder of one locale of a Common Voice release. Cheap: the recipe calls it before building
    its model."""
    layout = (
        "the folder of one locale of a Common Voice release (e.g. cv-corpus-15.0-2023-09-08/"
        f"{language}) holding clips/*.mp3, train.tsv, dev.tsv and test.tsv; download the release "
        "from https://commonvoice.mozilla.org/datasets, extract it and pass "
        f"--data_folder=<release>/{language}"
    )
    if not data_folder.is_dir():
        raise FileNotFoundError(
            f"Common Voice folder {data_folder} for language '{language}' does not exist. Expected {layout}."
        )
    missing = [f"{split}.tsv" for split in SPLITS if not (data_folder / f"{split}.tsv").is_file()]
    if missing:
        raise FileNotFoundError(f"{data_folder} has no {', '.join(missing)}. Expected {layout}.")
    if not (data_folder / "clips").is_dir():
        raise FileNotFoundError(f"{data_folder} has no clips/ folder. Expected {layout}.")


def read_tsv(tsv_path: Path, language: str) -> List[Dict[str, str]]:
    """Reads a Common Voice tsv (any header variant, see the module docstring).

    Arguments
    ---------
    tsv_path : pathlib.Path
        ``train.tsv``, ``dev.tsv`` or ``test.tsv``.
    language : str
        The expected locale; a ``locale`` column with another value is an error.

    Returns
    -------
    list of dict
        One dict per row, keyed by column name.

    Raises
    ------
    ValueError
        If the file is not UTF-8 (naming the line), the header has no ``path`` or ``sentence``
        column, or the rows are of another locale.
    """
    # Sentences may contain quotes: no quoting, tabs only separate. read_text names the line of
    # a byte that is not UTF-8 and drops a byte-order mark.
    lines = read_text(tsv_path, COMMON_VOICE).splitlines()
    reader = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
    header = next(reader, None)
    if header is None or not {"path", "sentence"} <= set(header):
        raise ValueError(
            f"{tsv_path} has header {header}; a Common Voice tsv needs at least the columns "
            f"'path' and 'sentence' (e.g. client_id, path, sentence, up_votes, ...)."
        )
    rows = [dict(zip(header, row)) for row in reader if row]
    locales = {row.get("locale") for row in rows} - {None, ""}
    if locales and language not in locales:
        raise ValueError(
            f"{tsv_path} holds locale {sorted(locales)} but language='{language}'; pass "
            f"--language={sorted(locales)[0]} or the --data_folder of '{language}'."
        )
    return rows


def check_clip(clip: Path) -> Union[float, str]:
    """The decoded duration of ``clip`` in seconds, or why it cannot be used (a sentence).

    The whole clip is decoded: a header can promise audio that a truncated or damaged file does
    not hold.

    Example
    -------
    >>> import tempfile, numpy as np
    >>> folder = Path(tempfile.mkdtemp())
    >>> sf.write(folder / "a.wav", np.zeros(1600, dtype="float32"), 16000)
    >>> check_clip(folder / "a.wav")
    0.1
    >>> _ = (folder / "b.mp3").write_bytes(b"")
    >>> check_clip(folder / "b.mp3")
    'is empty (0 bytes)'
    >>> _ = (folder / "c.mp3").write_bytes(bytes(range(256)) * 8)
    >>> print(check_clip(folder / "c.mp3"))
    cannot be decoded as audio (libsndfile: ...)
    """
    if clip.stat().st_size == 0:
        return "is empty (0 bytes)"
    try:
        with sf.SoundFile(str(clip)) as f:
            header_frames, rate = f.frames, f.samplerate
            # Read until the decoder stops: SoundFile.blocks() would count the header's frames.
            frames = 0
            while True:
                block = f.read(1 << 16, dtype="float32")
                if len(block) == 0:
                    break
                frames += len(block)
    except (sf.LibsndfileError, RuntimeError, ValueError) as e:
        # libsndfile reads a file it cannot parse as "does not exist": say what was tried.
        reason = getattr(e, "error_string", None) or str(e)
        return f"cannot be decoded as audio (libsndfile: {reason})"
    if frames == 0:
        return "has no samples"
    if frames < MIN_DURATION * rate:
        return f"is {frames / rate:.3f} s long, shorter than one 25 ms analysis window"
    if 0 < header_frames and frames < MIN_DECODED_SHARE * header_frames:
        return f"is truncated: its header says {header_frames / rate:.2f} s, {frames / rate:.2f} s decode"
    return round(frames / rate, 4)


def _load_durations(path: Path) -> Dict[str, Union[float, str]]:
    if path.is_file():
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    return {}


def _save_durations(path: Path, durations: Dict[str, Union[float, str]]) -> None:
    partial = path.with_suffix(".partial")
    with open(partial, "w", encoding="utf-8") as f:
        json.dump(durations, f, sort_keys=True)
    partial.replace(path)


def _seeded_order(rows: List[Dict[str, str]], seed: int) -> List[Dict[str, str]]:
    def key(row):
        return hashlib.sha256(f"{seed}:{row['path']}".encode()).hexdigest()

    return sorted(rows, key=key)


def select_subset(
    rows: List[Dict[str, str]],
    clips_folder: Path,
    language: str,
    minutes: float,
    seed: int,
    max_duration: float,
    durations: Dict[str, Union[float, str]],
    split: str = "train",
) -> Tuple[List[Dict[str, str]], Dict[str, int], List[Tuple[str, str]]]:
    """Draws up to ``minutes`` of audio from ``rows`` in the seeded order (module docstring).

    Arguments
    ---------
    rows : list of dict
        Rows of one tsv (:func:`read_tsv`).
    clips_folder : pathlib.Path
        The ``clips/`` folder.
    language : str
        Locale, for :func:`normalize_text`.
    minutes : float
        The budget.
    seed : int
        Selection seed.
    max_duration : float
        Longer clips (seconds) are dropped.
    durations : dict
        Clip name -> decoded seconds, or the reason it cannot be used (:func:`check_clip`);
        read and filled in place (the cache).
    split : str
        Name used in messages.

    Returns
    -------
    selected : list of dict
        Rows with ``duration`` (s) and ``wrd`` (normalised) added.
    counts : dict
        ``too_long``, ``skipped``, ``empty`` and ``visited`` rows.
    skipped : list of (str, str)
        The clips that are missing or cannot be used, with the reason.
    """
    budget = minutes * 60.0
    total = 0.0
    selected, skipped, empty = [], [], []
    counts = {"visited": 0, "too_long": 0, "skipped": 0, "empty": 0}
    progress = tqdm(total=round(budget), desc=f"{split}: decoding clips", unit="s of audio", **_TQDM_OPTIONS)
    for row in _seeded_order(rows, seed):
        counts["visited"] += 1
        wrd = normalize_text(row["sentence"], language)
        if not wrd:
            counts["empty"] += 1
            empty.append(row["path"])
            continue
        clip = clips_folder / row["path"]
        if not clip.is_file():
            skipped.append((row["path"], f"is listed in {split}.tsv but missing from {clips_folder}"))
            continue
        if row["path"] not in durations:
            durations[row["path"]] = check_clip(clip)
        duration = durations[row["path"]]
        if isinstance(duration, str):
            skipped.append((row["path"], duration))
            continue
        if duration > max_duration:
            counts["too_long"] += 1
            continue
        if total + duration > budget:
            break
        total += duration
        progress.update(min(round(total), progress.total) - progress.n)
        selected.append({**row, "duration": duration, "wrd": wrd, "wav": str(clip)})
    else:
        logger.warning(
            "%s: only %.1f minutes of clips up to %.1f s are available (requested %.1f); taking all of them.",
            split,
            total / 60.0,
            max_duration,
            minutes,
        )
    progress.close()
    counts["skipped"] = len(skipped)
    if empty:
        logger.warning(
            "%s: skipped %d rows whose sentence is empty after normalisation, e.g. %s",
            split,
            len(empty),
            ", ".join(empty[:REPORT_EXAMPLES]),
        )
    logger.info(
        "%s: %d utterances, %.1f minutes (requested %.1f); %d of the %d rows visited were over "
        "%.1f s and dropped, %d clips skipped (missing or unusable)",
        split,
        len(selected),
        total / 60.0,
        minutes,
        counts["too_long"],
        counts["visited"],
        max_duration,
        len(skipped),
    )
    return selected, counts, skipped


def check_split(split, selected, counts, skipped, max_skipped_fraction, save_folder):
    """Stop the preparation of a split with no utterance, or with too many clips skipped.

    Arguments
    ---------
    split : str
        ``train``, ``dev`` or ``test``.
    selected, counts, skipped
        What :func:`select_subset` returned.
    max_skipped_fraction : float
        The share of the visited rows that may be skipped.
    save_folder : pathlib.Path
        Where ``skipped.txt`` lists them (for the message).

    Example
    -------
    >>> check_split("dev", [], {"visited": 3, "empty": 3, "too_long": 0, "skipped": 0}, [], 0.01, Path("x"))
    Traceback (most recent call last):
     ...
    ValueError: dev: no utterance is left of the 3 rows of dev.tsv visited (3 with an empty sentence ...
    """
    report = Path(save_folder) / SKIPPED_FILE
    named = "; ".join(f"{clip}: {reason}" for clip, reason in skipped[:REPORT_EXAMPLES])
    more = f" and {len(skipped) - REPORT_EXAMPLES} more" if len(skipped) > REPORT_EXAMPLES else ""
    if len(skipped) > max_skipped_fraction * counts["visited"]:
        needed = math.ceil(100 * len(skipped) / counts["visited"]) / 100
        raise RuntimeError(
            f"{split}: {len(skipped)} of the {counts['visited']} clips visited are missing or unusable "
            f"({named}{more}; all listed in {report}), more than max_skipped_fraction="
            f"{max_skipped_fraction} allows. Is the release fully extracted and undamaged? Extract it "
            f"again into the --data_folder, or pass --max_skipped_fraction={needed} (a key of the hparams "
            "file) to train without these clips."
        )
    if skipped:
        logger.warning("%s: skipped %d clips (%s%s); listed in %s", split, len(skipped), named, more, report)
    if not selected:
        raise ValueError(
            f"{split}: no utterance is left of the {counts['visited']} rows of {split}.tsv visited "
            f"({counts['empty']} with an empty sentence after normalisation, {counts['too_long']} over "
            f"max_duration, {counts['skipped']} clips missing or unusable). Check the tsv and the "
            "--language (its normalisation), or raise --max_duration."
        )


def prepare_common_voice(
    data_folder: str,
    save_folder: str,
    language: str,
    train_minutes: float = 600.0,
    dev_minutes: float = 60.0,
    test_minutes: float = 60.0,
    seed: int = 0,
    max_duration: float = 10.0,
    max_skipped_fraction: float = 0.01,
    skip_prep: bool = False,
) -> None:
    """Writes ``train.csv``, ``dev.csv`` and ``test.csv`` for one Common Voice locale.

    Skips the work when ``save_folder`` already holds the CSVs of the same options (and tsv
    sizes); redoes it when any of them changed.

    Arguments
    ---------
    data_folder : str
        The locale folder of a Common Voice release (``clips/``, ``train.tsv`` ...).
    save_folder : str
        Where the CSVs, the duration cache and the options are written.
    language : str
        Locale code, e.g. ``"eo"``; selects the text normalisation.
    train_minutes, dev_minutes, test_minutes : float
        Audio budget of each split, in minutes.
    seed : int
        Selection seed. It is a data option, independent of the training seed, so the five
        training runs of a language see the same subset.
    max_duration : float
        Clips longer than this (seconds) are dropped, in every split.
    max_skipped_fraction : float
        Missing or unusable clips (see the module docstring) are skipped and listed in
        ``skipped.txt``; more than this share of a split's visited rows stops the preparation.
    skip_prep : bool
        If True, do nothing.

    Example
    -------
    >>> import os, tempfile
    >>> save = tempfile.mkdtemp()
    >>> sample = Path(__file__).parents[2] / "tests" / "samples" / "CommonVoice" / "eo"
    >>> prepare_common_voice(sample, save, "eo", train_minutes=0.2, dev_minutes=0.1, test_minutes=0.1)
    >>> sorted(os.listdir(save))
    ['clip_checks.json', 'dev.csv', 'prepare_options.json', 'skipped.txt', 'test.csv', 'train.csv']
    """
    if skip_prep:
        return
    data_folder, save_folder = Path(data_folder).resolve(), Path(save_folder)
    check_common_voice_folder(data_folder, language)
    minutes = {"train": train_minutes, "dev": dev_minutes, "test": test_minutes}
    for split, value in minutes.items():
        if value <= 0:
            raise ValueError(f"{split}_minutes must be positive, got {value}.")
    if max_duration <= 0:
        raise ValueError(f"max_duration must be positive (seconds), got {max_duration}.")
    if not 0.0 <= max_skipped_fraction <= 1.0:
        raise ValueError(f"max_skipped_fraction must be between 0 and 1, got {max_skipped_fraction}.")
    options = {
        "data_folder": str(data_folder),
        "language": language,
        "minutes": minutes,
        "seed": seed,
        "max_duration": max_duration,
        "max_skipped_fraction": max_skipped_fraction,
    }
    fingerprint = _options_fingerprint(data_folder, options)
    options_path = save_folder / OPTIONS_FILE
    csv_paths = {split: save_folder / f"{split}.csv" for split in SPLITS}
    if options_path.is_file() and all(path.is_file() for path in csv_paths.values()):
        with open(options_path, encoding="utf-8") as f:
            if json.load(f) == fingerprint:
                logger.info("%s already holds the CSVs of these options; skipping preparation.", save_folder)
                return
    save_folder.mkdir(parents=True, exist_ok=True)
    options_path.unlink(missing_ok=True)
    durations_path = save_folder / CLIP_CHECKS_CACHE
    durations = _load_durations(durations_path)
    all_skipped = []
    try:
        for split in SPLITS:
            rows = read_tsv(data_folder / f"{split}.tsv", language)
            selected, counts, skipped = select_subset(
                rows, data_folder / "clips", language, minutes[split], seed, max_duration, durations, split
            )
            all_skipped += [(split, clip, reason) for clip, reason in skipped]
            _write_skipped(save_folder / SKIPPED_FILE, all_skipped)
            check_split(split, selected, counts, skipped, max_skipped_fraction, save_folder)
            _write_csv(csv_paths[split], selected)
    finally:
        _save_durations(durations_path, durations)
    with open(options_path, "w", encoding="utf-8") as f:
        json.dump(fingerprint, f, indent=2, sort_keys=True)


# The hparams key that sets each argument of prepare_common_voice in the recipe's hparams files.
HPARAMS_OF_ARGUMENTS = {
    "data_folder": "data_folder",
    "save_folder": "prepared_folder",
    "language": "language",
    "train_minutes": "train_minutes",
    "dev_minutes": "dev_minutes",
    "test_minutes": "test_minutes",
    "seed": "data_seed",
    "max_duration": "max_duration",
    "max_skipped_fraction": "max_skipped_fraction",
    "skip_prep": "skip_prep",
}


def preparation_arguments(hparams: Dict) -> Dict:
    """``prepare_common_voice``'s keyword arguments from the recipe's hparams.

    Arguments
    ---------
    hparams : dict
        Holds every key of ``HPARAMS_OF_ARGUMENTS.values()``.

    Returns
    -------
    dict

    Example
    -------
    >>> arguments = preparation_arguments({key: key for key in HPARAMS_OF_ARGUMENTS.values()})
    >>> arguments["save_folder"], arguments["seed"]
    ('prepared_folder', 'data_seed')
    """
    return {argument: hparams[key] for argument, key in HPARAMS_OF_ARGUMENTS.items()}


def _write_skipped(path: Path, skipped: List[Tuple[str, str, str]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(f"{split}\t{clip}\t{reason}\n" for split, clip, reason in skipped)


def _write_csv(path: Path, rows: List[Dict[str, str]]) -> None:
    partial = path.with_suffix(".partial")
    with open(partial, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_FIELDS)
        for row in rows:
            writer.writerow(
                [
                    Path(row["path"]).stem,
                    f"{row['duration']:.3f}",
                    row["wav"],
                    row.get("client_id", ""),
                    row["wrd"],
                ]
            )
    partial.replace(path)


def _parse_arguments(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_folder", required=True, help="locale folder of a Common Voice release")
    parser.add_argument("--save_folder", required=True, help="where the CSVs are written")
    parser.add_argument("--language", required=True, help="locale code, e.g. eo")
    parser.add_argument("--train_minutes", type=float, default=600.0)
    parser.add_argument("--dev_minutes", type=float, default=60.0)
    parser.add_argument("--test_minutes", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max_duration", type=float, default=10.0)
    parser.add_argument("--max_skipped_fraction", type=float, default=0.01)
    return parser.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    arguments = vars(_parse_arguments())
    prepare_common_voice(**arguments)
