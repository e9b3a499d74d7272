#!/usr/bin/env python3
"""AST training step, eager against the encoder's forward and backward as CUDA graphs.

One optimisation step as the classification recipes take it (batched filterbank, AST-base with a
PETL method, mean pooling, linear head, cross-entropy, ``training.AdamW``), random AST-base
weights, bf16 autocast, batch ``--batch`` of ``--seconds`` clips (``max_length`` frames). The
graphed variant wraps the encoder (``AST.encode``) with ``torch.cuda.make_graphed_callables``
(forward and backward captured once, replayed every step; the filterbank, head, loss and
optimiser stay eager). It also checks that both variants follow the same losses from the same
initial weights. Usage (GPU)::

    python benchmarks/train_graphs.py [--batch 32] [--frames 500] [--steps 20] [--overlap]

Authors
 * speechbrain-mambadapter contributors 2026
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

# Run as `python benchmarks/train_graphs.py`: make `tools` (the tiny-model maker) importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from speechbrain_mambadapter import inject, set_adapter_overlap  # noqa: E402
from speechbrain_mambadapter.compat import hf_masks_as_eager  # noqa: E402
from speechbrain_mambadapter.lobes.ast import AST  # noqa: E402
from speechbrain_mambadapter.recipe.optim import AdamW  # noqa: E402
from tools.tiny_models import save_random_ast  # noqa: E402

AST_BASE = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072}
METHODS = {
    "mambadapter": {"method": "mambadapter", "placement": "pfeiffer", "rank": 16, "dropout": 0.0},
    "bottleneck": {"method": "bottleneck", "placement": "pfeiffer", "rank": 16},
}


class Encode(torch.nn.Module):
    """``lobe.encode`` as a module whose parameters are the lobe's (for make_graphed_callables)."""

    def __init__(self, lobe):
        super().__init__()
        self.lobe = lobe

    def forward(self, feats):
        return self.lobe.encode(feats)


def build(source, frames, method, overlap=False, seed=0):
    torch.manual_seed(seed)
    lobe = inject(AST(source=source, max_length=frames), **METHODS[method]).cuda().train()
    set_adapter_overlap(lobe, overlap)
    head = torch.nn.Linear(768, 35).cuda()
    return lobe, head


def make_step(lobe, head, graphed, feats_example):
    params = [p for p in list(lobe.parameters()) + list(head.parameters()) if p.requires_grad]
    optimizer = AdamW(params, lr=1e-3, weight_decay=0.1)
    encode = Encode(lobe)
    if graphed:
        # Capture under the step's autocast, with autocast's cast cache off (graph requirement).
        # Some transformers releases build a full attention mask under capture (see compat).
        with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False), hf_masks_as_eager():
            encode = torch.cuda.make_graphed_callables(encode, (feats_example,), num_warmup_iters=3)

    def step(wavs, labels):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            feats = lobe.compute_features(wavs)
            tokens = encode(feats)
            logits = head(tokens.mean(dim=1))
            loss = F.cross_entropy(logits.float(), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--json", default=None)
    parser.add_argument(
        "--overlap",
        action="store_true",
        help="adapters' rank-wide part on a side stream (set_adapter_overlap)",
    )
    args = parser.parse_args(argv)
    source = save_random_ast(tempfile.mkdtemp(), max_length=args.frames, **AST_BASE)
    samples = int((args.frames - 1) * 160 + 400)
    generator = torch.Generator(device="cuda").manual_seed(0)
    batches = [
        (
            torch.randn(args.batch, samples, device="cuda", generator=generator) * 0.1,
            torch.randint(0, 35, (args.batch,), device="cuda", generator=generator),
        )
        for _ in range(4)
    ]
    results = {}
    for method in METHODS:
        losses = {}
        for graphed in (False, True):
            lobe, head = build(source, args.frames, method, args.overlap)
            feats_example = lobe.compute_features(batches[0][0]).detach()
            step = make_step(lobe, head, graphed, feats_example)
            # Same initial weights for both variants: the first 4 losses are compared.
            losses[graphed] = [float(step(*batches[i % 4])) for i in range(4)]
            for _ in range(3):
                step(*batches[0])
            torch.cuda.synchronize()
            times = []
            for i in range(args.steps):
                start = time.perf_counter()
                step(*batches[i % 4])
                torch.cuda.synchronize()
                times.append((time.perf_counter() - start) * 1000)
            name = f"{method} {'graphed' if graphed else 'eager'}"
            results[name] = {
                "step_ms": statistics.median(times),
                "peak_mem_mb": torch.cuda.max_memory_allocated() / 2**20,
                "losses": losses[graphed],
            }
            print(name, json.dumps(results[name]), flush=True)
            del step, lobe, head
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        diff = max(abs(a - b) / abs(a) for a, b in zip(losses[False], losses[True]))
        print(f"{method}: max relative loss difference eager vs graphed over 4 steps {diff:.2e}")
    print(f"\n| AST-base B={args.batch}, {args.frames} frames, bf16 | eager ms | graphed ms |")
    print("|---|---|---|")
    for method in METHODS:
        eager, graph = results[f"{method} eager"]["step_ms"], results[f"{method} graphed"]["step_ms"]
        print(f"| {method} | {eager:.1f} | {graph:.1f} (x{eager / graph:.2f} faster) |")
    ratio_eager = results["mambadapter eager"]["step_ms"] / results["bottleneck eager"]["step_ms"]
    ratio_graph = results["mambadapter graphed"]["step_ms"] / results["bottleneck graphed"]["step_ms"]
    print(f"MambAdapter / Bottleneck: eager x{ratio_eager:.2f}, graphed x{ratio_graph:.2f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
