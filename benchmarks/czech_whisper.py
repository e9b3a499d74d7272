#!/usr/bin/env python3
"""Czech ASR with Whisper tiny.en: frozen, LoRA, Bottleneck, Conformer and MambAdapter at matched budgets.

Real Czech speech (Debian's Fish Fillets NG voices, converted to the Common Voice layout by
``tools/make_czech_cv.py``, test and dev sentences held out of training) through the Common Voice
recipe (``recipes/CommonVoice/train.py`` with its ``hparams/<method>.yaml``) and the real
English-only Whisper tiny.en (``tools/ctranslate2_whisper.py``): Czech is a language it never
learnt, as Abkhaz is to Whisper-small in the paper. One command per part, each resumable (a
finished run is skipped, an interrupted one resumes from its checkpoint)::

    python benchmarks/czech_whisper.py data --out data/fillets_cs/cs
    python benchmarks/czech_whisper.py run --data_folder data/fillets_cs/cs          # a GPU
    python benchmarks/czech_whisper.py table results/CommonVoice_cs --plot wer.png

On a GPU machine that cannot download (as this project's device machine), ``pack`` writes what
travels into ``.czech/`` in two parts that fit the 64 MiB a device call carries (``a``: the
model's first fp16 shard, its tokenizer and configs; ``b``: the second shard and the clips at
16 kHz as 24 kbit/s Opus), and ``assemble`` (on the GPU machine) rebuilds the fp32 model folder
and the data folder from them::

    python benchmarks/czech_whisper.py pack --data_folder data/fillets_cs/cs
    python3 benchmarks/czech_whisper.py assemble && python3 benchmarks/czech_whisper.py run \\
        --data_folder .czech/cs --whisper_source .czech/whisper-tiny.en --jobs 13 --deadline 500

Every method has about 0.2 M trainable parameters in tiny.en's 4 x 384 encoder (LoRA r=32 on q and
v, Bottleneck r=64, Conformer r=40, MambAdapter r=64; ``METHODS``), plus the LayerNorms they
train. tiny.en has no language token (its prompt is ``<|startoftranscript|> <|notimestamps|>``),
so ``--language_token_id=null``. The settings are the recipe's (the paper's protocol: 15 epochs,
batch 6, learning rate 1e-3 decaying linearly to 2e-5, greedy decoding on dev every epoch, the
checkpoint of lowest dev WER tested with beam 5), with bf16 autocast; seeds 1, 2, 3 (the frozen
model once: nothing in it is random). ``--device cpu --precision fp32 --epochs 2 --train_minutes
8`` is a CPU-sized run.

Authors
 * speechbrain-mambadapter contributors 2026
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "CommonVoice"
ASSETS = ROOT / ".czech"
SAMPLE_RATE = 16000
OPUS_LEVEL = 0.93  # libsndfile's compression level: about 24 kbit/s for this speech
FIRST_SHARD_SHARE = 0.6  # of the model's bytes in part a (part b also carries the clips)
MODEL_FILES = ("config.json", "generation_config.json", "preprocessor_config.json", "tokenizer.json")
MODEL_FILES_OPTIONAL = ("tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt")
# (experiment, hparams file, overrides): about 0.2 M trainable parameters each
METHODS = (
    ("frozen", "mambadapter", ("--number_of_epochs=0",)),
    ("lora_r32", "lora", ("--rank=32",)),
    ("bottleneck_r64", "bottleneck", ("--rank=64",)),
    ("conformer_r40", "conformer", ("--rank=40",)),
    # MambAdapter with the paper's initialisation of its Mamba (Xavier gain 0.02, which starts the
    # adapter's code at ~1e-10 of its input: benchmarks/fit_probe.py), the default until these
    # runs; and the same at 5x the learning rate.
    ("mambadapter_r64", "mambadapter", ("--rank=64", "--mamba_init=paper")),
    ("mambadapter_r64_lr5e-3", "mambadapter", ("--rank=64", "--mamba_init=paper", "--lr=0.005")),
    # The Mamba block's own initialisation (the recipes' default since), at the recipe's 1e-3, at
    # 3e-3, and with alpha at 1.
    ("mambadapter_r64_mamba_init", "mambadapter", ("--rank=64", "--mamba_init=mamba")),
    ("mambadapter_r64_mamba_init_lr3e-3", "mambadapter", ("--rank=64", "--mamba_init=mamba", "--lr=0.003")),
    (
        "mambadapter_r64_mamba_init_alpha1",
        "mambadapter",
        ("--rank=64", "--mamba_init=mamba", "--alpha_init=1.0"),
    ),
)
SEEDS = (1, 2, 3)
TEST_LINE = re.compile(r"Epoch loaded: (\d+) - test loss: ([^,]+), test WER: ([^,]+), test CER: ([0-9.e+-]+)")
PARAMETERS_LINE = re.compile(r": ([0-9.]+)M trainable parameters of ")


def data(args):
    """The Czech Common Voice folder (downloads and unpacks the two Debian packages)."""
    subprocess.run([sys.executable, str(ROOT / "tools" / "make_czech_cv.py"), "--out", args.out], check=True)


def pack(args):
    """Write ``.czech/a`` and ``.czech/b``: the fp16 model in two shards, the clips as 16 kHz Opus."""
    import soundfile as sf
    from safetensors.torch import load_file, save_file

    sys.path.insert(0, str(ROOT))
    from speechbrain_mambadapter.recipe.dataprep import load_mono
    from tools.ctranslate2_whisper import pretrained_whisper

    assets = Path(args.assets)
    model = Path(args.whisper_source) if args.whisper_source else pretrained_whisper("tiny.en")
    part_a = assets / "a" / "whisper-tiny.en"
    part_b = assets / "b"
    part_a.mkdir(parents=True, exist_ok=True)
    part_b.mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES + MODEL_FILES_OPTIONAL:
        if (model / name).is_file():
            shutil.copy(model / name, part_a / name)
    weights = load_file(str(model / "model.safetensors"))
    total = sum(v.numel() for v in weights.values())
    shards, seen = ({}, {}), 0
    for key in sorted(weights):  # deterministic, every tensor once
        shards[seen >= FIRST_SHARD_SHARE * total][key] = weights[key].half().contiguous()
        seen += weights[key].numel()
    save_file(shards[0], str(part_a / "shard-1.safetensors"), metadata={"format": "pt"})
    save_file(shards[1], str(part_b / "shard-2.safetensors"), metadata={"format": "pt"})
    print(f"{model}: {len(weights)} tensors, {total:,} values -> {len(shards[0])} + {len(shards[1])} (fp16)")

    source = Path(args.data_folder)
    target = part_b / "cs"
    (target / "clips").mkdir(parents=True, exist_ok=True)
    for name in ("train.tsv", "dev.tsv", "test.tsv", "README.txt"):
        shutil.copy(source / name, target / name)
    clips = sorted((source / "clips").iterdir())
    for i, clip in enumerate(clips):
        out = target / "clips" / clip.name
        if not out.is_file():
            wav = load_mono(str(clip), SAMPLE_RATE)
            sf.write(
                out,
                wav.clamp(-1, 1).numpy(),
                SAMPLE_RATE,
                format="OGG",
                subtype="OPUS",
                compression_level=OPUS_LEVEL,
            )
        if (i + 1) % 200 == 0 or i + 1 == len(clips):
            print(f"clips: {i + 1}/{len(clips)}", flush=True)
    for part in ("a", "b"):
        size = sum(p.stat().st_size for p in (assets / part).rglob("*") if p.is_file())
        print(f"{assets / part}: {size / 2**20:.1f} MiB")


def assemble(args):
    """On the GPU machine: ``.czech/whisper-tiny.en`` (fp32) and ``.czech/cs`` from the two parts."""
    import torch
    from safetensors.torch import load_file, save_file

    assets = Path(args.assets)
    model = assets / "whisper-tiny.en"
    model.mkdir(parents=True, exist_ok=True)
    part_a = Path(args.part_a or assets / "a") / "whisper-tiny.en"
    for name in MODEL_FILES + MODEL_FILES_OPTIONAL:
        if (part_a / name).is_file():
            shutil.copy(part_a / name, model / name)
    weights = load_file(str(part_a / "shard-1.safetensors"))
    weights.update(load_file(str(assets / "b" / "shard-2.safetensors")))
    save_file(
        {k: v.to(torch.float32) for k, v in weights.items()},
        str(model / "model.safetensors"),
        metadata={"format": "pt"},
    )
    data_folder = assets / "cs"
    if not data_folder.exists():
        shutil.copytree(assets / "b" / "cs", data_folder)
    clips = len(list((data_folder / "clips").iterdir()))
    print(f"{model}: {len(weights)} tensors; {data_folder}: {clips} clips")


def run_folder(output, experiment, seed):
    return Path(output) / experiment / "cs" / f"seed{seed}"


def train_command(args, whisper, hparams, experiment, seed, overrides):
    """The recipe's command line (run in ``recipes/CommonVoice``) of one run."""
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
        f"--seed={seed}",
        f"--device={args.device}",
        f"--precision={args.precision}",
        f"--eval_precision={args.precision}",
        "--num_workers=0",
        "--ckpt_interval_minutes=2",
        "--noprogressbar",
    ]
    for key in (
        "train_minutes",
        "epochs",
        "batch_size",
        "lr",
        "lr_final",
        "test_beam_size",
        "max_decode_ratio",
    ):
        value = getattr(args, key)
        if value is not None:
            command.append(f"--{'number_of_epochs' if key == 'epochs' else key}={value}")
    # The method's own settings replace the common ones (the frozen run's 0 epochs).
    keys = {o.split("=", 1)[0] for o in overrides}
    return [c for c in command if c.split("=", 1)[0] not in keys] + list(overrides)


