"""Where the Triton selective scan's time goes: its passes timed apart, and a short run for ``ncu``.

``--split`` times the forward scan at each time-segment count given (``--segments``): with one
segment it is the output pass alone; with more, the summary pass, the carry and the output pass
together, so differences between rows place the time. ``--ncu`` runs each shape's forward (and,
with ``--train``, forward and backward) a few times and nothing else, for Nsight Compute::

    ncu --clock-control none --section SpeedOfLight --section WarpStateStats --section Occupancy \\
        -k regex:_scan python benchmarks/scan_profile.py --ncu --shapes 32,1500,208,16

``--maxnreg 0,128,168`` times the forward (inference) and the forward + backward (training) at each
cap on the registers per thread (``triton_scan._MAXNREG``; 0: the compiler's choice).

``--launch`` measures what the CPU spends to launch, the cost that bounds an eager call at small
batches: µs of CPU per call of the scan's forward (its 1 or 3 kernels, through the custom op and
straight) and backward, of the causal convolution's forward and backward, and of an empty PyTorch
kernel for scale, and of a whole eager MambAdapter at batch 1, each timed over many calls with no
synchronisation between them, with Triton's launch path and with the package's direct launch
(``mamba/triton_launch.py``), alternated round by round; medians of 9 rounds.

``--dispatch`` measures the same way what the custom ops' dispatch costs eager calls: CPU µs per
call of the scan and the convolution with gradients (forward, and forward + backward) and of a
whole eager MambAdapter at batch 1, through the ``torch.library`` custom ops (as ``torch.compile``
calls them) and through the plain ``autograd.Function`` that eager calls take
(``triton_ops._EAGER_FUNCTIONS``), alternated round by round.

Times are medians of CUDA-graph replays (``scan_kernels.graph_time_us``), µs.
"""

import argparse
import json
import os
import statistics
import time

import torch
from scan_kernels import graph_time_us, make_inputs  # benchmarks/, the script's folder, is on sys.path

from speechbrain_mambadapter import MambAdapter, SharedProjections
from speechbrain_mambadapter.mamba import (
    causal_conv1d_cl,
    selective_scan_cl,
    triton_conv,
    triton_ops,
    triton_scan,
)
from speechbrain_mambadapter.mamba.triton_launch import LAUNCH_ENV


def parse_shapes(text):
    return [tuple(int(v) for v in s.split(",")) for s in text.split(";")]


