"""Real Czech speech in the Common Voice layout, from Debian's Fish Fillets NG voice packages.

Debian's ``fillets-ng-data-cs`` holds the game's Czech dialogue recordings (``sound/<level>/cs/
<dialogue id>.ogg``: two main voices, the small and the big fish, plus a few characters) and
``fillets-ng-data`` holds their texts (``script/<level>/dialogs_cs.lua``: ``dialogId("<id>",
"<speaker font>", "<English>")`` followed by ``dialogStr("<Czech>")``). Both are GPL-2 (the game's
licence). This tool pairs each recording with its text and writes a Common Voice locale folder
that ``recipes/CommonVoice`` reads (``--language=cs --data_folder=<out>``)::

    python tools/make_czech_cv.py --out data/fillets_cs/cs        # apt-get download + dpkg-deb -x
    python tools/make_czech_cv.py --root <unpacked usr/share/games/fillets-ng> --out <dir>

Output: ``clips/*.ogg`` (the recordings as they are, no re-encoding; the recipe decodes through
soundfile), ``train.tsv``, ``dev.tsv``, ``test.tsv`` (Common Voice 17 columns; ``client_id`` is a
hash of the speaker, ``sentence_id`` of the sentence) and ``README.txt`` (source, licence, counts).

The split is deterministic and holds sentences out: clips are grouped by their normalised sentence
(the recipe's ``normalize_text``, as WER is scored), and each group goes to test, dev or train by
``sha256("fillets-cs:" + sentence)`` (10 %, 10 %, 80 % of the sentences), so no test or dev
sentence is ever heard in training. The voices are not held out: both main voices are in every
split (there are only two).

Authors
 * speechbrain-mambadapter contributors 2026
"""

import argparse
import csv
import hashlib
import importlib.util
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fillets-ng-data-cs", "fillets-ng-data")
GAME_FOLDER = Path("usr") / "share" / "games" / "fillets-ng"
SPLITS = ("train", "dev", "test")
DEV_SHARE = 0.1
TEST_SHARE = 0.1
COLUMNS = [
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
_STRING = r'"((?:[^"\\]|\\.)*)"'
DIALOG = re.compile(
    rf"dialogId\(\s*{_STRING}\s*,\s*{_STRING}\s*,\s*{_STRING}\s*\)\s*dialogStr\(\s*{_STRING}\s*\)"
)
_ESCAPES = {"n": " ", "t": " ", '"': '"', "\\": "\\", "'": "'"}


def _unescape(text):
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), text)


def read_dialogs(path):
    """The dialogues of one ``dialogs_cs.lua``: ``{id: (speaker font, English, Czech)}``.

    Example
    -------
    >>> lua = getfixture("tmp_path") / "dialogs_cs.lua"
    >>> _ = lua.write_text('dialogId("m-ahoj", "font_small", "Hi.")\\ndialogStr("Ahoj, \\\\"rybko\\\\".")\\n')
    >>> read_dialogs(lua)
    {'m-ahoj': ('font_small', 'Hi.', 'Ahoj, "rybko".')}
    """
    text = Path(path).read_text(encoding="utf-8")
    return {
        _unescape(m.group(1)): (_unescape(m.group(2)), _unescape(m.group(3)), _unescape(m.group(4)).strip())
        for m in DIALOG.finditer(text)
    }


def find_clips(game_root):
    """Every Czech recording that has a text: ``[{level, id, audio, speaker, sentence, english}]``.

    Arguments
    ---------
    game_root : str or pathlib.Path
        ``usr/share/games/fillets-ng`` of the unpacked packages (``sound/`` and ``script/``).

    Returns
    -------
    list of dict
        Sorted by level and id; recordings without a text are left out.
    """
    game_root = Path(game_root)
    clips = []
    for lua in sorted(game_root.glob("script/*/dialogs_cs.lua")):
        level = lua.parent.name
        for dialog_id, (speaker, english, sentence) in sorted(read_dialogs(lua).items()):
            audio = game_root / "sound" / level / "cs" / f"{dialog_id}.ogg"
            if audio.is_file() and sentence:
                clips.append(
                    {
                        "level": level,
                        "id": dialog_id,
                        "audio": audio,
                        "speaker": speaker or "unnamed",
                        "sentence": sentence,
                        "english": english,
                    }
                )
    if not clips:
        raise FileNotFoundError(
            f"No Czech recording with a text under {game_root}: expected sound/<level>/cs/*.ogg "
            "(package fillets-ng-data-cs) and script/<level>/dialogs_cs.lua (fillets-ng-data) there. "
            "Run without --root to download and unpack both packages."
        )
    return clips


