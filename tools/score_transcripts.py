"""WER and CER of the ``transcribe`` command's output, scored as the Common Voice recipe scores its test.

The references are the ``wrd`` column of a prepared ``test.csv`` (normalised at preparation), the
hypotheses the transcripts, both through the recipe's ``normalize_text``; the counts come from
SpeechBrain's ``ErrorRateStats``, as in the recipe's ``wer_test.txt``. Usage::

    python -m speechbrain_mambadapter transcribe --adapter <export> $(cut -d, -f3 test.csv | tail -n +2) \\
        > transcripts.tsv
    python tools/score_transcripts.py transcripts.tsv <prepared folder>/test.csv --language=eo

Authors
 * speechbrain-mambadapter contributors 2026
"""

import argparse
import csv
import sys
from pathlib import Path

from speechbrain.utils.metric_stats import ErrorRateStats

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes" / "CommonVoice"))
from common_voice_prepare import normalize_text  # noqa: E402


def score(transcripts, manifest, language):
    """``(wer_stats, cer_stats)`` of ``{wav path: transcript}`` against the manifest's ``wrd``.

    Raises
    ------
    ValueError
        When a clip of the manifest has no transcript.
    """
    wer, cer = ErrorRateStats(), ErrorRateStats(split_tokens=True)
    with open(manifest, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    missing = [row["wav"] for row in rows if row["wav"] not in transcripts]
    if missing:
        raise ValueError(f"{len(missing)} clips of {manifest} have no transcript, e.g. {missing[0]}.")
    for row in rows:
        hypothesis = normalize_text(transcripts[row["wav"]], language).split()
        reference = normalize_text(row["wrd"], language).split()  # idempotent, as in the recipe
        for stats in (wer, cer):
            stats.append([row["ID"]], [hypothesis], [reference])
    return wer, cer


def main(argv=None):
    """Print WER and CER; ``--details FILE`` writes the alignments as ``wer_test.txt`` has them."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("transcripts", help="the transcribe command's output (path<TAB>transcript)")
    parser.add_argument("manifest", help="the prepared test.csv (ID,duration,wav,spk_id,wrd)")
    parser.add_argument("--language", required=True, help="the Common Voice locale, e.g. eo")
    parser.add_argument("--details", help="write the per-utterance alignments here")
    args = parser.parse_args(argv)
    with open(args.transcripts, encoding="utf-8") as f:
        transcripts = dict(line.rstrip("\n").split("\t", 1) for line in f if line.strip())
    wer, cer = score(transcripts, args.manifest, args.language)
    summary = wer.summarize()
    print(
        f"WER {summary['WER']:.2f} % [ {summary['num_edits']} / {summary['num_scored_tokens']} ], "
        f"CER {cer.summarize('error_rate'):.2f} %"
    )
    if args.details:
        with open(args.details, "w", encoding="utf-8") as f:
            wer.write_stats(f)


if __name__ == "__main__":
    main()