def prepare_once(command):
    """The recipe's data preparation, with the settings of ``command``, before the runs start: runs
    started together would otherwise all write the same prepared folder."""
    import speechbrain as sb

    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(RECIPE))
    from common_voice_prepare import HPARAMS_OF_ARGUMENTS, preparation_arguments, prepare_common_voice

    from speechbrain_mambadapter.recipe.hparams import peek_hparams

    hparams_file, _, overrides = sb.parse_arguments(command[2:])
    cwd = os.getcwd()
    os.chdir(RECIPE)  # the hparams file's relative paths
    try:
        h = peek_hparams(hparams_file, overrides, list(HPARAMS_OF_ARGUMENTS.values()))
    finally:
        os.chdir(cwd)
    prepare_common_voice(**preparation_arguments(h))


def run(args):
    """Every (method, seed) not finished yet, ``--jobs`` at a time, until ``--deadline``."""
    started = time.time()
    if args.whisper_source:
        whisper = str(Path(args.whisper_source).resolve())
    else:
        sys.path.insert(0, str(ROOT))
        from tools.ctranslate2_whisper import pretrained_whisper

        whisper = str(pretrained_whisper("tiny.en"))
    pending = []
    for seed in args.seeds:
        for experiment, hparams, overrides in METHODS:
            if args.methods and experiment not in args.methods:
                continue
            if experiment == "frozen" and seed != args.seeds[0]:
                continue  # nothing in the frozen model's test is random
            folder = run_folder(args.output, experiment, seed)
            if (folder / "wer_test.txt").is_file():
                print(f"{experiment} seed {seed}: done ({folder})", flush=True)
                continue
            pending.append(
                (experiment, seed, train_command(args, whisper, hparams, experiment, seed, overrides))
            )
    print(f"{len(pending)} runs to do, {args.jobs} at a time", flush=True)
    if pending:
        prepare_once(pending[0][2])
        print(f"[{time.time() - started:5.0f} s] data prepared", flush=True)
    logs = Path(args.output) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    running, failed = {}, []
    while pending or running:
        while (
            pending and len(running) < args.jobs and time.time() - started < args.deadline - args.last_start
        ):
            experiment, seed, command = pending.pop(0)
            log = open(logs / f"{experiment}_seed{seed}.log", "a")
            print(f"[{time.time() - started:5.0f} s] start {experiment} seed {seed}", flush=True)
            process = subprocess.Popen(command, cwd=RECIPE, stdout=log, stderr=subprocess.STDOUT, env=env)
            running[process] = (experiment, seed, time.time(), log)
        if time.time() - started > args.deadline:
            print("deadline reached: ending the runs still going (they resume on the next call)", flush=True)
            for process in running:
                process.send_signal(signal.SIGTERM)
            for process, (experiment, seed, _, log) in running.items():
                process.wait()
                log.close()
                print(f"stopped {experiment} seed {seed}", flush=True)
            break
        if pending and not running:
            print("too close to the deadline to start the next run", flush=True)
            break
        time.sleep(2)
        for process in [p for p in running if p.poll() is not None]:
            experiment, seed, start, log = running.pop(process)
            log.close()
            status = "finished" if process.returncode == 0 else f"FAILED (rc {process.returncode})"
            if process.returncode:
                failed.append((experiment, seed))
            print(
                f"[{time.time() - started:5.0f} s] {experiment} seed {seed}: {status}"
                f" in {time.time() - start:.0f} s",
                flush=True,
            )
    if failed:
        print(f"failed runs (see {logs}): {failed}", flush=True)
    print(f"total {time.time() - started:.0f} s", flush=True)


