"""MambAdapter: ``alpha * Mamba(x W_down) W_up``, a parallel adapter with a Mamba in its bottleneck.

Hussain Ali, Cappellazzo, Ravanelli, "MambAdapter" (arXiv 2606.15638). ``W_down`` and
``W_up`` (with biases) are shared by every adapter of one model: build one
``SharedProjections`` per model and pass it to each ``MambAdapter``. The adapter keeps it
as a plain reference, so the shared weights are owned (and saved) once, by whoever
registered them (``inject`` puts them on the encoder). The paper's code keeps them as class
attributes instead, so a second model built in the same process silently reuses the first
model's trained projections; nothing here is global.

Initialisation: ``W_down`` ~ N(0, 0.01) (weight and bias) and ``W_up`` = 0 (so the adapted
model equals the base model at step 0), as in the paper's code. The Mamba block has two choices
(``mamba_init``): ``"mamba"`` (the default), the block's own initialisation (mamba-ssm's), or
``"paper"``, the paper's AST code (every weight matrix Xavier-uniform with gain 0.02, the
convolution bias 0). With ``"paper"`` the bottleneck's code starts at about 1e-10 of its input
(four small gains in a row), its gradients below Adam's epsilon, and the adapter barely trains
until it escapes, later the more varied the data (``benchmarks/fit_probe.py``). Measured with the
recipes' settings (``benchmarks/RESULTS.md``), ``"mamba"`` gave 80.0 instead of 93.3 test WER on
Czech (Whisper tiny.en, 3 seeds) and 87.8 instead of 85.5 % on ESC-10 (Whisper base, 15 runs).

``attach`` puts one MambAdapter beside each sub-layer the placement names (see
``speechbrain_mambadapter.tuners.parallel``) and registers the model's ``SharedProjections``
on the encoder as ``petl_shared_projections``.

Example
-------
>>> from speechbrain.lobes.models.transformer.Transformer import TransformerEncoder
>>> from speechbrain_mambadapter import inject
>>> encoder = inject(TransformerEncoder(num_layers=2, nhead=2, d_ffn=16, d_model=8),
...                  method="mambadapter", placement="houlsby", rank=4, d_state=4)
>>> adapters = [m for m in encoder.modules() if isinstance(m, MambAdapter)]
>>> len(adapters), all(a.projections is encoder.petl_shared_projections for a in adapters)
(4, True)

Authors
 * speechbrain-mambadapter contributors 2026
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from speechbrain_mambadapter.mamba import build_mamba
from speechbrain_mambadapter.tuners.parallel import ParallelAdapter, insert_parallel_adapters


class SharedProjections(nn.Module):
    """``W_down`` [d_model -> rank] and ``W_up`` [rank -> d_model], shared by a model's MambAdapters.

    Arguments
    ---------
    d_model : int
        Features of the backbone.
    rank : int
        Bottleneck size r.

    Example
    -------
    >>> proj = SharedProjections(16, 4)
    >>> proj.down.weight.shape, bool(proj.up.weight.abs().sum() == 0)
    (torch.Size([4, 16]), True)
    """

    def __init__(self, d_model, rank):
        super().__init__()
        if rank < 1 or d_model < 1:
            raise ValueError(f"d_model and rank must be positive, got d_model={d_model}, rank={rank}.")
        self.down = nn.Linear(d_model, rank)
        self.up = nn.Linear(rank, d_model)
        nn.init.normal_(self.down.weight, std=0.01)
        nn.init.normal_(self.down.bias, std=0.01)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)


MAMBA_INITS = ("paper", "mamba")


def _init_mamba_like_paper(mamba):
    # The paper's AST code: small weights keep the adapter's contribution tiny while W_up grows
    # away from zero. (Its 1-D branch never applies to a Mamba block: A_log, D and the biases
    # are not named "weight".)
    for name, param in mamba.named_parameters():
        if "conv1d" in name and name.endswith("bias"):
            nn.init.zeros_(param)
        elif name.endswith("weight"):
            if param.dim() >= 2:
                nn.init.xavier_uniform_(param, gain=0.02)
            else:
                nn.init.uniform_(param, -0.02, 0.02)


class MambAdapter(ParallelAdapter):
    """Parallel adapter ``alpha * W_up(dropout(Mamba(W_down(x))))``; ``[B, T, d_model]`` in and out.

    Arguments
    ---------
    d_model : int
        Features of the backbone.
    rank : int
        Bottleneck size r (the Mamba's ``d_model``).
    projections : SharedProjections, optional
        The model's shared ``W_down``/``W_up``; held by reference, not registered here.
        None builds projections owned by this adapter (the paper's "not shared" ablation).
    direction : str
        ``"causal"``, ``"inner"`` or ``"ext"`` (see ``speechbrain_mambadapter.mamba.build_mamba``).
    d_state, d_conv, expand : int
        Mamba hyper-parameters.
    dropout : float
        Dropout on the Mamba output (0.1 in the paper's code).
    use_mamba : bool
        False drops the Mamba (ablation "no Mamba"): ``alpha * W_up(dropout(W_down(x)))``.
    use_alpha : bool
        False drops the learnable scale (ablation "no alpha"): the output is not scaled.
    alpha_init : float
        Initial value of the learnable scale (0.1 in the paper).
    use_fast_path : bool
        Allow the fused Mamba kernels.
    mamba_init : str
        ``"mamba"`` (the Mamba block's own initialisation, the default) or ``"paper"`` (the
        paper's AST code: Xavier gain 0.02 on every Mamba weight matrix); see the module's docstring.

    Example
    -------
    >>> shared = SharedProjections(16, 4)
    >>> a, b = MambAdapter(16, 4, shared, d_state=4), MambAdapter(16, 4, shared, d_state=4)
    >>> a.projections is b.projections, sorted(n for n, _ in a.named_parameters())[:2]
    (True, ['alpha', 'mamba.A_log'])
    >>> x = torch.randn(2, 5, 16)
    >>> bool(a(x).abs().sum() == 0)  # W_up starts at zero
    True
    """

    def __init__(
        self,
        d_model,
        rank,
        projections=None,
        direction="causal",
        d_state=16,
        d_conv=4,
        expand=2,
        dropout=0.1,
        use_mamba=True,
        use_alpha=True,
        alpha_init=0.1,
        use_fast_path=True,
        mamba_init="mamba",
    ):
        super().__init__()
        if mamba_init not in MAMBA_INITS:
            raise ValueError(f"mamba_init must be one of {MAMBA_INITS}, got {mamba_init!r}.")
        if projections is None:
            self.own_projections = SharedProjections(d_model, rank)
            projections = self.own_projections
        elif not isinstance(projections, SharedProjections):
            raise TypeError(f"projections must be a SharedProjections, got {type(projections).__name__}.")
        elif (projections.down.in_features, projections.down.out_features) != (d_model, rank):
            raise ValueError(
                f"Shared projections map {projections.down.in_features} -> {projections.down.out_features}, "
                f"but this adapter has d_model={d_model}, rank={rank}."
            )
        # A tuple keeps the shared module out of this adapter's parameters and state_dict.
        self._projections = (projections,)
        self.mamba = None
        if use_mamba:
            self.mamba = build_mamba(
                rank, direction, d_state=d_state, d_conv=d_conv, expand=expand, use_fast_path=use_fast_path
            )
            if mamba_init == "paper":
                _init_mamba_like_paper(self.mamba)
        self.dropout = nn.Dropout(dropout)
        self.alpha = nn.Parameter(torch.tensor(float(alpha_init))) if use_alpha else None
        self.merged_blocks = 0  # > 0 while merged (``merge``): how many folded projection sets
        self._merged_from = None  # (parameters, their (storage, version)) when last merged

    @property
    def projections(self):
        """The ``SharedProjections`` this adapter uses."""
        return self._projections[0]

    def _blocks(self):
        """The Mamba blocks whose in_proj/out_proj fold: one, or two for the "ext" direction."""
        if hasattr(self.mamba, "forward_block"):
            return [self.mamba.forward_block, self.mamba.backward_block]
        return [self.mamba]

    def _fold_parameters(self):
        """The parameters the folded matrices are computed from."""
        down, up = self.projections.down, self.projections.up
        params = [down.weight, down.bias, up.weight, up.bias, self.alpha]
        for block in self._blocks():
            params += [block.in_proj.weight, block.in_proj.bias, block.out_proj.weight, block.out_proj.bias]
        return tuple(p for p in params if p is not None)

    def _folded_from_current_weights(self):
        """Whether the folded matrices are those of the weights now: each parameter kept its
        storage (``.to()`` replaces it) and its version (an in-place update, such as an optimiser
        step or ``load_state_dict``, raises it). Read from the parameters held since the merge, so
        that evaluation can ask before every batch for a few microseconds."""
        params, sources = self._merged_from
        return all(p.data_ptr() == ptr and p._version == v for p, (ptr, v) in zip(params, sources))

    def merge(self):
        """Fold ``W_down`` into the Mamba's ``in_proj`` and ``alpha·W_up`` into its ``out_proj``.

        ``in_proj(x W_down)`` is one ``d_model -> 2·d_inner`` map and ``alpha·out_proj(y) W_up`` one
        ``d_inner -> d_model`` map: after merging, the adapter runs two matrix products where it
        ran four, with the same output in evaluation (dropout, between ``out_proj`` and ``W_up``,
        is off there). The folded matrices are non-persistent buffers: the ``state_dict`` and the
        trained parameters are untouched, and ``unmerge`` drops them. Training a merged adapter
        raises an error.

        Merging a merged adapter does nothing while its weights are unchanged; after they change
        (in place, e.g. by an optimiser step or ``load_state_dict``) it computes the folded
        matrices again into the same buffers, so that a CUDA graph captured with them reads the
        new values. (A parameter replaced by a new object is not noticed: unmerge, then merge.)
        """
        if self.mamba is None or (self.merged_blocks and self._folded_from_current_weights()):
            return
        # Not inference tensors, even when called inside torch.inference_mode: a later refresh
        # writes into them in place. In fp32 even inside an autocast region (evaluation in bf16):
        # the folded matrices are weights, rounded once to their parameters' dtype.
        device_type = self.projections.down.weight.device.type
        with torch.no_grad(), torch.inference_mode(False), torch.autocast(device_type, enabled=False):
            folded = [self._folded(i, block) for i, block in enumerate(self._blocks())]
            for i, values in enumerate(folded):
                for name, value in zip(("in_weight", "in_bias", "out_weight", "out_bias"), values):
                    buffer = getattr(self, f"merged_{i}_{name}", None)
                    if buffer is not None and buffer.shape == value.shape and buffer.dtype == value.dtype:
                        buffer.copy_(value)
                    else:
                        self.register_buffer(f"merged_{i}_{name}", value, persistent=False)
        self.merged_blocks = len(folded)
        params = self._fold_parameters()
        self._merged_from = params, tuple((p.data_ptr(), p._version) for p in params)

    def _folded(self, i, block):
        """Block ``i``'s folded ``(in_weight, in_bias, out_weight, out_bias)``, in its weights' dtype."""
        down, up = self.projections.down, self.projections.up
        alpha = 1.0 if self.alpha is None else self.alpha.float()
        w_in, b_in = block.in_proj.weight.float(), block.in_proj.bias
        w_out, b_out = block.out_proj.weight.float(), block.out_proj.bias
        in_bias = w_in @ down.bias.float() + (0.0 if b_in is None else b_in.float())
        # W_up's bias is added once, with the first block's output.
        out_bias = up.bias.float() if i == 0 else torch.zeros_like(up.bias, dtype=torch.float32)
        if b_out is not None:
            out_bias = out_bias + up.weight.float() @ b_out.float()
        folded = (w_in @ down.weight.float(), in_bias, alpha * (up.weight.float() @ w_out), alpha * out_bias)
        like = (block.in_proj.weight, block.in_proj.weight, block.out_proj.weight, block.out_proj.weight)
        return [value.to(ref.dtype) for value, ref in zip(folded, like)]

    def unmerge(self):
        """Drop the folded matrices of ``merge``: the adapter runs its four projections again."""
        for i in range(self.merged_blocks):
            for name in ("in_weight", "in_bias", "out_weight", "out_bias"):
                delattr(self, f"merged_{i}_{name}")
        self.merged_blocks = 0
        self._merged_from = None

    def _merged_projections(self):
        sets = [
            tuple(
                getattr(self, f"merged_{i}_{name}")
                for name in ("in_weight", "in_bias", "out_weight", "out_bias")
            )
            for i in range(self.merged_blocks)
        ]
        return sets[0] if len(sets) == 1 else tuple(sets)

    def reduce(self, x):
        """The part that reads the d_model-wide input: ``[B, T, d_model]`` -> ``x W_down``, rank-wide
        (merged: ``x`` itself, which the folded ``in_proj`` reads)."""
        if self.merged_blocks:
            return x
        return self.projections.down(x)

    def transform(self, h, lengths=None):
        """The rest of the encoder, rank-wide: ``[B, T, rank]`` -> code ``dropout(Mamba(h))``
        (merged: ``[B, T, d_model]`` -> the adapter's output)."""
        if self.merged_blocks:
            if self.training:
                raise RuntimeError(
                    "This MambAdapter is merged for inference (merge_mambadapter); call "
                    "unmerge_mambadapter(model) before training it."
                )
            return self.mamba(h, lengths, projections=self._merged_projections())
        if self.mamba is not None:
            h = self.mamba(h, lengths)
        return self.dropout(h)

    def encode(self, x, lengths=None):
        """``[B, T, d_model]`` -> bottleneck code ``[B, T, rank]``: ``dropout(Mamba(x W_down))``."""
        return self.transform(self.reduce(x), lengths)

    def decode(self, code):
        """Bottleneck code ``[B, T, rank]`` -> ``alpha * (code W_up + b_up)``, ``[B, T, d_model]``
        (merged: the code is already the output)."""
        if self.merged_blocks:
            return code
        up = self.projections.up
        # alpha scales the rank-r code and the bias rather than the d_model-wide output: the
        # same function, without a pass (and, in training, a reduction) over [B, T, d_model].
        if self.alpha is None:  # the "no alpha" ablation
            return up(code)
        return F.linear(code * self.alpha, up.weight, up.bias * self.alpha)

    def forward(self, x, lengths=None):
        """``[B, T, d_model]`` -> ``[B, T, d_model]``; ``lengths`` as in the Mamba blocks."""
        return self.decode(self.encode(x, lengths))


def merge_mambadapter(model):
    """Merge every MambAdapter of ``model`` for inference (see ``MambAdapter.merge``).

    Arguments
    ---------
    model : torch.nn.Module
        A model with MambAdapters (by ``inject(..., method="mambadapter")``).

    Returns
    -------
    int
        How many adapters were merged (those without a Mamba, the "no Mamba" ablation, are not).

    Example
    -------
    >>> shared = SharedProjections(16, 4)
    >>> adapter = MambAdapter(16, 4, shared, d_state=4).eval()
    >>> with torch.no_grad():
    ...     _ = shared.up.weight.normal_()
    >>> x = torch.randn(2, 5, 16)
    >>> before = adapter(x)
    >>> merge_mambadapter(adapter), torch.allclose(adapter(x), before, atol=1e-6)
    (1, True)
    >>> unmerge_mambadapter(adapter), torch.allclose(adapter(x), before, atol=1e-6)
    (1, True)
    """
    adapters = [m for m in model.modules() if isinstance(m, MambAdapter) and m.mamba is not None]
    for adapter in adapters:
        adapter.merge()
    return len(adapters)


def unmerge_mambadapter(model):
    """Undo ``merge_mambadapter``; return how many adapters were merged before."""
    adapters = [m for m in model.modules() if isinstance(m, MambAdapter) and m.merged_blocks]
    for adapter in adapters:
        adapter.unmerge()
    return len(adapters)


NAME = "mambadapter"
TAKES_PLACEMENT = True
MODULES = (MambAdapter, SharedProjections)


def attach(
    backbone,
    placement,
    train_norms,
    rank,
    direction="causal",
    d_state=16,
    d_conv=4,
    expand=2,
    dropout=0.1,
    share_projections=True,
    use_mamba=True,
    use_alpha=True,
    alpha_init=0.1,
    use_fast_path=True,
    mamba_init="mamba",
):
    """Put a MambAdapter beside each sub-layer ``placement`` names; return what to train.

    Arguments
    ---------
    backbone : speechbrain_mambadapter.backbones.Backbone
        Where the sites are.
    placement : str
        ``"pfeiffer"`` or ``"houlsby"``.
    train_norms : bool
        Also train the sites' LayerNorms and the final LayerNorm.
    rank : int
        Bottleneck size r.
    direction, d_state, d_conv, expand, dropout, use_mamba, use_alpha, alpha_init, use_fast_path, mamba_init
        As in ``MambAdapter``.
    share_projections : bool
        One ``W_down``/``W_up`` pair for the whole model (the paper); False gives each adapter
        its own (the "not shared" ablation).

    Returns
    -------
    list of torch.nn.Parameter
    """
    trainable = []
    shared = None
    if share_projections:
        # One object per model, registered once on the encoder; adapters hold references.
        shared = SharedProjections(backbone.d_model, rank)
        backbone.encoder.add_module("petl_shared_projections", shared)
        trainable += shared.parameters()
    kwargs = dict(direction=direction, d_state=d_state, d_conv=d_conv, expand=expand, dropout=dropout)
    kwargs.update(use_mamba=use_mamba, use_alpha=use_alpha, alpha_init=alpha_init, mamba_init=mamba_init)

    def make():
        return MambAdapter(backbone.d_model, rank, shared, use_fast_path=use_fast_path, **kwargs)

    return trainable + insert_parallel_adapters(backbone, placement, train_norms, make)
