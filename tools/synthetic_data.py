"""Synthetic datasets in the official on-disk layouts of Speech Commands v0.02 and Common Voice.

They stand in for the real corpora where those cannot be downloaded (a benchmark machine with no
internet): the recipes' own preparation scripts read them unchanged, and the audio carries enough
structure for a model's loss to go down, so multi-GPU training can be timed end to end.

* ``gsc``: the layout of ``speech_commands_v0.02.tar.gz`` read by ``recipes/GSC/gsc_prepare.py``:
  the 35 word folders of ``<8 hex speaker>_nohash_<k>.wav`` clips (16 kHz mono PCM16, exactly
  1 s), ``validation_list.txt`` and ``testing_list.txt`` (``word/file.wav`` per line; a speaker's
  clips are all in one split, as in the release) and ``_background_noise_/`` (two 10 s noise
  recordings; not a class). Every word has its own signature, two tones (each with a second
  harmonic) from a 7 x 5 grid of frequencies, spoken at a random onset, level and pitch (per
  speaker, +-2 %), in white noise at a random SNR of 5 to 25 dB.
* ``commonvoice``: one locale folder of a Common Voice release read by
  ``recipes/CommonVoice/common_voice_prepare.py``: ``clips/common_voice_<lang>_<id>.mp3`` and
  ``train.tsv``, ``dev.tsv``, ``test.tsv`` with the header of releases 17 and later (the prepare
  script reads nothing else, so ``validated.tsv`` and ``clip_durations.tsv`` are not written).
  Transcripts are 3 to 10 words, more for longer clips, drawn from a fixed vocabulary of 300
  pseudo-words in the language's alphabet (Esperanto endings for ``eo``). Each split has its own
  speakers (``client_id``), each with a pitch and a formant scale. The audio is a harmonic source
  whose spectral envelope follows two formants per character (a fixed, character-specific pair),
  with noise bursts on consonants and pauses between words, in background noise; mono MP3.

Every clip is a deterministic function of ``seed`` and its index, so the output is byte-identical
whatever the number of worker processes. ``--out`` is written by this script only: a non-empty
folder that it did not write is refused; a folder it wrote with the same options is left as it is
(the call returns at once); one it wrote with other options, or that an interrupted run left
behind, is emptied and written again.

Usage::

    python tools/synthetic_data.py gsc --out /data/speech_commands_v0.02 \\
        [--train 6000 --valid 200 --test 200 --seed 0 --workers 16]
    python tools/synthetic_data.py commonvoice --out /data/cv-synthetic/eo [--language eo \\
        --train 3000 --dev 48 --test 48 --min-seconds 2 --max-seconds 6 --sample-rate 48000 \\
        --seed 0 --workers 16]

then pass ``--data_folder=<out>`` to ``recipes/GSC/train.py`` or ``recipes/CommonVoice/train.py``
(with ``--language=eo`` and train/dev/test minute budgets that fit the generated hours).

Authors
 * speechbrain-mambadapter contributors 2026
"""

import argparse
import hashlib
import json
import multiprocessing
import os
import shutil
import time
from collections import Counter
from functools import cache
from pathlib import Path

import numpy as np
import soundfile as sf

MARKER = ".synthetic_data.json"
GSC_SAMPLE_RATE = 16000
# The 35 words of Speech Commands v0.02, as in recipes/GSC/gsc_prepare.py (GSC_V2_WORDS).
GSC_WORDS = (
    "backward bed bird cat dog down eight five follow forward four go happy house learn left marvin nine no "
    "off on one right seven sheila six stop three tree two up visual wow yes zero"
).split()
GSC_LOW_TONES = (300.0, 420.0, 560.0, 720.0, 900.0, 1100.0, 1320.0)
GSC_HIGH_TONES = (1600.0, 2000.0, 2450.0, 2950.0, 3500.0)
GSC_CLIPS_PER_SPEAKER = 10
GSC_NOISE_SECONDS = 10

