"""Kernel dispatch for Mamba, with pure-PyTorch references of the same signatures.

=====================  =========================  ==========================  =====================
operation              Triton (CUDA, any width)   mamba-ssm (CUDA)            reference (anywhere)
=====================  =========================  ==========================  =====================
depthwise causal conv  ``causal_conv1d_triton``   ``causal_conv1d_fn`` (2-4)  ``causal_conv1d_ref``
selective scan         ``selective_scan_triton``  ``selective_scan_fn``       ``selective_scan_ref``
whole Mamba inner op   ``mamba_gated_cl``         ``mamba_inner_fn``          ``mamba_inner_ref``
=====================  =========================  ==========================  =====================

``select_backend`` is the one place that decides which column runs. On CUDA: the project's Triton
kernels in fp32, in bf16/fp16 at an adapter's sizes (up to 512 channels and 16 states; in training
from 64 channels), for any convolution width, and without mamba-ssm; mamba-ssm's kernels where
they are installed, can run (convolution width 2-4) and were measured faster: half precision with
wider models, more states, or training with fewer channels (``benchmarks/scan_kernels.py``; the
figures are in ``benchmarks/RESULTS.md``). The reference runs on CPU. ``set_kernel_backend`` (or
the environment variable ``SPEECHBRAIN_MAMBADAPTER_KERNELS``) pins one.

Authors
 * speechbrain-mambadapter contributors 2026
"""

import logging
import os

import torch
import torch.nn.functional as F

from speechbrain_mambadapter.mamba.scan import selective_scan_ref
from speechbrain_mambadapter.mamba.triton_ops import causal_conv1d_cl, selective_scan_cl
from speechbrain_mambadapter.mamba.triton_scan import TRITON_AVAILABLE

logger = logging.getLogger(__name__)

try:
    from causal_conv1d import causal_conv1d_fn
    from mamba_ssm.ops.selective_scan_interface import mamba_inner_fn, selective_scan_fn
except ImportError:
    causal_conv1d_fn = mamba_inner_fn = selective_scan_fn = None

FUSED_KERNELS_AVAILABLE = mamba_inner_fn is not None
# causal-conv1d compiles kernels for these widths only.
FUSED_CONV_WIDTHS = (2, 3, 4)
INSTALL_HINT = "pip install triton (it comes with PyTorch's CUDA wheels on Linux)"
BACKENDS = ("auto", "triton", "mamba_ssm", "reference")
ENV_VAR = "SPEECHBRAIN_MAMBADAPTER_KERNELS"

_reported = set()
_preference = {"backend": "auto"}


def _report_once(key, level, message):
    if torch.compiler.is_compiling() or key in _reported:
        return
    _reported.add(key)
    logger.log(level, message)


def _compute_dtype(x):
    """The dtype the kernels will see: autocast's on CUDA when it is on, else ``x``'s."""
    if torch.is_autocast_enabled("cuda"):
        return torch.get_autocast_dtype("cuda")
    return x.dtype


