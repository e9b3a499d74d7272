"""Selective-scan kernels: the project's Triton scan against mamba-ssm's ``selective_scan_fn``.

Each kernel gets the layout it is built for, as the Mamba block hands it over: channels-last
``[B, L, D]`` tensors with ``z``, ``B`` and ``C`` strided views for the Triton scan, contiguous
``[B, D, L]`` ones for mamba-ssm. Both run with ``D``, the ``z`` gate, ``delta_bias`` and softplus.
Times are medians (µs) of CUDA-graph replays (10 replays per CUDA-event pair, 20 pairs), so no
launch overhead is counted; at B=1 the inputs fit in L2, as they do after the projection that
produces them. ``fwd`` runs without gradients (the inference path); ``fwd+bwd`` takes the gradients
of all eight inputs. GB/s counts the fewest bytes the pass must move (each input read once,
each output written once) over the measured time, against the copy bandwidth measured in the
same run.

Usage (GPU; mamba-ssm optional, its columns are left empty without it)::

    python benchmarks/scan_kernels.py [--dtypes bf16,fp32] [--json out.json] [--sweep]

``--sweep`` first times other tiles (time steps x channels per program), training chunk lengths
and segment heuristics (programs in flight per multiprocessor) of the Triton kernels, then runs
the table with the best (from which the defaults in ``speechbrain_mambadapter/mamba/triton_scan.py``
are set); its choice is the ``chosen`` entry of the JSON, which ``latency.py`` and
``train_step.py`` take with ``--scan-tuning``.
"""

import argparse
import json
import math
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


def graph_time_us(fn, pairs=20, inner=10):
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
    backward = 7 * bld + 4 * bln  # u, delta, z, grad_out in; du, ddelta, dz out; B, C in; dB, dC out
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
        ours_grads = triton_fwd_bwd(cl, grad)()
        theirs_grads = mamba_fwd_bwd(cf, grad)()
        row["grad_rel_err_vs_mamba_ssm"] = max(
            rel_err(g.transpose(1, 2) if g.dim() == 3 else g, h) for g, h in zip(ours_grads, theirs_grads)
        )
        row["mamba_fwdbwd_us"] = graph_time_us(mamba_fwd_bwd(cf, grad))
        row["fwd_speedup"] = row["mamba_fwd_us"] / row["triton_fwd_us"]
        row["fwdbwd_speedup"] = row["mamba_fwdbwd_us"] / row["triton_fwdbwd_us"]
    return row


INFERENCE_TILES = [(8, 8), (4, 16), (8, 16), (8, 4), (4, 32), (2, 32)]  # (T, BD) of the inference forward
TRAINING_CHUNKS = [4, 8]
WARPS_PER_SM = [8, 16, 32]


def set_tuning(tuning):
    """Make the Triton scan use ``tuning`` (the dict ``sweep`` chooses, or one read from JSON)."""
    triton_scan._TUNING["inference"] = (*tuning["inference_tile"], 1)
    triton_scan._TUNING["training"] = (tuning["training_chunk"], 8, 1)
    triton_scan._WARPS_PER_SM.update(inference=tuning["inference_wps"], training=tuning["training_wps"])


def apply_tuning_file(path):
    """``set_tuning`` from the ``chosen`` entry of a ``--json`` file of this script (for the other
    benchmarks' ``--scan-tuning``); nothing for None."""
    if path:
        with open(path) as f:
            set_tuning(json.load(f)["chosen"])


def _geomean_best(times):
    """The key whose times (one per shape) have the lowest geometric mean."""
    return min(times, key=lambda k: sum(math.log(t) for t in times[k]))


