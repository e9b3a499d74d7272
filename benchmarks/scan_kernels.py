"""Selective-scan kernels: the project's Triton scan against mamba-ssm's ``selective_scan_fn``.

Each kernel gets the layout it is built for, as the Mamba block hands it over: channels-last
``[B, L, D]`` tensors with ``z``, ``B`` and ``C`` strided views for the Triton scan, contiguous
``[B, D, L]`` ones for mamba-ssm. Both run with ``D``, the ``z`` gate, ``delta_bias`` and softplus.
Times are medians (µs) of CUDA-graph replays (10 replays per CUDA-event pair, 30 pairs), so no
launch overhead is counted; at B=1 the inputs fit in L2, as they do after the projection that
produces them. ``fwd`` runs without gradients (the inference path); ``fwd+bwd`` takes the gradients
of all eight inputs. GB/s counts the fewest bytes the pass must move (each input read once,
each output written once) over the measured time, against the copy bandwidth measured in the
same run.

Usage (GPU; mamba-ssm optional, its columns are left empty without it)::

    python benchmarks/scan_kernels.py [--dtypes bf16,fp32] [--json out.json] [--sweep]

``--sweep`` also times other tile sizes and segment counts of the Triton kernels (for choosing
the defaults in ``speechbrain_mambadapter/mamba/triton_scan.py``).
"""

import argparse
import json
import statistics

import torch

from speechbrain_mambadapter.mamba import selective_scan_cl, triton_scan

try:
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
except ImportError as error:  # report it, time the Triton scan alone
    selective_scan_fn = None
    MAMBA_SSM_ERROR = repr(error)
else:
    MAMBA_SSM_ERROR = None

