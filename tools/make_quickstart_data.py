"""Rebuilds ``recipes/CommonVoice/quickstart_data/eo``: the small Esperanto set of the Quick start,
in the layout of a Common Voice release (``clips/*.mp3``, ``train.tsv``, ``dev.tsv``, ``test.tsv``).

The sentences are simple Esperanto sentences (subject, verb, adjective, object, sometimes an
adverbial) drawn from the small vocabulary below, written for this project (CC0). No sentence is
in two splits: dev and test are new combinations of the words the training set uses. The speech is
synthetic, from espeak-ng's Esperanto voice; its voice variants, rates and pitches stand in for
speakers, and **the test speakers are not in the training set**. Clips are 16 kHz mono MP3.

Usage (needs ``apt-get install espeak-ng``; the output is deterministic for a given espeak-ng and
libsndfile)::

    python tools/make_quickstart_data.py [--output recipes/CommonVoice/quickstart_data]

Authors
 * speechbrain-mambadapter contributors 2026
"""

import argparse
import hashlib
import io
import random
import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16000
LANGUAGE = "eo"
SUBJECTS = [
    "la hundo",
    "la kato",
    "la knabo",
    "la knabino",
    "mia frato",
    "nia instruisto",
    "la birdo",
    "via patrino",
]
VERBS = ["vidas", "havas", "ŝatas", "trovas", "aĉetas", "portas", "serĉas", "montras"]
ADJECTIVES = ["grandan", "malgrandan", "ruĝan", "bluan", "novan", "malnovan", "belan", "verdan"]
OBJECTS = ["domon", "pomon", "libron", "seĝon", "ŝipon", "floron", "ŝtonon", "tablon"]
ADVERBIALS = ["", "", "hodiaŭ", "en la ĝardeno", "ĉiun tagon"]
# (espeak-ng variant, rate in words/min, pitch 0-99) per speaker; test speakers are held out.
SPEAKERS = {
    "train": [
        ("m1", 160, 40),
        ("m2", 175, 50),
        ("m3", 185, 35),
        ("m4", 170, 55),
        ("f1", 165, 60),
        ("f2", 180, 70),
        ("f3", 175, 50),
        ("m7", 190, 45),
    ],
    "dev": [("m5", 170, 45), ("f4", 175, 65)],
    "test": [("m6", 165, 50), ("f5", 180, 60), ("klatt", 170, 50)],
}
SPLIT_SIZES = {"train": 160, "dev": 8, "test": 24}
SEED = 7
# The header of Common Voice v17 and later.
HEADER = [
    "client_id",
    "path",
    "sentence_id",
    "sentence",
    "sentence_domain",
    "up_votes",
    "down_votes",
    "age",
    "gender",
    "accents",
    "variant",
    "locale",
    "segment",
]


def sentences(count, rng):
    """``count`` distinct sentences, e.g. ``"La hundo vidas grandan domon hodiaŭ."``."""
    drawn = []
    seen = set()
    while len(drawn) < count:
        words = [rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(ADJECTIVES), rng.choice(OBJECTS)]
        adverbial = rng.choice(ADVERBIALS)
        text = " ".join(words + ([adverbial] if adverbial else []))
        if text not in seen:
            seen.add(text)
            drawn.append(text[0].upper() + text[1:] + ".")
    return drawn


def synthesise(text, speaker):
    """espeak-ng speech of ``text`` at :data:`SAMPLE_RATE`, with 0.2 s of silence on each side."""
    variant, rate, pitch = speaker
    wav = subprocess.run(
        ["espeak-ng", "-v", f"{LANGUAGE}+{variant}", "-s", str(rate), "-p", str(pitch), "--stdout", text],
        check=True,
        capture_output=True,
    ).stdout
    audio, rate_read = sf.read(io.BytesIO(wav), dtype="float32")
    if rate_read != 22050:
        raise RuntimeError(f"espeak-ng wrote {rate_read} Hz, expected 22050.")
    # Linear interpolation is enough for espeak's band-limited formant speech.
    n_out = int(len(audio) * SAMPLE_RATE / rate_read)
    audio = np.interp(np.arange(n_out) * rate_read / SAMPLE_RATE, np.arange(len(audio)), audio)
    pad = np.zeros(int(0.2 * SAMPLE_RATE))
    return np.concatenate([pad, audio, pad]).astype(np.float32)


def main():
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="recipes/CommonVoice/quickstart_data", type=Path)
    args = parser.parse_args()
    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is not installed; run `apt-get install espeak-ng` and try again.")
    folder = args.output / LANGUAGE
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "clips").mkdir(parents=True)
    texts = iter(sentences(sum(SPLIT_SIZES.values()), random.Random(SEED)))
    index = 0
    for split, size in SPLIT_SIZES.items():
        lines = ["\t".join(HEADER)]
        for i in range(size):
            sentence = next(texts)
            speaker = SPEAKERS[split][i % len(SPEAKERS[split])]
            clip = f"common_voice_{LANGUAGE}_{41000000 + index}.mp3"
            index += 1
            sf.write(
                folder / "clips" / clip,
                synthesise(sentence, speaker),
                SAMPLE_RATE,
                format="MP3",
                subtype="MPEG_LAYER_III",
                bitrate_mode="CONSTANT",
                compression_level=0.9,
            )
            fields = {
                "client_id": hashlib.sha256(f"espeak-{LANGUAGE}-{speaker[0]}".encode()).hexdigest(),
                "path": clip,
                "sentence_id": hashlib.sha256(sentence.encode()).hexdigest(),
                "sentence": sentence,
                "sentence_domain": "",
                "up_votes": "2",
                "down_votes": "0",
                "age": "",
                "gender": "",
                "accents": "",
                "variant": "",
                "locale": LANGUAGE,
                "segment": "",
            }
            lines.append("\t".join(fields[name] for name in HEADER))
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
