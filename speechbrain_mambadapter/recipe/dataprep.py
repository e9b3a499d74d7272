"""What the data-preparation scripts of the audio-classification recipes share.

Each recipe's ``<dataset>_prepare.py`` knows one official on-disk layout (which metadata file,
which columns, which split protocol). Everything else lives here, once:

* ``check_data_folder``: the layout check, failing with a sentence that names the missing path,
  where to download the dataset and which flag to pass;
* ``prepare_audio``: every clip to 16 kHz mono 16-bit wav in ``save_folder/audio/`` (clips already
  in that format are used in place, not copied); missing or unreadable clips are skipped, listed in
  ``skipped.txt`` and the log, and preparation fails when more than ``max_skipped_fraction`` are bad;
* ``preparation_done`` / ``begin_preparation``: the idempotency check, and the reset that an
  interrupted run cannot leave looking finished;
* ``write_prepared``: the manifests ``train.csv``, ``valid.csv``, ``test.csv``
  (``ID,duration,wav,label,...``), the sorted class list ``classes.txt`` and, last, the options
  file that makes a second call with the same options a no-op (``preparation_done``).

Authors
 * speechbrain-mambadapter contributors 2026
"""

import codecs
import csv
import io
import json
import logging
import math
import os
import shutil
import sys
from dataclasses import dataclass

import soundfile as sf
import torch
import torchaudio
from tqdm import tqdm

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
SPLITS = ("train", "valid", "test")
CLASSES_FILE = "classes.txt"
SKIPPED_FILE = "skipped.txt"
OPTIONS_FILE = "prepare_options.json"
AUDIO_DIR = "audio"
AUDIO_OPTIONS_FILE = "audio_options.json"
# Shorter clips cannot be used: the filterbanks need one 25 ms analysis window.
MIN_DURATION = 0.025
# A progress bar on a terminal only, so that logs of batch jobs stay readable.
_TQDM = {"disable": not sys.stderr.isatty(), "mininterval": 2.0}
# Bumped whenever the manifests' content changes, so that old preparations are redone.
FORMAT_VERSION = 2


@dataclass(frozen=True)
class DatasetInfo:
    """Where a dataset comes from and how a user points a recipe at it (for error messages).

    Arguments
    ---------
    name : str
        Human-readable name, e.g. ``"ESC-50"``.
    url : str
        Where to download it.
    folder : str
        The folder the official archive unpacks to, e.g. ``"ESC-50-master"``.
    flag : str
        The command-line flag that takes the folder.

    Example
    -------
    >>> info = DatasetInfo("ESC-50", "https://github.com/karolpiczak/ESC-50", "ESC-50-master")
    >>> info.advice("meta/esc50.csv")
    'Download ESC-50 from https://github.com/karolpiczak/ESC-50, unpack it and pass the folder that \
holds meta/esc50.csv as --data_folder=/path/to/ESC-50-master.'
    """

    name: str
    url: str
    folder: str
    flag: str = "--data_folder"

    def advice(self, marker):
        """The download-and-pass sentence that ends every layout error."""
        return (
            f"Download {self.name} from {self.url}, unpack it and pass the folder that holds "
            f"{marker} as {self.flag}=/path/to/{self.folder}."
        )


def check_data_folder(data_folder, info, required):
    """Fail with an actionable message unless ``data_folder`` holds every path of ``required``.

    When a required path exists one or two levels further down (the user passed the parent
    folder), the message names the folder they probably meant.

    Arguments
    ---------
    data_folder : str
        The folder the user passed.
    info : DatasetInfo
        The dataset, for the download advice.
    required : list of str
        Paths relative to ``data_folder`` that the official layout has; the first is the marker
        named in the advice.

    Raises
    ------
    FileNotFoundError
        When the folder or one of the required paths does not exist.

    Example
    -------
    >>> import tempfile
    >>> info = DatasetInfo("ESC-50", "https://github.com/karolpiczak/ESC-50", "ESC-50-master")
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     check_data_folder(tmp, info, ["meta/esc50.csv"])
    Traceback (most recent call last):
     ...
    FileNotFoundError: ESC-50: data_folder ... has no meta/esc50.csv. Download ESC-50 from ...
    """
    marker = required[0]
    if not os.path.isdir(data_folder):
        raise FileNotFoundError(
            f"{info.name}: data_folder {data_folder} does not exist or is not a folder. {info.advice(marker)}"
        )
    for rel in required:
        if os.path.exists(os.path.join(data_folder, rel)):
            continue
        hint = ""
        nested = _find_nested(data_folder, rel)
        if nested is not None:
            hint = f" ({os.path.join(nested, rel)} exists: did you mean {info.flag}={nested}?)"
        raise FileNotFoundError(
            f"{info.name}: data_folder {data_folder} has no {rel}{hint}. {info.advice(marker)}"
        )