# (B, L, D, N): the adapter's shapes (Whisper-small r=104: D=208; AST r=16: D=32) and wider ones.
SHAPES = [
    (32, 1500, 208, 16),
    (8, 1500, 208, 16),
    (1, 1500, 208, 16),
    (32, 500, 32, 16),
    (128, 100, 32, 16),
    (32, 1500, 416, 16),
    (8, 1500, 208, 64),
    (4, 2048, 1536, 16),
]
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def graph_time_us(fn, pairs=30, inner=10):
    """Median µs of one call of ``fn``, replayed from a CUDA graph."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    graph.replay()
    times = []
    for _ in range(pairs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(inner):
            graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1000 / inner)
    del graph
    return statistics.median(times)


def copy_bandwidth_gbs():
    """Device-to-device copy of 2 GiB, bytes read plus written, GB/s."""
    src = torch.randn(2**29, device="cuda")
    dst = torch.empty_like(src)
    us = graph_time_us(lambda: dst.copy_(src), pairs=10, inner=3)
    return 2 * src.numel() * 4 / us / 1e3


def make_inputs(batch, length, d_inner, d_state, dtype, seed=0):
    """Channels-last inputs for the Triton scan and contiguous [B, D, L] copies for mamba-ssm."""
    g = torch.Generator(device="cuda").manual_seed(seed)

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, device="cuda", generator=g) * scale).to(dtype)

    xz = randn(batch, length, 2 * d_inner)
    x_dbl = randn(batch, length, 7 + 2 * d_state)
    cl = dict(
        u=randn(batch, length, d_inner),
        delta=randn(batch, length, d_inner, scale=0.5),
        A=-torch.exp(torch.randn(d_inner, d_state, device="cuda", generator=g) * 0.5),
        B=x_dbl[..., 7 : 7 + d_state],
        C=x_dbl[..., 7 + d_state :],
        D=torch.randn(d_inner, device="cuda", generator=g),
        z=xz[..., d_inner:],
        delta_bias=torch.randn(d_inner, device="cuda", generator=g) * 0.1,
    )
    cf = {k: (v.transpose(1, 2).contiguous() if v.dim() == 3 else v) for k, v in cl.items()}
    return cl, cf


def min_bytes(batch, length, d_inner, d_state, itemsize):
    """Fewest bytes of (forward, backward): every input read once, every output written once."""
    bld, bln = batch * length * d_inner * itemsize, batch * length * d_state * itemsize
    forward = 4 * bld + 2 * bln  # u, delta, z in; out
    backward = 7 * bld + 4 * bln  # u, delta, z, dout in; du, ddelta, dz out; B, C in; dB, dC out
    return forward, backward


def triton_fwd(cl):
    return lambda: selective_scan_cl(**cl, delta_softplus=True)


def triton_fwd_bwd(cl, grad):
    leaves = {k: v.detach().requires_grad_() for k, v in cl.items()}
    order = list(leaves.values())

    def run():
        out = selective_scan_cl(**leaves, delta_softplus=True)
        return torch.autograd.grad(out, order, grad)

    return run


def mamba_fwd(cf):
    return lambda: selective_scan_fn(**cf, delta_softplus=True)


def mamba_fwd_bwd(cf, grad):
    leaves = {k: v.detach().requires_grad_() for k, v in cf.items()}
    order = list(leaves.values())
    grad = grad.transpose(1, 2).contiguous()

    def run():
        out = selective_scan_fn(**leaves, delta_softplus=True)
        return torch.autograd.grad(out, order, grad)

    return run


def rel_err(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def measure(shape, dtype_name):
    batch, length, d_inner, d_state = shape
    dtype = DTYPES[dtype_name]
    cl, cf = make_inputs(*shape, dtype)
    grad = torch.randn(batch, length, d_inner, device="cuda", dtype=dtype)
    fwd_bytes, bwd_bytes = min_bytes(*shape, torch.finfo(dtype).bits // 8)
    row = dict(shape=list(shape), dtype=dtype_name, fwd_bytes=fwd_bytes, bwd_bytes=bwd_bytes)
    with torch.no_grad():
        row["triton_fwd_us"] = graph_time_us(triton_fwd(cl))
    row["triton_fwdbwd_us"] = graph_time_us(triton_fwd_bwd(cl, grad))
    if selective_scan_fn is not None:
        with torch.no_grad():
            row["mamba_fwd_us"] = graph_time_us(mamba_fwd(cf))
            ours = selective_scan_cl(**cl, delta_softplus=True)
            theirs = selective_scan_fn(**cf, delta_softplus=True)
            row["rel_err_vs_mamba_ssm"] = rel_err(ours.transpose(1, 2), theirs)
        row["mamba_fwdbwd_us"] = graph_time_us(mamba_fwd_bwd(cf, grad))
        row["fwd_speedup"] = row["mamba_fwd_us"] / row["triton_fwd_us"]
        row["fwdbwd_speedup"] = row["mamba_fwdbwd_us"] / row["triton_fwdbwd_us"]
    return row


def sweep(shape, dtype_name, configs_inf, configs_train, segment_counts):
    """Other tile sizes and segment counts of the Triton kernels, on one shape."""
    batch, length, d_inner, d_state = shape
    dtype = DTYPES[dtype_name]
    cl, _ = make_inputs(*shape, dtype)
    grad = torch.randn(batch, length, d_inner, device="cuda", dtype=dtype)
    rows = []
    for cfg in configs_inf:
        triton_scan._TUNING["inference"] = cfg
        try:
            with torch.no_grad():
                us = graph_time_us(triton_fwd(cl))
        except Exception as error:  # a tile too large for the registers, say: note it, go on
            us = repr(error)[:200]
        rows.append(dict(shape=list(shape), dtype=dtype_name, what="fwd", config=list(cfg), us=us))
    triton_scan._TUNING["inference"] = None
    for cfg in configs_train:
        triton_scan._TUNING["training"] = cfg
        try:
            us = graph_time_us(triton_fwd_bwd(cl, grad))
        except Exception as error:
            us = repr(error)[:200]
        rows.append(dict(shape=list(shape), dtype=dtype_name, what="fwd+bwd", config=list(cfg), us=us))
    triton_scan._TUNING["training"] = None
    args = [cl[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    for segments in segment_counts:
        with torch.no_grad():
            us = graph_time_us(lambda s=segments: triton_scan.scan_fwd(*args, True, False, s))
        rows.append(dict(shape=list(shape), dtype=dtype_name, what="fwd", segments=segments, us=us))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dtypes", default="bf16,fp32")
    parser.add_argument("--json", default=None)
    parser.add_argument("--sweep", action="store_true")
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    bandwidth = copy_bandwidth_gbs()
    print(f"{torch.cuda.get_device_name()} | torch {torch.__version__} | copy bandwidth {bandwidth:.0f} GB/s")
    if MAMBA_SSM_ERROR:
        print(f"mamba-ssm not available: {MAMBA_SSM_ERROR}")
    result = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, copy_gbs=bandwidth, rows=[])
    if args.sweep:
        inf = [(32, 32, 8), (16, 32, 8), (16, 32, 4), (32, 32, 4), (64, 32, 8), (8, 32, 4), (32, 16, 8)]
        train = [(16, 32, 8), (8, 32, 4), (8, 32, 8), (16, 32, 4), (32, 32, 8), (16, 16, 8)]
        result["sweep"] = []
        for shape in [(32, 1500, 208, 16), (8, 1500, 208, 16), (1, 1500, 208, 16)]:
            segs = [1, 2, 4, 8, 16, 32] if shape[0] < 32 else [1, 2]
            result["sweep"] += sweep(shape, "bf16", inf, train, segs)
        for r in result["sweep"]:
            print("sweep", r)
    for dtype_name in args.dtypes.split(","):
        for shape in SHAPES:
            row = measure(shape, dtype_name)
            result["rows"].append(row)
            print(row, flush=True)
    print("| B, L, D, N | dtype | fwd µs Triton | fwd µs mamba-ssm | fwd × | fwd GB/s | fwd+bwd µs Triton "
          "| fwd+bwd µs mamba-ssm | fwd+bwd × | fwd+bwd GB/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in result["rows"]:
        fwd_gbs = r["fwd_bytes"] / r["triton_fwd_us"] / 1e3
        all_gbs = (r["fwd_bytes"] + r["bwd_bytes"]) / r["triton_fwdbwd_us"] / 1e3
        m_fwd, m_all = r.get("mamba_fwd_us", float("nan")), r.get("mamba_fwdbwd_us", float("nan"))
        print(
            f"| {', '.join(map(str, r['shape']))} | {r['dtype']} | {r['triton_fwd_us']:.1f} | {m_fwd:.1f} "
            f"| ×{m_fwd / r['triton_fwd_us']:.2f} | {fwd_gbs:.0f} | {r['triton_fwdbwd_us']:.1f} | {m_all:.1f} "
            f"| ×{m_all / r['triton_fwdbwd_us']:.2f} | {all_gbs:.0f} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
