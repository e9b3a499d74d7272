"""Mamba blocks: causal (drop-in twin of mamba-ssm's ``Mamba``) and bidirectional.

``Mamba`` has the constructor, parameter names, shapes and initialisation of
``mamba_ssm.modules.mamba_simple.Mamba``, so state_dicts load both ways. On CUDA it
runs the project's Triton kernels (or mamba-ssm's; see ``ops.select_backend``), elsewhere the
pure-PyTorch reference, with the same parameters.

For non-causal encoders there are two bidirectional variants (Vision Mamba;
"An Exploration of Mamba for Speech Self-Supervised Models"):

* ``BiMambaExt``: two independent ``Mamba`` blocks, the second on the reversed
  sequence, outputs summed.
* ``BiMambaInner``: one ``in_proj``/``out_proj``; the backward direction has its
  own ``conv1d_b``, ``x_proj_b``, ``dt_proj_b``, ``A_b_log``, ``D_b``.

Both reverse every sequence within its own length, so right padding never
reaches valid frames.

Authors
 * speechbrain-mambadapter contributors 2026
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from speechbrain_mambadapter.mamba import ops


def _init_dt_proj(dt_proj, dt_rank, dt_min, dt_max, dt_init, dt_scale, dt_init_floor):
    """Mamba's dt initialisation: softplus(bias) log-uniform in [dt_min, dt_max]."""
    std = dt_rank**-0.5 * dt_scale
    if dt_init == "constant":
        nn.init.constant_(dt_proj.weight, std)
    elif dt_init == "random":
        nn.init.uniform_(dt_proj.weight, -std, std)
    else:
        raise ValueError(f"dt_init must be 'random' or 'constant', got {dt_init!r}.")
    dt = torch.exp(
        torch.rand(dt_proj.out_features, device=dt_proj.bias.device) * (math.log(dt_max) - math.log(dt_min))
        + math.log(dt_min)
    ).clamp(min=dt_init_floor)
    with torch.no_grad():
        # softplus^-1(dt) = dt + log(1 - exp(-dt))
        dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
    dt_proj.bias._no_reinit = True


def _s4d_real_A_log(d_inner, d_state, device):
    """S4D-real initialisation: A[d, n] = -(n + 1); stored as log(-A), fp32."""
    A = torch.arange(1, d_state + 1, dtype=torch.float32, device=device).repeat(d_inner, 1)
    A_log = nn.Parameter(torch.log(A))
    # A_log and D are kept fp32 and out of weight decay, as in mamba-ssm.
    A_log._no_weight_decay = True
    return A_log


def _skip_D(d_inner, device):
    D = nn.Parameter(torch.ones(d_inner, device=device, dtype=torch.float32))
    D._no_weight_decay = True
    return D


def relative_to_absolute_lengths(lengths, max_len):
    """Turn SpeechBrain lengths into integer frame counts.

    Arguments
    ---------
    lengths : torch.Tensor or None
        ``[B]``: floating point values in (0, 1] are fractions of ``max_len``
        (SpeechBrain's convention); integers, or floats above 1, are frame counts.
    max_len : int
        Padded length.

    Returns
    -------
    torch.Tensor or None
        ``[B]`` int64 lengths, clamped to ``[0, max_len]``.

    Example
    -------
    >>> relative_to_absolute_lengths(torch.tensor([1.0, 0.5]), 10)
    tensor([10,  5])
    >>> relative_to_absolute_lengths(torch.tensor([7, 3]), 10)
    tensor([7, 3])
    """
    if lengths is None:
        return None
    if lengths.is_floating_point() and bool((lengths <= 1).all()):
        lengths = torch.round(lengths * max_len)
    return lengths.long().clamp(0, max_len)


