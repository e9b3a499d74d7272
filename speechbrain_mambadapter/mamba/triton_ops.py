"""The Triton scan and convolution as ``torch.library`` custom ops, with autograd and fake kernels.

Custom ops are opaque to ``torch.compile`` (which traces through them with the fake, shape-only
implementations registered here, so ``fullgraph=True`` holds) and are ordinary kernel launches for
CUDA-graph capture. Two entry points per operation:

=====================================  ================================  ==============================
operation                              channels-last (the Mamba block)   mamba-ssm's signature
=====================================  ================================  ==============================
selective scan                         ``selective_scan_cl``             ``selective_scan_triton``
depthwise causal conv (+ SiLU)         ``causal_conv1d_cl``              ``causal_conv1d_triton``
=====================================  ================================  ==============================

The channels-last forms take ``[batch, L, D]`` tensors with any strides (views into the linear
layers' outputs); the others take mamba-ssm's ``[batch, D, L]`` and are fastest when those are
transposed channels-last tensors (``x.stride(1) == 1``).

Eager calls, outside ``torch.compile``, skip the custom ops' dispatch: the same forward and
backward run through a plain ``torch.autograd.Function`` (or straight to the kernels when no
gradient is wanted). The custom ops' schema, fake-tensor and autograd wrappers cost more CPU time
than the kernels' own launches (``benchmarks/scan_profile.py --dispatch``), and an eager Mamba
block waits on the CPU. ``torch.compile`` traces the custom ops.

Authors
 * speechbrain-mambadapter contributors 2026
"""

from typing import Optional

import torch
from torch import Tensor

from speechbrain_mambadapter.mamba import triton_conv, triton_scan

_NS = "speechbrain_mambadapter"
# False sends eager calls through the custom ops too (as torch.compile's are): for the benchmark
# of the two dispatches and the tests that compare them.
_EAGER_FUNCTIONS = True


def _through_custom_ops():
    return not _EAGER_FUNCTIONS or torch.compiler.is_compiling()


def _none_if_empty(t, present):
    return t if present else None


@torch.library.custom_op(f"{_NS}::selective_scan_fwd", mutates_args=())
def _scan_fwd_op(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Optional[Tensor],
    z: Optional[Tensor],
    delta_bias: Optional[Tensor],
    delta_softplus: bool,
    save_states: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    return triton_scan.scan_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, save_states)


@_scan_fwd_op.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus, save_states):
    batch, length, d_inner = u.shape
    d_state = A.shape[1]
    f32 = dict(dtype=torch.float32)
    states = (
        u.new_empty(triton_scan.saved_states_shape(batch, length, d_inner, d_state), **f32)
        if save_states
        else u.new_empty(0, **f32)
    )
    return u.new_empty(batch, length, d_inner), u.new_empty(batch, d_inner, d_state, **f32), states


@torch.library.custom_op(f"{_NS}::selective_scan_bwd", mutates_args=())
def _scan_bwd_op(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Optional[Tensor],
    z: Optional[Tensor],
    delta_bias: Optional[Tensor],
    delta_softplus: bool,
    states: Tensor,
    grad_out: Tensor,
    dlast: Optional[Tensor],
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    grads = triton_scan.scan_bwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, states, grad_out, dlast)
    # Custom ops return tensors only: an empty one stands for "no such input".
    return tuple(u.new_empty(0) if g is None else g.contiguous() for g in grads)


@_scan_bwd_op.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus, states, grad_out, dlast):
    f32 = dict(dtype=torch.float32)
    batch, length, d_inner = u.shape
    d_state = A.shape[1]
    return (
        u.new_empty(u.shape),
        delta.new_empty(u.shape),
        A.new_empty(d_inner, d_state, **f32),
        B.new_empty(batch, length, d_state),
        C.new_empty(batch, length, d_state),
        u.new_empty(d_inner, **f32) if D is not None else u.new_empty(0),
        z.new_empty(u.shape) if z is not None else u.new_empty(0),
        u.new_empty(d_inner, **f32) if delta_bias is not None else u.new_empty(0),
    )


def _scan_setup_context(ctx, inputs, output):
    u, delta, A, B, C, D, z, delta_bias, delta_softplus, _ = inputs
    ctx.delta_softplus = delta_softplus
    ctx.present = (D is not None, z is not None, delta_bias is not None)
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, output[2])


