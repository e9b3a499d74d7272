"""CPU forward+backward time of the chunked reference scan against a per-step loop.

Shapes are those of MambAdapter's Mamba blocks (B=8, N=16; d_inner 32 = AST r=16,
208 = Whisper r=104; L 250 and 1500 frames). The per-step loop is the classic
reference (mamba-ssm's ``selective_scan_ref`` style): a Python loop over time
with autograd through every step.

Usage::

    python benchmarks/scan_cpu.py [--repeats 3] [--threads 2]
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from speechbrain_mambadapter.mamba import selective_scan_ref


def per_step_scan(u, delta, A, B, C, D, z, delta_bias):
    """The recurrence one time step at a time (autograd records every step)."""
    delta = F.softplus(delta + delta_bias[:, None])
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for t in range(u.shape[2]):
        h = (
            torch.exp(delta[:, :, t, None] * A) * h
            + (delta[:, :, t, None] * u[:, :, t, None]) * B[:, None, :, t]
        )
        ys.append((h * C[:, None, :, t]).sum(-1))
    return (torch.stack(ys, dim=2) + u * D[:, None]) * F.silu(z)


def inputs(batch, d_inner, length, d_state):
    g = torch.Generator().manual_seed(0)
    tensors = [
        torch.randn(batch, d_inner, length, generator=g),
        torch.randn(batch, d_inner, length, generator=g),
        -torch.rand(d_inner, d_state, generator=g) * d_state,
        torch.randn(batch, d_state, length, generator=g),
        torch.randn(batch, d_state, length, generator=g),
        torch.randn(d_inner, generator=g),
        torch.randn(batch, d_inner, length, generator=g),
        torch.randn(d_inner, generator=g),
    ]
    return [t.requires_grad_() for t in tensors]


def time_fwd_bwd(fn, args, repeats):
    times = []
    for i in range(repeats + 1):
        for a in args:
            a.grad = None
        start = time.perf_counter()
        fn(*args).sum().backward()
        if i:  # the first pass is warm-up
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chunk_size", type=int, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    kwargs = {} if args.chunk_size is None else {"chunk_size": args.chunk_size}

    def chunked(u, delta, A, B, C, D, z, bias):
        return selective_scan_ref(u, delta, A, B, C, D, z, bias, delta_softplus=True, **kwargs)

    print(f"torch {torch.__version__}, {args.threads} threads, median of {args.repeats} fwd+bwd passes")
    print("| B | d_inner | L | N | per-step loop s | chunked ref s | speed-up |")
    print("|---|---|---|---|---|---|---|")
    for d_inner in (32, 208):
        for length in (250, 1500):
            x = inputs(8, d_inner, length, 16)
            t_loop = time_fwd_bwd(per_step_scan, x, args.repeats)
            t_ref = time_fwd_bwd(chunked, x, args.repeats)
            print(f"| 8 | {d_inner} | {length} | 16 | {t_loop:.3f} | {t_ref:.3f} | ×{t_loop / t_ref:.1f} |")


if __name__ == "__main__":
    main()