def reverse_padded(x, lengths=None, dim=1):
    """Reverse each sequence of a right-padded batch within its own length.

    Padding frames stay where they are, so a causal operator run on the result
    never mixes padding into valid frames. Applying it twice is the identity.

    Arguments
    ---------
    x : torch.Tensor
        Batch-first tensor, time along ``dim``.
    lengths : torch.Tensor, optional
        ``[B]`` relative or absolute lengths (see ``relative_to_absolute_lengths``);
        None means no padding.
    dim : int
        Time dimension.

    Returns
    -------
    torch.Tensor
        Same shape as ``x``.

    Example
    -------
    >>> reverse_padded(torch.tensor([[1, 2, 3, 0], [1, 2, 3, 4]]), torch.tensor([3, 4]))
    tensor([[3, 2, 1, 0],
            [4, 3, 2, 1]])
    """
    if lengths is None:
        return x.flip(dim)
    max_len = x.shape[dim]
    lens = relative_to_absolute_lengths(lengths, max_len).to(x.device)
    t = torch.arange(max_len, device=x.device)
    index = torch.where(t < lens[:, None], lens[:, None] - 1 - t, t)  # [B, T]
    shape = [1] * x.dim()
    shape[0], shape[dim] = x.shape[0], max_len
    return torch.gather(x, dim, index.view(shape).expand_as(x))


class Mamba(nn.Module):
    """Causal Mamba (S6) block, parameter-compatible with mamba-ssm's ``Mamba``.

    Arguments
    ---------
    d_model : int
        Input and output features.
    d_state : int
        SSM state size N.
    d_conv : int
        Causal convolution width (any value >= 1, on every path).
    expand : int
        ``d_inner = expand * d_model``.
    dt_rank : int or "auto"
        Rank of the step-size projection; "auto" is ``ceil(d_model / 16)``.
    dt_min, dt_max, dt_init, dt_scale, dt_init_floor : float, float, str, float, float
        Step-size initialisation, as in mamba-ssm.
    conv_bias : bool
        Bias in the convolution.
    bias : bool
        Bias in ``in_proj`` and ``out_proj``.
    use_fast_path : bool
        Allow the GPU kernels; False always runs the reference path.
    layer_idx : int, optional
        Kept for compatibility with mamba-ssm.
    device, dtype : optional
        Factory arguments for the parameters (A_log and D stay fp32).

    Example
    -------
    >>> block = Mamba(d_model=8, d_state=4)
    >>> block(torch.randn(2, 5, 8)).shape
    torch.Size([2, 5, 8])
    """

    def __init__(
        self,
        d_model,
        d_state=16,
        d_conv=4,
        expand=2,
        dt_rank="auto",
        dt_min=0.001,
        dt_max=0.1,
        dt_init="random",
        dt_scale=1.0,
        dt_init_floor=1e-4,
        conv_bias=True,
        bias=False,
        use_fast_path=True,
        layer_idx=None,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if d_conv < 1:
            raise ValueError(f"d_conv must be at least 1, got {d_conv}.")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"Need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}.")
        factory = {"device": device, "dtype": dtype}
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.expand = expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else dt_rank
        self.use_fast_path = use_fast_path
        self.layer_idx = layer_idx

        self.in_proj = nn.Linear(d_model, self.d_inner * 2, bias=bias, **factory)
        self.conv1d, self.x_proj, self.dt_proj = self._direction_params(
            conv_bias, dt_min, dt_max, dt_init, dt_scale, dt_init_floor, factory
        )
        self.A_log = _s4d_real_A_log(self.d_inner, d_state, device)
        self.D = _skip_D(self.d_inner, device)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **factory)

    def _direction_params(self, conv_bias, dt_min, dt_max, dt_init, dt_scale, dt_init_floor, factory):
        """The per-direction conv1d, x_proj and dt_proj layers."""
        conv1d = nn.Conv1d(
            self.d_inner,
            self.d_inner,
            kernel_size=self.d_conv,
            groups=self.d_inner,
            padding=self.d_conv - 1,
            bias=conv_bias,
            **factory,
        )
        x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * self.d_state, bias=False, **factory)
        dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True, **factory)
        _init_dt_proj(dt_proj, self.dt_rank, dt_min, dt_max, dt_init, dt_scale, dt_init_floor)
        return conv1d, x_proj, dt_proj

    def _projections(self, projections):
        """``in_proj``'s and ``out_proj``'s (weight, bias), or the ones passed in their place."""
        if projections is not None:
            return projections
        return self.in_proj.weight, self.in_proj.bias, self.out_proj.weight, self.out_proj.bias

    @staticmethod
    def _in_proj(hidden_states, weight, bias):
        """``[B, L, features]`` → xz ``[B, 2·d_inner, L]`` with time contiguous (kernel layout)."""
        batch, length, features = hidden_states.shape
        xz = weight @ hidden_states.reshape(-1, features).t()
        xz = xz.view(-1, batch, length).transpose(0, 1)
        if bias is not None:
            xz = xz + bias.to(xz.dtype)[:, None]
        return xz

    def _gated(self, xz, conv1d, x_proj, dt_proj, A_log, D, fused):
        return ops.mamba_ssm_gated(
            xz,
            conv1d.weight,
            conv1d.bias,
            x_proj.weight,
            dt_proj.weight,
            -torch.exp(A_log.float()),
            D.float(),
            dt_proj.bias.float(),
            fused,
        )

    def _gated_cl(self, xz, conv1d, x_proj, dt_proj, A_log, D):
        """The Triton path's gated SSM of one direction: ``[B, L, 2·d_inner]`` → ``[B, L, d_inner]``."""
        return ops.mamba_gated_cl(
            xz[..., : self.d_inner],
            xz[..., self.d_inner :],
            conv1d.weight,
            conv1d.bias,
            x_proj.weight,
            dt_proj.weight,
            -torch.exp(A_log.float()),
            D.float(),
            dt_proj.bias.float(),
        )

    def forward(self, hidden_states, lengths=None, projections=None):
        """Run the block.

        Arguments
        ---------
        hidden_states : torch.Tensor
            ``[B, L, d_model]``.
        lengths : torch.Tensor, optional
            Accepted for a uniform interface with the bidirectional blocks;
            a causal block never lets right padding reach valid frames.
        projections : tuple of torch.Tensor, optional
            ``(in_weight, in_bias, out_weight, out_bias)`` used instead of ``in_proj`` and
            ``out_proj`` (a merged MambAdapter passes its folded matrices; the inputs and outputs
            are then as wide as those).

        Returns
        -------
        torch.Tensor
            ``[B, L, d_model]``.
        """
        in_weight, in_bias, out_weight, out_bias = self._projections(projections)
        backend = ops.select_backend(
            hidden_states, self.d_conv, self.use_fast_path, d_inner=self.d_inner, d_state=self.d_state
        )
        if backend == "triton":
            # Channels-last from in_proj to out_proj: no transposes.
            xz = F.linear(hidden_states, in_weight, in_bias)
            y = self._gated_cl(xz, self.conv1d, self.x_proj, self.dt_proj, self.A_log, self.D)
            return F.linear(y, out_weight, out_bias)
        xz = self._in_proj(hidden_states, in_weight, in_bias)
        inner_fn = ops.mamba_inner_fn if backend == "mamba_ssm" else ops.mamba_inner_ref
        return inner_fn(
            xz,
            self.conv1d.weight,
            self.conv1d.bias,
            self.x_proj.weight,
            self.dt_proj.weight,
            out_weight,
            out_bias,
            -torch.exp(self.A_log.float()),
            None,
            None,
            self.D.float(),
            delta_bias=self.dt_proj.bias.float(),
            delta_softplus=True,
        )


