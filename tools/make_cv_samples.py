"""Rebuilds ``tests/samples/CommonVoice/{eo,ab}``: a tiny Common Voice locale folder per
language in the real release layout (``clips/*.mp3``, ``train.tsv``, ``dev.tsv``, ``test.tsv``).

Sentences are real text in each language, written by the translators of free software (the
message catalogues Debian installs under ``/usr/share/locale/<lang>/LC_MESSAGES``); they are
pinned below with the package, catalogue and English msgid they come from. The speech is
synthetic, from espeak-ng: its Esperanto voice for ``eo``; for ``ab`` (no Abkhaz voice) the
Russian voice reads the sentence with the Abkhaz-only letters replaced by the nearest Russian
ones (the tsv keeps the real Abkhaz text). Voice variants, rates and pitches stand in for
speakers. Clips are written as 22.05 kHz mono MP3 (Common Voice uses 32 or 48 kHz; anything
but 16 kHz exercises the recipe's resampling).

Usage (needs ``apt-get install espeak-ng``; the output is deterministic for a given
espeak-ng and libsndfile)::

    python tools/make_cv_samples.py [--output tests/samples/CommonVoice]

Authors
 * speechbrain-mambadapter contributors 2026
"""

import argparse
import hashlib
import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 22050
# (catalogue, English msgid, translation) as shipped by Debian 12; Debian package of each catalogue:
CATALOGUE_PACKAGES = {
    "at-spi2-core": "at-spi2-common 2.46.0-5",
    "gdk-pixbuf": "libgdk-pixbuf2.0-common 2.42.10+dfsg-1+deb12u2",
    "glib20": "libglib2.0-data 2.74.6-2+deb12u8",
    "gsettings-desktop-schemas": "gsettings-desktop-schemas 43.0-1",
    "Linux-PAM": "libpam-runtime 1.5.2-6+deb12u1",
    "gstreamer-1.0": "libgstreamer1.0-0 1.22.0-2+deb12u1",
    "diffutils": "diffutils 1:3.8-4",
    "gtk20": "libgtk2.0-common 2.24.33-2+deb12u1",
    "PackageKit": "packagekit 1.2.6-5+deb12u1",
    "appstream": "appstream 0.16.1-2",
    "xz": "xz-utils 5.4.1-1",
}
SENTENCES = {
    "eo": [
        ("Linux-PAM", "You have old mail.", "Vi havas malnovan poŝton."),
        ("Linux-PAM", "You must choose a shorter password.", "Vi devas elekti pli mallongan pasvorton."),
        ("glib20", "The password entered is incorrect.", "La pasvorto enigita estas ne korekta."),
        ("gstreamer-1.0", "Stream contains no data.", "La fluo enhavas neniun datumaron."),
        (
            "gstreamer-1.0",
            "Could not open resource for writing.",
            "Ne eblis malfermi la risurcon por skribado.",
        ),
        ("gstreamer-1.0", "The stream is in the wrong format.", "La fluo estas laŭ malĝusta formo."),
        ("gstreamer-1.0", "Not authorized to access resource.", "Ne estas permesita atingi risurcon."),
        ("gstreamer-1.0", "Internal data flow error.", "Eraro pri interna datumara fluo."),
        ("diffutils", "Compare two files byte by byte.", "Kompari du dosierojn bajton post bajto."),
        ("diffutils", "Compare three files line by line.", "Kompari tri dosierojn linion post linio."),
        ("gtk20", "Amount of blue light in the color.", "Kvanto de blua lumo en la koloro."),
        ("gtk20", "Brightness of the color.", "Brileco de la koloro."),
        ("PackageKit", "Loading list of packages.", "Ŝargante liston de pakoj."),
        (
            "PackageKit",
            "There are no updates available at this time.",
            "Neniu ĝisdatigo nun estas disponebla.",
        ),
        ("appstream", "Show the program version.", "Montri la version de la programo."),
        ("appstream", "You need to specify a command.", "Vi devas specifi komandon."),  # codespell:ignore
        ("appstream", "This tag is not translatable.", "Ĉi tiu etikedo ne estas tradukebla."),
        ("appstream", "Also show pedantic hints.", "Ankaŭ montri pedantajn sugestojn."),
        (
            "gdk-pixbuf",
            "GIF image loader cannot understand this image.",
            "GIF-bilda ŝargilo ne povas kompreni ĉi tiun bildon.",
        ),
        (
            "xz",
            "Using a preset in raw mode is discouraged.",
            "Uzi aprioraĵon en kruda reĝimo estas malkonsilinda.",
        ),
        (
            "appstream",
            "Run failed, some data was ignored.",
            "Kompono malsukcesis; kelkaj datenoj estis ignoritaj.",
        ),
    ],
    "ab": [
        ("at-spi2-core", "The application no longer exists", "Аԥшьы уаҳа ыҟаӡам"),
        (
            "at-spi2-core",
            "Attempted synchronous call where prohibited",
            "Синхронтәу асра аҟаҵара азин ыҟаӡам",
        ),
        (
            "gdk-pixbuf",
            "Whether the animation should loop when it reaches the end",
            "Иалагароума анимациа ханатә ианынҵәалак ашьҭахь",
        ),
        ("glib20", "Activate an action", "Аусура активациа азура"),
        ("glib20", "Anonymous access denied", "Ахьӡыдоу аҭалара мап ацәкуп"),
        ("glib20", "Help Options:", "Аилыркаа ахышәарақәа :"),
        ("glib20", "Invalid hostname", "Акомпиутер ахьӡ иашаӡам"),
        ("glib20", "Invalid object, not initialized", "Иақәнагам зҭагылазаашьа арбам аобиект"),
        ("glib20", "Invalid seek request", "Аиасразы иақәнагам адҵаалара"),
        ("glib20", "Print version information and exit", "Аверисиа иазкны аинформациа аарԥшны аҭыҵра"),
        ("glib20", "Stream is already closed", "Аишьҭаца шьҭа иаркуп"),
        ("glib20", "Target file is a directory", "Ахықәкыратә фаил хьӡынҵаӡам"),
        ("glib20", "hexadecimal digit expected", "Иазыԥшуп жәаф хыԥхьаӡара змоу аԥхьаӡац"),
        ("glib20", "illegal symbolic reference", "Иақәнагам асимволтә зхьарԥш"),
        ("glib20", "unknown escape sequence", "Еилкаам икодрку аишьҭагылазаара"),
        ("gsettings-desktop-schemas", "Activate the window menu", "Активациа азура аԥенџьыр амениу"),
        ("gsettings-desktop-schemas", "Enable Visual Bell", "Лаԥшылатәи асигнал аҿакра"),
        ("gsettings-desktop-schemas", "Enable sticky keys", "Иҷабу арыдқәа рҿакра"),
        ("gsettings-desktop-schemas", "Secondary click enabled", "Аҩынтәтәи ақәыӷәӷәара аҿакуп"),
        (
            "gsettings-desktop-schemas",
            "Whether the screen magnifier is turned on.",
            "Иаҿакума аекрантә рдуга.",
        ),
        ("glib20", "Connection Endpoint Options:", "Аимадара аҵыхәтәантәи аҭыҧ ахышәарақәа:"),
    ],
}
# Rows per split: train, dev, test (the sentences are taken in order).
SPLIT_SIZES = {"train": 9, "dev": 6, "test": 6}
VOICES = {"eo": "eo", "ab": "ru"}
# espeak variants, rate (words/min) and pitch (0-99) standing in for four speakers.
SPEAKERS = [("m1", 175, 40), ("f2", 185, 60), ("m3", 165, 50), ("f4", 180, 70)]
# Abkhaz-only letters read by the Russian voice as their nearest Russian letter (synthesis only).
AB_TO_RU = str.maketrans(
    "ԥҧҭҵҷҿҽҟқҳӷҕӡҩәџ",
    "пптцчччккхггзвуж",
)
# Header variants of real releases: eo as v17 and later, ab as v13 to v16.
HEADERS = {
    "eo": [
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
    ],
    "ab": [
        "client_id",
        "path",
        "sentence",
        "up_votes",
        "down_votes",
        "age",
        "gender",
        "accents",
        "variant",
        "locale",
        "segment",
    ],
}


