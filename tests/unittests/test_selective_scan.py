"""The chunked reference scan against a per-step recurrence written out here."""

import pytest
import torch
import torch.nn.functional as F

from speechbrain_mambadapter.mamba import selective_scan_ref


def naive_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """One time step at a time, straight from the S6 equations (fp32)."""
    u, delta, A, B, C = (t.double() for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.double()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    batch, d_inner, length = u.shape
    if B.dim() == 2:
        B = B[None, :, :, None].expand(batch, d_inner, -1, length)
    elif B.dim() == 3:
        B = B[:, None].expand(batch, d_inner, -1, -1)
    else:
        B = B.repeat_interleave(d_inner // B.shape[1], dim=1)
    if C.dim() == 2:
        C = C[None, :, :, None].expand(batch, d_inner, -1, length)
    elif C.dim() == 3:
        C = C[:, None].expand(batch, d_inner, -1, -1)
    else:
        C = C.repeat_interleave(d_inner // C.shape[1], dim=1)
    h = u.new_zeros(batch, d_inner, A.shape[1])
    ys = []
    for t in range(length):
        h = torch.exp(delta[:, :, t, None] * A) * h + delta[:, :, t, None] * B[..., t] * u[:, :, t, None]
        ys.append((h * C[..., t]).sum(-1))
    y = torch.stack(ys, dim=2)
    if D is not None:
        y = y + u * D.double()[:, None]
    if z is not None:
        y = y * F.silu(z.double())
    return y, h


def make_inputs(batch, d_inner, length, d_state, bc_layout, groups=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, d_inner, length, generator=g)
    delta = torch.randn(batch, d_inner, length, generator=g) * 0.5
    A = -torch.exp(torch.randn(d_inner, d_state, generator=g) * 0.5)
    shapes = {
        "variable": (batch, d_state, length),
        "grouped": (batch, groups, d_state, length),
        "invariant": (d_inner, d_state),
    }
    B = torch.randn(*shapes[bc_layout], generator=g)
    C = torch.randn(*shapes[bc_layout], generator=g)
    D = torch.randn(d_inner, generator=g)
    z = torch.randn(batch, d_inner, length, generator=g)
    delta_bias = torch.randn(d_inner, generator=g) * 0.1
    return u, delta, A, B, C, D, z, delta_bias


@pytest.mark.parametrize(
    "batch,d_inner,length,d_state,chunk,bc_layout",
    [
        (2, 4, 1, 3, 8, "variable"),
        (2, 4, 37, 3, 8, "variable"),  # L not a multiple of the chunk
        (1, 6, 64, 5, 16, "variable"),  # L a multiple of the chunk
        (3, 8, 50, 4, 7, "grouped"),
        (2, 4, 23, 3, 5, "invariant"),
        (2, 4, 19, 2, 128, "variable"),  # one partial chunk
    ],
)
def test_values_and_gradients_match_per_step_recurrence(batch, d_inner, length, d_state, chunk, bc_layout):
    inputs = make_inputs(batch, d_inner, length, d_state, bc_layout)
    ours_in = [t.clone().requires_grad_() for t in inputs]
    naive_in = [t.clone().requires_grad_() for t in inputs]
    u, delta, A, B, C, D, z, bias = ours_in
    y, last = selective_scan_ref(
        u, delta, A, B, C, D, z, bias, delta_softplus=True, return_last_state=True, chunk_size=chunk
    )
    u2, delta2, A2, B2, C2, D2, z2, bias2 = naive_in
    y_ref, last_ref = naive_scan(u2, delta2, A2, B2, C2, D2, z2, bias2, delta_softplus=True)
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(last.double(), last_ref, rtol=1e-4, atol=1e-5)

    g = torch.Generator().manual_seed(1)
    gy = torch.randn(y.shape, generator=g)
    glast = torch.randn(last.shape, generator=g)
    ((y * gy).sum() + (last * glast).sum()).backward()
    ((y_ref * gy.double()).sum() + (last_ref * glast.double()).sum()).backward()
    for name, ours, ref in zip("u delta A B C D z delta_bias".split(), ours_in, naive_in):
        torch.testing.assert_close(ours.grad.double(), ref.grad.double(), rtol=1e-3, atol=1e-4, msg=name)


def test_chunk_size_does_not_change_results():
    u, delta, A, B, C, D, z, bias = make_inputs(2, 8, 300, 16, "variable")
    outputs = []
    for chunk in (1, 7, 64, 300, 1000):
        inputs = [t.clone().requires_grad_() for t in (u, delta, A, B, C)]
        y = selective_scan_ref(*inputs, D, z, bias, delta_softplus=True, chunk_size=chunk)
        y.square().sum().backward()
        outputs.append((y.detach(), [t.grad for t in inputs]))
    y0, grads0 = outputs[0]
    for y, grads in outputs[1:]:
        torch.testing.assert_close(y, y0, rtol=1e-5, atol=1e-5)
        for g, g0 in zip(grads, grads0):
            torch.testing.assert_close(g, g0, rtol=1e-4, atol=1e-4)


def test_long_sequences_with_strong_decay_stay_finite():
    """Large delta·A over a long sequence must not overflow (no division by decays)."""
    u, delta, A, B, C, *_ = make_inputs(1, 4, 2000, 16, "variable")
    y = selective_scan_ref(u, delta.abs() * 20, A * 16, B, C, chunk_size=256)
    assert torch.isfinite(y).all()


def test_output_dtype_follows_input_and_computes_in_fp32():
    u, delta, A, B, C, *_ = make_inputs(2, 4, 20, 3, "variable")
    y32 = selective_scan_ref(u, delta, A, B, C, delta_softplus=True)
    y16 = selective_scan_ref(
        u.bfloat16(), delta.bfloat16(), A, B.bfloat16(), C.bfloat16(), delta_softplus=True
    )
    assert y16.dtype == torch.bfloat16
    torch.testing.assert_close(y16.float(), y32, rtol=0.05, atol=0.05)


def test_rejects_complex_A_and_bad_chunk():
    u, delta, A, B, C, *_ = make_inputs(1, 2, 5, 2, "variable")
    with pytest.raises(NotImplementedError, match="real A"):
        selective_scan_ref(u, delta, A.to(torch.complex64), B, C)
    with pytest.raises(ValueError, match="chunk_size"):
        selective_scan_ref(u, delta, A, B, C, chunk_size=0)


def test_inputs_are_left_untouched():
    """The in-place scan works on copies (a one-step chunk once aliased the caller's tensors)."""
    inputs = make_inputs(2, 4, 9, 3, "variable")
    before = [t.clone() for t in inputs]
    u, delta, A, B, C, D, z, bias = [t.requires_grad_() for t in inputs]
    selective_scan_ref(u, delta, A, B, C, D, z, bias, delta_softplus=True, chunk_size=1).sum().backward()
    for t, t0 in zip(inputs, before):
        assert torch.equal(t.detach(), t0)
