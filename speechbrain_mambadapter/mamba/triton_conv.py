"""Depthwise causal 1-D convolution of any width, with optional SiLU, in Triton; channels-last.

``x`` is ``[batch, L, D]`` with any strides (the Mamba block passes the first half of ``in_proj``'s
output, a strided view), ``weight`` is ``[D, W]``: output ``t`` of channel ``d`` is
``bias[d] + sum_k weight[d, k] x[t - W + 1 + k, d]``, then SiLU. Every width runs the same kernel
(the taps are unrolled at compile time), so ``d_conv`` 2..8 and beyond all stay on the GPU path.
The backward pass recomputes the pre-activation, writes its gradient once (fp32) and reads it back
shifted for the input gradient; weight and bias gradients are per-tile partial sums.
:mod:`speechbrain_mambadapter.mamba.ops` wraps these as custom ops with causal-conv1d's signature.

Authors
 * speechbrain-mambadapter contributors 2026
"""

import torch

from speechbrain_mambadapter.mamba.triton_launch import Launcher
from speechbrain_mambadapter.mamba.triton_scan import TRITON_AVAILABLE

if TRITON_AVAILABLE:
    import triton
    import triton.language as tl

_BLOCK_L, _BLOCK_D, _WARPS = 64, 64, 4

if TRITON_AVAILABLE:

    @triton.jit
    def _pre_activation(x_ptr, w_ptr, bias, pid_b, t, offs_d, mask_d, L, s_xb, s_xl, s_xd, s_wd, s_wk,
                        W: tl.constexpr, BL: tl.constexpr, BD: tl.constexpr):  # fmt: skip
        acc = tl.zeros([BL, BD], dtype=tl.float32) + bias[None, :]
        for k in tl.static_range(W):
            src = t - (W - 1) + k
            m = ((src >= 0) & (src < L))[:, None] & mask_d[None, :]
            xk = tl.load(
                x_ptr + pid_b * s_xb + src[:, None] * s_xl + offs_d[None, :] * s_xd, mask=m, other=0.0
            )
            wk = tl.load(w_ptr + offs_d * s_wd + k * s_wk, mask=mask_d, other=0.0).to(tl.float32)
            acc += xk.to(tl.float32) * wk[None, :]
        return acc

    @triton.jit
    def _conv_fwd_kernel(x_ptr, w_ptr, b_ptr, out_ptr, L, D, s_xb, s_xl, s_xd, s_wd, s_wk,
                         W: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr,
                         BL: tl.constexpr, BD: tl.constexpr):  # fmt: skip
        pid_l, pid_d, pid_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        t = pid_l * BL + tl.arange(0, BL)
        offs_d = pid_d * BD + tl.arange(0, BD)
        mask_d = offs_d < D
        bias = tl.zeros([BD], dtype=tl.float32)
        if HAS_BIAS:
            bias = tl.load(b_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
        acc = _pre_activation(x_ptr, w_ptr, bias, pid_b, t, offs_d, mask_d, L, s_xb, s_xl, s_xd, s_wd, s_wk,
                              W, BL, BD)  # fmt: skip
        if SILU:
            acc = acc * tl.sigmoid(acc)
        mask = (t < L)[:, None] & mask_d[None, :]
        tl.store(out_ptr + (pid_b * L + t[:, None]) * D + offs_d[None, :], acc.to(out_ptr.dtype.element_ty),
                 mask=mask)  # fmt: skip

    @triton.jit
    def _conv_bwd_pre_kernel(x_ptr, w_ptr, b_ptr, grad_out_ptr, dpre_ptr, dw_ptr, db_ptr,
                             L, D, s_xb, s_xl, s_xd, s_wd, s_wk, s_ob, s_ol, s_od,
                             W: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr,
                             BL: tl.constexpr, BD: tl.constexpr):  # fmt: skip
        """dpre = grad_out · silu'(pre) into ``dpre`` (fp32), and this tile's dweight/dbias sums."""
        pid_l, pid_d, pid_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        t = pid_l * BL + tl.arange(0, BL)
        offs_d = pid_d * BD + tl.arange(0, BD)
        mask_d = offs_d < D
        mask = (t < L)[:, None] & mask_d[None, :]
        bias = tl.zeros([BD], dtype=tl.float32)
        if HAS_BIAS:
            bias = tl.load(b_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
        dpre = tl.load(grad_out_ptr + pid_b * s_ob + t[:, None] * s_ol + offs_d[None, :] * s_od, mask=mask,
                       other=0.0).to(tl.float32)  # fmt: skip
        if SILU:
            pre = _pre_activation(x_ptr, w_ptr, bias, pid_b, t, offs_d, mask_d, L, s_xb, s_xl, s_xd,
                                  s_wd, s_wk, W, BL, BD)  # fmt: skip
            sig = tl.sigmoid(pre)
            dpre = dpre * sig * (1.0 + pre * (1.0 - sig))
        tl.store(dpre_ptr + (pid_b * L + t[:, None]) * D + offs_d[None, :], dpre, mask=mask)
        row = pid_b * tl.num_programs(0) + pid_l
        for k in tl.static_range(W):
            src = t - (W - 1) + k
            m = ((src >= 0) & (src < L))[:, None] & mask_d[None, :]
            xk = tl.load(
                x_ptr + pid_b * s_xb + src[:, None] * s_xl + offs_d[None, :] * s_xd, mask=m, other=0.0
            )
            tl.store(
                dw_ptr + (row * D + offs_d) * W + k, tl.sum(dpre * xk.to(tl.float32), axis=0), mask=mask_d
            )
        tl.store(db_ptr + row * D + offs_d, tl.sum(dpre, axis=0), mask=mask_d)

    @triton.jit
    def _conv_bwd_input_kernel(dpre_ptr, w_ptr, dx_ptr, L, D, s_wd, s_wk,
                               W: tl.constexpr, BL: tl.constexpr, BD: tl.constexpr):  # fmt: skip
        """dx[t] = sum_k weight[k] dpre[t + W - 1 - k]."""
        pid_l, pid_d, pid_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        t = pid_l * BL + tl.arange(0, BL)
        offs_d = pid_d * BD + tl.arange(0, BD)
        mask_d = offs_d < D
        acc = tl.zeros([BL, BD], dtype=tl.float32)
        for k in tl.static_range(W):
            src = t + (W - 1) - k
            m = (src < L)[:, None] & mask_d[None, :]
            g = tl.load(dpre_ptr + (pid_b * L + src[:, None]) * D + offs_d[None, :], mask=m, other=0.0)
            wk = tl.load(w_ptr + offs_d * s_wd + k * s_wk, mask=mask_d, other=0.0).to(tl.float32)
            acc += g * wk[None, :]
        mask = (t < L)[:, None] & mask_d[None, :]
        tl.store(dx_ptr + (pid_b * L + t[:, None]) * D + offs_d[None, :], acc.to(dx_ptr.dtype.element_ty),
                 mask=mask)  # fmt: skip

    _CONV_FWD = Launcher(_conv_fwd_kernel)
    _CONV_BWD_PRE = Launcher(_conv_bwd_pre_kernel)
    _CONV_BWD_INPUT = Launcher(_conv_bwd_input_kernel)


def _grid(batch, length, d_inner):
    return (triton.cdiv(length, _BLOCK_L), triton.cdiv(d_inner, _BLOCK_D), batch)


def conv_fwd(x, weight, bias, silu):
    """Causal depthwise convolution: ``[batch, L, D]`` (any strides) → contiguous ``[batch, L, D]``.

    Arguments
    ---------
    x : torch.Tensor
        ``[batch, L, D]``.
    weight : torch.Tensor
        ``[D, W]``.
    bias : torch.Tensor or None
        ``[D]``.
    silu : bool
        Apply SiLU to the output.

    Returns
    -------
    torch.Tensor
    """
    batch, length, d_inner = x.shape
    out = torch.empty(batch, length, d_inner, device=x.device, dtype=x.dtype)
    _CONV_FWD[_grid(batch, length, d_inner)](
        x, weight, bias, out, length, d_inner, *x.stride(), *weight.stride(),
        W=weight.shape[1], HAS_BIAS=bias is not None, SILU=bool(silu), BL=_BLOCK_L, BD=_BLOCK_D,
        num_warps=_WARPS,
    )  # fmt: skip
    return out


def conv_bwd(x, weight, bias, silu, grad_out):
    """Gradients of ``conv_fwd``: ``dx`` (contiguous, x's dtype), ``dweight``, ``dbias`` (fp32 sums).

    Arguments
    ---------
    x, weight, bias, silu
        As in ``conv_fwd``.
    grad_out : torch.Tensor
        ``[batch, L, D]``, any strides.

    Returns
    -------
    tuple
        ``dx``, ``dweight`` ``[D, W]``, ``dbias`` ``[D]`` or None.
    """
    batch, length, d_inner = x.shape
    width = weight.shape[1]
    grid = _grid(batch, length, d_inner)
    f32 = dict(device=x.device, dtype=torch.float32)
    dpre = torch.empty(batch, length, d_inner, **f32)
    dw_part = torch.empty(batch * grid[0], d_inner, width, **f32)
    db_part = torch.empty(batch * grid[0], d_inner, **f32)
    _CONV_BWD_PRE[grid](
        x, weight, bias, grad_out, dpre, dw_part, db_part, length, d_inner,
        *x.stride(), *weight.stride(), *grad_out.stride(),
        W=width, HAS_BIAS=bias is not None, SILU=bool(silu), BL=_BLOCK_L, BD=_BLOCK_D, num_warps=_WARPS,
    )  # fmt: skip
    dx = torch.empty(batch, length, d_inner, device=x.device, dtype=x.dtype)
    _CONV_BWD_INPUT[grid](
        dpre, weight, dx, length, d_inner, *weight.stride(), W=width, BL=_BLOCK_L, BD=_BLOCK_D,
        num_warps=_WARPS,
    )  # fmt: skip
    return dx, dw_part.sum(0), db_part.sum(0) if bias is not None else None
