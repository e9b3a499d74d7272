#!/usr/bin/env python3
"""One GPU against several: per-step losses and throughput of a recipe under ``torchrun``.

For a recipe (``gsc``: AST-base on Speech Commands; ``commonvoice``: Whisper-small on Common
Voice), this script

1. writes a synthetic dataset in the official layout (``tools/synthetic_data.py``) and a
   randomly initialised model of the real size (AST-base or Whisper-small; no download);
2. trains one epoch on 1 GPU with the global batch (``--per-gpu-batch`` x ``--gpus``), then on
   ``--gpus`` GPUs with ``torchrun`` and ``--per-gpu-batch`` each, both in the manifest's order
   (``--sorting=none``) and without adapter dropout, each writing a step log
   (``--step_log``: the loss averaged over the ranks, the examples, the time of every step);
3. compares the two step logs: the losses should agree at every step (same data, same global
   batch, DDP averages the gradients), and ``examples / time`` gives each run's throughput
   (after ``--warmup`` steps), whose ratio is the multi-GPU speed-up.

Run on a machine with at least ``--gpus`` GPUs, e.g.::

    python benchmarks/ddp_scaling.py gsc --work /tmp/ddp --out results/ddp --precision bf16
    python benchmarks/ddp_scaling.py commonvoice --work /tmp/ddp --out results/ddp \\
        --tiktoken ~/.cache/speechbrain_mambadapter/openai-whisper-20250625/multilingual.tiktoken

It writes ``<out>/ddp_<recipe>_<precision>.json`` (every number and the commands) and prints a
markdown summary. NCCL's NVLink multicast is kept off (``NCCL_NVLS_ENABLE=0``) in the runs.

Authors
 * speechbrain-mambadapter contributors 2026
"""

import argparse
import hashlib
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Run as `python benchmarks/ddp_scaling.py`: make `tools` (synthetic data, tiny models) importable.
sys.path.insert(0, str(REPO))

# Whisper-small (openai/whisper-small's config.json), randomly initialised.
WHISPER_SMALL = {
    "d_model": 768,
    "encoder_layers": 12,
    "decoder_layers": 12,
    "encoder_attention_heads": 12,
    "decoder_attention_heads": 12,
    "encoder_ffn_dim": 3072,
    "decoder_ffn_dim": 3072,
    "num_mel_bins": 80,
    "max_source_positions": 1500,
    "max_target_positions": 448,
}
# AST-base (MIT/ast-finetuned-audioset-10-10-0.4593) with the GSC recipe's 100 frames.
AST_BASE = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "max_length": 100,
    "num_mel_bins": 128,
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("recipe", nargs="?", choices=["gsc", "commonvoice"])
    parser.add_argument("--work", type=Path, help="data, models and run folders")
    parser.add_argument("--out", type=Path, help="where the JSON summary goes")
    parser.add_argument("--from-json", nargs="+", help="summarise results written earlier instead of running")
    parser.add_argument("--gpus", type=int, default=2)
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--per-gpu-batch", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--train", type=int, default=None, help="training clips (default 6000 / 3000)")
    parser.add_argument("--eval", type=int, default=None, help="valid and test clips each")
    parser.add_argument("--warmup", type=int, default=5, help="steps left out of the throughput")
    parser.add_argument(
        "--scaling",
        default="strong",
        choices=["strong", "weak"],
        help="strong: 1 GPU runs the global batch (losses compared step by step); weak: every run "
        "uses --per-gpu-batch per GPU (throughput only)",
    )
    parser.add_argument("--threads", type=int, default=8, help="OMP_NUM_THREADS of every process")
    parser.add_argument("--hparams", default="mambadapter.yaml")
    parser.add_argument("--num-workers", type=int, default=6, help="data-loading workers per GPU")
    parser.add_argument("--tiktoken", type=Path, default=None, help="Whisper's multilingual.tiktoken")
    parser.add_argument("--device", default=None, help="e.g. cpu, to try the script without GPUs")
    parser.add_argument("--backend", default="nccl", help="torch.distributed backend (gloo on CPU)")
    parser.add_argument("--model-config", default=None, help="JSON overriding the model's config")
    args = parser.parse_args(argv)
    if not args.from_json and (args.recipe is None or args.work is None or args.out is None):
        parser.error("the recipe, --work and --out are required (unless --from-json)")
    return args