def synthesise(text: str, language: str, speaker: int) -> np.ndarray:
    """espeak-ng speech of ``text`` at :data:`SAMPLE_RATE`, with 0.2 s of silence on each side."""
    variant, rate, pitch = SPEAKERS[speaker]
    spoken = text.lower().translate(AB_TO_RU) if language == "ab" else text
    voice = f"{VOICES[language]}+{variant}"
    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(rate), "-p", str(pitch), "--stdout", spoken],
        check=True,
        capture_output=True,
    ).stdout
    audio, rate_read = sf.read(io.BytesIO(wav), dtype="float32")
    if rate_read != SAMPLE_RATE:
        raise RuntimeError(f"espeak-ng wrote {rate_read} Hz, expected {SAMPLE_RATE}.")
    pad = np.zeros(int(0.2 * SAMPLE_RATE), dtype=np.float32)
    return np.concatenate([pad, audio, pad])


def make_language(output: Path, language: str) -> None:
    """Writes ``output/<language>`` (clips and the three tsv files)."""
    folder = output / language
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "clips").mkdir(parents=True)
    sentences = iter(enumerate(SENTENCES[language]))
    for split, size in SPLIT_SIZES.items():
        lines = ["\t".join(HEADERS[language])]
        for _ in range(size):
            index, (_, _, sentence) = next(sentences)
            speaker = index % len(SPEAKERS)
            clip = f"common_voice_{language}_{40000000 + index}.mp3"
            audio = synthesise(sentence, language, speaker)
            sf.write(
                folder / "clips" / clip,
                audio,
                SAMPLE_RATE,
                format="MP3",
                subtype="MPEG_LAYER_III",
                bitrate_mode="CONSTANT",
                compression_level=0.9,
            )
            client = hashlib.sha256(f"espeak-{language}-{SPEAKERS[speaker][0]}".encode()).hexdigest()
            fields = {
                "client_id": client,
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
                "locale": language,
                "segment": "",
            }
            lines.append("\t".join(fields[name] for name in HEADERS[language]))
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description="Rebuild the Common Voice test samples.")
    parser.add_argument("--output", default="tests/samples/CommonVoice", type=Path)
    args = parser.parse_args()
    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is not installed; run `apt-get install espeak-ng` and try again.")
    for language in SENTENCES:
        make_language(args.output, language)


if __name__ == "__main__":
    main()