class BiMambaInner(Mamba):
    """Bidirectional Mamba sharing ``in_proj``/``out_proj`` between directions.

    The backward direction owns ``conv1d_b``, ``x_proj_b``, ``dt_proj_b``,
    ``A_b_log`` and ``D_b`` (Vision Mamba's names). The two gated SSM outputs are
    summed before ``out_proj``. Arguments are those of ``Mamba``.

    Example
    -------
    >>> block = BiMambaInner(d_model=8, d_state=4)
    >>> block(torch.randn(2, 5, 8), lengths=torch.tensor([1.0, 0.6])).shape
    torch.Size([2, 5, 8])
    """

    def __init__(
        self,
        d_model,
        d_state=16,
        d_conv=4,
        expand=2,
        dt_rank="auto",
        dt_min=0.001,
        dt_max=0.1,
        dt_init="random",
        dt_scale=1.0,
        dt_init_floor=1e-4,
        conv_bias=True,
        bias=False,
        use_fast_path=True,
        layer_idx=None,
        device=None,
        dtype=None,
    ):
        super().__init__(
            d_model, d_state, d_conv, expand, dt_rank, dt_min, dt_max, dt_init, dt_scale,
            dt_init_floor, conv_bias, bias, use_fast_path, layer_idx, device, dtype,
        )  # fmt: skip
        factory = {"device": device, "dtype": dtype}
        self.conv1d_b, self.x_proj_b, self.dt_proj_b = self._direction_params(
            conv_bias, dt_min, dt_max, dt_init, dt_scale, dt_init_floor, factory
        )
        self.A_b_log = _s4d_real_A_log(self.d_inner, d_state, device)
        self.D_b = _skip_D(self.d_inner, device)

    def forward(self, hidden_states, lengths=None, projections=None):
        """``[B, L, d_model]`` → ``[B, L, d_model]``; ``lengths`` as in ``reverse_padded``,
        ``projections`` as in ``Mamba.forward``."""
        in_weight, in_bias, out_weight, out_bias = self._projections(projections)
        backend = ops.select_backend(
            hidden_states, self.d_conv, self.use_fast_path, d_inner=self.d_inner, d_state=self.d_state
        )
        if backend == "triton":
            xz = F.linear(hidden_states, in_weight, in_bias)
            y = self._gated_cl(xz, self.conv1d, self.x_proj, self.dt_proj, self.A_log, self.D)
            xz_b = reverse_padded(xz, lengths, dim=1)
            y_b = self._gated_cl(xz_b, self.conv1d_b, self.x_proj_b, self.dt_proj_b, self.A_b_log, self.D_b)
            y = y + reverse_padded(y_b, lengths, dim=1)
            return F.linear(y, out_weight, out_bias)
        xz = self._in_proj(hidden_states, in_weight, in_bias)
        fused = backend == "mamba_ssm"
        y = self._gated(xz, self.conv1d, self.x_proj, self.dt_proj, self.A_log, self.D, fused)
        xz_b = reverse_padded(xz, lengths, dim=2)
        y_b = self._gated(xz_b, self.conv1d_b, self.x_proj_b, self.dt_proj_b, self.A_b_log, self.D_b, fused)
        y = y + reverse_padded(y_b, lengths, dim=2)
        return F.linear(y.transpose(1, 2), out_weight, out_bias)


