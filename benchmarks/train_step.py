"""Training-step time and peak memory: MambAdapter against the Bottleneck adapter (same placement).

One step = forward + backward + AdamW step, bf16 autocast (as the recipes on GPU), median of
``--repeats`` steps after warm-up (CUDA events), random weights, frozen backbone.

* AST-base (768-d, 12 layers, 128 mel bins), batch 32, 500 frames, r=16, mean pooling + linear head
  (ESC-50's 50 classes), Pfeiffer and Houlsby.
* Whisper-small ASR (encoder adapters, frozen decoder), batch 6, 30 s of mel frames, 40 target
  tokens, MambAdapter r=104 against Bottleneck r=64, Pfeiffer.

Usage (GPU)::

    python benchmarks/train_step.py [--repeats 20] [--json out.json]
"""

import argparse
import json
import statistics

import torch

from speechbrain_mambadapter import inject
from speechbrain_mambadapter.injection import set_adapter_overlap
from speechbrain_mambadapter.mamba import FUSED_KERNELS_AVAILABLE
from speechbrain_mambadapter.training import AdamW


def ast_case(method, placement, rank):
    from transformers import ASTConfig, ASTModel

    torch.manual_seed(0)
    model = ASTModel(ASTConfig(max_length=500))
    inject(model, method=method, placement=placement, rank=rank)
    head = torch.nn.Linear(768, 50)
    feats = torch.randn(32, 500, 128)
    labels = torch.randint(0, 50, (32,))

    def loss_fn(m, h):
        pooled = m(feats.cuda()).last_hidden_state.mean(dim=1)
        return torch.nn.functional.cross_entropy(h(pooled).float(), labels.cuda())

    return model, head, loss_fn


def whisper_case(method, placement, rank):
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(0)
    config = WhisperConfig(
        d_model=768, encoder_layers=12, decoder_layers=12, encoder_attention_heads=12,
        decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072, num_mel_bins=80,
    )  # fmt: skip
    model = WhisperForConditionalGeneration(config)
    inject(model, method=method, placement=placement, rank=rank)
    feats = torch.randn(6, 80, 3000)
    tokens = torch.randint(0, config.vocab_size, (6, 40))

    def loss_fn(m, h):
        return m(
            input_features=feats.cuda(), decoder_input_ids=tokens[:, :-1].cuda(), labels=None
        ).logits.float()

    def loss(m, h):
        logits = loss_fn(m, h)
        return torch.nn.functional.cross_entropy(logits.transpose(1, 2), tokens[:, 1:].cuda())

    return model, torch.nn.Identity(), loss


def time_steps(model, head, loss_fn, repeats, warmup=3):
    model.cuda().train()
    head.cuda().train()
    opt = AdamW(
        list(model.parameters()) + list(head.parameters()), lr=1e-4, betas=(0.9, 0.98), weight_decay=0.1
    )

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = loss_fn(model, head)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times), torch.cuda.max_memory_allocated() / 2**20


CASES = [
    ("ast-base b32x500", ast_case, "pfeiffer", {"mambadapter": 16, "bottleneck": 16}),
    ("ast-base b32x500", ast_case, "houlsby", {"mambadapter": 16, "bottleneck": 16}),
    ("whisper-small asr b6", whisper_case, "pfeiffer", {"mambadapter": 104, "bottleneck": 64}),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", default=None)
    parser.add_argument(
        "--overlap",
        default="off",
        choices=("off", "on", "both"),
        help="adapters' rank-wide part on a side stream (injection.set_adapter_overlap)",
    )
    parser.add_argument(
        "--cases",
        default="all",
        help="comma-separated case indices (0: AST Pfeiffer, 1: AST Houlsby, 2: Whisper ASR), or all",
    )
    args = parser.parse_args()
    overlaps = {"off": (False,), "on": (True,), "both": (False, True)}[args.overlap]
    cases = CASES if args.cases == "all" else [CASES[int(i)] for i in args.cases.split(",")]
    print(
        f"{torch.cuda.get_device_name()} | torch {torch.__version__} | fused Mamba: {FUSED_KERNELS_AVAILABLE}"
    )
    rows = []
    for name, build, placement, ranks in cases:
        for overlap in overlaps:
            for method, rank in ranks.items():
                model, head, loss_fn = build(method, placement, rank)
                set_adapter_overlap(model, overlap)
                ms, peak = time_steps(model, head, loss_fn, args.repeats)
                rows.append(
                    dict(case=name, placement=placement, method=method, rank=rank, overlap=overlap, ms=ms,
                         peak_mib=peak)
                )  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
                del model, head
                torch.cuda.empty_cache()
    print("| case | placement | overlap | method | rank | step ms | peak MiB | time vs bottleneck |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        ref = next(
            x
            for x in rows
            if (x["case"], x["placement"], x["overlap"], x["method"])
            == (r["case"], r["placement"], r["overlap"], "bottleneck")
        )
        ratio = r["ms"] / ref["ms"]
        print(
            f"| {r['case']} | {r['placement']} | {'on' if r['overlap'] else 'off'} | {r['method']} | ", end=""
        )
        print(f"{r['rank']} | {r['ms']:.1f} | ", end="")
        print(f"{r['peak_mib']:.0f} | ×{ratio:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