def _find_nested(data_folder, rel, depth=2):
    """The first sub-folder (up to ``depth`` levels down) that holds ``rel``, or None."""
    level = [data_folder]
    for _ in range(depth):
        deeper = []
        for folder in level:
            try:
                children = sorted(e.path for e in os.scandir(folder) if e.is_dir())
            except OSError:
                continue
            for child in children:
                if os.path.exists(os.path.join(child, rel)):
                    return child
            deeper.extend(children)
        level = deeper
    return None


def read_metadata_csv(path, required_columns, info):
    """Rows of an official metadata CSV as dicts, after checking its header.

    Arguments
    ---------
    path : str
        The CSV file.
    required_columns : list of str
        Columns the official file has; a missing one means a wrong or edited file.
    info : DatasetInfo
        The dataset, for the error message.

    Returns
    -------
    list of dict
        One dict per row, keyed by the header.

    Raises
    ------
    ValueError
        When a required column is missing.
    """
    text = read_text(path, info)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    missing = [c for c in required_columns if c not in header]
    if missing:
        raise ValueError(
            f"{info.name}: {path} lacks the column(s) {missing}; its header is {header}, the official "
            f"file has {list(required_columns)}. Restore the original metadata file. {info.advice(path)}"
        )
    return list(reader)


def read_text(path, info):
    r"""The text of a UTF-8 file (a byte-order mark, as spreadsheet programs write, is dropped).

    Raises
    ------
    ValueError
        For bytes that are not UTF-8, naming the file, the line and the column.

    Example
    -------
    >>> import tempfile
    >>> info = DatasetInfo("ESC-50", "https://github.com/karolpiczak/ESC-50", "ESC-50-master")
    >>> with tempfile.NamedTemporaryFile("wb", suffix=".csv", delete=False) as f:
    ...     _ = f.write(b"\xef\xbb\xbfa,b\n1,2\nx,\xff\n")
    >>> read_text(f.name, info)
    Traceback (most recent call last):
     ...
    ValueError: ESC-50: ... is not UTF-8 text: line 3, column 3 holds the byte 0xff. ...
    """
    with open(path, "rb") as f:
        data = f.read()
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise ValueError(
            f"{info.name}: {path} is not UTF-8 text: line {line}, column {column} holds the byte "
            f"0x{data[e.start]:02x}. Save it as UTF-8, or restore the original file ({info.url})."
        ) from e


def check_official_labels(rows, label_column, index_column, official, metadata_file, info):
    """Fail unless every row's label is the official class name of its class index.

    A label edited by hand (a typo) would otherwise become a class of its own.

    Arguments
    ---------
    rows : list of dict
        Rows of the metadata file, in file order (the header is line 1).
    label_column, index_column : str
        The columns of the class name and of the class index (e.g. ``category``, ``target``).
    official : sequence of str
        The official class names, by index.
    metadata_file : str
        For the message.
    info : DatasetInfo
        For the message.

    Example
    -------
    >>> info = DatasetInfo("ESC-50", "https://github.com/karolpiczak/ESC-50", "ESC-50-master")
    >>> rows = [{"category": "dog", "target": "0"}, {"category": "dgo", "target": "0"}]
    >>> check_official_labels(rows, "category", "target", ["dog", "rooster"], "esc50.csv", info)
    Traceback (most recent call last):
     ...
    ValueError: ESC-50: esc50.csv line 3 gives category 'dgo' for target 0; ... is 'dog'. ...
    """
    for line, row in enumerate(rows, start=2):
        label, index = row[label_column], row[index_column]
        try:
            expected = official[int(index)]
        except (ValueError, IndexError):
            raise ValueError(
                f"{info.name}: {metadata_file} line {line} gives {index_column} {index!r}; the official "
                f"ones are 0 to {len(official) - 1}. Restore the original file. {info.advice(metadata_file)}"
            ) from None
        if label != expected:
            raise ValueError(
                f"{info.name}: {metadata_file} line {line} gives {label_column} {label!r} for "
                f"{index_column} {int(index)}; the official class of {index_column} {int(index)} is "
                f"{expected!r}. Restore the original file. {info.advice(metadata_file)}"
            )