def set_kernel_backend(backend="auto"):
    """Pin the Mamba kernels on CUDA for this process (``"auto"`` restores the default choice).

    Arguments
    ---------
    backend : str
        ``"auto"``, ``"triton"``, ``"mamba_ssm"`` or ``"reference"``. A pinned GPU backend that
        cannot run (not installed, or mamba-ssm with a convolution width outside 2..4) falls back
        to the reference path, with a warning.

    Example
    -------
    >>> set_kernel_backend("reference"); set_kernel_backend()
    >>> set_kernel_backend("cuda")
    Traceback (most recent call last):
    ...
    ValueError: backend must be one of ('auto', 'triton', 'mamba_ssm', 'reference'), got 'cuda'.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}.")
    _preference["backend"] = backend


# Half precision: the widths and state sizes where the Triton scan was measured faster than
# mamba-ssm's (benchmarks/RESULTS.md, issue 17): d_inner 64..512 with 16 states in training,
# d_inner up to 512 with 16 states in inference.
_TRITON_HALF = dict(max_d_state=16, max_d_inner=512, min_d_inner_training=64)


def _triton_faster_in_half(d_inner, d_state):
    if d_inner is None or d_state is None:
        return False
    if d_state > _TRITON_HALF["max_d_state"] or d_inner > _TRITON_HALF["max_d_inner"]:
        return False
    return not torch.is_grad_enabled() or d_inner >= _TRITON_HALF["min_d_inner_training"]


def select_backend(x, d_conv, use_fast_path=True, d_inner=None, d_state=None):
    """Choose the kernels for one Mamba call, and log the choice once.

    Arguments
    ---------
    x : torch.Tensor
        The activations the kernels would read.
    d_conv : int
        Width of the causal convolution.
    use_fast_path : bool
        ``False`` forces the reference path.
    d_inner, d_state : int, optional
        The scan's channels and states: in half precision they decide between the Triton and the
        mamba-ssm kernels (unknown: mamba-ssm's).

    Returns
    -------
    str
        ``"triton"``, ``"mamba_ssm"`` or ``"reference"``.

    Example
    -------
    >>> select_backend(torch.zeros(1, 4, 3), d_conv=4)
    'reference'
    """
    wanted = _preference["backend"]
    if not use_fast_path or wanted == "reference":
        _report_once("forced", logging.INFO, "Mamba: reference PyTorch path (use_fast_path=False or pinned).")
        return "reference"
    if not x.is_cuda:
        _report_once("cpu", logging.INFO, "Mamba: reference PyTorch path (tensors are not on CUDA).")
        return "reference"
    mamba_ssm_runs = FUSED_KERNELS_AVAILABLE and d_conv in FUSED_CONV_WIDTHS
    # Measured (benchmarks/RESULTS.md): in fp32 the Triton scan is the faster; in half precision
    # it is at an adapter's sizes, mamba-ssm's at wide models and large states.
    half = _compute_dtype(x) in (torch.bfloat16, torch.float16)
    mamba_ssm_faster = half and not _triton_faster_in_half(d_inner, d_state)
    if mamba_ssm_runs and (wanted == "mamba_ssm" or (wanted == "auto" and mamba_ssm_faster)):
        _report_once("fused", logging.INFO, "Mamba: fused mamba-ssm / causal-conv1d CUDA kernels.")
        return "mamba_ssm"
    if wanted in ("auto", "triton") and TRITON_AVAILABLE:
        _report_once(
            "triton", logging.INFO, "Mamba: the project's Triton kernels (selective scan, causal conv)."
        )
        return "triton"
    if wanted == "auto" and mamba_ssm_runs:
        _report_once("fused", logging.INFO, "Mamba: fused mamba-ssm / causal-conv1d CUDA kernels.")
        return "mamba_ssm"
    if wanted == "mamba_ssm" and FUSED_KERNELS_AVAILABLE:
        reason = f"causal-conv1d supports widths {FUSED_CONV_WIDTHS}, not d_conv={d_conv}"
    elif wanted == "mamba_ssm":
        reason = "mamba-ssm is not installed: pip install mamba-ssm causal-conv1d"
    else:
        reason = f"Triton is not installed: {INSTALL_HINT}"
    _report_once(
        f"missing-{wanted}-{d_conv}",
        logging.WARNING,
        f"Mamba: running on CUDA on the reference PyTorch path, which is much slower and uses more "
        f"memory ({reason}).",
    )
    return "reference"


if os.environ.get(ENV_VAR):
    set_kernel_backend(os.environ[ENV_VAR])


def causal_conv1d_ref(x, weight, bias=None, activation=None):
    """Depthwise causal 1-D convolution of any width, same signature as ``causal_conv1d_fn``.

    Arguments
    ---------
    x : torch.Tensor
        ``[B, D, L]`` input.
    weight : torch.Tensor
        ``[D, W]`` one filter per channel; output ``t`` sees inputs ``t-W+1 .. t``.
    bias : torch.Tensor, optional
        ``[D]``.
    activation : str, optional
        ``None``, ``"silu"`` or ``"swish"``.

    Returns
    -------
    torch.Tensor
        ``[B, D, L]``.

    Example
    -------
    >>> x = torch.zeros(1, 2, 6); x[0, :, 0] = 1.0
    >>> causal_conv1d_ref(x, torch.ones(2, 3))[0, 0]
    tensor([1., 1., 1., 0., 0., 0.])
    """
    if activation not in (None, "silu", "swish"):
        raise ValueError(f"activation must be None, 'silu' or 'swish', got {activation!r}.")
    width = weight.shape[-1]
    out = F.conv1d(F.pad(x, (width - 1, 0)), weight.unsqueeze(1), bias, groups=x.shape[1])
    return out if activation is None else F.silu(out)


def _split_x_dbl(x_dbl, delta_proj_weight, d_state, length):
    """Split ``x_proj``'s output into delta ``[B, D, L]`` and B, C ``[B, N, L]``."""
    dt_rank = delta_proj_weight.shape[1]
    batch = x_dbl.shape[0] // length
    delta = (x_dbl[:, :dt_rank] @ delta_proj_weight.t()).view(batch, length, -1).transpose(1, 2)
    B = x_dbl[:, dt_rank : dt_rank + d_state].view(batch, length, d_state).transpose(1, 2)
    C = x_dbl[:, dt_rank + d_state :].view(batch, length, d_state).transpose(1, 2)
    return delta, B, C


def mamba_ssm_gated(
    xz,
    conv1d_weight,
    conv1d_bias,
    x_proj_weight,
    delta_proj_weight,
    A,
    D,
    delta_bias,
    fused,
):
    """Mamba's block between ``in_proj`` and ``out_proj``: conv → SiLU → selective scan → gate.

    Arguments
    ---------
    xz : torch.Tensor
        ``[B, 2·D, L]`` output of ``in_proj`` (first half x, second half the gate z).
    conv1d_weight : torch.Tensor
        ``[D, 1, W]``.
    conv1d_bias : torch.Tensor or None
        ``[D]``.
    x_proj_weight : torch.Tensor
        ``[dt_rank + 2·N, D]``.
    delta_proj_weight : torch.Tensor
        ``[D, dt_rank]``.
    A : torch.Tensor
        ``[D, N]``, negative.
    D, delta_bias : torch.Tensor
        ``[D]``.
    fused : bool
        Use the causal-conv1d / mamba-ssm kernels (``select_backend`` returned ``"mamba_ssm"``).

    Returns
    -------
    torch.Tensor
        ``[B, D, L]``.

    Example
    -------
    >>> d, n, r = 4, 3, 2
    >>> y = mamba_ssm_gated(torch.randn(2, 2 * d, 5), torch.randn(d, 1, 4), None,
    ...     torch.randn(r + 2 * n, d), torch.randn(d, r), -torch.rand(d, n),
    ...     torch.ones(d), torch.zeros(d), fused=False)
    >>> y.shape
    torch.Size([2, 4, 5])
    """
    conv_fn, scan_fn = (
        (causal_conv1d_fn, selective_scan_fn) if fused else (causal_conv1d_ref, selective_scan_ref)
    )
    length = xz.shape[-1]
    x, z = xz.chunk(2, dim=1)
    x = conv_fn(x.contiguous(), conv1d_weight.squeeze(1), conv1d_bias, activation="silu")
    x_dbl = F.linear(x.transpose(1, 2).reshape(-1, x.shape[1]), x_proj_weight)
    delta, B, C = _split_x_dbl(x_dbl, delta_proj_weight, A.shape[1], length)
    return scan_fn(
        x,
        delta.contiguous(),
        A,
        B.contiguous(),
        C.contiguous(),
        D,
        z=z.contiguous(),
        delta_bias=delta_bias,
        delta_softplus=True,
    )


def mamba_inner_ref(
    xz,
    conv1d_weight,
    conv1d_bias,
    x_proj_weight,
    delta_proj_weight,
    out_proj_weight,
    out_proj_bias,
    A,
    B=None,
    C=None,
    D=None,
    delta_bias=None,
    B_proj_bias=None,
    C_proj_bias=None,
    delta_softplus=True,
):
    """Pure-PyTorch twin of mamba-ssm's ``mamba_inner_fn`` (same signature), any conv width.

    Only the input-dependent B and C of Mamba are supported (``B=C=None``, no
    projection biases), which is what ``Mamba`` uses.

    Arguments
    ---------
    xz : torch.Tensor
        ``[B, 2·D, L]`` output of ``in_proj``.
    conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight : torch.Tensor
        Weights of the block, as in ``mamba_ssm_gated``.
    out_proj_weight, out_proj_bias : torch.Tensor
        ``[d_model, D]`` and ``[d_model]`` or None.
    A, B, C, D, delta_bias : torch.Tensor
        As in ``selective_scan_ref``.
    B_proj_bias, C_proj_bias : None
        Unsupported, kept for the signature.
    delta_softplus : bool
        Must be True, as in Mamba.

    Returns
    -------
    torch.Tensor
        ``[B, L, d_model]``.
    """
    if B is not None or C is not None or B_proj_bias is not None or C_proj_bias is not None:
        raise NotImplementedError("mamba_inner_ref supports Mamba's input-dependent B and C only.")
    if not delta_softplus:
        raise NotImplementedError("mamba_inner_ref applies softplus to delta, as Mamba does.")
    y = mamba_ssm_gated(
        xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, A, D, delta_bias, fused=False
    )
    return F.linear(y.transpose(1, 2), out_proj_weight, out_proj_bias)


def mamba_gated_cl(x, z, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, A, D, delta_bias):
    """Mamba's block between ``in_proj`` and ``out_proj`` on the Triton kernels, channels-last.

    ``x`` and ``z`` are the two halves of ``in_proj``'s ``[batch, L, 2·D]`` output, passed as views:
    the convolution, the projections and the scan read strided tensors, nothing is transposed.

    Arguments
    ---------
    x, z : torch.Tensor
        ``[batch, L, D]`` (any strides).
    conv1d_weight : torch.Tensor
        ``[D, 1, W]``, any width W.
    conv1d_bias : torch.Tensor or None
        ``[D]``.
    x_proj_weight : torch.Tensor
        ``[dt_rank + 2·N, D]``.
    delta_proj_weight : torch.Tensor
        ``[D, dt_rank]``.
    A : torch.Tensor
        ``[D, N]``, negative.
    D, delta_bias : torch.Tensor
        ``[D]``.

    Returns
    -------
    torch.Tensor
        ``[batch, L, D]``.
    """
    x = causal_conv1d_cl(x, conv1d_weight.squeeze(1), conv1d_bias, activation="silu")
    x_dbl = F.linear(x, x_proj_weight)
    dt_rank, d_state = delta_proj_weight.shape[1], A.shape[1]
    delta = F.linear(x_dbl[..., :dt_rank], delta_proj_weight)
    B = x_dbl[..., dt_rank : dt_rank + d_state]
    C = x_dbl[..., dt_rank + d_state :]
    return selective_scan_cl(x, delta, A, B, C, D, z, delta_bias, delta_softplus=True)
