"""Inference latency and peak memory of the Whisper-small encoder, plain and adapted (paper Table 4).

Random weights (latency does not depend on values), inputs as Whisper sees them: 80 x 3000
log-mel frames (30 s; shorter audio is padded to 30 s). Scenarios: streaming (batch 1),
mid (batch 8), batch (batch 32). Variants: plain encoder, + Bottleneck (r=64), + Conformer
(r=48), + LoRA (r=32), + MambAdapter (r=104), all Pfeiffer, the paper's Whisper ranks;
``+overlap``: the adapter's rank-wide part on a side stream, concurrent with the FFN
(``speechbrain_mambadapter.set_adapter_overlap``); ``+folded``: MambAdapter merged for inference
(``merge_mambadapter``), as the recipes' ``inference_mode: cuda_graph`` evaluates it.
Modes: ``eager`` (PyTorch as is) and ``graph`` (``CUDAGraphModule``: the whole encoder
replayed as one CUDA graph). Each figure is the median of ``--repeats`` timed forwards after
warm-up (CUDA events); overheads are ratios to the plain encoder in the same run, dtype and
mode. fp32 is true fp32 (TF32 off).

Usage (GPU; with mamba-ssm and causal-conv1d installed for the fused Mamba path)::

    python benchmarks/latency.py [--dtypes fp32,bf16] [--modes eager,graph] [--json out.json]
"""

import argparse
import json
import statistics

import torch
from scan_kernels import apply_tuning_file  # benchmarks/, the script's folder, is on sys.path

from speechbrain_mambadapter import inject, set_adapter_overlap
from speechbrain_mambadapter.cuda_graphs import CUDAGraphModule
from speechbrain_mambadapter.mamba import FUSED_KERNELS_AVAILABLE
from speechbrain_mambadapter.params import build_backbone
from speechbrain_mambadapter.tuners import merge_mambadapter

SCENARIOS = {"streaming": 1, "mid": 8, "batch": 32}
VARIANTS = {
    "plain": None,
    "bottleneck": dict(method="bottleneck", placement="pfeiffer", rank=64),
    "conformer": dict(method="conformer", placement="pfeiffer", rank=48),
    "lora": dict(method="lora", rank=32),
    "mambadapter": dict(method="mambadapter", placement="pfeiffer", rank=104),
    # The same adapters with their rank-wide part on a side stream, overlapping the FFN.
    "bottleneck+overlap": dict(method="bottleneck", placement="pfeiffer", rank=64, overlap=True),
    "mambadapter+overlap": dict(method="mambadapter", placement="pfeiffer", rank=104, overlap=True),
    # Folded as the recipes' inference_mode=cuda_graph runs it: W_down in in_proj, alpha*W_up in out_proj.
    "mambadapter+folded": dict(method="mambadapter", placement="pfeiffer", rank=104, fold=True),
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


class LastHidden(torch.nn.Module):
    """HF encoder → its ``last_hidden_state`` tensor (what CUDA graphs can hold)."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, features):
        return self.encoder(features).last_hidden_state


def build(variant, dtype):
    torch.manual_seed(0)
    encoder = build_backbone("whisper-small-encoder", device="cpu")
    fold = False
    if VARIANTS[variant] is not None:
        kwargs = dict(VARIANTS[variant])
        overlap = kwargs.pop("overlap", False)
        fold = kwargs.pop("fold", False)
        inject(encoder, **kwargs)
        set_adapter_overlap(encoder, overlap)
        with torch.no_grad():  # zero-initialised up-projections would time GEMMs on zeros
            for p in encoder.parameters():
                if p.requires_grad:
                    p.add_(torch.randn_like(p) * 1e-3)
    model = LastHidden(encoder).to("cuda", dtype).eval()
    if fold:
        merge_mambadapter(model)
    return model


def time_forward(fn, x, repeats, warmup=5):
    for _ in range(warmup):
        fn(x)
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(x)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def measure(variant, dtype_name, modes, repeats):
    rows = []
    model = build(variant, DTYPES[dtype_name])
    for mode in modes:
        fn = CUDAGraphModule(model, max_graphs=len(SCENARIOS)) if mode == "graph" else model
        for scenario, batch in SCENARIOS.items():
            x = torch.randn(batch, 80, 3000, device="cuda", dtype=DTYPES[dtype_name])
            with torch.inference_mode():
                fn(x)  # capture (graph mode) outside the peak-memory window
                torch.cuda.synchronize()
                base = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
                fn(x)
                torch.cuda.synchronize()
                peak_mib = (torch.cuda.max_memory_allocated() - base) / 2**20
                ms = time_forward(fn, x, repeats)
            rows.append(
                dict(variant=variant, dtype=dtype_name, mode=mode, scenario=scenario, batch=batch, ms=ms,
                     peak_activation_mib=peak_mib, weights_mib=base / 2**20)
            )  # fmt: skip
        del fn
    del model
    torch.cuda.empty_cache()
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--modes", default="eager,graph")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--json", default=None, help="also write all rows to this file")
    parser.add_argument(
        "--scan-tuning",
        default=None,
        help="a JSON of benchmarks/scan_kernels.py --sweep: run the Triton scan with its chosen tiles",
    )
    args = parser.parse_args()
    apply_tuning_file(args.scan_tuning)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    print(
        f"{torch.cuda.get_device_name()} | torch {torch.__version__} | fused Mamba: {FUSED_KERNELS_AVAILABLE}"
    )
    rows = []
    for dtype_name in args.dtypes.split(","):
        for variant in args.variants.split(","):
            rows += measure(variant, dtype_name, args.modes.split(","), args.repeats)
            if args.json:  # after every row, so that a run cut short keeps what it measured
                with open(args.json, "w") as f:
                    json.dump(rows, f, indent=1)
    plain = {(r["dtype"], r["mode"], r["scenario"]): r for r in rows if r["variant"] == "plain"}
    print(
        "| dtype | mode | variant | streaming ms | mid ms | batch ms | overhead s/m/b | peak act. MiB (b) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for dtype_name in args.dtypes.split(","):
        for mode in args.modes.split(","):
            for variant in args.variants.split(","):
                sel = {
                    r["scenario"]: r
                    for r in rows
                    if (r["variant"], r["dtype"], r["mode"]) == (variant, dtype_name, mode)
                }
                ms = " | ".join(f"{sel[s]['ms']:.2f}" for s in SCENARIOS)
                ratios = "/".join(
                    f"×{sel[s]['ms'] / plain[(dtype_name, mode, s)]['ms']:.2f}"
                    if (dtype_name, mode, s) in plain
                    else "-"
                    for s in SCENARIOS
                )
                peak = sel["batch"]["peak_activation_mib"]
                print(f"| {dtype_name} | {mode} | {variant} | {ms} | {ratios} | {peak:.0f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
