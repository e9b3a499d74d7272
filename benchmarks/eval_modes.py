#!/usr/bin/env python3
"""Evaluation latency of the AST classification path, as the recipes run it, per inference mode.

One forward of the AST lobe (waveform -> batched Kaldi filterbank -> AST-base encoder -> mean
pooling), random AST-base weights, bf16 autocast (the recipes' ``eval_precision``), for the
recipes' clip lengths (GSC 1 s / 100 frames, FSC and UrbanSound8k 4 s / 400, ESC-50 5 s / 500)
and batch 1, 8 and 32; plain AST, AST + MambAdapter (Pfeiffer, r=16) and AST + Bottleneck (r=16);
``--inference_mode`` ``eager`` and ``cuda_graph`` (``recipe.modes.set_graph_mode``).
Median of ``--repeats`` timed calls (CUDA events) after warm-up::

    python benchmarks/eval_modes.py --json eval_modes.json

Authors
 * speechbrain-mambadapter contributors 2026
"""

import argparse
import functools
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

# Run as `python benchmarks/eval_modes.py`: make `tools` (the tiny-model maker) importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from speechbrain_mambadapter import inject  # noqa: E402
from speechbrain_mambadapter.lobes.ast import AST  # noqa: E402
from speechbrain_mambadapter.recipe.modes import set_graph_mode  # noqa: E402
from tools.tiny_models import save_random_ast  # noqa: E402

AST_BASE = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072}
LENGTHS = {"GSC 1 s": (1.0, 100), "FSC/US8K 4 s": (4.0, 400), "ESC-50 5 s": (5.0, 500)}
VARIANTS = {
    "plain": None,
    "mambadapter": {"method": "mambadapter", "placement": "pfeiffer", "rank": 16},
    "bottleneck": {"method": "bottleneck", "placement": "pfeiffer", "rank": 16},
}


def forward(lobe, wavs, lens):
    """One evaluation forward, as the recipes run it (no gradients, bf16 autocast)."""
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        return lobe(wavs, lens)


def time_calls(fn, repeats, warmup=5):
    """Median milliseconds of ``fn()`` over ``repeats`` calls, CUDA events."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("eval_modes.py measures CUDA latency: run it on a machine with a GPU.")
    results = []
    tmp = tempfile.mkdtemp()
    for scenario, (seconds, frames) in LENGTHS.items():
        source = save_random_ast(f"{tmp}/ast{frames}", max_length=frames, **AST_BASE)
        for variant, kwargs in VARIANTS.items():
            lobe = AST(source=source, max_length=frames)
            if kwargs:
                lobe = inject(lobe, **kwargs)
            lobe = lobe.cuda().eval()
            for mode in ("eager", "cuda_graph"):
                set_graph_mode(lobe, mode, max_graphs=len(args.batches))
                for batch in args.batches:
                    wavs = torch.randn(batch, int(16000 * seconds), device="cuda") * 0.1
                    lens = torch.ones(batch, device="cuda")

                    ms = time_calls(functools.partial(forward, lobe, wavs, lens), args.repeats)
                    row = dict(scenario=scenario, variant=variant, mode=mode, batch=batch, ms=ms)
                    results.append(row)
                    print(json.dumps(row), flush=True)
            set_graph_mode(lobe, "eager")
            torch.cuda.empty_cache()
    table = {(r["scenario"], r["variant"], r["mode"], r["batch"]): r["ms"] for r in results}
    print("\n| clips | batch | mode | plain ms | MambAdapter ms (x) | Bottleneck ms (x) |")
    print("|---|---|---|---|---|---|")
    for scenario in LENGTHS:
        for batch in args.batches:
            for mode in ("eager", "cuda_graph"):
                plain = table[scenario, "plain", mode, batch]
                mamba = table[scenario, "mambadapter", mode, batch]
                bottle = table[scenario, "bottleneck", mode, batch]
                print(
                    f"| {scenario} | {batch} | {mode} | {plain:.2f} | {mamba:.2f} (x{mamba / plain:.2f}) "
                    f"| {bottle:.2f} (x{bottle / plain:.2f}) |"
                )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