def read_run(folder):
    """Test WER, CER (percent), the epoch loaded and the trainable parameters of one run folder."""
    log = (folder / "train_log.txt").read_text()
    match = TEST_LINE.findall(log)[-1]
    parameters = PARAMETERS_LINE.findall((folder / "log.txt").read_text())
    return {
        "experiment": folder.parents[1].name,
        "seed": int(folder.name.removeprefix("seed")),
        "epoch_loaded": int(match[0]),
        "test_wer": float(match[2]),
        "test_cer": float(match[3]),
        "trainable_millions": float(parameters[-1]) if parameters else None,
        "train_log": log,
    }


def summarise(runs):
    """One row per method (``METHODS`` order): runs, parameters, WER and CER mean ± sample std."""
    sys.path.insert(0, str(ROOT))
    from speechbrain_mambadapter.results import mean_std

    order = [m[0] for m in METHODS]
    rows = []
    for experiment in order + sorted({r["experiment"] for r in runs} - set(order)):
        members = [r for r in runs if r["experiment"] == experiment]
        if not members:
            continue
        wer, wer_std = mean_std([r["test_wer"] for r in members])
        cer, cer_std = mean_std([r["test_cer"] for r in members])
        rows.append(
            {
                "experiment": experiment,
                "runs": len(members),
                "trainable_millions": 0.0 if experiment == "frozen" else members[0]["trainable_millions"],
                "wer": wer,
                "wer_std": wer_std,
                "cer": cer,
                "cer_std": cer_std,
                "per_seed_wer": {r["seed"]: r["test_wer"] for r in members},
                "epochs_loaded": sorted(r["epoch_loaded"] for r in members),
            }
        )
    return rows