def parse_fold(value, num_folds, clip, metadata_file, info):
    """The fold number of a metadata row, or a ValueError naming the row.

    Example
    -------
    >>> info = DatasetInfo("ESC-50", "https://github.com/karolpiczak/ESC-50", "ESC-50-master")
    >>> parse_fold("3", 5, "3-1-A-0.wav", "meta/esc50.csv", info)
    3
    >>> parse_fold("x", 5, "3-1-A-0.wav", "meta/esc50.csv", info)
    Traceback (most recent call last):
     ...
    ValueError: ESC-50: meta/esc50.csv gives fold 'x' for 3-1-A-0.wav; official folds are 1 to 5. ...
    """
    try:
        fold = int(value)
    except ValueError:
        fold = None
    if fold not in range(1, num_folds + 1):
        raise ValueError(
            f"{info.name}: {metadata_file} gives fold {value!r} for {clip}; official folds are 1 to "
            f"{num_folds}. Restore the original file. {info.advice(metadata_file)}"
        )
    return fold


class AudioFileError(Exception):
    """An audio file that exists but cannot be used (undecodable, empty)."""


def load_mono(path, sample_rate=SAMPLE_RATE):
    """Read any file libsndfile decodes as a mono float32 waveform at ``sample_rate``.

    Channels are averaged; resampling uses ``torchaudio.functional.resample`` (windowed sinc).

    Arguments
    ---------
    path : str
        The audio file.
    sample_rate : int
        The rate of the returned waveform.

    Returns
    -------
    torch.Tensor
        ``[T]`` float32 waveform.

    Raises
    ------
    AudioFileError
        When the file cannot be decoded or has no samples.

    Example
    -------
    >>> import os, tempfile, numpy as np, soundfile as sf
    >>> stereo = np.stack([np.ones(441), -np.ones(441)], axis=1) * 0.5
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     sf.write(os.path.join(tmp, "x.wav"), stereo, 44100)
    ...     wav = load_mono(os.path.join(tmp, "x.wav"))
    >>> wav.shape, float(wav.abs().max())
    (torch.Size([160]), 0.0)
    """
    try:
        data, file_rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as e:
        raise AudioFileError(f"cannot be decoded ({e})") from e
    if data.shape[0] == 0:
        raise AudioFileError("has no samples")
    wav = torch.from_numpy(data).mean(dim=1)
    if file_rate != sample_rate:
        wav = torchaudio.functional.resample(wav, file_rate, sample_rate)
    return wav


def _is_target_format(path, sample_rate):
    info = sf.info(path)
    return (
        info.format == "WAV"
        and info.subtype == "PCM_16"
        and info.channels == 1
        and info.samplerate == sample_rate
    )


