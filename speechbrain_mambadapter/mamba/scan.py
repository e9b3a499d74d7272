"""Selective scan (the S6 recurrence of Mamba) in pure PyTorch.

``selective_scan_ref`` has the signature and tensor shapes of
``mamba_ssm.ops.selective_scan_interface.selective_scan_fn``, so the two are
interchangeable. Unlike mamba-ssm's own reference, which materialises the
``[B, D, L, N]`` discretised system and loops over time in Python, this one
walks over time in chunks: inside a chunk the linear recurrence is solved by a
two-level scan (about 2·sqrt(chunk) vectorised steps), and only the ``[B, D, N]``
state crosses chunk borders. A custom autograd function recomputes each chunk in the
backward pass, so training memory is O(B·D·chunk·N) plus the inputs, not
O(B·D·L·N).

Authors
 * speechbrain-mambadapter contributors 2026
"""

import math

import torch
import torch.nn.functional as F

DEFAULT_CHUNK_SIZE = 128


def _bc_chunk(X, t0, t1, d_inner):
    """Slice B or C to time steps ``[t0, t1)`` as a tensor broadcastable to ``[B, D, T, N]``.

    Arguments
    ---------
    X : torch.Tensor
        ``[D, N]`` (time invariant), ``[B, N, L]`` or ``[B, G, N, L]`` (G groups).
    t0, t1 : int
        Time range.
    d_inner : int
        Number of channels D.

    Returns
    -------
    torch.Tensor
        ``[1, D, 1, N]``, ``[B, 1, T, N]`` or ``[B, D, T, N]``.
    """
    if X.dim() == 2:
        return X[None, :, None, :]
    if X.dim() == 3:
        return X[:, None, :, t0:t1].transpose(-1, -2)
    groups = X.shape[1]
    return X[..., t0:t1].transpose(-1, -2).repeat_interleave(d_inner // groups, dim=1)


def _contract_state(hs, M, t0, t1):
    """``sum_n hs[b, d, t, n] M[.., n, t]`` for the time steps ``[t0, t1)`` → ``[B, D, T]``."""
    if M.dim() == 3:  # the common case: a batched matrix product, no [B, D, T, N] temporary
        return torch.einsum("bdtn,bnt->bdt", hs, M[..., t0:t1])
    return (hs * _bc_chunk(M, t0, t1, hs.shape[1])).sum(-1)


def _grad_bc(X, w, like):
    """Gradient w.r.t. one chunk of B or C: ``sum_d X[b, d, t, n] w[b, d, t]`` in ``like``'s layout."""
    if like.dim() == 3:
        return torch.einsum("bdtn,bdt->bnt", X, w)
    grad = X * w[..., None]
    if like.dim() == 2:
        return grad.sum(dim=(0, 2))
    b, d, t, n = grad.shape
    groups = like.shape[1]
    return grad.view(b, groups, d // groups, t, n).sum(dim=2).transpose(-1, -2)


def _linear_scan(a, b, h0, reverse=False):
    """Solve ``h[t] = a[t] * h[t-1] + b[t]`` along dim 2 with ``h[-1] = h0``.

    With ``reverse=True`` the recurrence runs backwards in time:
    ``h[t] = a[t] * h[t+1] + b[t]`` with ``h[T] = h0``.

    Two levels, so that a chunk of T steps costs about 2·sqrt(T) vectorised
    operations instead of T: the chunk is cut into sub-chunks of ~sqrt(T) steps,
    all sub-chunks are scanned at once from a zero state while accumulating
    their decay products, then the states entering each sub-chunk are carried
    across and added back. Only products of decays in (0, 1] appear, so nothing
    overflows, unlike a cumulative sum in log space that divides by decays.

    Arguments
    ---------
    a, b : torch.Tensor
        ``[B, D, T, N]`` decays and inputs.
    h0 : torch.Tensor
        ``[B, D, N]`` state before the first step.
    reverse : bool
        Run from the last step to the first.

    Returns
    -------
    torch.Tensor
        ``[B, D, T, N]`` states.
    """
    batch, d_inner, length, d_state = a.shape
    sub = max(1, math.ceil(math.sqrt(length)))
    n_sub = -(-length // sub)
    pad = n_sub * sub - length
    if pad:
        # Trailing steps with a = 1, b = 0 change no earlier state and pass h0
        # through unchanged when scanning in reverse.
        a = torch.cat([a, a.new_ones(batch, d_inner, pad, d_state)], dim=2)
        b = torch.cat([b, b.new_zeros(batch, d_inner, pad, d_state)], dim=2)
    # [sub, B, D, n_sub, N]: each sequential step reads one contiguous block.
    # clone, not contiguous(): the caller's a and b must survive the in-place updates.
    a = a.view(batch, d_inner, n_sub, sub, d_state).permute(3, 0, 1, 2, 4)
    a = a.clone(memory_format=torch.contiguous_format)
    h = b.view(batch, d_inner, n_sub, sub, d_state).permute(3, 0, 1, 2, 4)
    h = h.clone(memory_format=torch.contiguous_format)
    steps = range(sub - 2, -1, -1) if reverse else range(1, sub)
    prev = 1 if reverse else -1
    for j in steps:
        h[j].addcmul_(a[j], h[j + prev])
        a[j].mul_(a[j + prev])
    # State entering each sub-chunk, carried across sub-chunks.
    last = 0 if reverse else -1
    enter = torch.empty_like(h[0])
    carry = h0
    for k in reversed(range(n_sub)) if reverse else range(n_sub):
        enter[:, :, k] = carry
        carry = torch.addcmul(h[last][:, :, k], a[last][:, :, k], carry)
    h.addcmul_(a, enter)
    return h.permute(1, 2, 3, 0, 4).reshape(batch, d_inner, n_sub * sub, d_state)[:, :, :length]


class _SelectiveScanCore(torch.autograd.Function):
    """``y[b, d, t] = sum_n h[b, d, t, n] C[.., n, t]`` with
    ``h[t] = exp(delta[t] A) h[t-1] + delta[t] B[t] u[t]`` (all fp32)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, chunk_size):
        batch, d_inner, length = u.shape
        d_state = A.shape[1]
        y = u.new_empty(batch, d_inner, length)
        n_chunks = (length + chunk_size - 1) // chunk_size
        # The state entering each chunk: all the backward pass needs to
        # recompute a chunk, at L / chunk_size the size of the full history.
        h_in = u.new_empty(batch, d_inner, n_chunks, d_state)
        h = u.new_zeros(batch, d_inner, d_state)
        for k in range(n_chunks):
            t0, t1 = k * chunk_size, min((k + 1) * chunk_size, length)
            h_in[:, :, k] = h
            dt = delta[:, :, t0:t1, None]
            a = torch.exp(dt * A[:, None, :])
            b = dt * u[:, :, t0:t1, None] * _bc_chunk(B, t0, t1, d_inner)
            hs = _linear_scan(a, b, h)
            y[:, :, t0:t1] = _contract_state(hs, C, t0, t1)
            h = hs[:, :, -1]
        ctx.save_for_backward(u, delta, A, B, C, h_in)
        ctx.chunk_size = chunk_size
        return y, h

    @staticmethod
    def backward(ctx, grad_y, grad_last):
        u, delta, A, B, C, h_in = ctx.saved_tensors
        chunk_size = ctx.chunk_size
        batch, d_inner, length = u.shape
        n_chunks = h_in.shape[2]
        du = torch.empty_like(u)
        ddelta = torch.empty_like(delta)
        dA = torch.zeros_like(A)
        dB = torch.zeros_like(B)
        dC = torch.zeros_like(C)
        if grad_y is None:
            grad_y = torch.zeros_like(u)
        # carry = gradient reaching the last state of the current chunk from
        # everything after it.
        carry = torch.zeros_like(h_in[:, :, 0]) if grad_last is None else grad_last.clone()
        for k in reversed(range(n_chunks)):
            t0, t1 = k * chunk_size, min((k + 1) * chunk_size, length)
            dt = delta[:, :, t0:t1]
            uc = u[:, :, t0:t1]
            a = torch.exp(dt[..., None] * A[:, None, :])
            b = (dt * uc)[..., None] * _bc_chunk(B, t0, t1, d_inner)
            hs = _linear_scan(a, b, h_in[:, :, k])
            gy = grad_y[:, :, t0:t1, None] * _bc_chunk(C, t0, t1, d_inner)
            gy[:, :, -1] += carry
            # g[t] = gy[t] + a[t+1] g[t+1]: the same scan, run backwards in time.
            a_next = torch.cat([a[:, :, 1:], torch.zeros_like(a[:, :, :1])], dim=2)
            g = _linear_scan(a_next, gy, torch.zeros_like(carry), reverse=True)
            carry = a[:, :, 0] * g[:, :, 0]

            # Gradient w.r.t. delta·A is g · a · h[t-1] = g · (h[t] - b[t]).
            d_log_a = g * (hs - b)
            dA += torch.einsum("bdtn,bdt->dn", d_log_a, dt)
            g_b = _contract_state(g, B, t0, t1)  # sum_n g B
            ddelta[:, :, t0:t1] = torch.einsum("bdtn,dn->bdt", d_log_a, A) + g_b * uc
            du[:, :, t0:t1] = g_b * dt
            dBc = _grad_bc(g, dt * uc, B)
            dCc = _grad_bc(hs, grad_y[:, :, t0:t1], C)
            if B.dim() == 2:
                dB += dBc
            else:
                dB[..., t0:t1] = dBc
            if C.dim() == 2:
                dC += dCc
            else:
                dC[..., t0:t1] = dCc
        return du, ddelta, dA, dB, dC, None


def selective_scan_ref(
    u,
    delta,
    A,
    B,
    C,
    D=None,
    z=None,
    delta_bias=None,
    delta_softplus=False,
    return_last_state=False,
    chunk_size=DEFAULT_CHUNK_SIZE,
):
    """Selective scan in pure PyTorch, same signature as mamba-ssm's ``selective_scan_fn``.

    Computes, per channel d and state n, ``h[t] = exp(delta[t] A) h[t-1] +
    delta[t] B[t] u[t]`` and ``y[t] = C[t]·h[t] + D u[t]``, gated by
    ``silu(z)``. Everything runs in fp32; the output has the dtype of ``u``.

    Arguments
    ---------
    u : torch.Tensor
        ``[B, D, L]`` input.
    delta : torch.Tensor
        ``[B, D, L]`` step sizes (before ``delta_bias`` and softplus).
    A : torch.Tensor
        ``[D, N]`` real state matrix (diagonal per channel).
    B, C : torch.Tensor
        ``[D, N]``, ``[B, N, L]`` or ``[B, G, N, L]`` input/output matrices.
    D : torch.Tensor, optional
        ``[D]`` skip connection.
    z : torch.Tensor, optional
        ``[B, D, L]`` gate; the output is multiplied by ``silu(z)``.
    delta_bias : torch.Tensor, optional
        ``[D]`` added to ``delta``.
    delta_softplus : bool
        Apply softplus to ``delta`` (after the bias).
    return_last_state : bool
        Also return the ``[B, D, N]`` state after the last step (differentiable).
    chunk_size : int
        Time steps solved at once; only memory and speed depend on it.

    Returns
    -------
    torch.Tensor or tuple
        ``[B, D, L]`` output, and the last state if ``return_last_state``.

    Example
    -------
    >>> u, delta = torch.randn(2, 4, 10), torch.rand(2, 4, 10)
    >>> A = -torch.rand(4, 3)
    >>> B, C = torch.randn(2, 3, 10), torch.randn(2, 3, 10)
    >>> y, last = selective_scan_ref(u, delta, A, B, C, return_last_state=True)
    >>> y.shape, last.shape
    (torch.Size([2, 4, 10]), torch.Size([2, 4, 3]))
    """
    if A.is_complex():
        raise NotImplementedError(
            "selective_scan_ref supports real A only (Mamba's S4D-real initialisation); "
            "use mamba-ssm's selective_scan_ref for complex A."
        )
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}.")
    dtype_in = u.dtype
    u, delta, A, B, C = (t.float() for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias[..., None].float()
    if delta_softplus:
        delta = F.softplus(delta)
    y, last_state = _SelectiveScanCore.apply(u.contiguous(), delta.contiguous(), A, B, C, chunk_size)
    out = y if D is None else y + u * D.float()[:, None]
    if z is not None:
        out = out * F.silu(z.float())
    out = out.to(dtype_in)
    return (out, last_state) if return_last_state else out
