"""The Mamba blocks: mamba-ssm compatibility, initialisation, causality, padding invariance."""

import math

import pytest
import torch
import torch.nn.functional as F

from speechbrain_mambadapter.mamba import (
    BiMambaExt,
    BiMambaInner,
    Mamba,
    build_mamba,
    causal_conv1d_ref,
    relative_to_absolute_lengths,
    reverse_padded,
)
from tests.unittests.test_selective_scan import naive_scan


def mamba_ssm_layout(d_model, d_state=16, d_conv=4, expand=2, dt_rank="auto", conv_bias=True, bias=False):
    """Keys and shapes of ``mamba_ssm.modules.mamba_simple.Mamba``'s state_dict, written from its source."""
    d_inner = expand * d_model
    dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else dt_rank
    layout = {
        "A_log": (d_inner, d_state),
        "D": (d_inner,),
        "in_proj.weight": (2 * d_inner, d_model),
        "conv1d.weight": (d_inner, 1, d_conv),
        "x_proj.weight": (dt_rank + 2 * d_state, d_inner),
        "dt_proj.weight": (d_inner, dt_rank),
        "dt_proj.bias": (d_inner,),
        "out_proj.weight": (d_model, d_inner),
    }
    if conv_bias:
        layout["conv1d.bias"] = (d_inner,)
    if bias:
        layout["in_proj.bias"] = (2 * d_inner,)
        layout["out_proj.bias"] = (d_model,)
    return layout


CONFIGS = [
    dict(d_model=16),
    dict(d_model=104, d_state=16, d_conv=4, expand=2),
    dict(d_model=40, d_state=8, d_conv=2, expand=1, dt_rank=5),
    dict(d_model=33, d_state=4, d_conv=7, expand=3, conv_bias=False, bias=True),
]


@pytest.mark.parametrize("config", CONFIGS)
def test_state_dict_matches_mamba_ssm_layout(config):
    block = Mamba(**config)
    got = {k: tuple(v.shape) for k, v in block.state_dict().items()}
    assert got == mamba_ssm_layout(**config)


def test_initialisation_follows_mamba_ssm():
    torch.manual_seed(0)
    block = Mamba(d_model=64, d_state=8, dt_min=0.002, dt_max=0.05, dtype=torch.bfloat16)
    torch.testing.assert_close(block.A_log, torch.log(torch.arange(1.0, 9.0)).repeat(128, 1))
    assert torch.equal(block.D, torch.ones(128))
    # A_log and D stay fp32 whatever the factory dtype, and are excluded from weight decay.
    assert block.A_log.dtype == block.D.dtype == torch.float32
    assert block.in_proj.weight.dtype == torch.bfloat16
    assert block.A_log._no_weight_decay and block.D._no_weight_decay
    dt = F.softplus(block.dt_proj.bias.float())
    assert dt.min() >= 0.002 * 0.99 and dt.max() <= 0.05 * 1.01
    # log-uniform: the median of log(dt) sits near the middle of [log dt_min, log dt_max]
    assert abs(dt.log().median() - (math.log(0.002) + math.log(0.05)) / 2) < 0.5
    bound = block.dt_rank**-0.5
    assert block.dt_proj.weight.abs().max() <= bound


def naive_mamba_forward(block, x):
    """Mamba's unfused forward spelled out with standard layers and the per-step recurrence."""
    length = x.shape[1]
    xz = block.in_proj(x).transpose(1, 2)
    h, z = xz.chunk(2, dim=1)
    h = F.silu(block.conv1d(h)[..., :length])
    dbl = block.x_proj(h.transpose(1, 2))
    dt, B, C = torch.split(dbl, [block.dt_rank, block.d_state, block.d_state], dim=-1)
    delta = (dt @ block.dt_proj.weight.t()).transpose(1, 2)
    y, _ = naive_scan(
        h,
        delta,
        -torch.exp(block.A_log),
        B.transpose(1, 2),
        C.transpose(1, 2),
        block.D,
        z,
        block.dt_proj.bias,
        delta_softplus=True,
    )
    return block.out_proj(y.float().transpose(1, 2))