def _scan_grads(ctx, grad_out, dlast, scan_bwd):
    """The inputs' gradients, from ``scan_bwd`` (the custom op, or ``triton_scan.scan_bwd``)."""
    u, delta, A, B, C, D, z, delta_bias, states = ctx.saved_tensors
    if states.numel() == 0:
        raise RuntimeError(
            "selective_scan_cl ran without saving its states (save_states=False), so it has no "
            "backward pass; call it with gradients enabled, as selective_scan_cl does by default."
        )
    if grad_out is None:
        grad_out = torch.zeros_like(u)
    du, ddelta, dA, dB, dC, dD, dz, dbias = scan_bwd(
        u, delta, A, B, C, D, z, delta_bias, ctx.delta_softplus, states, grad_out, dlast
    )
    has_d, has_z, has_bias = ctx.present
    return (
        du, ddelta, dA.to(A.dtype), dB, dC,
        _none_if_empty(dD, has_d), _none_if_empty(dz, has_z), _none_if_empty(dbias, has_bias),
        None, None,
    )  # fmt: skip


def _scan_backward(ctx, grad_out, dlast, _dstates):
    return _scan_grads(ctx, grad_out, dlast, _scan_bwd_op)


_scan_fwd_op.register_autograd(_scan_backward, setup_context=_scan_setup_context)


class _ScanFunction(torch.autograd.Function):
    """The scan's custom op and its registered backward, without the dispatch: eager calls."""

    @staticmethod
    def forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, save_states):
        return triton_scan.scan_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, save_states)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _scan_setup_context(ctx, inputs, output)
        ctx.mark_non_differentiable(output[2])
        # An unused last state sends None, not zeros: the kernel then skips its gradient.
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx, grad_out, dlast, _dstates):
        return _scan_grads(ctx, grad_out, dlast, triton_scan.scan_bwd)


@torch.library.custom_op(f"{_NS}::causal_conv1d_fwd", mutates_args=())
def _conv_fwd_op(x: Tensor, weight: Tensor, bias: Optional[Tensor], silu: bool) -> Tensor:
    return triton_conv.conv_fwd(x, weight, bias, silu)


@_conv_fwd_op.register_fake
def _(x, weight, bias, silu):
    return x.new_empty(x.shape)


def _conv_bwd(x, weight, bias, silu, grad_out):
    """``triton_conv.conv_bwd`` with the weight's and bias's gradients (fp32 sums) in their dtypes,
    and an empty bias gradient without a bias: the custom op's body and the eager backward's."""
    dx, dw, db = triton_conv.conv_bwd(x, weight, bias, silu, grad_out)
    return dx, dw.to(weight.dtype), x.new_empty(0) if db is None else db.to(bias.dtype)


@torch.library.custom_op(f"{_NS}::causal_conv1d_bwd", mutates_args=())
def _conv_bwd_op(
    x: Tensor, weight: Tensor, bias: Optional[Tensor], silu: bool, grad_out: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    return _conv_bwd(x, weight, bias, silu, grad_out)


@_conv_bwd_op.register_fake
def _(x, weight, bias, silu, grad_out):
    return (
        x.new_empty(x.shape),
        weight.new_empty(weight.shape),
        x.new_empty(0) if bias is None else bias.new_empty(bias.shape),
    )


def _conv_setup_context(ctx, inputs, output):
    x, weight, bias, silu = inputs
    ctx.silu = silu
    ctx.has_bias = bias is not None
    ctx.save_for_backward(x, weight, bias)


def _conv_grads(ctx, grad_out, conv_bwd):
    """The inputs' gradients, from ``conv_bwd`` (the custom op, or ``_conv_bwd``)."""
    x, weight, bias = ctx.saved_tensors
    dx, dw, db = conv_bwd(x, weight, bias, ctx.silu, grad_out)
    return dx, dw, _none_if_empty(db, ctx.has_bias), None


def _conv_backward(ctx, grad_out):
    return _conv_grads(ctx, grad_out, _conv_bwd_op)


_conv_fwd_op.register_autograd(_conv_backward, setup_context=_conv_setup_context)


class _ConvFunction(torch.autograd.Function):
    """The convolution's custom op and its registered backward, without the dispatch: eager calls."""

    @staticmethod
    def forward(x, weight, bias, silu):
        return triton_conv.conv_fwd(x, weight, bias, silu)

    setup_context = staticmethod(_conv_setup_context)

    @staticmethod
    def backward(ctx, grad_out):
        return _conv_grads(ctx, grad_out, _conv_bwd)


def _wants_grad(*tensors):
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def selective_scan_cl(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, return_last_state=False
):
    """Selective scan on channels-last tensors (Triton; CUDA, or CPU under ``TRITON_INTERPRET=1``).

    The same computation as ``selective_scan_ref`` with time and channels swapped: every
    ``[batch, D, L]`` tensor there is ``[batch, L, D]`` here, ``B`` and ``C`` are ``[batch, L, N]``.

    Arguments
    ---------
    u, delta : torch.Tensor
        ``[batch, L, D]``, any strides.
    A : torch.Tensor
        ``[D, N]`` real.
    B, C : torch.Tensor
        ``[batch, L, N]``, any strides (input-dependent B and C, as in Mamba).
    D, delta_bias : torch.Tensor, optional
        ``[D]``.
    z : torch.Tensor, optional
        ``[batch, L, D]`` gate.
    delta_softplus : bool
        Apply softplus to ``delta + delta_bias``.
    return_last_state : bool
        Also return the ``[batch, D, N]`` fp32 state after the last step.

    Returns
    -------
    torch.Tensor or tuple
        ``[batch, L, D]`` output in ``u``'s dtype, and the last state if ``return_last_state``.
    """
    save = _wants_grad(u, delta, A, B, C, D, z, delta_bias)
    args = (u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus), save)
    if _through_custom_ops():
        out, last, _ = _scan_fwd_op(*args)
    elif save:
        out, last, _ = _ScanFunction.apply(*args)
    else:
        out, last, _ = triton_scan.scan_fwd(*args)
    return (out, last) if return_last_state else out