CV_HEADER = (
    "client_id path sentence_id sentence sentence_domain up_votes down_votes age gender accents "
    "variant locale segment"
).split()
# Far from the ids of the real releases and of the repository's sample and quick-start sets.
CV_FIRST_CLIP_ID = 50000000
CV_CLIPS_PER_SPEAKER = 10
CV_VOCABULARY_SIZE = 300
# Synthesis runs at 16 kHz (every formant and harmonic is below 4 kHz); other rates interpolate.
CV_SYNTHESIS_RATE = 16000
CV_TABLE_SIZE = 512
# Spelled as in the releases' age column.
CV_AGES = ("", "teens", "twenties", "thirties", "fourties", "fifties", "sixties")  # codespell:ignore
# The rates MP3 (MPEG-1 and MPEG-2 layer III) can store, from 16 kHz up.
CV_SAMPLE_RATES = (16000, 22050, 24000, 32000, 44100, 48000)
# Consonant units, vowel units (a repeated unit is drawn more often) and word endings (Esperanto's
# grammatical endings; none elsewhere) of the recipe's five languages.
ALPHABETS = {
    "eo": (
        list("bcĉdfgĝhĥjĵklmnprsŝtvz"),
        list("aaeeiioou") + ["aŭ"],
        ["o", "oj", "on", "a", "an", "as", "is", "os", "i", "e"],
    ),
    "ab": (list("бвгӷджзӡкқҟлмнпԥрстҭфхҳцҵчҷҽҿшџ") + ["шә", "кә", "гә"], list("аеиоуы"), []),
    "ckb": (list("بپتجچحخدرڕزژسشعغفڤقکگلڵمن"), list("اەیوۆێ"), []),
    "kab": (list("bcčdḍfgǧɣhḥjklmnqrṛsṣtṭwxyzẓɛ"), list("aeiu"), []),
    "rw": (list("bcdfghjkmnprstvwyz") + ["ny", "cy", "sh", "rw"], list("aeiou"), []),
}
_GSC_STREAM = 0
_CV_STREAM = 1


def _check_counts(**counts):
    for name, value in counts.items():
        if value < 1:
            raise ValueError(f"{name} must be at least 1 (the recipes refuse an empty split), got {value}.")


def _default_workers():
    return min(16, os.cpu_count() or 1)


def _claim_folder(root, dataset, options):
    """Make ``root`` ready to be written, or return the summary of an identical earlier run.

    Returns
    -------
    dict or None
        The stored summary when ``root`` already holds a complete dataset of these options.

    Raises
    ------
    FileExistsError
        When ``root`` is non-empty and was not written by this script.
    """
    root.mkdir(parents=True, exist_ok=True)
    marker = root / MARKER
    entries = list(root.iterdir())
    if entries and not marker.is_file():
        raise FileExistsError(
            f"{root} is not empty ({len(entries)} entries, e.g. {sorted(e.name for e in entries)[:3]}) "
            f"and has no {MARKER}, so it was not written by tools/synthetic_data.py. Pass an "
            "empty or new folder as --out, or delete this one if it is yours."
        )
    if entries:
        with open(marker, encoding="utf-8") as f:
            previous = json.load(f)
        if (
            previous.get("complete")
            and previous.get("dataset") == dataset
            and previous.get("options") == options
        ):
            print(f"{root} already holds the synthetic {dataset} data of these options; left as it is.")
            return {**previous["summary"], "reused": True}
        for entry in entries:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    _write_marker(root, dataset, options, complete=False)
    return None


def _write_marker(root, dataset, options, complete, summary=None):
    record = {"dataset": dataset, "options": options, "complete": complete, "summary": summary}
    with open(root / MARKER, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2, sort_keys=True)