@pytest.mark.parametrize("config", CONFIGS)
def test_forward_equals_unfused_mamba_equations(config):
    torch.manual_seed(0)
    block = Mamba(**config)
    x = torch.randn(2, 21, config["d_model"])
    torch.testing.assert_close(block(x), naive_mamba_forward(block, x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("d_conv", range(2, 9))
def test_any_conv_width_is_causal_and_trains(d_conv):
    torch.manual_seed(d_conv)
    block = Mamba(d_model=8, d_state=4, d_conv=d_conv)
    x = torch.randn(2, 12, 8, requires_grad=True)
    y = block(x)
    x2 = x.detach().clone()
    x2[:, 7:] += torch.randn_like(x2[:, 7:])
    # Changing frames 7.. leaves outputs 0..6 unchanged and changes frame 7.
    y2 = block(x2)
    torch.testing.assert_close(y2[:, :7], y[:, :7].detach())
    assert not torch.allclose(y2[:, 7], y[:, 7])
    y.square().sum().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_causal_conv_reference_equals_padded_conv1d():
    torch.manual_seed(0)
    x, w, b = torch.randn(2, 5, 11), torch.randn(5, 6), torch.randn(5)
    expected = F.conv1d(x, w[:, None], b, padding=5, groups=5)[..., :11]
    torch.testing.assert_close(causal_conv1d_ref(x, w, b), expected)
    torch.testing.assert_close(causal_conv1d_ref(x, w, b, activation="silu"), F.silu(expected))
    with pytest.raises(ValueError, match="activation"):
        causal_conv1d_ref(x, w, b, activation="relu")


def test_lengths_conversion_and_reverse_padded():
    assert relative_to_absolute_lengths(torch.tensor([1.0, 0.25]), 8).tolist() == [8, 2]
    assert relative_to_absolute_lengths(torch.tensor([8, 2]), 8).tolist() == [8, 2]
    assert relative_to_absolute_lengths(torch.tensor([6.0, 3.0]), 8).tolist() == [6, 3]
    x = torch.arange(10.0).view(2, 5, 1)
    out = reverse_padded(x, torch.tensor([0.6, 1.0]))
    assert out[..., 0].tolist() == [[2, 1, 0, 3, 4], [9, 8, 7, 6, 5]]
    torch.testing.assert_close(reverse_padded(out, torch.tensor([3, 5])), x)


@pytest.mark.parametrize("cls", [BiMambaInner, BiMambaExt])
@pytest.mark.parametrize("relative", [True, False])
def test_bidirectional_padding_never_reaches_valid_frames(cls, relative):
    torch.manual_seed(0)
    block = cls(d_model=8, d_state=4, d_conv=3)
    lens = [13, 6, 9]
    seqs = [torch.randn(n, 8) for n in lens]
    batch = torch.full((3, 13, 8), 1e3)  # loud padding: any leak would show
    for i, s in enumerate(seqs):
        batch[i, : len(s)] = s
    lengths = torch.tensor(lens) / 13 if relative else torch.tensor(lens)
    out = block(batch, lengths=lengths)
    for i, s in enumerate(seqs):
        torch.testing.assert_close(out[i, : len(s)], block(s[None])[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cls", [BiMambaInner, BiMambaExt])
def test_bidirectional_blocks_see_the_future(cls):
    torch.manual_seed(0)
    block = cls(d_model=8, d_state=4)
    x = torch.randn(1, 10, 8)
    x2 = x.clone()
    x2[:, -1] += 1.0
    assert not torch.allclose(block(x)[:, 0], block(x2)[:, 0])


def test_inner_variant_shares_projections_and_loads_its_forward_half_into_mamba():
    block = BiMambaInner(d_model=16, d_state=4)
    names = set(block.state_dict())
    assert {
        "conv1d_b.weight",
        "x_proj_b.weight",
        "dt_proj_b.weight",
        "dt_proj_b.bias",
        "A_b_log",
        "D_b",
    } <= names
    assert not any(n.startswith(("in_proj_b", "out_proj_b")) for n in names)
    causal = Mamba(d_model=16, d_state=4)
    forward_half = {k: v for k, v in block.state_dict().items() if k in causal.state_dict()}
    causal.load_state_dict(forward_half)
    ext = BiMambaExt(d_model=16, d_state=4)
    causal.load_state_dict(ext.backward_block.state_dict())


def test_build_mamba_by_name():
    assert isinstance(build_mamba(8, "causal"), Mamba)
    assert isinstance(build_mamba(8, "inner"), BiMambaInner)
    assert isinstance(build_mamba(8, "ext"), BiMambaExt)
    with pytest.raises(ValueError, match="direction must be one of"):
        build_mamba(8, "both")


def test_constructor_checks():
    with pytest.raises(ValueError, match="d_conv"):
        Mamba(8, d_conv=0)
    with pytest.raises(ValueError, match="dt_min"):
        Mamba(8, dt_min=0.2, dt_max=0.1)
    with pytest.raises(ValueError, match="dt_init"):
        Mamba(8, dt_init="zeros")


def test_bf16_activations_on_cpu():
    block = Mamba(d_model=8, d_state=4).to(torch.bfloat16)
    y = block(torch.randn(2, 9, 8, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()
