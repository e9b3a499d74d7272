"""Which kernels a Mamba call runs (``select_backend``), and that the block follows the choice."""

import logging
import types

import pytest
import torch

from speechbrain_mambadapter.mamba import Mamba, ops, set_kernel_backend


def fake_cuda(dtype=torch.float32):
    """Enough of a CUDA tensor for the dispatch, on a CPU-only machine."""
    return types.SimpleNamespace(is_cuda=True, dtype=dtype)


@pytest.fixture
def kernels(monkeypatch):
    """Set which GPU kernels are installed; restore the preference and the log afterwards."""
    monkeypatch.setattr(ops, "_reported", set())

    def install(triton, mamba_ssm):
        monkeypatch.setattr(ops, "TRITON_AVAILABLE", triton)
        monkeypatch.setattr(ops, "FUSED_KERNELS_AVAILABLE", mamba_ssm)

    yield install
    set_kernel_backend()


@pytest.mark.parametrize(
    "triton,mamba_ssm,dtype,d_conv,expected",
    [
        (True, True, torch.float32, 4, "triton"),  # fp32: the Triton scan was the faster
        (True, True, torch.bfloat16, 4, "mamba_ssm"),  # bf16: mamba-ssm's was as fast or faster
        (True, True, torch.float16, 4, "mamba_ssm"),
        (True, True, torch.bfloat16, 8, "triton"),  # causal-conv1d has widths 2..4 only
        (True, False, torch.bfloat16, 4, "triton"),
        (False, True, torch.float32, 4, "mamba_ssm"),
        (False, True, torch.float32, 6, "reference"),
        (False, False, torch.float32, 4, "reference"),
    ],
)
def test_auto_choice_on_cuda(kernels, triton, mamba_ssm, dtype, d_conv, expected):
    kernels(triton, mamba_ssm)
    assert ops.select_backend(fake_cuda(dtype), d_conv) == expected


@pytest.mark.parametrize(
    "dtype,d_inner,d_state,grad,expected",
    [
        (torch.bfloat16, 208, 16, False, "triton"),  # Whisper's adapter (r=104): Triton the faster
        (torch.bfloat16, 208, 16, True, "triton"),
        (torch.float16, 416, 16, True, "triton"),
        (torch.bfloat16, 32, 16, False, "triton"),  # AST's adapter (r=16): inference
        (torch.bfloat16, 32, 16, True, "mamba_ssm"),  # ... and training, where mamba-ssm was faster
        (torch.bfloat16, 208, 64, False, "mamba_ssm"),  # 64 states
        (torch.bfloat16, 1536, 16, False, "mamba_ssm"),  # a wide model
        (torch.float32, 1536, 64, True, "triton"),
    ],
)
def test_half_precision_choice_follows_the_scan_size(kernels, dtype, d_inner, d_state, grad, expected):
    kernels(True, True)
    with torch.set_grad_enabled(grad):
        assert ops.select_backend(fake_cuda(dtype), 4, d_inner=d_inner, d_state=d_state) == expected


def test_blocks_tell_the_dispatch_their_scan_size(monkeypatch):
    seen = []

    def record(x, d_conv, use_fast_path=True, d_inner=None, d_state=None):
        seen.append((d_conv, d_inner, d_state))
        return "reference"

    monkeypatch.setattr(ops, "select_backend", record)
    Mamba(d_model=12, d_state=8, d_conv=3, expand=2)(torch.randn(1, 5, 12))
    assert seen == [(3, 24, 8)]


def test_cpu_and_use_fast_path_false_run_the_reference(kernels):
    kernels(True, True)
    assert ops.select_backend(torch.zeros(1), 4) == "reference"
    assert ops.select_backend(fake_cuda(), 4, use_fast_path=False) == "reference"


def test_autocast_dtype_decides_not_the_input_dtype(kernels, monkeypatch):
    kernels(True, True)
    monkeypatch.setattr(torch, "is_autocast_enabled", lambda device="cuda": device == "cuda")
    monkeypatch.setattr(torch, "get_autocast_dtype", lambda device: torch.bfloat16)
    assert ops.select_backend(fake_cuda(torch.float32), 4) == "mamba_ssm"


@pytest.mark.parametrize(
    "pinned,mamba_ssm,d_conv,expected",
    [
        ("triton", True, 4, "triton"),
        ("mamba_ssm", True, 4, "mamba_ssm"),
        ("mamba_ssm", True, 8, "reference"),  # pinned but cannot run: reference, with a warning
        ("reference", True, 4, "reference"),
    ],
)
def test_pinned_backend(kernels, pinned, mamba_ssm, d_conv, expected):
    kernels(True, mamba_ssm)
    set_kernel_backend(pinned)
    assert ops.select_backend(fake_cuda(torch.float32), d_conv) == expected


def test_choice_is_logged_once_and_missing_kernels_warn_with_install_command(kernels, caplog):
    kernels(False, False)
    with caplog.at_level(logging.INFO, logger=ops.__name__):
        assert ops.select_backend(fake_cuda(), 4) == "reference"
        assert ops.select_backend(fake_cuda(), 4) == "reference"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "pip install triton" in warnings[0].getMessage()


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="backend must be one of"):
        set_kernel_backend("cuda")


def test_block_runs_the_chosen_path(monkeypatch):
    """``Mamba.forward`` sends the Triton choice down the channels-last path, with its weights."""
    calls = []

    def fake_gated_cl(x, z, conv_w, conv_b, x_proj_w, dt_proj_w, A, D, delta_bias):
        calls.append((x.shape, z.shape, conv_w.shape, A.shape))
        return x  # [B, L, d_inner]: stands for the gated SSM output

    block = Mamba(d_model=8, d_state=4, d_conv=7)
    monkeypatch.setattr(ops, "select_backend", lambda *args, **kwargs: "triton")
    monkeypatch.setattr(ops, "mamba_gated_cl", fake_gated_cl)
    x = torch.randn(2, 5, 8)
    y = block(x)
    assert calls == [((2, 5, 16), (2, 5, 16), (16, 1, 7), (16, 4))]
    xz = torch.nn.functional.linear(x, block.in_proj.weight)
    torch.testing.assert_close(y, torch.nn.functional.linear(xz[..., :16], block.out_proj.weight))