def split_of(normalised_sentence):
    """``"train"``, ``"dev"`` or ``"test"`` for a (normalised) sentence, by its hash.

    Example
    -------
    >>> [split_of(s) for s in ("ahoj", "dobrý den", "ahoj")]
    ['train', 'train', 'train']
    >>> Counter(split_of(str(i)) for i in range(1000))["test"]  # about 10 %
    98
    """
    digest = hashlib.sha256(f"fillets-cs:{normalised_sentence}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    return "test" if u < TEST_SHARE else "dev" if u < TEST_SHARE + DEV_SHARE else "train"


def _normalize_text():
    """The Common Voice recipe's ``normalize_text`` (the recipe's folder is not a package)."""
    path = ROOT / "recipes" / "CommonVoice" / "common_voice_prepare.py"
    spec = importlib.util.spec_from_file_location("common_voice_prepare", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.normalize_text


def _sha(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_common_voice(clips, out):
    """Write ``clips`` (from :func:`find_clips`) as a Common Voice locale folder; returns the counts.

    Returns
    -------
    dict
        ``{split: {"clips": n, "sentences": n, "speakers": {speaker: n}}}``.
    """
    normalize = _normalize_text()
    out = Path(out)
    (out / "clips").mkdir(parents=True, exist_ok=True)
    rows = {split: [] for split in SPLITS}
    for clip in clips:
        key = normalize(clip["sentence"], "cs")
        if not key:
            continue
        name = f"fillets_cs_{clip['level']}_{clip['id']}.ogg"
        shutil.copyfile(clip["audio"], out / "clips" / name)
        rows[split_of(key)].append(
            {
                "client_id": _sha(clip["speaker"]),
                "path": name,
                "sentence_id": _sha(clip["sentence"]),
                "sentence": clip["sentence"],
                "up_votes": 2,
                "down_votes": 0,
                "locale": "cs",
                "speaker": clip["speaker"],
                "key": key,
            }
        )
    counts = {}
    for split, split_rows in rows.items():
        with open(out / f"{split}.tsv", "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, COLUMNS, delimiter="\t", extrasaction="ignore", lineterminator="\n")
            writer.writeheader()
            writer.writerows(split_rows)
        counts[split] = {
            "clips": len(split_rows),
            "sentences": len({r["key"] for r in split_rows}),
            "speakers": dict(Counter(r["speaker"] for r in split_rows).most_common()),
        }
    lines = [
        "Czech speech in the Common Voice layout, from Debian's fillets-ng-data-cs (recordings) and",
        "fillets-ng-data (texts: script/<level>/dialogs_cs.lua), Fish Fillets NG, licence GPL-2.",
        "Written by tools/make_czech_cv.py of speechbrain-mambadapter; the split holds sentences out",
        "(by a hash of the normalised sentence). client_id is sha256 of the speaker's font name.",
        "",
    ]
    for split, c in counts.items():
        lines.append(f"{split}: {c['clips']} clips, {c['sentences']} sentences, speakers {c['speakers']}")
    (out / "README.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return counts


def unpack_packages(work):
    """``apt-get download`` both packages into ``work`` and unpack them; returns the game folder."""
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(["apt-get", "download", *PACKAGES], cwd=work, check=True, capture_output=True)
        for deb in sorted(work.glob("*.deb")):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(work / "root")], check=True)
    except (OSError, subprocess.CalledProcessError) as error:
        raise RuntimeError(
            f"Could not download or unpack {' and '.join(PACKAGES)} with apt-get/dpkg-deb ({error}). On a "
            "Debian or Ubuntu machine with the package lists updated (apt-get update), run this again; "
            "elsewhere unpack both .deb files yourself and pass --root=<.../usr/share/games/fillets-ng>."
        ) from error
    return work / "root" / GAME_FOLDER


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="the locale folder to write (clips/, *.tsv)")
    parser.add_argument(
        "--root", default=None, help="unpacked usr/share/games/fillets-ng (default: download)"
    )
    args = parser.parse_args(argv)
    if args.root is None:
        with tempfile.TemporaryDirectory() as work:
            counts = write_common_voice(find_clips(unpack_packages(work)), args.out)
    else:
        counts = write_common_voice(find_clips(args.root), args.out)
    for split, c in counts.items():
        print(f"{split}: {c['clips']} clips, {c['sentences']} sentences, speakers {c['speakers']}")


if __name__ == "__main__":
    main()
