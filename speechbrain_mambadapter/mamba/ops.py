"""Fused-kernel dispatch for Mamba, with pure-PyTorch references of the same signatures.

=====================  ==========================  =====================
operation              fused (mamba-ssm, CUDA)     reference (anywhere)
=====================  ==========================  =====================
depthwise causal conv  ``causal_conv1d_fn``        ``causal_conv1d_ref``
selective scan         ``selective_scan_fn``       ``selective_scan_ref``
whole Mamba inner op   ``mamba_inner_fn``          ``mamba_inner_ref``
=====================  ==========================  =====================

``use_fused_path`` is the one place that decides which column runs.

Authors
 * speechbrain-mambadapter contributors 2026
"""

import logging

import torch  # noqa: F401  (the doctests use it)
import torch.nn.functional as F

from speechbrain_mambadapter.mamba.scan import selective_scan_ref

logger = logging.getLogger(__name__)

try:
    from causal_conv1d import causal_conv1d_fn
    from mamba_ssm.ops.selective_scan_interface import mamba_inner_fn, selective_scan_fn
except ImportError:
    causal_conv1d_fn = mamba_inner_fn = selective_scan_fn = None

FUSED_KERNELS_AVAILABLE = mamba_inner_fn is not None
# causal-conv1d compiles kernels for these widths only.
FUSED_CONV_WIDTHS = (2, 3, 4)
INSTALL_HINT = "pip install 'speechbrain-mambadapter[cuda]' (or: pip install mamba-ssm causal-conv1d)"

_reported = set()


def _report_once(key, level, message):
    if key not in _reported:
        _reported.add(key)
        logger.log(level, message)


def use_fused_path(x, d_conv, use_fast_path=True):
    """Decide whether the fused CUDA kernels can run, and log the choice once.

    Arguments
    ---------
    x : torch.Tensor
        The activations the kernels would read.
    d_conv : int
        Width of the causal convolution.
    use_fast_path : bool
        ``False`` forces the reference path.

    Returns
    -------
    bool
        True when the mamba-ssm / causal-conv1d kernels should run.

    Example
    -------
    >>> use_fused_path(torch.zeros(1, 4, 3), d_conv=4)
    False
    """
    if not use_fast_path:
        _report_once("forced", logging.INFO, "Mamba: reference PyTorch path (use_fast_path=False).")
        return False
    if not x.is_cuda:
        _report_once("cpu", logging.INFO, "Mamba: reference PyTorch path (tensors are not on CUDA).")
        return False
    if not FUSED_KERNELS_AVAILABLE:
        _report_once(
            "missing",
            logging.WARNING,
            "Mamba: running on CUDA without the fused kernels, which is much slower and uses "
            f"more memory. Install them with: {INSTALL_HINT}",
        )
        return False
    if d_conv not in FUSED_CONV_WIDTHS:
        _report_once(
            f"width{d_conv}",
            logging.INFO,
            f"Mamba: reference PyTorch path for d_conv={d_conv} "
            f"(causal-conv1d supports widths {FUSED_CONV_WIDTHS}).",
        )
        return False
    _report_once("fused", logging.INFO, "Mamba: fused mamba-ssm / causal-conv1d CUDA kernels.")
    return True


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
        Use the causal-conv1d / mamba-ssm kernels (see ``use_fused_path``).

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
