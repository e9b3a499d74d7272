#!/usr/bin/env python3
"""Czech ASR with Whisper tiny.en: frozen, LoRA, Bottleneck, Conformer and MambAdapter at matched budgets.

Real Czech speech (Debian's Fish Fillets NG voices, converted to the Common Voice layout by
``tools/make_czech_cv.py``, test and dev sentences held out of training) through the Common Voice
recipe (``recipes/CommonVoice/train.py`` with its ``hparams/<method>.yaml``) and the real
English-only Whisper tiny.en (``tools/ctranslate2_whisper.py``): Czech is a language it never
learnt, as Abkhaz is to Whisper-small in the paper. One command per part, resumable (a finished
run is skipped, an interrupted one resumes from its checkpoint)::

    python benchmarks/czech_whisper.py data --out data/fillets_cs/cs
    python benchmarks/czech_whisper.py run --data_folder data/fillets_cs/cs --device cpu
    python benchmarks/czech_whisper.py table results/CommonVoice_cs

Every method has about 0.2 M trainable parameters in tiny.en's 4 x 384 encoder (LoRA r=32 on q and
v, Bottleneck r=64, Conformer r=40, MambAdapter r=64; ``METHODS``), plus the LayerNorms they
train. tiny.en has no language token (its prompt is ``<|startoftranscript|> <|notimestamps|>``),
so ``--language_token_id=null``. The defaults are a CPU budget (``--train_minutes 8``, 2 epochs
of batch 4, learning rate 5e-3 decaying to 5e-4, greedy test decoding): an evaluation of the
methods at small scale, not the paper's 15-epoch protocol, which ``--train_minutes 600
--epochs 15 --batch_size 6 --lr 1e-3 --lr_final 2e-5 --test_beam_size 5`` on a GPU gives back.

Authors
 * speechbrain-mambadapter contributors 2026
"""

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "CommonVoice"
# (experiment, hparams file, overrides): about 0.2 M trainable parameters each
METHODS = (
    ("frozen", "mambadapter", ("--number_of_epochs=0",)),
    ("lora_r32", "lora", ("--rank=32",)),
    ("bottleneck_r64", "bottleneck", ("--rank=64",)),
    ("conformer_r40", "conformer", ("--rank=40",)),
    ("mambadapter_r64", "mambadapter", ("--rank=64",)),
)
TEST_LINE = re.compile(r"Epoch loaded: (\d+) - test loss: ([^,]+), test WER: ([^,]+), test CER: ([0-9.e+-]+)")
PARAMETERS_LINE = re.compile(r": ([0-9.]+)M trainable parameters of ")


def data(args):
    """The Czech Common Voice folder (downloads and unpacks the two Debian packages)."""
    subprocess.run([sys.executable, str(ROOT / "tools" / "make_czech_cv.py"), "--out", args.out], check=True)


def run(args):
    """Each method not finished yet, one after the other."""
    sys.path.insert(0, str(ROOT))
    from tools.ctranslate2_whisper import pretrained_whisper

    whisper = args.whisper_source or str(pretrained_whisper("tiny.en"))
    for experiment, hparams, overrides in METHODS:
        if args.methods and experiment not in args.methods:
            continue
        folder = Path(args.output) / experiment / "cs" / f"seed{args.seed}"
        if (folder / "wer_test.txt").is_file():
            print(f"{experiment}: done ({folder})", flush=True)
            continue
        command = [
            sys.executable,
            "train.py",
            f"hparams/{hparams}.yaml",
            "--language=cs",
            f"--data_folder={Path(args.data_folder).resolve()}",
            f"--whisper_source={whisper}",
            "--language_token_id=null",
            f"--output_root={Path(args.output).resolve()}",
            f"--experiment={experiment}",
            f"--seed={args.seed}",
            f"--train_minutes={args.train_minutes}",
            f"--dev_minutes={args.dev_minutes}",
            f"--test_minutes={args.test_minutes}",
            f"--number_of_epochs={args.epochs}",
            f"--batch_size={args.batch_size}",
            f"--lr={args.lr}",
            f"--lr_final={args.lr_final}",
            f"--test_beam_size={args.test_beam_size}",
            f"--max_decode_ratio={args.max_decode_ratio}",
            f"--device={args.device}",
            f"--precision={args.precision}",
            f"--eval_precision={args.precision}",
            "--num_workers=0",
            "--noprogressbar",
        ]
        # The method's own settings replace the common ones (the frozen run's 0 epochs).
        keys = {o.split("=", 1)[0] for o in overrides}
        command = [c for c in command if c.split("=", 1)[0] not in keys] + list(overrides)
        start = time.time()
        print(f"{experiment}: {' '.join(command[1:])}", flush=True)
        subprocess.run(command, cwd=RECIPE, check=True)
        print(f"{experiment}: {time.time() - start:.0f} s", flush=True)


def read_run(folder):
    """Test WER, CER (percent), the epoch loaded and the trainable parameters of one run folder."""
    log = (folder / "train_log.txt").read_text()
    match = TEST_LINE.findall(log)[-1]
    parameters = PARAMETERS_LINE.findall((folder / "log.txt").read_text())
    return {
        "experiment": folder.parents[1].name,
        "epoch_loaded": int(match[0]),
        "test_wer": float(match[2]),
        "test_cer": float(match[3]),
        "trainable_millions": float(parameters[-1]) if parameters else None,
        "train_log": log,
    }


def table(args):
    """Markdown table of every finished run (and JSON with ``--json``)."""
    runs = [read_run(p.parent) for p in sorted(Path(args.output).glob("*/cs/seed*/wer_test.txt"))]
    order = {name: i for i, (name, _, _) in enumerate(METHODS)}
    runs.sort(key=lambda r: order.get(r["experiment"], len(order)))
    print("| method | trainable params (M) | test WER (%) | test CER (%) | epoch loaded |")
    print("|---|---:|---:|---:|---:|")
    for r in runs:
        params = "0" if r["experiment"] == "frozen" else f"{r['trainable_millions']:.3f}"
        scores = f"{r['test_wer']:.1f} | {r['test_cer']:.1f} | {r['epoch_loaded']}"
        print(f"| {r['experiment']} | {params} | {scores} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs}, indent=1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("data", help="the Czech Common Voice folder")
    p.add_argument("--out", required=True)
    p = sub.add_parser("run", help="every method not finished yet")
    p.add_argument("--data_folder", required=True)
    p.add_argument("--output", default=str(ROOT / "results" / "CommonVoice_cs"))
    p.add_argument("--whisper_source", default=None, help="converted tiny.en (default: convert it)")
    p.add_argument("--methods", nargs="*", help="experiments to run (default: all)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--train_minutes", type=float, default=8.0)
    p.add_argument("--dev_minutes", type=float, default=1.5)
    p.add_argument("--test_minutes", type=float, default=4.0)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--lr_final", type=float, default=5e-4)
    p.add_argument("--test_beam_size", type=int, default=1)
    p.add_argument("--max_decode_ratio", type=float, default=0.1, help="of 1500 frames: 150 tokens")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32")
    p = sub.add_parser("table", help="table of the finished runs")
    p.add_argument("output", nargs="?", default=str(ROOT / "results" / "CommonVoice_cs"))
    p.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    {"data": data, "run": run, "table": table}[args.command](args)


if __name__ == "__main__":
    main()
