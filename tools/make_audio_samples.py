"""Rebuild the tiny audio-classification sample sets of ``tests/samples/`` from Debian packages.

Writes ``ESC50/``, ``UrbanSound8k/``, ``GSC/`` and ``FSC/`` in the official on-disk layouts of
ESC-50, UrbanSound8K, Speech Commands v2 and Fluent Speech Commands, plus ``README.md`` listing
where every clip comes from. The audio is real (Sonic Pi's CC0 samples, Asterisk's CC-BY-SA
English prompts) or synthetic speech (espeak-ng); the class names are the datasets' own, the
sounds are stand-ins chosen to be roughly alike (bells for ``church_bells``, beeps for
``car_horn``), there to exercise the recipes, not to be learned from. Clips are short to keep
all four sets under 1.5 MB in git. Output is deterministic, except the timestamp libsndfile
puts in the PEAK chunk of the one 32-bit float wav.

Usage (Debian/Ubuntu)::

    apt-get install sonic-pi-samples asterisk-core-sounds-en-wav espeak-ng
    python tools/make_audio_samples.py            # rewrites tests/samples/{ESC50,...}

Authors
 * speechbrain-mambadapter contributors 2026
"""

import argparse
import csv
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import uuid

import numpy as np
import soundfile as sf
import torch
import torchaudio

SONIC_PI = "/usr/share/sonic-pi/samples"
SONIC_PI_COPYRIGHT = "/usr/share/doc/sonic-pi-samples/copyright"
ASTERISK_DIGITS = "/usr/share/asterisk/sounds/en_US_f_Allison/digits"
APT = "apt-get install sonic-pi-samples asterisk-core-sounds-en-wav espeak-ng"

# ESC-50: category -> (target, one Sonic Pi sample per fold 1..5). ESC-10 membership as upstream.
ESC50_CLASSES = {
    "church_bells": (46, ["perc_bell", "elec_bell", "elec_chime", "elec_bong", "elec_triangle"]),
    "clock_tick": (38, ["elec_wood", "elec_pop", "elec_tick", "elec_blip", "elec_twip"]),
    "door_wood_knock": (
        30,
        ["drum_tom_hi_hard", "drum_tom_mid_hard", "drum_tom_lo_hard", "drum_tom_hi_soft", "drum_tom_lo_soft"],
    ),
}
ESC10 = {"dog", "rooster", "rain", "sea_waves", "crackling_fire", "crying_baby", "sneezing", "clock_tick"}
ESC50_SECONDS = 0.2

# UrbanSound8K: class -> (classID, one Sonic Pi sample per fold 1..10).
US8K_CLASSES = {
    "car_horn": (
        1,
        [
            "elec_beep",
            "elec_blip2",
            "elec_blup",
            "elec_ping",
            "elec_plip",
            "elec_twang",
            "elec_flip",
            "elec_fuzz_tom",
            "elec_hollow_kick",
            "elec_soft_kick",
        ],
    ),
    "street_music": (
        9,
        [
            "loop_amen",
            "loop_amen_full",
            "loop_breakbeat",
            "loop_compus",
            "loop_industrial",
            "loop_mika",
            "loop_safari",
            "loop_tabla",
            "guit_e_fifths",
            "guit_em9",
        ],
    ),
}
# Second slices of one recording (same fsID, same fold), as UrbanSound8K has many.
US8K_EXTRA_SLICES = ["loop_compus", "loop_safari"]
US8K_SECONDS = 0.3
# UrbanSound8K mixes rates, bit depths and channel counts; these cover the common ones.
US8K_FORMATS = [
    (8000, 1, "PCM_16"),
    (11025, 1, "PCM_U8"),
    (16000, 1, "PCM_16"),
    (22050, 1, "PCM_16"),
    (11025, 2, "PCM_16"),
]
US8K_SPECIAL_FORMATS = {
    "loop_amen": (44100, 2, "PCM_16"),
    "elec_beep": (48000, 1, "PCM_24"),
    "loop_mika": (32000, 1, "FLOAT"),
}

# Speech Commands v2: word -> Asterisk digit prompt; split -> speaker (a voice).
GSC_WORDS = {"one": "1", "two": "2", "zero": "0"}
GSC_SPEAKERS = {"train": "asterisk:Allison", "valid": "espeak:en-us+f2", "test": "espeak:en-gb-scotland+m4"}

