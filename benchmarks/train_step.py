"""Training-step time and peak memory: MambAdapter against the Bottleneck adapter (same placement).

One step = forward + backward + AdamW step, bf16 autocast (as the recipes on GPU), median of
``--repeats`` steps after warm-up (CUDA events), random weights, frozen backbone.

* AST-base (768-d, 12 layers, 128 mel bins), batch 32, 500 frames, r=16, mean pooling + linear head
  (ESC-50's 50 classes), Pfeiffer and Houlsby.
* Whisper-small ASR (encoder adapters, frozen decoder), batch 6, 30 s of mel frames, 40 target
  tokens, MambAdapter r=104 against Bottleneck r=64, Pfeiffer.

Usage (GPU)::

    python benchmarks/train_step.py [--repeats 20] [--json out.json] [--modes eager,graphed]
        [--overlap off|on|both] [--cases 0,1,2]

``--modes graphed`` captures the encoder's forward and backward once with
``torch.cuda.make_graphed_callables`` and replays them every step (head, decoder, loss and
optimiser stay eager); ``--overlap on`` runs the adapters' rank-wide part on a side stream.
"""

import argparse
import json
import statistics

import torch
from latency import LastHidden  # benchmarks/, the script's folder, is on sys.path
from scan_kernels import apply_tuning_file

from speechbrain_mambadapter import inject, set_adapter_overlap
from speechbrain_mambadapter.compat import hf_masks_as_eager
from speechbrain_mambadapter.mamba import FUSED_KERNELS_AVAILABLE
from speechbrain_mambadapter.recipe.optim import AdamW


def ast_case(method, placement, rank):
    from transformers import ASTConfig, ASTModel

    torch.manual_seed(0)
    model = ASTModel(ASTConfig(max_length=500))
    inject(model, method=method, placement=placement, rank=rank)
    head = torch.nn.Linear(768, 50)
    feats = torch.randn(32, 500, 128)
    labels = torch.randint(0, 50, (32,))

    def loss_fn(encoded):
        return torch.nn.functional.cross_entropy(head(encoded.mean(dim=1)).float(), labels.cuda())

    return model, head, LastHidden(model), feats, loss_fn


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

    def loss_fn(encoded):
        # The frozen decoder, teacher-forced on the encoder's output.
        logits = model(encoder_outputs=(encoded,), decoder_input_ids=tokens[:, :-1].cuda()).logits
        return torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), tokens[:, 1:].cuda())

    return model, torch.nn.Identity(), LastHidden(model.model.encoder), feats, loss_fn


def time_steps(case, repeats, graphed=False, warmup=3):
    """Median step time (ms) and peak memory (MiB) of one case; ``graphed`` captures the encoder's
    forward and backward with ``torch.cuda.make_graphed_callables``."""
    model, head, encoder, feats, loss_fn = case
    model.cuda().train()
    head.cuda().train()
    feats = feats.cuda()
    opt = AdamW(
        list(model.parameters()) + list(head.parameters()), lr=1e-4, betas=(0.9, 0.98), weight_decay=0.1
    )
    if graphed:
        # Captured under the step's autocast with its cast cache off; some transformers releases
        # build a full attention mask under capture unless told otherwise (compat).
        with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False), hf_masks_as_eager():
            encoder = torch.cuda.make_graphed_callables(encoder, (feats,), num_warmup_iters=3)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = loss_fn(encoder(feats))
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
        "--scan-tuning",
        default=None,
        help="a JSON of benchmarks/scan_kernels.py --sweep: run the Triton scan with its chosen tiles",
    )
    parser.add_argument(
        "--overlap",
        default="off",
        choices=("off", "on", "both"),
        help="adapters' rank-wide part on a side stream (set_adapter_overlap)",
    )
    parser.add_argument(
        "--cases",
        default="all",
        help="comma-separated case indices (0: AST Pfeiffer, 1: AST Houlsby, 2: Whisper ASR), or all",
    )
    parser.add_argument(
        "--modes",
        default="eager",
        help="comma-separated: eager, graphed (the encoder's forward and backward as CUDA graphs)",
    )
    args = parser.parse_args()
    apply_tuning_file(args.scan_tuning)
    overlaps = {"off": (False,), "on": (True,), "both": (False, True)}[args.overlap]
    cases = CASES if args.cases == "all" else [CASES[int(i)] for i in args.cases.split(",")]
    print(
        f"{torch.cuda.get_device_name()} | torch {torch.__version__} | fused Mamba: {FUSED_KERNELS_AVAILABLE}"
    )
    rows = []
    for name, build, placement, ranks in cases:
        for mode in args.modes.split(","):
            for overlap in overlaps:
                for method, rank in ranks.items():
                    case = build(method, placement, rank)
                    set_adapter_overlap(case[0], overlap)
                    ms, peak = time_steps(case, args.repeats, graphed=mode == "graphed")
                    rows.append(
                        dict(case=name, placement=placement, mode=mode, overlap=overlap, method=method,
                             rank=rank, ms=ms, peak_mib=peak)
                    )  # fmt: skip
                    print(json.dumps(rows[-1]), flush=True)
                    if args.json:  # after every row, so that a run cut short keeps what it measured
                        with open(args.json, "w") as f:
                            json.dump(rows, f, indent=1)
                    del case
                    torch.cuda.empty_cache()
    print("| case | placement | mode | overlap | method | rank | step ms | peak MiB | time vs bottleneck |")
    print("|---|---|---|---|---|---|---|---|---|")
    same = ("case", "placement", "mode", "overlap")
    for r in rows:
        ref = next(
            x for x in rows if [x[k] for k in same] == [r[k] for k in same] and x["method"] == "bottleneck"
        )
        print(
            f"| {r['case']} | {r['placement']} | {r['mode']} | {'on' if r['overlap'] else 'off'} | "
            f"{r['method']} | {r['rank']} | {r['ms']:.1f} | {r['peak_mib']:.0f} | "
            f"×{r['ms'] / ref['ms']:.2f} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
