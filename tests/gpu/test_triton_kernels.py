"""The project's Triton kernels (selective scan, causal convolution) against the reference path.

Values and gradients of the scan over batch 1..32, lengths that are no multiple of any chunk,
16..416 channels, 8..64 states, fp32 and bf16; the convolution for widths 2..8; the Mamba blocks
(causal and both bidirectional variants, with padding) on the Triton path against the reference
path; ``torch.compile(fullgraph=True)`` of a MambAdapter's forward and backward; CUDA-graph
capture. Needs CUDA and Triton, not mamba-ssm.
"""

import pytest
import torch

from speechbrain_mambadapter.mamba import (
    TRITON_AVAILABLE,
    BiMambaExt,
    BiMambaInner,
    Mamba,
    causal_conv1d_ref,
    causal_conv1d_triton,
    select_backend,
    selective_scan_ref,
    selective_scan_triton,
    set_kernel_backend,
    triton_scan,
)

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.skipif(not TRITON_AVAILABLE, reason="needs Triton"),
]
DEV = "cuda"
# The tolerances: relative to the reference's norm, values then gradients.
TOL = {torch.float32: (1e-4, 1e-3), torch.bfloat16: (2e-2, 5e-2)}


@pytest.fixture(autouse=True)
def triton_kernels():
    """Pin the Triton kernels: with mamba-ssm installed, half precision would pick mamba-ssm's."""
    set_kernel_backend("triton")
    yield
    set_kernel_backend()


def rel_err(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12)).item()


def block_layout_inputs(batch, length, d_inner, d_state, dtype, seed):
    """Scan inputs laid out as the Mamba block makes them: channels-last, z and B/C strided views.

    Returned in mamba-ssm's logical shapes ([batch, D, L], [batch, N, L]) as transposed views.
    """
    g = torch.Generator(device=DEV).manual_seed(seed)

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, device=DEV, generator=g) * scale).to(dtype)

    xz = randn(batch, length, 2 * d_inner)
    x_dbl = randn(batch, length, 6 + 2 * d_state)
    u = randn(batch, length, d_inner)
    delta = randn(batch, length, d_inner, scale=0.5)
    A = -torch.exp(torch.randn(d_inner, d_state, device=DEV, generator=g) * 0.5)
    D = torch.randn(d_inner, device=DEV, generator=g)
    bias = torch.randn(d_inner, device=DEV, generator=g) * 0.1
    B = x_dbl[..., 6 : 6 + d_state]
    C = x_dbl[..., 6 + d_state :]
    z = xz[..., d_inner:]
    return [u.transpose(1, 2), delta.transpose(1, 2), A, B.transpose(1, 2), C.transpose(1, 2), D,
            z.transpose(1, 2), bias]  # fmt: skip


def scan_values_and_grads(fn, inputs, grad_out, grad_last, **kwargs):
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    u, delta, A, B, C, D, z, bias = leaves
    y, last = fn(u, delta, A, B, C, D, z, bias, delta_softplus=True, return_last_state=True, **kwargs)
    ((y.float() * grad_out).sum() + (last * grad_last).sum()).backward()
    return y.detach(), last.detach(), [t.grad for t in leaves]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize(
    "batch,length,d_inner,d_state",
    [(1, 1500, 208, 16), (8, 777, 16, 8), (32, 301, 416, 64), (3, 1001, 100, 32), (2, 5, 24, 12)],
)
def test_selective_scan_matches_reference(batch, length, d_inner, d_state, dtype):
    torch.backends.cuda.matmul.allow_tf32 = False
    inputs = block_layout_inputs(batch, length, d_inner, d_state, dtype, seed=batch * 1000 + length)
    grad_out = torch.randn(batch, d_inner, length, device=DEV)
    grad_last = torch.randn(batch, d_inner, d_state, device=DEV)
    y, last, grads = scan_values_and_grads(selective_scan_triton, inputs, grad_out, grad_last)
    y_ref, last_ref, grads_ref = scan_values_and_grads(selective_scan_ref, inputs, grad_out, grad_last)
    assert torch.isfinite(y.float()).all()
    tol_value, tol_grad = TOL[dtype]
    assert rel_err(y, y_ref) < tol_value
    assert rel_err(last, last_ref) < tol_value
    for name, g, g_ref in zip("u delta A B C D z delta_bias".split(), grads, grads_ref):
        assert g.shape == g_ref.shape and g.dtype == g_ref.dtype, name
        assert rel_err(g, g_ref) < tol_grad, name


@pytest.mark.parametrize("with_d,with_z,with_bias", [(False, False, False), (True, False, True)])
def test_selective_scan_optional_inputs(with_d, with_z, with_bias):
    u, delta, A, B, C, D, z, bias = block_layout_inputs(2, 333, 64, 16, torch.float32, seed=7)
    D, z, bias = (D if with_d else None), (z if with_z else None), (bias if with_bias else None)
    for softplus in (False, True):
        args = (u, delta.abs() if not softplus else delta, A, B, C, D, z, bias)
        out = selective_scan_triton(*args, delta_softplus=softplus)
        assert rel_err(out, selective_scan_ref(*args, delta_softplus=softplus)) < 1e-4