# Fluent Speech Commands: (transcription, action, object, location); split -> espeak voice.
FSC_COMMANDS = [
    ("Turn on the lights", "activate", "lights", "none"),
    ("Kitchen lights off", "deactivate", "lights", "kitchen"),
    ("Switch the language", "change language", "none", "none"),
]
FSC_SPEAKERS = {"train": "en-us+m3", "valid": "en-gb+f3", "test": "en-029+m2"}


def resample(wav, orig, new):
    """``[T, C]`` float32 numpy waveform from ``orig`` to ``new`` Hz."""
    if orig == new:
        return wav
    return torchaudio.functional.resample(torch.from_numpy(wav.T.copy()), orig, new).numpy().T


def fit(wav, n):
    """Crop or zero-pad ``[T, C]`` to exactly ``n`` frames (ESC-50 pads short sounds with silence)."""
    if wav.shape[0] >= n:
        return wav[:n]
    return np.concatenate([wav, np.zeros((n - wav.shape[0], wav.shape[1]), dtype=wav.dtype)])


def center(wav, n):
    """Place the speech of ``[T, 1]`` in the middle of ``n`` frames, as Speech Commands clips are."""
    loud = np.flatnonzero(np.abs(wav[:, 0]) > 0.02 * np.abs(wav).max())
    wav = wav[loud[0] : loud[-1] + 1] if loud.size else wav
    wav = wav[:n]
    out = np.zeros((n, 1), dtype=np.float32)
    start = (n - wav.shape[0]) // 2
    out[start : start + wav.shape[0]] = wav
    return out


def trim(wav, margin):
    """Drop leading and trailing near-silence of ``[T, 1]``, keeping ``margin`` frames each side."""
    loud = np.flatnonzero(np.abs(wav[:, 0]) > 0.02 * np.abs(wav).max())
    return wav[max(loud[0] - margin, 0) : loud[-1] + 1 + margin]


def sonic_pi(name, rate, channels, seconds, offset=0.0):
    """``[T, channels]`` excerpt of a Sonic Pi sample at ``rate``."""
    wav, sr = sf.read(os.path.join(SONIC_PI, f"{name}.flac"), dtype="float32", always_2d=True)
    start = int(round(offset * sr))
    wav = wav[start : start + int(round(seconds * sr))]
    if channels == 1:
        wav = wav.mean(axis=1, keepdims=True)
    elif wav.shape[1] == 1:
        wav = np.repeat(wav, channels, axis=1)
    return resample(wav, sr, rate).astype(np.float32)


def espeak(text, voice, rate, speed=170):
    """``[T, 1]`` espeak-ng rendering of ``text`` at ``rate``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tts.wav")
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", path, text], check=True)
        wav, sr = sf.read(path, dtype="float32", always_2d=True)
    return resample(wav, sr, rate).astype(np.float32)


def sonic_pi_sources():
    """Sample name -> (author, freesound id, freesound url), for the samples licensed CC0."""
    sources = {}
    with open(SONIC_PI_COPYRIGHT, encoding="utf-8") as f:
        for para in f.read().split("\n\n"):
            name = re.search(r"^Files: etc/samples/(\S+)\.flac$", para, re.M)
            lic = re.search(r"^License: (\S+)", para, re.M)
            url = re.search(r"^Source: \s*(\S+/sounds/(\d+)/?)", para, re.M)
            author = re.search(r"^Copyright: \d+ (.+)$", para, re.M)
            if name and lic and lic.group(1) == "CC0" and url:
                sources[name.group(1)] = (author.group(1), url.group(2), url.group(1))
    return sources


def speaker_hex(name):
    """An 8-hex-digit speaker id, like Speech Commands' hashed user ids."""
    return hashlib.sha1(name.encode()).hexdigest()[:8]