def _write_wav(path, wav, sample_rate):
    """Write ``wav`` as 16-bit PCM, atomically (an interrupted run never leaves half a file)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".part"
    # Resampling can overshoot full scale by a hair; clip rather than let PCM wrap around.
    sf.write(tmp, wav.clamp(-1.0, 1.0).numpy(), sample_rate, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)


def prepare_audio(
    rel_paths,
    data_folder,
    save_folder,
    info,
    sample_rate=SAMPLE_RATE,
    max_skipped_fraction=0.01,
    min_duration=MIN_DURATION,
):
    """Make every clip available as a ``sample_rate`` mono 16-bit wav; skip and report bad ones.

    Clips already in that format are used in place; the others are converted into
    ``save_folder/audio/<same relative path>.wav``. Converted clips are reused by later calls
    with the same ``data_folder`` and ``sample_rate`` (``audio_options.json``), so changing only
    the split options (a fold) does not convert again.

    Arguments
    ---------
    rel_paths : list of str
        Clip paths relative to ``data_folder``.
    data_folder : str
        The dataset's top folder.
    save_folder : str
        Where converted audio and ``skipped.txt`` go.
    info : DatasetInfo
        The dataset, for messages.
    sample_rate : int
        Target sampling rate.
    max_skipped_fraction : float
        Largest tolerated fraction of missing, unreadable or too short clips; more aborts the
        preparation.
    min_duration : float
        Shorter clips (seconds) are skipped: the feature extractors need at least one 25 ms
        analysis window.

    Returns
    -------
    dict
        ``rel_path -> (wav_path, duration_in_seconds)`` for every usable clip.

    Raises
    ------
    RuntimeError
        When more than ``max_skipped_fraction`` of the clips are missing, unreadable or too short.
    """
    if not 0.0 <= max_skipped_fraction <= 1.0:
        raise ValueError(f"max_skipped_fraction must be between 0 and 1, got {max_skipped_fraction}.")
    audio_dir = os.path.join(save_folder, AUDIO_DIR)
    audio_options = {"data_folder": os.path.abspath(data_folder), "sample_rate": sample_rate}
    options_path = os.path.join(save_folder, AUDIO_OPTIONS_FILE)
    if _load_json(options_path) != audio_options:
        # Converted clips of another source folder or rate must not be mistaken for ours.
        shutil.rmtree(audio_dir, ignore_errors=True)
        _save_json(options_path, audio_options)

    prepared, skipped = {}, []
    min_frames = math.ceil(min_duration * sample_rate)
    progress = tqdm(rel_paths, desc=f"{info.name}: checking and converting clips", unit="clip", **_TQDM)
    for n, rel in enumerate(progress):
        src = os.path.join(data_folder, rel)
        try:
            if not os.path.isfile(src):
                raise AudioFileError("file not found")
            try:
                in_place = _is_target_format(src, sample_rate)
            except (sf.LibsndfileError, RuntimeError) as e:
                raise AudioFileError(f"cannot be decoded ({e})") from e
            if in_place:
                wav_path = os.path.abspath(src)
                frames = load_mono(src, sample_rate).shape[0]
            else:
                wav_path = os.path.abspath(os.path.join(audio_dir, os.path.splitext(rel)[0] + ".wav"))
                if os.path.isfile(wav_path):
                    frames = sf.info(wav_path).frames
                else:
                    wav = load_mono(src, sample_rate)
                    _write_wav(wav_path, wav, sample_rate)
                    frames = wav.shape[0]
            if frames < min_frames:
                raise AudioFileError(
                    f"is {frames / sample_rate:.3f} s long, shorter than min_duration={min_duration} s "
                    "(one 25 ms analysis window)"
                )
        except AudioFileError as e:
            skipped.append((rel, str(e)))
            continue
        prepared[rel] = (wav_path, round(frames / sample_rate, 4))
        if progress.disable and (n + 1) % 5000 == 0:
            logger.info("%s: checked %d of %d clips", info.name, n + 1, len(rel_paths))

    _report_skipped(skipped, len(rel_paths), save_folder, info, max_skipped_fraction)
    return prepared


def _report_skipped(skipped, total, save_folder, info, max_skipped_fraction):
    path = os.path.join(save_folder, SKIPPED_FILE)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(f"{rel}\t{reason}\n" for rel, reason in skipped)
    if not skipped:
        return
    shown = "; ".join(f"{rel}: {reason}" for rel, reason in skipped[:5])
    more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
    if len(skipped) > max_skipped_fraction * total:
        raise RuntimeError(
            f"{info.name}: {len(skipped)} of {total} audio files are missing, unreadable or too short "
            f"({shown}{more}; all listed in {path}), more than max_skipped_fraction={max_skipped_fraction} "
            f"allows. The download looks incomplete or damaged: download {info.name} again from {info.url}, "
            f"or pass --max_skipped_fraction={_fraction_needed(len(skipped), total)} (a key of the "
            "hparams file) to train without these files."
        )
    logger.warning(
        "%s: skipped %d of %d audio files that are missing, unreadable or too short (%s%s); listed in %s",
        info.name,
        len(skipped),
        total,
        shown,
        more,
        path,
    )


def _fraction_needed(skipped, total):
    """The smallest two-decimal fraction that tolerates ``skipped`` of ``total`` clips.

    Example
    -------
    >>> _fraction_needed(1, 70)
    0.02
    """
    return math.ceil(100 * skipped / total) / 100


def write_manifest(path, rows, columns):
    """Write ``rows`` (dicts) as a SpeechBrain CSV manifest with ``columns`` in that order, atomically.

    Example
    -------
    >>> import os, tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = os.path.join(tmp, "train.csv")
    ...     write_manifest(path, [{"ID": "a", "duration": 1.0, "wav": "/a.wav", "label": "x, y"}],
    ...                    ["ID", "duration", "wav", "label"])
    ...     print(open(path).read().strip())
    ID,duration,wav,label
    a,1.0,/a.wav,"x, y"
    """
    tmp = path + ".part"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def write_classes(save_folder, labels):
    """Write the sorted, de-duplicated class list (one per line; line index = class index).

    Returns
    -------
    list of str
        The class list as written.
    """
    classes = sorted(set(labels))
    with open(os.path.join(save_folder, CLASSES_FILE), "w", encoding="utf-8") as f:
        f.writelines(f"{c}\n" for c in classes)
    return classes


def read_classes(save_folder):
    """The class list written by ``write_classes`` (index ``i`` is class ``i``).

    Example
    -------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = write_classes(tmp, ["siren", "car_horn", "siren"])
    ...     read_classes(tmp)
    ['car_horn', 'siren']
    """
    with open(os.path.join(save_folder, CLASSES_FILE), encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def begin_preparation(save_folder):
    """Create ``save_folder`` and drop its options file, so an interrupted run is never taken as done."""
    os.makedirs(save_folder, exist_ok=True)
    try:
        os.remove(os.path.join(save_folder, OPTIONS_FILE))
    except FileNotFoundError:
        pass


def preparation_done(save_folder, options):
    """Whether ``save_folder`` holds a finished preparation made with exactly ``options``.

    Example
    -------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     preparation_done(tmp, {"fold": 1})
    False
    """
    outputs = [os.path.join(save_folder, f"{split}.csv") for split in SPLITS]
    outputs.append(os.path.join(save_folder, CLASSES_FILE))
    if not all(os.path.isfile(p) for p in outputs):
        return False
    return _load_json(os.path.join(save_folder, OPTIONS_FILE)) == _with_version(options)


def write_prepared(save_folder, entries, audio, columns, classes, options, info):
    """Write the three manifests, the class list and, last, the options file.

    Arguments
    ---------
    save_folder : str
        Output folder.
    entries : list of dict
        One per clip: ``ID``, ``split`` (train/valid/test), ``src`` (path relative to the data
        folder), ``label`` and the dataset's extra columns.
    audio : dict
        ``src -> (wav_path, duration)`` from ``prepare_audio``; entries missing from it were
        skipped and are left out of the manifests.
    columns : list of str
        Manifest columns, starting with ``ID, duration, wav, label``.
    classes : list of str
        Every class of the dataset, whether or not a clip of it survived.
    options : dict
        The preparation options (JSON-serialisable) recorded for ``preparation_done``.
    info : DatasetInfo
        The dataset, for messages.

    Raises
    ------
    ValueError
        On duplicate IDs, or when a split ends up empty.
    """
    seen, duplicates = set(), set()
    for entry in entries:
        (duplicates if entry["ID"] in seen else seen).add(entry["ID"])
    if duplicates:
        raise ValueError(
            f"{info.name}: the metadata lists these clip IDs more than once: {sorted(duplicates)[:10]}. "
            f"Restore the original metadata. {info.advice('the metadata')}"
        )
    by_split = {split: [] for split in SPLITS}
    for entry in entries:
        if entry["src"] in audio:
            wav, duration = audio[entry["src"]]
            by_split[entry["split"]].append({**entry, "wav": wav, "duration": duration})
    for split, rows in by_split.items():
        if not rows:
            raise ValueError(
                f"{info.name}: the {split} split is empty with options {options}; check the data "
                f"folder and the split options (see {os.path.join(save_folder, SKIPPED_FILE)})."
            )
        write_manifest(os.path.join(save_folder, f"{split}.csv"), rows, columns)
    write_classes(save_folder, classes)
    _save_json(os.path.join(save_folder, OPTIONS_FILE), _with_version(options))
    logger.info(
        "%s: wrote %s in %s (%d classes)",
        info.name,
        ", ".join(f"{s}.csv ({len(r)} clips)" for s, r in by_split.items()),
        save_folder,
        len(classes),
    )


def _with_version(options):
    return {"format_version": FORMAT_VERSION, **options}


def _load_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _save_json(path, obj):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".part", "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
    os.replace(path + ".part", path)
