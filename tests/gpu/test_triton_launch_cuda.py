"""The direct launch of compiled Triton kernels (``mamba/triton_launch.py``) on a GPU.

Every kernel of the scan and the convolution gives bit-identical results launched directly and
through Triton, for inputs that Triton compiles different kernels for (B and C as 16-byte aligned
and unaligned column slices; fp32 and bf16; with and without the optional tensors), the second
call of a kind is served from the cache, and a CUDA graph captured on the direct path replays it.
"""

import pytest
import torch

from speechbrain_mambadapter.mamba import TRITON_AVAILABLE, triton_scan

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.skipif(not TRITON_AVAILABLE, reason="needs Triton"),
]
if TRITON_AVAILABLE:
    from speechbrain_mambadapter.mamba import triton_conv
DEV = "cuda"


def scan_inputs(batch, length, d_inner, d_state, dtype, offset, optional):
    """Channels-last scan inputs; B and C are column slices of one tensor, starting at ``offset``."""
    g = torch.Generator(device=DEV).manual_seed(batch * 100 + length)

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, device=DEV, generator=g) * scale).to(dtype)

    x_dbl = randn(batch, length, offset + 2 * d_state)
    return dict(
        u=randn(batch, length, d_inner),
        delta=randn(batch, length, d_inner, scale=0.5),
        A=-torch.exp(torch.randn(d_inner, d_state, device=DEV, generator=g) * 0.5),
        B=x_dbl[..., offset : offset + d_state],
        C=x_dbl[..., offset + d_state :],
        D=torch.randn(d_inner, device=DEV, generator=g) if optional else None,
        z=randn(batch, length, d_inner) if optional else None,
        delta_bias=torch.randn(d_inner, device=DEV, generator=g) * 0.1 if optional else None,
    )


def run_scan(cl, grad, dlast, segments):
    args = [cl[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    out, last, states = triton_scan.scan_fwd(*args, True, True, segments=segments)
    grads = triton_scan.scan_bwd(*args, True, states, grad, dlast, segments=segments)
    return [out, last, states, *[g for g in grads if g is not None]]


def both_ways(fn, monkeypatch):
    """``fn()`` through Triton's launch, then twice launched directly (compiling, then cached)."""
    monkeypatch.setenv("SPEECHBRAIN_MAMBADAPTER_TRITON_LAUNCH", "triton")
    expected = fn()
    monkeypatch.setenv("SPEECHBRAIN_MAMBADAPTER_TRITON_LAUNCH", "direct")
    fn()
    return expected, fn()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("offset", [8, 3], ids=["aligned-BC", "unaligned-BC"])
@pytest.mark.parametrize("optional", [True, False], ids=["D-z-bias", "bare"])
@pytest.mark.parametrize("segments", [1, 3])
def test_scan_direct_launch_is_bit_identical(dtype, offset, optional, segments, monkeypatch):
    cl = scan_inputs(2, 77, 40, 16, dtype, offset, optional)
    grad = torch.randn_like(cl["u"])
    dlast = torch.randn(2, 40, 16, device=DEV) if optional else None
    expected, direct = both_ways(lambda: run_scan(cl, grad, dlast, segments), monkeypatch)
    for e, d in zip(expected, direct, strict=True):
        assert torch.equal(e, d)


@pytest.mark.parametrize("width", [2, 4, 7])
@pytest.mark.parametrize("bias", [True, False])
def test_conv_direct_launch_is_bit_identical(width, bias, monkeypatch):
    xz = torch.randn(3, 50, 96, device=DEV, dtype=torch.bfloat16)
    x = xz[..., :48]  # a strided view, as the Mamba block passes it
    weight = torch.randn(48, width, device=DEV)
    b = torch.randn(48, device=DEV) if bias else None
    grad = torch.randn(3, 50, 48, device=DEV, dtype=torch.bfloat16)

    def run():
        out = triton_conv.conv_fwd(x, weight, b, True)
        return [out, *[g for g in triton_conv.conv_bwd(x, weight, b, True, grad) if g is not None]]

    expected, direct = both_ways(run, monkeypatch)
    for e, d in zip(expected, direct, strict=True):
        assert torch.equal(e, d)


def test_second_call_is_served_from_the_cache(monkeypatch):
    monkeypatch.setenv("SPEECHBRAIN_MAMBADAPTER_TRITON_LAUNCH", "direct")
    cl = scan_inputs(1, 33, 24, 8, torch.float32, 8, True)
    args = [cl[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    triton_scan.scan_fwd(*args, True, False, segments=1)
    calls = []
    kernel = triton_scan._SCAN_FWD.kernel
    through_triton = lambda self, grid: calls.append(grid) or (lambda *a, **k: None)  # noqa: E731
    monkeypatch.setattr(type(kernel), "__getitem__", through_triton)
    out, _, _ = triton_scan.scan_fwd(*args, True, False, segments=1)
    assert calls == [], "a cached specialisation went through Triton's launch"
    assert out.isfinite().all()


def test_cuda_graph_replays_direct_launches(monkeypatch):
    monkeypatch.setenv("SPEECHBRAIN_MAMBADAPTER_TRITON_LAUNCH", "direct")
    cl = scan_inputs(2, 64, 32, 16, torch.bfloat16, 8, True)
    args = [cl[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):  # compile, then cache, on the capture stream
            triton_scan.scan_fwd(*args, True, False, segments=2)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out, last, _ = triton_scan.scan_fwd(*args, True, False, segments=2)
    cl["u"].mul_(-1.5)
    graph.replay()
    expected, expected_last, _ = triton_scan.scan_fwd(*args, True, False, segments=2)
    assert torch.equal(out, expected) and torch.equal(last, expected_last)
