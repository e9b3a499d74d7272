"""Where one MambAdapter call spends its GPU time (torch.profiler, CUDA kernels by total time).

Defaults: the Whisper-small batch scenario, x [32, 1500, 768], r=104, bf16, inference.
``--train`` profiles forward + backward instead (e.g. AST-base: ``--length 590 --rank 16``).
``--cpu`` also records the CPU side (operators by self CPU time) and prints the wall time of a
call: at small batches an eager call is bound by what the CPU does to launch its kernels.

Usage (GPU)::

    python benchmarks/profile_adapter.py [--batch 32] [--length 1500] [--rank 104] [--train]
"""

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from speechbrain_mambadapter import MambAdapter, SharedProjections


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=1500)
    parser.add_argument("--rank", type=int, default=104)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--train", action="store_true")
    parser.add_argument("--cpu", action="store_true")
    args = parser.parse_args()
    # The shared projections are held by reference, not registered: move them too.
    shared = SharedProjections(768, args.rank).cuda()
    adapter = MambAdapter(768, args.rank, shared).cuda()
    x = torch.randn(args.batch, args.length, 768, device="cuda", requires_grad=args.train)

    def call():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y = adapter(x)
        if args.train:
            y.float().square().mean().backward()

    adapter.train(args.train)
    with torch.set_grad_enabled(args.train):
        for _ in range(5):
            call()
        torch.cuda.synchronize()
        if args.cpu:
            start = time.perf_counter()
            for _ in range(args.calls):
                call()
            torch.cuda.synchronize()
            wall_ms = (time.perf_counter() - start) * 1000 / args.calls
        activities = [ProfilerActivity.CUDA] + ([ProfilerActivity.CPU] if args.cpu else [])
        with profile(activities=activities) as prof:
            for _ in range(args.calls):
                call()
            torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=15, max_name_column_width=70))
    if args.cpu:
        print(
            prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=70)
        )
        print(f"wall time per adapter call ({'fwd+bwd' if args.train else 'fwd'}): {wall_ms:.3f} ms")
    total_us = sum(e.self_device_time_total for e in prof.key_averages()) / args.calls
    print(f"GPU time per adapter call ({'fwd+bwd' if args.train else 'fwd'}): {total_us / 1000:.3f} ms")


if __name__ == "__main__":
    main()
