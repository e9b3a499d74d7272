"""Fused CUDA kernels (mamba-ssm, causal-conv1d) against the pure-PyTorch reference path.

Runs on a CUDA machine with ``pip install 'speechbrain-mambadapter[cuda]'``; skipped elsewhere.
"""

import pytest
import torch

from speechbrain_mambadapter.mamba import (
    FUSED_KERNELS_AVAILABLE,
    BiMambaExt,
    BiMambaInner,
    Mamba,
    causal_conv1d_ref,
    selective_scan_ref,
    set_kernel_backend,
)

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.skipif(not FUSED_KERNELS_AVAILABLE, reason="needs mamba-ssm and causal-conv1d"),
]
DEV = "cuda"


@pytest.fixture(autouse=True)
def mamba_ssm_kernels():
    """Pin mamba-ssm's kernels: in fp32 the dispatch would pick the project's Triton ones."""
    set_kernel_backend("mamba_ssm")
    yield
    set_kernel_backend()


def rel_err(a, b):
    """Error relative to the reference's norm, robust to values near zero."""
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12)).item()


def test_selective_scan_fn_matches_reference():
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    torch.manual_seed(0)
    batch, d_inner, length, d_state = 4, 208, 1500, 16
    tensors = [
        torch.randn(batch, d_inner, length, device=DEV),
        torch.randn(batch, d_inner, length, device=DEV) * 0.5,
        -torch.exp(torch.randn(d_inner, d_state, device=DEV) * 0.5),
        torch.randn(batch, d_state, length, device=DEV),
        torch.randn(batch, d_state, length, device=DEV),
        torch.randn(d_inner, device=DEV),
        torch.randn(batch, d_inner, length, device=DEV),
        torch.randn(d_inner, device=DEV) * 0.1,
    ]
    outs, grads = [], []
    for fn in (selective_scan_fn, selective_scan_ref):
        args = [t.clone().requires_grad_() for t in tensors]
        y = fn(*args[:5], args[5], z=args[6], delta_bias=args[7], delta_softplus=True)
        y.backward(torch.ones_like(y) / y.numel() ** 0.5)
        outs.append(y)
        grads.append([a.grad for a in args])
    assert rel_err(outs[0], outs[1]) < 1e-4
    for name, g_fused, g_ref in zip("u delta A B C D z delta_bias".split(), *grads):
        assert rel_err(g_fused, g_ref) < 1e-3, name


@pytest.mark.parametrize("width", [2, 3, 4])
def test_causal_conv1d_fn_matches_reference(width):
    from causal_conv1d import causal_conv1d_fn

    torch.manual_seed(width)
    x, w, b = (
        torch.randn(3, 64, 100, device=DEV),
        torch.randn(64, width, device=DEV),
        torch.randn(64, device=DEV),
    )
    torch.testing.assert_close(
        causal_conv1d_fn(x, w, b, activation="silu"), causal_conv1d_ref(x, w, b, activation="silu"),
        rtol=1e-4, atol=1e-4,
    )  # fmt: skip


def fused_vs_reference(block, x, lengths=None, dtype=None):
    """Outputs and all gradients of one block on both paths (same parameters)."""
    results = []
    for fast in (True, False):
        for module in block.modules():
            if hasattr(module, "use_fast_path"):
                module.use_fast_path = fast
        block.zero_grad()
        xin = x.clone().requires_grad_()
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            y = block(xin, lengths=lengths) if lengths is not None else block(xin)
        y.float().square().mean().backward()
        grads = {n: p.grad.clone() for n, p in block.named_parameters()}
        grads["input"] = xin.grad.clone()
        results.append((y.detach(), grads))
    return results


@pytest.mark.parametrize(
    "dtype,tol_out,tol_grad", [(None, 1e-4, 1e-3), (torch.bfloat16, 2e-2, 5e-2)], ids=["fp32", "bf16"]
)
@pytest.mark.parametrize("cls", [Mamba, BiMambaInner, BiMambaExt])
def test_block_fused_path_matches_reference_values_and_gradients(cls, dtype, tol_out, tol_grad):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    block = cls(d_model=104, d_state=16, d_conv=4, expand=2).to(DEV)
    x = torch.randn(4, 300, 104, device=DEV)
    lengths = None if cls is Mamba else torch.tensor([1.0, 0.5, 0.8, 0.3], device=DEV)
    (y_fused, g_fused), (y_ref, g_ref) = fused_vs_reference(block, x, lengths, dtype)
    assert rel_err(y_fused, y_ref) < tol_out
    for name in g_ref:
        assert rel_err(g_fused[name], g_ref[name]) < tol_grad, name


def test_wide_convolution_falls_back_to_reference_on_cuda():
    torch.manual_seed(0)
    block = Mamba(d_model=32, d_conv=6).to(DEV)
    x = torch.randn(2, 50, 32, device=DEV)
    y = block(x)
    block.use_fast_path = False
    torch.testing.assert_close(y, block(x))


@pytest.mark.parametrize(
    "config", [dict(d_model=104), dict(d_model=48, d_state=8, d_conv=2, expand=1, bias=True)]
)
def test_state_dict_loads_both_ways_with_mamba_ssm(config):
    from mamba_ssm import Mamba as MambaSSM

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    ours, theirs = Mamba(**config).to(DEV), MambaSSM(**config).to(DEV)
    x = torch.randn(2, 64, config["d_model"], device=DEV)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    assert rel_err(theirs(x), ours(x)) < 1e-4
    torch.manual_seed(1)
    theirs = MambaSSM(**config).to(DEV)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    assert rel_err(ours(x), theirs(x)) < 1e-4
    ours.use_fast_path = False
    assert rel_err(ours(x), theirs(x)) < 1e-4