def forward(cl, segments, save_states=False):
    args = [cl[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    return lambda: triton_scan.scan_fwd(*args, True, save_states, segments=segments)


def forward_backward(cl, grad, segments):
    args = [cl[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]

    def run():
        _, _, states = triton_scan.scan_fwd(*args, True, True, segments=segments)
        return triton_scan.scan_bwd(*args, True, states, grad, None, segments=segments)

    return run


def cpu_us_per_call(fn, calls=300):
    """CPU µs per call of ``fn`` while the GPU keeps up (tiny inputs, no synchronisation)."""
    for _ in range(20):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    elapsed = time.perf_counter() - start
    torch.cuda.synchronize()
    return elapsed * 1e6 / calls


def adapter_call():
    """One Whisper-small MambAdapter (r=104) at batch 1, eager, bf16 autocast: a forward, or a
    forward and a backward."""
    adapter = MambAdapter(768, 104, SharedProjections(768, 104).cuda()).cuda()
    hidden = torch.randn(1, 1500, 768, device="cuda", requires_grad=True)

    def call(train):
        with torch.set_grad_enabled(train), torch.autocast("cuda", dtype=torch.bfloat16):
            y = adapter.train(train)(hidden)
        if train:
            y.float().square().mean().backward()

    return call


def launch_costs():
    """CPU µs per call of the scan, the convolution and an empty PyTorch kernel (B=1, L=64), with
    Triton's own launch path and with the package's direct launch (``triton_launch.Launcher``)."""
    cl, _ = make_inputs(1, 64, 208, 16, torch.bfloat16)
    x = cl["u"]
    weight = torch.randn(208, 4, device="cuda")
    small = torch.zeros(1, device="cuda")
    args = [cl[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    grad = torch.randn_like(x)
    _, _, states = triton_scan.scan_fwd(*args, True, True, 1)
    # A whole MambAdapter: what the launches add up to.
    adapter = adapter_call()
    calls = {
        "torch add_ (1 kernel)": lambda: small.add_(1.0),
        "scan_fwd, 1 segment (1 kernel)": lambda: triton_scan.scan_fwd(*args, True, False, 1),
        "scan_fwd, 2 segments (3 kernels)": lambda: triton_scan.scan_fwd(*args, True, False, 2),
        "scan_bwd, 1 segment (1 kernel and 5 sums)": lambda: triton_scan.scan_bwd(
            *args, True, states, grad, None, 1
        ),
        "selective_scan_cl, no gradient (3 kernels)": lambda: selective_scan_cl(**cl, delta_softplus=True),
        "causal_conv1d_cl, no gradient": lambda: causal_conv1d_cl(x, weight, None, activation="silu"),
        "conv_bwd (2 kernels and 1 sum)": lambda: triton_conv.conv_bwd(x, weight, None, True, grad),
        "MambAdapter forward, [1, 1500, 768], r=104": lambda: adapter(False),
        "MambAdapter forward + backward": lambda: adapter(True),
    }

    def launch_path(mode):
        os.environ[LAUNCH_ENV] = mode

    try:
        return ab_table(calls, ("triton", "direct"), launch_path)
    finally:
        os.environ.pop(LAUNCH_ENV, None)


def dispatch_costs():
    """CPU µs per eager call with gradients (B=1, L=64; a MambAdapter at [1, 1500, 768]) through the
    custom ops and through the plain ``autograd.Function``."""
    cl, _ = make_inputs(1, 64, 208, 16, torch.bfloat16)
    leaves = {k: v.detach().clone().requires_grad_() if v is not None else None for k, v in cl.items()}
    x = leaves["u"]
    weight = torch.randn(208, 4, device="cuda", requires_grad=True)
    grad = torch.randn_like(x)

    def scan_backward():
        selective_scan_cl(**leaves, delta_softplus=True).backward(grad)

    def conv_backward():
        causal_conv1d_cl(x, weight, None, activation="silu").backward(grad)

    adapter = adapter_call()
    calls = {
        "selective_scan_cl forward (saving states)": lambda: selective_scan_cl(**leaves, delta_softplus=True),
        "selective_scan_cl forward + backward": scan_backward,
        "causal_conv1d_cl forward": lambda: causal_conv1d_cl(x, weight, None, activation="silu"),
        "causal_conv1d_cl forward + backward": conv_backward,
        "MambAdapter forward, [1, 1500, 768], r=104": lambda: adapter(False),
        "MambAdapter forward + backward": lambda: adapter(True),
    }

    def eager_functions(mode):
        triton_ops._EAGER_FUNCTIONS = mode == "function"

    try:
        return ab_table(calls, ("custom op", "function"), eager_functions)
    finally:
        triton_ops._EAGER_FUNCTIONS = True


def ab_table(calls, paths, set_path):
    """Print and return ``{call: {path: µs}}``, each call timed through each of the two paths
    by ``ab_cpu_us``."""
    first, second = paths
    print(f"| call | {first} | {second} |\n|---|---:|---:|")
    rows = {}
    for name, fn in calls.items():
        rows[name] = us = ab_cpu_us(fn, paths, set_path)
        print(f"| {name} | {us[first]:.1f} | {us[second]:.1f} |", flush=True)
    return rows


def ab_cpu_us(fn, paths, set_path, rounds=9, calls=100):
    """Median CPU µs per call through each of two paths (``set_path(name)`` switches to one), the
    two alternated round by round (ABBA order), so that a host whose speed drifts during the run
    weighs on both alike (``benchmarks/RESULTS.md``: one path timed after the other is not a
    comparison)."""
    first, second = paths
    samples = {first: [], second: []}
    for r in range(rounds):
        for name in (first, second) if r % 2 == 0 else (second, first):
            set_path(name)
            samples[name].append(cpu_us_per_call(fn, calls))
    return {name: statistics.median(v) for name, v in samples.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default="32,1500,208,16;8,1500,208,16;1,1500,208,16")
    parser.add_argument("--segments", default="0,1,2,4,8,16,32")
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    parser.add_argument("--split", action="store_true")
    parser.add_argument("--ncu", action="store_true")
    parser.add_argument("--train", action="store_true")
    parser.add_argument("--launch", action="store_true")
    parser.add_argument("--dispatch", action="store_true")
    parser.add_argument("--maxnreg", default=None, help="comma-separated register caps to time (0: none)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    rows = []
    if args.launch:
        rows.append(dict(launch_cpu_us=launch_costs()))
    if args.dispatch:
        rows.append(dict(dispatch_cpu_us=dispatch_costs()))
    if args.maxnreg:
        for shape in parse_shapes(args.shapes):
            cl, _ = make_inputs(*shape, dtype)
            grad = torch.randn(*shape[:3], device="cuda", dtype=dtype)
            default_caps = dict(triton_scan._MAXNREG)
            for cap in [int(c) for c in args.maxnreg.split(",")]:
                triton_scan._MAXNREG.update(inference=cap or None, training=cap or None)
                with torch.no_grad():
                    fwd = graph_time_us(forward(cl, 0))
                both = graph_time_us(forward_backward(cl, grad, 0))
                row = dict(shape=list(shape), dtype=args.dtype, maxnreg=cap, fwd_us=fwd, fwd_bwd_us=both)
                rows.append(row)
                print(rows[-1], flush=True)
            triton_scan._MAXNREG.update(default_caps)
    for shape in parse_shapes(args.shapes) if args.split or args.ncu else []:
        cl, _ = make_inputs(*shape, dtype)
        grad = torch.randn(*shape[:3], device="cuda", dtype=dtype)
        with torch.no_grad():
            if args.ncu:
                for _ in range(2):
                    forward(cl, 0)()
                    if args.train:
                        forward_backward(cl, grad, 0)()
                torch.cuda.synchronize()
                continue
            for seg in [int(s) for s in args.segments.split(",")]:
                row = dict(shape=list(shape), dtype=args.dtype, segments=seg)
                row["fwd_us"] = graph_time_us(forward(cl, seg))
                if args.train:
                    row["fwd_saving_us"] = graph_time_us(forward(cl, seg, save_states=True))
                    row["fwd_bwd_us"] = graph_time_us(forward_backward(cl, grad, seg))
                rows.append(row)
                print(row, flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