def merge_runs(runs, earlier):
    """``runs`` and the runs of ``earlier`` (an earlier table's JSON) that ``runs`` does not redo
    (same method and seed): so that a table can gather device calls whose folders are gone."""
    done = {(r["experiment"], r["seed"]) for r in runs}
    return [r for r in earlier if (r["experiment"], r["seed"]) not in done] + runs


def table(args):
    """Markdown table (mean ± std over seeds) of every finished run; JSON and a plot on request."""
    runs = [read_run(p.parent) for p in sorted(Path(args.output).glob("*/cs/seed*/wer_test.txt"))]
    if args.merge:
        runs = merge_runs(runs, json.loads(Path(args.merge).read_text())["runs"])
    rows = summarise(runs)
    print("| method | trainable params (M) | test WER (%) | test CER (%) | WER per seed | epoch loaded |")
    print("|---|---:|---:|---:|---|---|")
    for r in rows:
        spread = lambda s: f" ± {s:.1f}" if s is not None else ""  # noqa: E731
        per_seed = " / ".join(f"{v:.1f}" for _, v in sorted(r["per_seed_wer"].items()))
        print(
            f"| {r['experiment']} | {r['trainable_millions']:.3f} | {r['wer']:.1f}{spread(r['wer_std'])} "
            f"| {r['cer']:.1f}{spread(r['cer_std'])} | {per_seed} "
            f"| {', '.join(map(str, r['epochs_loaded']))} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "runs": runs}, indent=1))
    if args.plot:
        plot(rows, args.plot)


def legend_name(experiment, methods):
    """The experiment's name, marked when it runs the paper's initialisation of the Mamba (no
    longer the default, so the plain name would mislead)."""
    overrides = {m[0]: m[2] for m in methods}.get(experiment, ())
    return experiment + (" (paper init)" if "--mamba_init=paper" in overrides else "")


def plot(rows, path):
    """Test WER against trainable parameters, one point per method, ± 1 sample std over seeds; the
    frozen model as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    markers = iter("os^vD<>p")
    for row in rows:
        std = row["wer_std"] or 0.0
        if row["trainable_millions"] == 0:
            ax.axhline(
                row["wer"], color="grey", ls="--", lw=1, label=f"{row['experiment']}: {row['wer']:.1f}"
            )
            continue
        ax.errorbar(
            1e6 * row["trainable_millions"],
            row["wer"],
            yerr=std,
            fmt=next(markers),
            capsize=3,
            label=f"{legend_name(row['experiment'], METHODS)}: {row['wer']:.1f} ± {std:.1f}",
        )
    ax.set_xlabel("trainable parameters (PETL method and the norms it trains)")
    ax.set_ylabel("test WER (%), beam 5")
    runs = "/".join(map(str, sorted({row["runs"] for row in rows if row["trainable_millions"]})))
    ax.set_title(f"Whisper tiny.en on Czech (Fillets NG voices): mean ± std over {runs} seeds")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("data", help="the Czech Common Voice folder")
    p.add_argument("--out", required=True)
    p = sub.add_parser("pack", help="what travels to a GPU machine without downloads, in two parts")
    p.add_argument("--data_folder", required=True, help="the folder that `data` wrote")
    p.add_argument("--whisper_source", default=None, help="converted tiny.en (default: convert it)")
    p.add_argument("--assets", default=str(ASSETS))
    p = sub.add_parser("assemble", help="on the GPU machine: the model and data folders from the two parts")
    p.add_argument("--assets", default=str(ASSETS))
    p.add_argument("--part_a", default=None, help="where part a is, if not in <assets>/a")
    p = sub.add_parser("run", help="every run not finished yet")
    p.add_argument("--data_folder", required=True)
    p.add_argument("--output", default=str(ROOT / "results" / "CommonVoice_cs"))
    p.add_argument("--whisper_source", default=None, help="converted tiny.en (default: convert it)")
    p.add_argument("--methods", nargs="*", help="experiments to run (default: all)")
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    p.add_argument("--jobs", type=int, default=1, help="runs at once (one GPU holds many tiny.en runs)")
    p.add_argument("--deadline", type=float, default=float("inf"), help="seconds: stop the runs still going")
    p.add_argument(
        "--last_start", type=float, default=120.0, help="seconds before the deadline: start no run"
    )
    p.add_argument("--device", default="cuda:0")
    p.add_argument("--precision", default="bf16")
    g = p.add_argument_group("overrides of the recipe's settings (default: the hparams file's)")
    g.add_argument("--train_minutes", type=float, default=None)
    g.add_argument("--epochs", type=int, default=None)
    g.add_argument("--batch_size", type=int, default=None)
    g.add_argument("--lr", type=float, default=None)
    g.add_argument("--lr_final", type=float, default=None)
    g.add_argument("--test_beam_size", type=int, default=None)
    g.add_argument("--max_decode_ratio", type=float, default=None, help="of 1500 frames (0.1: 150 tokens)")
    p = sub.add_parser("table", help="table of the finished runs")
    p.add_argument("output", nargs="?", default=str(ROOT / "results" / "CommonVoice_cs"))
    p.add_argument("--json", default=None)
    p.add_argument("--plot", default=None, help="PNG path for the WER-parameters plot")
    p.add_argument("--merge", default=None, help="an earlier table's JSON: its runs join these (these win)")
    args = parser.parse_args(argv)
    {"data": data, "pack": pack, "assemble": assemble, "run": run, "table": table}[args.command](args)


if __name__ == "__main__":
    main()