def speaker_fsc(name):
    """A 16-character alphanumeric speaker id, like Fluent Speech Commands' ones."""
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    n = int(hashlib.sha1(name.encode()).hexdigest(), 16)
    return "".join(alphabet[(n // 62**i) % 62] for i in range(16))


def write(path, wav, rate, subtype="PCM_16"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, wav, rate, subtype=subtype, format="WAV")


def write_csv(path, header, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def make_esc50(root, sources, provenance):
    rows = []
    for category, (target, samples) in ESC50_CLASSES.items():
        for fold, name in enumerate(samples, start=1):
            _, fs_id, _ = sources[name]
            filename = f"{fold}-{fs_id}-A-{target}.wav"
            n = int(ESC50_SECONDS * 44100)
            write(
                os.path.join(root, "audio", filename), fit(sonic_pi(name, 44100, 1, ESC50_SECONDS), n), 44100
            )
            rows.append([filename, fold, target, category, category in ESC10, fs_id, "A"])
            provenance.append(("ESC50", f"audio/{filename}", "sonic-pi-samples", f"{name}.flac", name))
    write_csv(
        os.path.join(root, "meta", "esc50.csv"),
        ["filename", "fold", "target", "category", "esc10", "src_file", "take"],
        sorted(rows),
    )


def make_us8k(root, sources, provenance):
    rows, k = [], 0
    for label, (class_id, samples) in US8K_CLASSES.items():
        for fold, name in enumerate(samples, start=1):
            _, fs_id, _ = sources[name]
            for slice_id in range(2 if name in US8K_EXTRA_SLICES else 1):
                rate, channels, subtype = US8K_SPECIAL_FORMATS.get(name, US8K_FORMATS[k % len(US8K_FORMATS)])
                k += 1
                offset = slice_id * US8K_SECONDS
                wav = sonic_pi(name, rate, channels, US8K_SECONDS, offset)
                filename = f"{fs_id}-{class_id}-0-{slice_id}.wav"
                write(os.path.join(root, "audio", f"fold{fold}", filename), wav, rate, subtype)
                end = offset + wav.shape[0] / rate
                rows.append([filename, fs_id, f"{offset:.3f}", f"{end:.3f}", 1, fold, class_id, label])
                provenance.append(
                    ("UrbanSound8k", f"audio/fold{fold}/{filename}", "sonic-pi-samples", f"{name}.flac", name)
                )
    header = ["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"]
    write_csv(os.path.join(root, "metadata", "UrbanSound8K.csv"), header, sorted(rows))


def make_gsc(root, provenance):
    lists = {"valid": [], "test": []}
    for word, digit in GSC_WORDS.items():
        for split, speaker in GSC_SPEAKERS.items():
            kind, voice = speaker.split(":")
            if kind == "asterisk":
                wav, sr = sf.read(
                    os.path.join(ASTERISK_DIGITS, f"{digit}.wav"), dtype="float32", always_2d=True
                )
                wav = resample(wav, sr, 16000)
                origin = ("asterisk-core-sounds-en-wav", f"en_US_f_Allison/digits/{digit}.wav")
            else:
                wav = espeak(word, voice, 16000)
                origin = ("espeak-ng", f'espeak-ng -v {voice} -s 170 "{word}"')
            rel = f"{word}/{speaker_hex(speaker)}_nohash_0.wav"
            write(os.path.join(root, rel), center(wav, 16000), 16000)
            if split in lists:
                lists[split].append(rel)
            provenance.append(("GSC", rel, *origin, word))
    for split, name in (("valid", "validation_list.txt"), ("test", "testing_list.txt")):
        with open(os.path.join(root, name), "w", encoding="utf-8") as f:
            f.writelines(f"{rel}\n" for rel in sorted(lists[split]))
    noise = np.random.default_rng(0).normal(0.0, 0.05, size=(8000, 1)).astype(np.float32)
    write(os.path.join(root, "_background_noise_", "white_noise.wav"), noise, 16000)
    provenance.append(
        ("GSC", "_background_noise_/white_noise.wav", "generated", "numpy normal(0, 0.05), seed 0", "-")
    )


def make_fsc(root, provenance):
    for split, voice in FSC_SPEAKERS.items():
        speaker = speaker_fsc(voice)
        rows = []
        for i, (text, action, obj, location) in enumerate(FSC_COMMANDS):
            utterance = uuid.uuid5(uuid.NAMESPACE_URL, f"{voice}/{text}")
            rel = f"wavs/speakers/{speaker}/{utterance}.wav"
            write(os.path.join(root, rel), trim(espeak(text, voice, 16000, speed=200), 800), 16000)
            rows.append([i, rel, speaker, text, action, obj, location])
            provenance.append(("FSC", rel, "espeak-ng", f'espeak-ng -v {voice} -s 200 "{text}"', text))
        header = ["", "path", "speakerId", "transcription", "action", "object", "location"]
        write_csv(os.path.join(root, "data", f"{split}_data.csv"), header, rows)


LICENCES = {
    "sonic-pi-samples": "CC0-1.0 (per-file entry of /usr/share/doc/sonic-pi-samples/copyright)",
    "asterisk-core-sounds-en-wav": (
        "CC-BY-SA-3.0, recorded by Allison Smith (/usr/share/doc/asterisk-core-sounds-en-wav/copyright); "
        "the derived clips are CC-BY-SA-3.0 too"
    ),
    "espeak-ng": "synthetic speech generated with espeak-ng (no recording involved)",
    "generated": "generated by this script (no recording involved)",
}


def write_readme(out, provenance, sources):
    lines = [
        "# Audio-classification sample sets",
        "",
        "Tiny datasets in the official on-disk layouts of ESC-50 (`ESC50/`), UrbanSound8K",
        "(`UrbanSound8k/`), Speech Commands v2 (`GSC/`) and Fluent Speech Commands (`FSC/`), for the",
        "data-preparation and recipe tests (`CommonVoice/README.md` describes the Common Voice samples).",
        "They are generated from Debian packages by `tools/make_audio_samples.py`:",
        "",
        f"    {APT}",
        "    python tools/make_audio_samples.py",
        "",
        "Class names are the datasets' own; the sounds are stand-ins roughly alike (bells for",
        "`church_bells`, beeps for `car_horn`, spoken digits for the digit words). Clips are short to keep",
        "the four sets under 1.5 MB: ESC-50 0.2 s at 44.1 kHz mono (the official clips are 5 s);",
        "UrbanSound8K <= 0.3 s at mixed rates, bit depths and channel counts, incl. a 44.1 kHz stereo one;",
        "Speech Commands 1 s at 16 kHz; FSC ~1 s at 16 kHz. Asterisk's prompts (8 kHz) and espeak-ng's",
        "output (22.05 kHz) are resampled to 16 kHz, the datasets' rate; the Sonic Pi samples (44.1 kHz) to",
        "each clip's rate. Speech is trimmed of silence and, for Speech Commands, centred in 1 s.",
        "",
        "Splits: ESC-50 has one clip per class in each of folds 1-5; UrbanSound8K one clip per class in",
        "each of folds 1-10, plus second slices of two recordings (same fsID, same fold); Speech Commands",
        "and FSC have one speaker per split and every class in every split. Speech Commands has 3 of the",
        "35 words and a `_background_noise_/` folder; FSC has 3 of the 31 intents.",
        "",
        "## Licences",
        "",
    ]
    lines += [f"- `{package}`: {text}" for package, text in LICENCES.items()]
    lines += ["", "## Every file", "", "| file | package | original | what |", "|---|---|---|---|"]
    for dataset, rel, package, original, what in provenance:
        if package == "sonic-pi-samples":
            author, _, url = sources[what]
            what = f"{author}, {url}"
        lines.append(f"| `{dataset}/{rel}` | {package} | `{original}` | {what} |")
    with open(os.path.join(out, "README.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "samples"))
    args = parser.parse_args()
    missing = [p for p in (SONIC_PI, ASTERISK_DIGITS) if not os.path.isdir(p)]
    if missing or shutil.which("espeak-ng") is None:
        raise SystemExit(f"Missing {missing or 'espeak-ng'}; install the sources with: {APT}")
    sources = sonic_pi_sources()
    provenance = []
    for name, make in (("ESC50", make_esc50), ("UrbanSound8k", make_us8k)):
        shutil.rmtree(os.path.join(args.out, name), ignore_errors=True)
        make(os.path.join(args.out, name), sources, provenance)
    for name, make in (("GSC", make_gsc), ("FSC", make_fsc)):
        shutil.rmtree(os.path.join(args.out, name), ignore_errors=True)
        make(os.path.join(args.out, name), provenance)
    write_readme(args.out, provenance, sources)


if __name__ == "__main__":
    main()
