"""The Triton kernels on CPU, through Triton's interpreter, against the reference path.

Triton reads ``TRITON_INTERPRET`` when a kernel is defined, so these checks run in a child
pytest process that sets it (``test_kernels_under_the_interpreter``); in that process the other
tests here run, on small shapes: the selective scan's values and gradients (fp32 and bf16, a
length no multiple of the chunk, states not a power of two, one and several time segments, with
and without the optional inputs), the causal convolution of widths 2..8, the Mamba blocks on the
Triton path, ``torch.library.opcheck`` of the custom ops (schemas, fake kernels, autograd), the
eager path that skips them against them, and ``torch.compile(fullgraph=True)`` taking them.
The GPU twins, on the issue's shapes, are in ``tests/gpu/test_triton_kernels.py``.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from speechbrain_mambadapter.mamba import TRITON_AVAILABLE

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
needs_interpreter = pytest.mark.skipif(not INTERPRETED, reason="runs in the interpreted child process")
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not TRITON_AVAILABLE, reason="needs Triton")
@pytest.mark.skipif(INTERPRETED, reason="this is the child process")
def test_kernels_under_the_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", __file__],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    summary = proc.stdout.strip().splitlines()[-1]
    # Everything ran in the child but this driver test.
    assert " passed" in summary and "1 skipped" in summary, proc.stdout[-2000:]


def rel_err(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12)).item()


def scan_inputs(batch, length, d_inner, d_state, dtype, seed):
    """Channels-last inputs as the Mamba block makes them (z, B, C strided views)."""
    g = torch.Generator().manual_seed(seed)
    xz = torch.randn(batch, length, 2 * d_inner, generator=g).to(dtype)
    x_dbl = torch.randn(batch, length, 3 + 2 * d_state, generator=g).to(dtype)
    return dict(
        u=torch.randn(batch, length, d_inner, generator=g).to(dtype),
        delta=(torch.randn(batch, length, d_inner, generator=g) * 0.5).to(dtype),
        A=-torch.exp(torch.randn(d_inner, d_state, generator=g) * 0.5),
        B=x_dbl[..., 3 : 3 + d_state],
        C=x_dbl[..., 3 + d_state :],
        D=torch.randn(d_inner, generator=g),
        z=xz[..., d_inner:],
        delta_bias=torch.randn(d_inner, generator=g) * 0.1,
    )


def run_scan(fn, inputs, grad_out, grad_last, channels_last):
    """Output, last state and gradients of ``fn`` (Triton: channels-last; reference: [B, D, L])."""
    leaves = {k: v.detach().clone().requires_grad_() if v is not None else None for k, v in inputs.items()}
    args = {
        k: (v.transpose(1, 2) if v is not None and v.dim() == 3 and not channels_last else v)
        for k, v in leaves.items()
    }
    y, last = fn(**args, delta_softplus=True, return_last_state=True)
    if not channels_last:
        y = y.transpose(1, 2)
    loss = (y.float() * grad_out).sum()
    if grad_last is not None:  # None: the last state is left out of the loss
        loss = loss + (last * grad_last).sum()
    loss.backward()
    return y.detach(), last.detach(), {k: v.grad for k, v in leaves.items() if v is not None}


@needs_interpreter
@pytest.mark.parametrize(
    "batch,length,d_inner,d_state,dtype,segments,optional",
    [
        (2, 21, 16, 5, torch.float32, 1, True),
        (1, 45, 12, 8, torch.float32, 3, True),  # three time segments, a partial last chunk
        (2, 19, 9, 3, torch.float32, 2, False),  # no D, z, delta_bias
        (2, 21, 16, 8, torch.bfloat16, 2, True),
    ],
)
def test_selective_scan_values_and_gradients(batch, length, d_inner, d_state, dtype, segments, optional):
    from speechbrain_mambadapter.mamba import selective_scan_cl, selective_scan_ref, triton_scan

    inputs = scan_inputs(batch, length, d_inner, d_state, dtype, seed=length)
    if not optional:
        inputs.update(D=None, z=None, delta_bias=None)
    grad_out = torch.randn(batch, length, d_inner)
    grad_last = torch.randn(batch, d_inner, d_state)
    original = triton_scan._segments
    triton_scan._segments = lambda *args: original(*args[:-1], segments)
    try:
        y, last, grads = run_scan(selective_scan_cl, inputs, grad_out, grad_last, channels_last=True)
    finally:
        triton_scan._segments = original
    y_ref, last_ref, grads_ref = run_scan(
        selective_scan_ref, inputs, grad_out, grad_last, channels_last=False
    )
    tol_value, tol_grad = (1e-4, 1e-3) if dtype == torch.float32 else (2e-2, 5e-2)
    assert y.dtype == dtype and rel_err(y, y_ref) < tol_value
    assert rel_err(last, last_ref) < tol_value
    assert grads.keys() == grads_ref.keys()
    for name in grads:
        assert grads[name].dtype == grads_ref[name].dtype, name
        assert rel_err(grads[name], grads_ref[name]) < tol_grad, name


@needs_interpreter
@pytest.mark.parametrize("chunk,block_d", [(4, 16), (2, 32), (8, 4)])
@pytest.mark.parametrize("segments", [1, 3])
def test_inference_forward_tiles(chunk, block_d, segments):
    """The tiles the inference pass can be tuned to (benchmarks/scan_kernels.py --sweep): values
    and last state, with channels masked (24 of 32) and a partial last chunk."""
    from speechbrain_mambadapter.mamba import selective_scan_cl, selective_scan_ref, triton_scan

    inputs = scan_inputs(2, 45, 24, 16, torch.float32, seed=1)
    saved = dict(triton_scan._TUNING), triton_scan._segments
    triton_scan._TUNING["inference"] = (chunk, block_d, 1)
    triton_scan._segments = lambda *args: saved[1](*args[:-1], segments)
    try:
        with torch.no_grad():
            y, last = selective_scan_cl(**inputs, delta_softplus=True, return_last_state=True)
    finally:
        triton_scan._TUNING.update(saved[0])
        triton_scan._segments = saved[1]
    reference = {k: v.transpose(1, 2) if v is not None and v.dim() == 3 else v for k, v in inputs.items()}
    y_ref, last_ref = selective_scan_ref(**reference, delta_softplus=True, return_last_state=True)
    assert rel_err(y, y_ref.transpose(1, 2)) < 1e-5 and rel_err(last, last_ref) < 1e-5


@needs_interpreter
@pytest.mark.parametrize("width", [2, 3, 4, 5, 6, 7, 8])
def test_causal_conv1d_any_width(width):
    from speechbrain_mambadapter.mamba import causal_conv1d_ref, causal_conv1d_triton

    g = torch.Generator().manual_seed(width)
    x = torch.randn(2, 23, 2 * 6, generator=g)[..., :6].transpose(1, 2)  # strided, channels-last
    weight, bias = torch.randn(6, width, generator=g), torch.randn(6, generator=g)
    grad = torch.randn(2, 6, 23, generator=g)
    results = []
    for fn in (causal_conv1d_triton, causal_conv1d_ref):
        leaves = [t.detach().clone().requires_grad_() for t in (x, weight, bias)]
        y = fn(*leaves, activation="silu")
        (y * grad).sum().backward()
        results.append((y.detach(), [t.grad for t in leaves]))
    assert rel_err(results[0][0], results[1][0]) < 1e-5
    for g_triton, g_ref in zip(results[0][1], results[1][1]):
        assert rel_err(g_triton, g_ref) < 1e-5


@needs_interpreter
@pytest.mark.parametrize("direction", ["causal", "inner", "ext"])
def test_blocks_on_the_triton_path_match_the_reference(direction, monkeypatch):
    from speechbrain_mambadapter.mamba import build_mamba, ops

    torch.manual_seed(0)
    block = build_mamba(8, direction, d_state=4, d_conv=8)
    x = torch.randn(2, 13, 8)
    lengths = torch.tensor([1.0, 0.6])
    runs = []
    for backend in ("triton", "reference"):
        monkeypatch.setattr(ops, "select_backend", lambda *args, backend=backend, **kwargs: backend)
        block.zero_grad()
        xin = x.clone().requires_grad_()
        y = block(xin, lengths)
        y.square().mean().backward()
        runs.append((y.detach(), {n: p.grad.clone() for n, p in block.named_parameters()}, xin.grad))
    (y, grads, x_grad), (y_ref, grads_ref, x_grad_ref) = runs
    assert rel_err(y, y_ref) < 1e-4 and rel_err(x_grad, x_grad_ref) < 1e-3
    for name in grads_ref:
        assert rel_err(grads[name], grads_ref[name]) < 1e-3, name


@needs_interpreter
@pytest.mark.parametrize("last_state_used", [True, False])
def test_eager_calls_give_what_the_custom_ops_give(last_state_used, monkeypatch):
    """Eager calls skip the custom ops' dispatch (a plain autograd.Function; the kernels straight
    without gradients): the same values and gradients as through the custom ops, bit for bit."""
    from speechbrain_mambadapter.mamba import causal_conv1d_cl, selective_scan_cl, triton_ops

    inputs = scan_inputs(2, 21, 16, 8, torch.float32, seed=3)
    grad_out = torch.randn(2, 21, 16)
    # Unused, the last state's gradient is None on the eager path and zeros through the custom op.
    grad_last = torch.randn(2, 16, 8) if last_state_used else None
    x = torch.randn(2, 21, 32)[..., :16]
    weight, bias = torch.randn(16, 5), torch.randn(16)
    runs = []
    for eager in (True, False):
        monkeypatch.setattr(triton_ops, "_EAGER_FUNCTIONS", eager)
        scan = run_scan(selective_scan_cl, inputs, grad_out, grad_last, channels_last=True)
        with torch.no_grad():
            y_inference = selective_scan_cl(**inputs, delta_softplus=True)
        conv_leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
        y_conv = causal_conv1d_cl(*conv_leaves, activation="silu")
        (y_conv * grad_out).sum().backward()
        runs.append((scan, y_inference, y_conv.detach(), [t.grad for t in conv_leaves]))
    (scan, y_inference, y_conv, conv_grads), (scan_op, y_inference_op, y_conv_op, conv_grads_op) = runs
    assert torch.equal(scan[0], scan_op[0]) and torch.equal(scan[1], scan_op[1])
    assert torch.equal(y_inference, y_inference_op)
    assert scan[2].keys() == scan_op[2].keys()
    for name in scan[2]:
        assert torch.equal(scan[2][name], scan_op[2][name]), name
    assert torch.equal(y_conv, y_conv_op)
    for mine, theirs in zip(conv_grads, conv_grads_op):
        assert torch.equal(mine, theirs)


@needs_interpreter
def test_compiled_calls_take_the_custom_ops():
    """Under torch.compile the scan and the convolution are the custom ops (their fake kernels let
    fullgraph=True hold); eager calls take the autograd.Function. Same values and gradients."""
    from speechbrain_mambadapter.mamba import causal_conv1d_cl, selective_scan_cl

    inputs = scan_inputs(1, 13, 8, 4, torch.float32, seed=5)
    weight = torch.randn(8, 4)

    def block(u, weight):
        x = causal_conv1d_cl(u, weight, activation="silu")
        return selective_scan_cl(**dict(inputs, u=x), delta_softplus=True)

    results = []
    for fn in (block, torch.compile(block, fullgraph=True, backend="aot_eager")):
        u, w = inputs["u"].clone().requires_grad_(), weight.clone().requires_grad_()
        y = fn(u, w)
        y.square().sum().backward()
        results.append((y.detach(), u.grad, w.grad))
    for eager, compiled in zip(*results):
        assert torch.allclose(eager, compiled, rtol=1e-6, atol=1e-6)


@needs_interpreter
def test_custom_ops_pass_opcheck():
    """Schemas, fake (meta) kernels against the real ones, and the registered autograd."""
    from torch.library import opcheck

    ops = torch.ops.speechbrain_mambadapter
    inputs = scan_inputs(1, 11, 8, 4, torch.float32, seed=1)
    args = [inputs[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    tests = ("test_schema", "test_faketensor", "test_aot_dispatch_dynamic")
    for save_states in (False, True):
        opcheck(ops.selective_scan_fwd.default, (*args, True, save_states), test_utils=tests)
    x = torch.randn(2, 9, 12)[..., :6]
    opcheck(ops.causal_conv1d_fwd.default, (x, torch.randn(6, 5), torch.randn(6), True), test_utils=tests)


@needs_interpreter
@pytest.mark.parametrize("direction", ["causal", "ext"])
def test_merged_mambadapter_on_the_triton_path(direction, monkeypatch):
    """The folded projections reach the Triton path's channels-last block as they reach the reference."""
    from speechbrain_mambadapter.mamba import ops
    from speechbrain_mambadapter.tuners import MambAdapter, merge_mambadapter

    torch.manual_seed(0)
    adapter = MambAdapter(16, 4, direction=direction, d_state=4, d_conv=5).eval()
    with torch.no_grad():
        adapter.projections.up.weight.normal_()
    x = torch.randn(2, 11, 16)
    monkeypatch.setattr(ops, "select_backend", lambda *args, **kwargs: "reference")
    expected = adapter(x)
    merge_mambadapter(adapter)
    monkeypatch.setattr(ops, "select_backend", lambda *args, **kwargs: "triton")
    assert rel_err(adapter(x), expected) < 1e-5