def test_time_segments_give_the_same_result():
    """Small batches split time into segments; the result may not depend on how many."""
    u, delta, A, B, C, D, z, bias = block_layout_inputs(2, 1000, 48, 16, torch.float32, seed=3)
    cl = [t.transpose(1, 2) if t.dim() == 3 else t for t in (u, delta, A, B, C, D, z, bias)]
    grad = torch.randn(2, 1000, 48, device=DEV)
    results = []
    for segments in (1, 3, 16):
        out, last, states = triton_scan.scan_fwd(*cl, True, True, segments)
        grads = triton_scan.scan_bwd(*cl, True, states, grad, last, segments)
        results.append((out, last, grads))
    for out, last, grads in results[1:]:
        assert rel_err(out, results[0][0]) < 1e-5 and rel_err(last, results[0][1]) < 1e-5
        for g, g0 in zip(grads, results[0][2]):
            assert rel_err(g, g0) < 1e-5


def test_every_output_element_is_written():
    """Poisoned output memory: a NaN left anywhere is an element no program wrote."""
    u, delta, A, B, C, D, z, bias = block_layout_inputs(3, 517, 200, 16, torch.float32, seed=5)
    cl = [t.transpose(1, 2) if t.dim() == 3 else t for t in (u, delta, A, B, C, D, z, bias)]
    for segments in (1, 4):
        # The caching allocator hands the block just freed to the next request of its size: out.
        poison = torch.full((3, 517, 200), float("nan"), device=DEV)
        pointer = poison.data_ptr()
        del poison
        out, _, _ = triton_scan.scan_fwd(*cl, True, False, segments)
        assert out.data_ptr() == pointer
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("width", [2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_causal_conv1d_matches_reference_any_width(width, dtype):
    torch.manual_seed(width)
    xz = torch.randn(3, 301, 2 * 80, device=DEV, dtype=dtype)
    x = xz[..., :80].transpose(1, 2)  # a strided channels-last view, as the block passes it
    weight = torch.randn(80, width, device=DEV, dtype=dtype)
    bias = torch.randn(80, device=DEV, dtype=dtype)
    grad = torch.randn(3, 80, 301, device=DEV)
    results = []
    for fn in (causal_conv1d_triton, causal_conv1d_ref):
        leaves = [t.detach().clone().requires_grad_() for t in (x, weight, bias)]
        y = fn(*leaves, activation="silu")
        (y.float() * grad).sum().backward()
        results.append((y.detach(), [t.grad for t in leaves]))
    tol_value, tol_grad = TOL[dtype]
    assert rel_err(results[0][0], results[1][0]) < tol_value
    for g, g_ref in zip(results[0][1], results[1][1]):
        assert rel_err(g, g_ref) < tol_grad


def block_runs(block, x, lengths, dtype):
    """Outputs and all gradients of one block on the Triton path, then the reference path."""
    results = []
    for fast in (True, False):
        for module in block.modules():
            if hasattr(module, "use_fast_path"):
                module.use_fast_path = fast
        block.zero_grad()
        xin = x.clone().requires_grad_()
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            y = block(xin, lengths=lengths)
        y.float().square().mean().backward()
        grads = {n: p.grad.clone() for n, p in block.named_parameters()}
        grads["input"] = xin.grad.clone()
        results.append((y.detach(), grads))
    return results


@pytest.mark.parametrize("dtype", [None, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("d_conv", [4, 8])
@pytest.mark.parametrize("cls", [Mamba, BiMambaInner, BiMambaExt])
def test_block_triton_path_matches_reference(cls, d_conv, dtype):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    block = cls(d_model=104, d_state=16, d_conv=d_conv, expand=2).to(DEV)
    assert select_backend(torch.zeros(1, device=DEV), d_conv) == "triton"
    x = torch.randn(4, 301, 104, device=DEV)
    lengths = None if cls is Mamba else torch.tensor([1.0, 0.5, 0.8, 0.3], device=DEV)
    (y_fast, g_fast), (y_ref, g_ref) = block_runs(block, x, lengths, dtype)
    tol_value, tol_grad = TOL[dtype or torch.float32]
    assert rel_err(y_fast, y_ref) < tol_value
    for name in g_ref:
        assert rel_err(g_fast[name], g_ref[name]) < tol_grad, name


def test_mambadapter_compiles_with_fullgraph():
    from speechbrain_mambadapter.tuners.mambadapter import MambAdapter

    torch.manual_seed(0)
    adapter = MambAdapter(128, 32, dropout=0.0, d_conv=8).to(DEV)
    with torch.no_grad():
        adapter.projections.up.weight.normal_(std=0.05)
    x = torch.randn(2, 203, 128, device=DEV)

    def step(module, inp):
        inp = inp.clone().requires_grad_()
        out = module(inp)
        out.square().mean().backward()
        return out.detach(), inp.grad

    eager = step(adapter, x)
    eager_grads = [p.grad.clone() for p in adapter.parameters()]
    adapter.zero_grad()
    compiled = torch.compile(adapter, fullgraph=True)
    out = step(compiled, x)
    assert rel_err(out[0], eager[0]) < 1e-4 and rel_err(out[1], eager[1]) < 1e-3
    for g, g_ref in zip((p.grad for p in adapter.parameters()), eager_grads):
        assert rel_err(g, g_ref) < 1e-3


def test_cuda_graph_capture_replays_the_scan():
    torch.manual_seed(0)
    block = Mamba(d_model=64, d_state=16, d_conv=6).to(DEV).eval()
    x = torch.randn(2, 150, 64, device=DEV)
    with torch.no_grad():
        expected = block(x)
        static_x = x.clone()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            block(static_x)  # compile the kernels outside the capture
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_y = block(static_x)
        static_x.copy_(torch.randn_like(x))
        graph.replay()
        assert rel_err(static_y, block(static_x)) < 1e-6
        static_x.copy_(x)
        graph.replay()
        assert rel_err(static_y, expected) < 1e-6
