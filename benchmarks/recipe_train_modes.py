#!/usr/bin/env python3
"""Training throughput of a recipe on one GPU: ``train_mode`` eager against ``cuda_graph``.

For a recipe (``gsc``: AST-base on Speech Commands; ``commonvoice``: Whisper-small on Common
Voice) and each hparams file given (default: MambAdapter and the Bottleneck adapter at the same
placement), this script trains one epoch on synthetic data in the official layout with a
randomly initialised model of the real size (``benchmarks/ddp_scaling.py`` builds both), once
per ``--modes`` entry, in the manifest's order (``--sorting=none``), without adapter dropout,
each run writing a step log. It then reports

* throughput: examples / s over the steps after ``--warmup`` (mean, and the median step), so
  the time per step and the MambAdapter / Bottleneck ratio in each mode;
* agreement: each mode's per-step losses against the eager run of the same hparams file (same
  data, same initial weights, same order).

Usage (GPU)::

    python benchmarks/recipe_train_modes.py gsc --work /tmp/modes --out results/modes
    python benchmarks/recipe_train_modes.py commonvoice --work /tmp/modes --out results/modes \\
        --tiktoken ~/.cache/speechbrain_mambadapter/openai-whisper-20250625/multilingual.tiktoken

``--device=cpu`` (with ``--model-config`` for a small model) tries the script without a GPU,
where ``train_mode: cuda_graph`` falls back to eager. It writes
``<out>/train_modes_<recipe>_<precision>.json`` and prints a markdown table.

Authors
 * speechbrain-mambadapter contributors 2026
"""

import argparse
import copy
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import ddp_scaling  # noqa: E402  (benchmarks/ is not a package)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("recipe", choices=["gsc", "commonvoice"])
    parser.add_argument("--work", type=Path, required=True, help="data, models and run folders")
    parser.add_argument("--out", type=Path, required=True, help="where the JSON summary goes")
    parser.add_argument("--hparams", default="mambadapter.yaml,bottleneck.yaml", help="comma-separated")
    parser.add_argument("--modes", default="eager,cuda_graph", help="train_mode values, comma-separated")
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--batch", type=int, default=None, help="default: the recipe's (128 / 6)")
    parser.add_argument("--train", type=int, default=None, help="training clips (default 6000 / 3000)")
    parser.add_argument("--eval", type=int, default=None, help="valid and test clips each")
    parser.add_argument("--warmup", type=int, default=5, help="steps left out of the throughput")
    parser.add_argument("--threads", type=int, default=8, help="OMP_NUM_THREADS of every run")
    parser.add_argument("--num-workers", type=int, default=6, help="data-loading workers")
    parser.add_argument("--tiktoken", type=Path, default=None, help="Whisper's multilingual.tiktoken")
    parser.add_argument("--device", default=None, help="e.g. cpu, to try the script without a GPU")
    parser.add_argument("--model-config", default=None, help="JSON overriding the model's config")
    parser.add_argument("--extra", default="", help="more recipe overrides, space-separated")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    data = ddp_scaling.build_data(args)
    model = ddp_scaling.build_model(args)
    print(f"data {data}, model {model} ready after {time.perf_counter() - started:.0f} s", flush=True)
    batch = args.batch or (128 if args.recipe == "gsc" else 6)
    results = {"recipe": args.recipe, "precision": args.precision, "batch": batch, "runs": []}
    for hparams in args.hparams.split(","):
        for mode in args.modes.split(","):
            name = f"{Path(hparams).stem}_{mode}"
            output = args.work / f"run_{args.recipe}_{args.precision}_{name}"
            if output.exists():
                subprocess.run(["rm", "-rf", str(output)], check=True)
            output.mkdir(parents=True)
            run_args = copy.copy(args)
            run_args.hparams = hparams
            command = ddp_scaling.recipe_command(run_args, data, model, output, batch)
            command = [sys.executable, *command, f"--train_mode={mode}", *args.extra.split()]
            log = args.work / f"log_{args.recipe}_{args.precision}_{name}.txt"
            seconds = ddp_scaling.run(command, log, cwd=args.work, threads=args.threads)
            steps = ddp_scaling.read_steps(output / "steps.jsonl")
            results["runs"].append(
                {
                    "hparams": hparams,
                    "mode": mode,
                    "command": " ".join(command),
                    "wall_s": round(seconds, 1),
                    "steps": len(steps),
                    "step_log": steps,
                }
            )
    summarize(results, args.warmup)
    path = args.out / f"train_modes_{args.recipe}_{args.precision}.json"
    path.write_text(json.dumps(results, separators=(",", ":")))
    print(f"wrote {path}")
    return results


def summarize(results, warmup):
    """Adds throughputs, step times, ratios and loss agreement to ``results``; prints a table."""
    runs = results["runs"]
    for run in runs:
        run["examples_per_s"], run["examples_per_s_median"] = ddp_scaling.throughput(run["step_log"], warmup)
        run["step_ms_median"] = 1000 * results["batch"] / run["examples_per_s_median"]
        eager = next(r for r in runs if r["hparams"] == run["hparams"] and r["mode"] == "eager")
        run["loss_vs_eager"] = ddp_scaling.compare(eager["step_log"], run["step_log"])
    names = [run["hparams"] for run in runs]
    # Step times are compared with the Bottleneck adapter's in the same mode (the target).
    first = next((h for h in names if Path(h).stem.startswith("bottleneck")), names[0])
    lines = [
        f"| {results['recipe']} {results['precision']} batch {results['batch']} | train_mode | "
        f"examples/s (mean) | median step ms | vs {Path(first).stem} | loss vs eager: max rel diff |",
        "|---|---|---|---|---|---|",
    ]
    for run in runs:
        reference = next(r for r in runs if r["hparams"] == first and r["mode"] == run["mode"])
        lines.append(
            f"| {Path(run['hparams']).stem} | {run['mode']} | {run['examples_per_s']:.1f} | "
            f"{run['step_ms_median']:.1f} | x{run['step_ms_median'] / reference['step_ms_median']:.2f} | "
            f"{run['loss_vs_eager']['max_rel_diff']:.2e} |"
        )
    print("\n" + "\n".join(lines), flush=True)
    return results


if __name__ == "__main__":
    main()