def causal_conv1d_cl(x, weight, bias=None, activation=None):
    """Depthwise causal convolution on channels-last ``[batch, L, D]`` (any strides), any width.

    Arguments
    ---------
    x : torch.Tensor
        ``[batch, L, D]``.
    weight : torch.Tensor
        ``[D, W]``.
    bias : torch.Tensor, optional
        ``[D]``.
    activation : str, optional
        ``None``, ``"silu"`` or ``"swish"``.

    Returns
    -------
    torch.Tensor
        ``[batch, L, D]``, contiguous.
    """
    if activation not in (None, "silu", "swish"):
        raise ValueError(f"activation must be None, 'silu' or 'swish', got {activation!r}.")
    silu = activation is not None
    if _through_custom_ops():
        return _conv_fwd_op(x, weight, bias, silu)
    if _wants_grad(x, weight, bias):
        return _ConvFunction.apply(x, weight, bias, silu)
    return triton_conv.conv_fwd(x, weight, bias, silu)


def _check_variable_bc(B, C):
    if B.dim() != 3 or C.dim() != 3:
        raise ValueError(
            "The Triton selective scan takes input-dependent B and C of shape [batch, N, L] "
            f"(as Mamba produces), got B {tuple(B.shape)} and C {tuple(C.shape)}; use "
            "selective_scan_ref for time-invariant or grouped B and C."
        )


def selective_scan_triton(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, return_last_state=False
):
    """Triton selective scan with mamba-ssm's ``selective_scan_fn`` signature and shapes.

    Arguments and returns are those of ``selective_scan_ref``, with ``B`` and ``C`` of shape
    ``[batch, N, L]``; fastest when ``u``, ``delta`` and ``z`` are transposed channels-last tensors.

    Arguments
    ---------
    u, delta : torch.Tensor
        ``[batch, D, L]``.
    A : torch.Tensor
        ``[D, N]``.
    B, C : torch.Tensor
        ``[batch, N, L]``.
    D, delta_bias : torch.Tensor, optional
        ``[D]``.
    z : torch.Tensor, optional
        ``[batch, D, L]``.
    delta_softplus : bool
        Apply softplus to ``delta + delta_bias``.
    return_last_state : bool
        Also return the last state ``[batch, D, N]``.

    Returns
    -------
    torch.Tensor or tuple
    """
    _check_variable_bc(B, C)
    res = selective_scan_cl(
        u.transpose(1, 2), delta.transpose(1, 2), A, B.transpose(1, 2), C.transpose(1, 2), D,
        None if z is None else z.transpose(1, 2), delta_bias, delta_softplus, return_last_state,
    )  # fmt: skip
    if return_last_state:
        return res[0].transpose(1, 2), res[1]
    return res.transpose(1, 2)


def causal_conv1d_triton(x, weight, bias=None, activation=None):
    """Triton causal convolution with causal-conv1d's ``causal_conv1d_fn`` signature, any width.

    Arguments
    ---------
    x : torch.Tensor
        ``[batch, D, L]``.
    weight : torch.Tensor
        ``[D, W]``.
    bias : torch.Tensor, optional
        ``[D]``.
    activation : str, optional
        ``None``, ``"silu"`` or ``"swish"``.

    Returns
    -------
    torch.Tensor
        ``[batch, D, L]`` (a transposed channels-last tensor).
    """
    return causal_conv1d_cl(x.transpose(1, 2), weight, bias, activation).transpose(1, 2)