def build_data(args):
    """The synthetic dataset (kept between invocations)."""
    from tools import synthetic_data

    folder = args.work / f"data_{args.recipe}"
    if (folder / "done.json").is_file():
        return folder
    workers = max(1, min(16, os.cpu_count() or 1))
    if args.recipe == "gsc":
        n_eval = args.eval or 200
        summary = synthetic_data.make_gsc(
            folder, n_train=args.train or 6000, n_valid=n_eval, n_test=n_eval, seed=0, workers=workers
        )
    else:
        n_eval = args.eval or 48
        summary = synthetic_data.make_common_voice(
            folder,
            language="eo",
            n_train=args.train or 3000,
            n_dev=n_eval,
            n_test=n_eval,
            seed=0,
            workers=workers,
        )
    (folder / "done.json").write_text(json.dumps(summary, default=str))
    return folder


def build_model(args):
    """A random AST-base or Whisper-small folder (kept between invocations)."""
    overrides = json.loads(args.model_config) if args.model_config else {}
    tag = "default" if not overrides else hashlib.sha256(args.model_config.encode()).hexdigest()[:8]
    folder = args.work / f"model_{args.recipe}_{tag}"
    if (folder / "model.safetensors").is_file():
        return folder
    if args.recipe == "gsc":
        from tools.tiny_models import save_random_ast

        save_random_ast(folder, seed=0, **{**AST_BASE, **overrides})
    else:
        from tools.whisper_assets import save_tiny_whisper, save_whisper_tokenizer

        if args.tiktoken is None or not args.tiktoken.is_file():
            raise FileNotFoundError(
                f"--tiktoken={args.tiktoken}: give Whisper's multilingual.tiktoken (see "
                "tools.whisper_assets.fetch_multilingual_tiktoken)."
            )
        tokenizer = save_whisper_tokenizer(args.work / "whisper_tokenizer", args.tiktoken)
        save_tiny_whisper(folder, tokenizer, seed=0, **{**WHISPER_SMALL, **overrides})
    return folder


def recipe_command(args, data, model, output, batch):
    """The recipe's command line (without the launcher)."""
    recipe = REPO / "recipes" / ("GSC" if args.recipe == "gsc" else "CommonVoice")
    hparams = recipe / "hparams" / args.hparams
    # Only adapters with dropout have the key (an override of a missing key is an error).
    has_dropout = re.search(r"^adapter_dropout:", hparams.read_text(), re.M)
    no_dropout = ["--adapter_dropout=0.0"] if has_dropout else []
    common = [
        "--sorting=none",
        *no_dropout,
        "--number_of_epochs=1",
        f"--batch_size={batch}",
        f"--precision={args.precision}",
        f"--num_workers={args.num_workers}",
        f"--step_log={output / 'steps.jsonl'}",
        f"--data_folder={data}",
    ]
    if args.device:
        common.append(f"--device={args.device}")
    if args.recipe == "gsc":
        return [
            str(recipe / "train.py"),
            str(hparams),
            f"--pretrained_source={model}",
            f"--output_folder={output}",
            f"--prepared_folder={output.parent / 'prepared_gsc'}",
            *common,
        ]
    return [
        str(recipe / "train.py"),
        str(hparams),
        "--language=eo",
        f"--whisper_source={model}",
        f"--output_root={output}",
        f"--eval_precision={args.precision}",
        "--max_decode_ratio=0.02",  # a random Whisper never stops: 30 tokens per dev/test utterance
        *common,
    ]