def _map(function, tasks, workers):
    """``[function(t) for t in tasks]``, spread over ``workers`` processes when there are several."""
    if workers <= 1 or len(tasks) < 2:
        return [function(task) for task in tasks]
    # fork: the worker functions need not be importable by name (this file also runs as a script,
    # as __main__), and starting is cheap. Elsewhere the platform's default is used.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
    chunksize = max(1, len(tasks) // (workers * 8))
    with multiprocessing.get_context(method).Pool(min(workers, len(tasks))) as pool:
        return list(pool.imap(function, tasks, chunksize=chunksize))


def _clip_rng(seed, stream, index):
    return np.random.default_rng([seed, stream, index])


# --------------------------------------------------------------------------------- Speech Commands
def command_signature(word_index):
    """The two tone frequencies (Hz) that stand for word ``word_index`` of ``GSC_WORDS``.

    Example
    -------
    >>> command_signature(0), command_signature(34)
    ((300.0, 1600.0), (1320.0, 3500.0))
    >>> len({command_signature(w) for w in range(len(GSC_WORDS))})
    35
    """
    return GSC_LOW_TONES[word_index % 7], GSC_HIGH_TONES[word_index // 7]


def synthesize_command(word_index, rng, pitch_scale=1.0, sample_rate=GSC_SAMPLE_RATE):
    """One second of a word's signature (:func:`command_signature`) in white noise.

    The low tone comes first for even word indices, the high one for odd ones; each lasts 0.16 to
    0.24 s under a Hann window, at a random onset and level, in noise at a random SNR (5-25 dB).

    Arguments
    ---------
    word_index : int
        Index into ``GSC_WORDS``.
    rng : numpy.random.Generator
        Source of the clip's randomness.
    pitch_scale : float
        The speaker's factor on both frequencies.
    sample_rate : int
        Samples per second; the clip is exactly one second long.

    Returns
    -------
    numpy.ndarray
        ``[sample_rate]`` float32 waveform in [-1, 1].

    Example
    -------
    >>> wav = synthesize_command(3, np.random.default_rng(0))
    >>> wav.shape, wav.dtype, bool(np.abs(wav).max() <= 1.0)
    ((16000,), dtype('float32'), True)
    """
    low, high = command_signature(word_index)
    tones = (low, high) if word_index % 2 == 0 else (high, low)
    tone_length = int(rng.uniform(0.16, 0.24) * sample_rate)
    onset = int(rng.integers(0, sample_rate - 2 * tone_length))
    signal = np.zeros(sample_rate)
    t = np.arange(tone_length) / sample_rate
    window = np.hanning(tone_length)
    for n, frequency in enumerate(tones):
        phase = 2 * np.pi * frequency * pitch_scale * t + rng.uniform(0, 2 * np.pi)
        start = onset + n * tone_length
        signal[start : start + tone_length] = window * (np.sin(phase) + 0.35 * np.sin(2 * phase))
    active = signal[onset : onset + 2 * tone_length]
    signal *= rng.uniform(0.1, 0.6) / np.abs(active).max()
    noise_rms = np.sqrt(np.mean(active**2)) / 10 ** (rng.uniform(5.0, 25.0) / 20)
    wav = signal + noise_rms * rng.standard_normal(sample_rate)
    return np.clip(wav, -1.0, 1.0).astype(np.float32)


def _gsc_clip(task):
    path, seed, index, word_index, pitch_scale = task
    wav = synthesize_command(word_index, _clip_rng(seed, _GSC_STREAM, index), pitch_scale)
    sf.write(path, wav, GSC_SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return len(wav)


def _unique_hex_ids(rng, count, taken):
    ids = []
    while len(ids) < count:
        candidate = f"{int(rng.integers(2**32)):08x}"
        if candidate not in taken:
            taken.add(candidate)
            ids.append(candidate)
    return ids


def _gsc_plan(counts, seed):
    """``(split, word, speaker, k)`` per clip; speakers are split-specific, words cycle."""
    rng = np.random.default_rng([seed, _GSC_STREAM])
    taken, plan = set(), []
    for split, n in counts.items():
        speakers = _unique_hex_ids(rng, -(-n // GSC_CLIPS_PER_SPEAKER), taken)
        said = Counter()
        for j in range(n):
            word = GSC_WORDS[j % len(GSC_WORDS)]
            speaker = speakers[int(rng.integers(len(speakers)))]
            plan.append((split, word, speaker, said[speaker, word]))
            said[speaker, word] += 1
    return plan


def _write_background_noise(folder, seed):
    rng = np.random.default_rng([seed, _GSC_STREAM, 2**32])
    n = GSC_NOISE_SECONDS * GSC_SAMPLE_RATE
    white = rng.standard_normal(n)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum[1:] /= np.sqrt(np.arange(1, len(spectrum)))
    pink = np.fft.irfft(spectrum, n)
    folder.mkdir()
    for name, noise in (("white_noise.wav", white), ("pink_noise.wav", pink)):
        sf.write(folder / name, 0.3 * noise / np.abs(noise).max(), GSC_SAMPLE_RATE, subtype="PCM_16")


def make_gsc(root, n_train, n_valid, n_test, seed=0, workers=None):
    """Write a synthetic Speech Commands v0.02 folder (layout in the module docstring).

    Clip ``j`` of a split is word ``j % 35`` of ``GSC_WORDS``, so the classes are balanced to
    within one clip.

    Arguments
    ---------
    root : str or pathlib.Path
        Output folder: new, empty, or written by an earlier call (see the module docstring).
    n_train, n_valid, n_test : int
        Clips per split (at least 1 each).
    seed : int
        Seed of the speakers, the word order and every clip.
    workers : int, optional
        Worker processes (default: the CPU count, at most 16); the output does not depend on it.

    Returns
    -------
    dict
        ``root``, ``clips`` (per split), ``speakers``, ``total_seconds``, ``seconds_taken`` and
        ``reused`` (True when an identical earlier output was left as it was).

    Example
    -------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     summary = make_gsc(tmp, 35, 2, 2, workers=1)  # doctest: +ELLIPSIS
    Speech Commands v0.02 (synthetic) in ...: 35 train, 2 valid, 2 test clips ...
    >>> summary["clips"], summary["total_seconds"]
    ({'train': 35, 'valid': 2, 'test': 2}, 39.0)
    """
    _check_counts(n_train=n_train, n_valid=n_valid, n_test=n_test)
    workers = _default_workers() if workers is None else workers
    start = time.perf_counter()
    root = Path(root)
    counts = {"train": n_train, "valid": n_valid, "test": n_test}
    options = {**counts, "seed": seed}
    previous = _claim_folder(root, "gsc", options)
    if previous is not None:
        return previous

    plan = _gsc_plan(counts, seed)
    for word in GSC_WORDS:
        (root / word).mkdir()
    tasks, lists = [], {"valid": [], "test": []}
    for index, (split, word, speaker, k) in enumerate(plan):
        rel = f"{word}/{speaker}_nohash_{k}.wav"
        if split in lists:
            lists[split].append(rel)
        pitch_scale = 0.98 + 0.04 * int(speaker, 16) / 2**32
        tasks.append((str(root / rel), seed, index, GSC_WORDS.index(word), pitch_scale))
    samples = sum(_map(_gsc_clip, tasks, workers))
    for split, filename in (("valid", "validation_list.txt"), ("test", "testing_list.txt")):
        with open(root / filename, "w", encoding="utf-8", newline="\n") as f:
            f.writelines(f"{rel}\n" for rel in sorted(lists[split]))
    _write_background_noise(root / "_background_noise_", seed)

    summary = {
        "root": str(root),
        "clips": counts,
        "speakers": len({speaker for _, _, speaker, _ in plan}),
        "total_seconds": samples / GSC_SAMPLE_RATE,
        "seconds_taken": round(time.perf_counter() - start, 2),
        "reused": False,
    }
    _write_marker(root, "gsc", options, complete=True, summary=summary)
    print(
        f"Speech Commands v0.02 (synthetic) in {root}: {n_train} train, {n_valid} valid, {n_test} test "
        f"clips of 35 words from {summary['speakers']} speakers, {summary['total_seconds'] / 3600:.2f} h "
        f"of audio, plus _background_noise_/; {summary['seconds_taken']:.1f} s with {workers} workers."
    )
    return summary


# ------------------------------------------------------------------------------------ Common Voice
def _alphabet(language):
    if language not in ALPHABETS:
        raise ValueError(
            f"No alphabet for language '{language}'; tools/synthetic_data.py knows "
            f"{sorted(ALPHABETS)} (the recipe's languages). Pass one of them as --language, or add the "
            "language's consonants and vowels to ALPHABETS."
        )
    return ALPHABETS[language]


@cache
def vocabulary(language, size=CV_VOCABULARY_SIZE):
    """A fixed list of ``size`` distinct pseudo-words in the alphabet of ``language``.

    Words are one to three consonant-vowel syllables, sometimes closed by a consonant; where the
    language has grammatical endings, the stem always ends in a consonant and takes one of them.
    The list depends on ``language`` only (not on any seed), as a real language's vocabulary would.

    Example
    -------
    >>> words = vocabulary("eo")
    >>> len(words), len(set(words)), words == vocabulary("eo")
    (300, 300, True)
    >>> all(set(w) <= set("abcĉdefgĝhĥijĵklmnoprsŝtuŭvz") for w in words)
    True
    """
    consonants, vowels, endings = _alphabet(language)
    rng = np.random.default_rng(list(hashlib.sha256(language.encode()).digest()[:8]))
    words = []
    while len(words) < size:
        syllables = int(rng.integers(1, 4))
        word = "".join(consonants[rng.integers(len(consonants))] + vowels[rng.integers(len(vowels))]
                       for _ in range(syllables))  # fmt: skip
        if endings:
            word += consonants[rng.integers(len(consonants))] + endings[rng.integers(len(endings))]
        elif rng.random() < 0.3:
            word += consonants[rng.integers(len(consonants))]
        if word not in words:
            words.append(word)
    return tuple(words)


@cache
def _character_formants(char, is_vowel):
    """Fixed (F1, F2) in Hz of a character, from its sha256 (stable across processes)."""
    digest = hashlib.sha256(char.encode()).digest()
    if is_vowel:
        return 300.0 + 550.0 * digest[0] / 255, 850.0 + 1550.0 * digest[1] / 255
    return 200.0 + 300.0 * digest[0] / 255, 1200.0 + 1800.0 * digest[1] / 255


def synthesize_speech(text, duration, rng, f0, formant_scale, vowels, sample_rate=CV_SYNTHESIS_RATE):
    """A speech-like waveform of ``text``: one formant-shaped harmonic burst per character.

    Each character is a segment of a harmonic source (fundamental ``f0`` with a slow intonation
    contour) whose harmonics are weighted by two Gaussian formants fixed per character; consonant
    segments are shorter and carry a noise burst; spaces and punctuation are pauses. The speech
    fills ``duration`` less a random lead and tail of silence, in background noise (SNR 15-35 dB).

    Arguments
    ---------
    text : str
        The transcript.
    duration : float
        Length in seconds.
    rng : numpy.random.Generator
        Source of the clip's randomness.
    f0 : float
        The speaker's fundamental frequency (Hz).
    formant_scale : float
        The speaker's factor on every formant (vocal tract length).
    vowels : str
        The characters voiced as vowels (longer, no noise).
    sample_rate : int
        Samples per second of the result.

    Returns
    -------
    numpy.ndarray
        ``[round(duration * sample_rate)]`` float32 waveform in [-1, 1].

    Example
    -------
    >>> wav = synthesize_speech("Saluton al vi.", 2.0, np.random.default_rng(0), 120.0, 1.0, "aeiou")
    >>> wav.shape, bool(np.abs(wav).max() <= 1.0)
    ((32000,), True)
    """
    rate = CV_SYNTHESIS_RATE
    n = round(duration * rate)
    lead, tail = (min(int(s * rate), n // 5) for s in rng.uniform(0.08, 0.25, size=2))
    speech = n - lead - tail
    chars = text.lower()
    # 0: consonant, 1: vowel, 2: pause (space, punctuation).
    kinds = np.array([1 if c in vowels else 0 if c.isalpha() else 2 for c in chars])
    weights = np.array([0.6, 1.0, 0.5])[kinds] * rng.uniform(0.8, 1.2, size=len(chars))
    bounds = np.round(np.concatenate([[0.0], np.cumsum(weights)]) / weights.sum() * speech).astype(int)
    lengths = np.diff(bounds)
    segment = np.repeat(np.arange(len(chars)), lengths)
    position = np.arange(speech) - bounds[segment]

    t = np.arange(speech) / rate
    contour = 1.0 + 0.06 * np.sin(2 * np.pi * rng.uniform(0.3, 0.8) * t + rng.uniform(0, 2 * np.pi))
    contour -= 0.08 * t / max(t[-1], 1e-3)  # declination over the utterance
    cycles = np.cumsum(f0 * contour) / rate
    formants = np.array([_character_formants(c, k == 1) for c, k in zip(chars, kinds)]) * formant_scale
    harmonics = np.arange(1, int(3800 // (f0 * 1.07)) + 1)[:, None] * f0
    # Harmonic amplitudes per character ([K, chars]), looked up per sample below.
    amplitude = np.exp(-0.5 * ((harmonics - formants[:, 0]) / 90.0) ** 2)
    amplitude += 0.6 * np.exp(-0.5 * ((harmonics - formants[:, 1]) / 140.0) ** 2)
    amplitude += 0.08 / np.arange(1, len(harmonics) + 1)[:, None]
    amplitude *= np.array([0.5, 1.0, 0.0])[kinds]
    # One period of each character's waveform in a table ([chars, CV_TABLE_SIZE]), read at the
    # running phase with linear interpolation: one lookup per sample instead of one sine per
    # harmonic and sample.
    theta = 2 * np.pi * np.arange(CV_TABLE_SIZE) / CV_TABLE_SIZE
    # einsum, not a BLAS matmul: on matrices this small, BLAS threads cost more than the product.
    tables = np.einsum("kc,kt->ct", amplitude, np.sin(np.arange(1, len(harmonics) + 1)[:, None] * theta))
    position_in_table = (cycles - np.floor(cycles)) * CV_TABLE_SIZE
    below = position_in_table.astype(int)
    fraction = position_in_table - below
    voiced = (1 - fraction) * tables[segment, below] + fraction * tables[segment, (below + 1) % CV_TABLE_SIZE]
    noise = 0.5 * (kinds[segment] == 0) * rng.standard_normal(speech)
    # 8 ms ramps at every segment edge, so the spectral jumps between characters do not click.
    ramp = 0.008 * rate
    envelope = np.clip(np.minimum(position, lengths[segment] - position) / ramp, 0.0, 1.0)
    wav = np.zeros(n)
    wav[lead : lead + speech] = (voiced + noise) * envelope
    wav *= rng.uniform(0.3, 0.8) / max(np.abs(wav).max(), 1e-6)
    if sample_rate != rate:
        target = round(duration * sample_rate)
        wav = np.interp(np.arange(target) / sample_rate, np.arange(n) / rate, wav)
    noise_rms = np.sqrt(np.mean(wav**2)) / 10 ** (rng.uniform(15.0, 35.0) / 20)
    wav += noise_rms * rng.standard_normal(len(wav))
    return np.clip(wav, -1.0, 1.0).astype(np.float32)


def _cv_clip(task):
    path, seed, index, text, duration, f0, formant_scale, vowels, sample_rate = task
    rng = _clip_rng(seed, _CV_STREAM, index)
    wav = synthesize_speech(text, duration, rng, f0, formant_scale, vowels, sample_rate)
    sf.write(path, wav, sample_rate, format="MP3", subtype="MPEG_LAYER_III", bitrate_mode="CONSTANT")
    return len(wav)


def _check_mp3_support():
    if "MP3" not in sf.available_formats():
        raise RuntimeError(
            f"soundfile {sf.__version__} (libsndfile {sf.__libsndfile_version__}) cannot write MP3, "
            "which Common Voice clips are. Install a soundfile wheel that bundles libsndfile 1.1 or "
            "later (pip install 'soundfile>=0.12'), or a system libsndfile built with MPEG support."
        )


def _cv_speakers(rng, language, seed, split, count):
    speakers = []
    for i in range(count):
        female = rng.random() < 0.5
        speakers.append(
            {
                "client_id": hashlib.sha512(f"synthetic:{language}:{seed}:{split}:{i}".encode()).hexdigest(),
                "f0": rng.uniform(165.0, 255.0) if female else rng.uniform(85.0, 155.0),
                "formant_scale": (1.15 if female else 1.0) * rng.uniform(0.95, 1.05),
                "gender": ("female_feminine" if female else "male_masculine") if rng.random() < 0.7 else "",
                "age": CV_AGES[int(rng.integers(len(CV_AGES)))],
            }
        )
    return speakers


def _cv_sentence(rng, words, duration, min_seconds, max_seconds):
    """3 to 10 words, more for longer clips, so that the speaking rate stays plausible."""
    share = (
        (duration - min_seconds) / (max_seconds - min_seconds) if max_seconds > min_seconds else rng.random()
    )
    count = int(np.clip(round(3 + 7 * share) + int(rng.integers(-1, 2)), 3, 10))
    sentence = " ".join(words[int(i)] for i in rng.integers(len(words), size=count))
    return sentence[0].upper() + sentence[1:] + "."


def make_common_voice(
    root,
    language,
    n_train,
    n_dev,
    n_test,
    seed=0,
    min_seconds=2.0,
    max_seconds=6.0,
    sample_rate=48000,
    workers=None,
):
    """Write a synthetic Common Voice locale folder (layout in the module docstring).

    Arguments
    ---------
    root : str or pathlib.Path
        Output folder (the locale folder, e.g. ``.../eo``): new, empty, or written by an earlier
        call (see the module docstring).
    language : str
        Locale code, one of ``ALPHABETS`` (``ab``, ``ckb``, ``eo``, ``kab``, ``rw``).
    n_train, n_dev, n_test : int
        Clips per split (at least 1 each).
    seed : int
        Seed of the speakers, transcripts, durations and every clip.
    min_seconds, max_seconds : float
        Range of the clip durations (uniform). The recipe drops clips over ``max_duration``
        (10 s by default).
    sample_rate : int
        Rate of the MP3 files, one of ``CV_SAMPLE_RATES``. With the default 48000 the recipe
        resamples every clip to 16 kHz while loading, as it does with the real clips (which are
        not 16 kHz); 16000 is written about three times as fast.
    workers : int, optional
        Worker processes (default: the CPU count, at most 16); the output does not depend on it.

    Returns
    -------
    dict
        ``root``, ``clips`` (per split), ``speakers``, ``total_seconds``, ``seconds_taken`` and
        ``reused`` (True when an identical earlier output was left as it was).

    Example
    -------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     summary = make_common_voice(tmp, "eo", 2, 1, 1, min_seconds=1, max_seconds=1.5,
    ...                                 sample_rate=16000, workers=1)  # doctest: +ELLIPSIS
    Common Voice eo (synthetic) in ...: 2 train, 1 dev, 1 test clips ...
    >>> summary["clips"], summary["speakers"]
    ({'train': 2, 'dev': 1, 'test': 1}, 3)
    """
    _check_counts(n_train=n_train, n_dev=n_dev, n_test=n_test)
    if not 0 < min_seconds <= max_seconds:
        raise ValueError(
            f"Durations must satisfy 0 < min_seconds <= max_seconds; got {min_seconds} and {max_seconds}."
        )
    if sample_rate not in CV_SAMPLE_RATES:
        raise ValueError(f"sample_rate {sample_rate} cannot be stored in MP3; pass one of {CV_SAMPLE_RATES}.")
    _, vowel_units, _ = _alphabet(language)
    _check_mp3_support()
    workers = _default_workers() if workers is None else workers
    start = time.perf_counter()
    root = Path(root)
    counts = {"train": n_train, "dev": n_dev, "test": n_test}
    options = {
        **counts,
        "language": language,
        "seed": seed,
        "min_seconds": min_seconds,
        "max_seconds": max_seconds,
        "sample_rate": sample_rate,
    }
    previous = _claim_folder(root, "commonvoice", options)
    if previous is not None:
        return previous

    (root / "clips").mkdir()
    rng = np.random.default_rng([seed, _CV_STREAM])
    words = vocabulary(language)
    vowels = "".join(sorted(set("".join(vowel_units))))
    tasks, rows, speaker_count = [], {}, 0
    for split, n in counts.items():
        speakers = _cv_speakers(rng, language, seed, split, -(-n // CV_CLIPS_PER_SPEAKER))
        speaker_count += len(speakers)
        rows[split] = []
        for _ in range(n):
            index = len(tasks)
            speaker = speakers[int(rng.integers(len(speakers)))]
            duration = round(float(rng.uniform(min_seconds, max_seconds)), 3)
            sentence = _cv_sentence(rng, words, duration, min_seconds, max_seconds)
            clip = f"common_voice_{language}_{CV_FIRST_CLIP_ID + index}.mp3"
            tasks.append(
                (str(root / "clips" / clip), seed, index, sentence, duration, speaker["f0"],
                 speaker["formant_scale"], vowels, sample_rate)
            )  # fmt: skip
            row = dict.fromkeys(CV_HEADER, "")
            row.update(
                client_id=speaker["client_id"],
                path=clip,
                sentence_id=hashlib.sha256(sentence.encode()).hexdigest(),
                sentence=sentence,
                up_votes="2",
                down_votes="0",
                age=speaker["age"],
                gender=speaker["gender"],
                locale=language,
            )
            rows[split].append(row)
    samples = sum(_map(_cv_clip, tasks, workers))
    for split, split_rows in rows.items():
        with open(root / f"{split}.tsv", "w", encoding="utf-8", newline="\n") as f:
            f.write("\t".join(CV_HEADER) + "\n")
            f.writelines("\t".join(row[name] for name in CV_HEADER) + "\n" for row in split_rows)

    summary = {
        "root": str(root),
        "clips": counts,
        "speakers": speaker_count,
        "total_seconds": round(samples / sample_rate, 3),
        "seconds_taken": round(time.perf_counter() - start, 2),
        "reused": False,
    }
    _write_marker(root, "commonvoice", options, complete=True, summary=summary)
    print(
        f"Common Voice {language} (synthetic) in {root}: {n_train} train, {n_dev} dev, {n_test} test "
        f"clips ({sample_rate} Hz MP3) from {speaker_count} speakers, "
        f"{summary['total_seconds'] / 60:.1f} min of audio; {summary['seconds_taken']:.1f} s with "
        f"{workers} workers."
    )
    return summary


def main(argv=None):
    """Command line entry point (usage in the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    datasets = parser.add_subparsers(dest="dataset", required=True)
    gsc = datasets.add_parser("gsc", help="Speech Commands v0.02 layout")
    gsc.add_argument("--train", type=int, default=6000)
    gsc.add_argument("--valid", type=int, default=200)
    gsc.add_argument("--test", type=int, default=200)
    cv = datasets.add_parser("commonvoice", help="one locale folder of a Common Voice release")
    cv.add_argument("--language", default="eo", choices=sorted(ALPHABETS))
    cv.add_argument("--train", type=int, default=3000)
    cv.add_argument("--dev", type=int, default=48)
    cv.add_argument("--test", type=int, default=48)
    cv.add_argument("--min-seconds", type=float, default=2.0)
    cv.add_argument("--max-seconds", type=float, default=6.0)
    cv.add_argument("--sample-rate", type=int, default=48000)
    for sub in (gsc, cv):
        sub.add_argument("--out", required=True, type=Path, help="output folder (see the module docstring)")
        sub.add_argument("--seed", type=int, default=0)
        sub.add_argument("--workers", type=int, default=_default_workers())
    args = parser.parse_args(argv)
    if args.dataset == "gsc":
        return make_gsc(args.out, args.train, args.valid, args.test, seed=args.seed, workers=args.workers)
    return make_common_voice(
        args.out,
        args.language,
        args.train,
        args.dev,
        args.test,
        seed=args.seed,
        min_seconds=args.min_seconds,
        max_seconds=args.max_seconds,
        sample_rate=args.sample_rate,
        workers=args.workers,
    )


if __name__ == "__main__":
    main()