def sweep(shapes):
    """Time the Triton scan's tiles and segment heuristics (bf16) on ``shapes``.

    The forward (inference) pass: every (T, BD) of ``INFERENCE_TILES`` with every programs-per-SM
    target of ``WARPS_PER_SM``; forward + backward (training): every chunk of ``TRAINING_CHUNKS``
    with every target. Returns the rows and the choice with the lowest geometric mean over the
    shapes, for each pass.
    """
    rows, fwd_times, train_times = [], {}, {}
    inputs = []
    for shape in shapes:
        cl, _ = make_inputs(*shape, torch.bfloat16)
        grad = torch.randn(*shape[:3], device="cuda", dtype=torch.bfloat16)
        inputs.append((shape, cl, grad))
    for tile in INFERENCE_TILES:
        triton_scan._TUNING["inference"] = (*tile, 1)
        for wps in WARPS_PER_SM:
            triton_scan._WARPS_PER_SM["inference"] = wps
            for shape, cl, _ in inputs:
                with torch.no_grad():
                    fwd = graph_time_us(triton_fwd(cl))
                fwd_times.setdefault((tile, wps), []).append(fwd)
                rows.append(dict(shape=list(shape), pass_="fwd", tile=list(tile), warps_per_sm=wps, us=fwd))
                print("sweep", rows[-1], flush=True)
    for chunk in TRAINING_CHUNKS:
        triton_scan._TUNING["training"] = (chunk, 8, 1)
        for wps in WARPS_PER_SM:
            triton_scan._WARPS_PER_SM["training"] = wps
            for shape, cl, grad in inputs:
                both = graph_time_us(triton_fwd_bwd(cl, grad))
                train_times.setdefault((chunk, wps), []).append(both)
                rows.append(dict(shape=list(shape), pass_="fwd+bwd", chunk=chunk, warps_per_sm=wps, us=both))
                print("sweep", rows[-1], flush=True)
    (tile, inference_wps), (chunk, training_wps) = _geomean_best(fwd_times), _geomean_best(train_times)
    chosen = dict(inference_tile=list(tile), inference_wps=inference_wps, training_chunk=chunk,
                  training_wps=training_wps)  # fmt: skip
    return rows, chosen


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
        shapes = [(32, 1500, 208, 16), (8, 1500, 208, 16), (1, 1500, 208, 16)]
        result["sweep"], result["chosen"] = sweep(shapes)
        # The table below runs with the best choice; the library's defaults are set from it.
        set_tuning(result["chosen"])
        print(f"chosen: {result['chosen']}", flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=1)
    for dtype_name in args.dtypes.split(","):
        # fp32: the adapter's Whisper shapes only (the kernels are the same; fewer compiles).
        for shape in SHAPES if dtype_name == "bf16" else SHAPES[:3]:
            row = measure(shape, dtype_name)
            result["rows"].append(row)
            print(row, flush=True)
            if args.json:  # after every row, so that a run cut short keeps what it measured
                with open(args.json, "w") as f:
                    json.dump(result, f, indent=1)
    print(
        "| B, L, D, N | dtype | fwd µs Triton | fwd µs mamba-ssm | fwd × | fwd GB/s | fwd+bwd µs Triton "
        "| fwd+bwd µs mamba-ssm | fwd+bwd × | fwd+bwd GB/s | rel. err. out / grads vs mamba-ssm |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in result["rows"]:
        fwd_gbs = r["fwd_bytes"] / r["triton_fwd_us"] / 1e3
        all_gbs = (r["fwd_bytes"] + r["bwd_bytes"]) / r["triton_fwdbwd_us"] / 1e3
        m_fwd, m_all = r.get("mamba_fwd_us", float("nan")), r.get("mamba_fwdbwd_us", float("nan"))
        errors = [r.get(k, float("nan")) for k in ("rel_err_vs_mamba_ssm", "grad_rel_err_vs_mamba_ssm")]
        print(
            f"| {', '.join(map(str, r['shape']))} | {r['dtype']} | {r['triton_fwd_us']:.1f} | {m_fwd:.1f} "
            f"| ×{m_fwd / r['triton_fwd_us']:.2f} | {fwd_gbs:.0f} | {r['triton_fwdbwd_us']:.1f} "
            f"| {m_all:.1f} | ×{m_all / r['triton_fwdbwd_us']:.2f} | {all_gbs:.0f} "
            f"| {errors[0]:.1e} / {errors[1]:.1e} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