def run(command, log_path, cwd, threads):
    """Runs a command with NVLink multicast off; returns its wall time (s)."""
    env = dict(os.environ)
    env.update(NCCL_NVLS_ENABLE="0", TORCH_SYMM_MEM_DISABLE_MULTICAST="1", NVSHMEM_DISABLE_NVLS="1")
    # torchrun sets 1 thread per process when unset; the same number for every run.
    env["OMP_NUM_THREADS"] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    print("$", " ".join(command), flush=True)
    start = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        result = subprocess.run(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        print(Path(log_path).read_text()[-6000:])
        raise RuntimeError(f"{command[0]} failed (exit {result.returncode}); log: {log_path}")
    return seconds


def read_steps(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def throughput(steps, warmup):
    """Examples per second over the steps after ``warmup``, without the epoch's last step.

    Returns ``(mean, median)``: ``mean`` is examples / time over those steps (every stall
    counted); ``median`` is the median of the steps' own examples / duration (the steady state,
    stalls left out). The last step is left out of both: its batch is usually smaller (a new
    shape, whose first kernels cost a few hundred ms).
    """
    warmup = min(warmup, len(steps) - 3)
    if warmup < 0:
        raise ValueError("A throughput needs at least 3 logged steps.")
    timed = steps[warmup:-1]
    examples = sum(step["examples"] for step in timed[1:])
    mean = examples / (timed[-1]["time"] - timed[0]["time"])
    rates = [b["examples"] / (b["time"] - a["time"]) for a, b in zip(timed, timed[1:])]
    return mean, statistics.median(rates)


def compare(one, many):
    """Per-step loss agreement of two step logs."""
    if [s["examples"] for s in one] != [s["examples"] for s in many]:
        raise ValueError("The two runs did not see the same global batches; compare their step logs.")
    rel = [abs(a["loss"] - b["loss"]) / max(abs(a["loss"]), 1e-12) for a, b in zip(one, many)]
    return {
        "steps": len(one),
        "max_abs_diff": max(abs(a["loss"] - b["loss"]) for a, b in zip(one, many)),
        "max_rel_diff": max(rel),
        "median_rel_diff": statistics.median(rel),
        "first_loss": [one[0]["loss"], many[0]["loss"]],
        "last_loss": [one[-1]["loss"], many[-1]["loss"]],
    }


def main(argv=None):
    args = parse_args(argv)
    if args.from_json:
        for path in args.from_json:
            summarize(json.loads(Path(path).read_text()), args.warmup)
        return None
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    data = build_data(args)
    model = build_model(args)
    print(f"data {data}, model {model} ready after {time.perf_counter() - started:.0f} s", flush=True)
    per_gpu = args.per_gpu_batch or (128 if args.recipe == "gsc" else 6)
    tag = f"{args.recipe}_{args.precision}_{args.scaling}"
    results = {
        "recipe": args.recipe,
        "precision": args.precision,
        "scaling": args.scaling,
        "per_gpu_batch": per_gpu,
        "runs": {},
    }
    for gpus in (1, args.gpus):
        output = args.work / f"run_{tag}_{gpus}gpu"
        if output.exists():
            subprocess.run(["rm", "-rf", str(output)], check=True)
        output.mkdir(parents=True)
        batch = per_gpu * args.gpus // gpus if args.scaling == "strong" else per_gpu
        command = recipe_command(args, data, model, output, batch)
        if gpus == 1:
            launcher = [sys.executable]
        else:
            launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={gpus}"]
            command.append(f"--distributed_backend={args.backend}")
        command = launcher + command
        seconds = run(command, args.work / f"log_{tag}_{gpus}gpu.txt", cwd=args.work, threads=args.threads)
        steps = read_steps(output / "steps.jsonl")
        results["runs"][gpus] = {
            "command": " ".join(command),
            "batch_per_process": batch,
            "wall_s": round(seconds, 1),
            "steps": len(steps),
            "train_s": steps[-1]["time"],
            "step_log": steps,
        }
    (args.out / f"ddp_{tag}.json").write_text(json.dumps(summarize(results, args.warmup), indent=1))
    return results


def summarize(results, warmup):
    """Adds the throughputs, speed-ups and loss agreement to ``results``; prints a table."""
    runs = {int(gpus): run for gpus, run in results["runs"].items()}  # JSON keys are strings
    gpus = max(runs)
    one, many = runs[1], runs[gpus]
    for run in (one, many):
        run["examples_per_s"], run["examples_per_s_median"] = throughput(run["step_log"], warmup)
    results["speedup"] = many["examples_per_s"] / one["examples_per_s"]
    results["speedup_median"] = many["examples_per_s_median"] / one["examples_per_s_median"]
    lines = [
        f"| {results['recipe']} {results['precision']} {results['scaling']} | 1 GPU "
        f"x{one['batch_per_process']} | {gpus} GPUs x{many['batch_per_process']} |",
        "|---|---|---|",
        f"| examples/s, steps {warmup + 1} to last-1 | {one['examples_per_s']:.1f} | "
        f"{many['examples_per_s']:.1f} (x{results['speedup']:.2f}) |",
        f"| examples/s, median step | {one['examples_per_s_median']:.1f} | "
        f"{many['examples_per_s_median']:.1f} (x{results['speedup_median']:.2f}) |",
        f"| steps | {one['steps']} | {many['steps']} |",
        f"| wall (whole run) | {one['wall_s']} s | {many['wall_s']} s |",
    ]
    if results["scaling"] == "strong":
        match = results["loss_match"] = compare(one["step_log"], many["step_log"])
        lines.append(
            f"| per-step loss: max rel diff {match['max_rel_diff']:.2e}, median "
            f"{match['median_rel_diff']:.2e}, max abs {match['max_abs_diff']:.2e} | first "
            f"{match['first_loss'][0]:.4f} / {match['first_loss'][1]:.4f} | last "
            f"{match['last_loss'][0]:.4f} / {match['last_loss'][1]:.4f} |"
        )
    print("\n" + "\n".join(lines), flush=True)
    return results


if __name__ == "__main__":
    main()