class BiMambaExt(nn.Module):
    """Bidirectional Mamba from two independent blocks, the second on reversed time.

    Arguments
    ---------
    d_model : int
        Input and output features.
    **mamba_kwargs
        Passed to both ``Mamba`` blocks.

    Example
    -------
    >>> block = BiMambaExt(d_model=8, d_state=4)
    >>> block(torch.randn(2, 5, 8), lengths=torch.tensor([5, 3])).shape
    torch.Size([2, 5, 8])
    """

    def __init__(self, d_model, **mamba_kwargs):
        super().__init__()
        self.forward_block = Mamba(d_model, **mamba_kwargs)
        self.backward_block = Mamba(d_model, **mamba_kwargs)

    def forward(self, hidden_states, lengths=None, projections=None):
        """``[B, L, d_model]`` → ``[B, L, d_model]``; ``lengths`` as in ``reverse_padded``;
        ``projections``: one tuple per block (forward, backward), as in ``Mamba.forward``."""
        forward_proj, backward_proj = (None, None) if projections is None else projections
        backward = self.backward_block(
            reverse_padded(hidden_states, lengths, dim=1), projections=backward_proj
        )
        forward = self.forward_block(hidden_states, projections=forward_proj)
        return forward + reverse_padded(backward, lengths, dim=1)


DIRECTIONS = {"causal": Mamba, "inner": BiMambaInner, "ext": BiMambaExt}


def build_mamba(d_model, direction="causal", **mamba_kwargs):
    """Build a causal or bidirectional Mamba block by name.

    Arguments
    ---------
    d_model : int
        Input and output features.
    direction : str
        ``"causal"``, ``"inner"`` or ``"ext"``.
    **mamba_kwargs
        Passed to the block (see ``Mamba``).

    Returns
    -------
    torch.nn.Module

    Example
    -------
    >>> type(build_mamba(8, "ext", d_state=4)).__name__
    'BiMambaExt'
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {sorted(DIRECTIONS)}, got {direction!r}.")
    return DIRECTIONS[direction](d_model, **mamba_kwargs)
