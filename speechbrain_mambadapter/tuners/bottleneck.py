"""Bottleneck adapter (Houlsby et al. 2019; He et al. 2022 for the parallel form).

``up(dropout(GELU(down(x))))``. ``down`` keeps PyTorch's default (Kaiming-uniform)
initialisation and only ``up`` starts at zero: the adapted model equals the base model at
step 0 and still learns. The PETL_AST reference zeroes both projections, which with
GELU(0) = 0 leaves every weight without gradient forever.

``attach`` puts one beside each sub-layer the placement names (see
``speechbrain_mambadapter.tuners.parallel``).

Example
-------
>>> import torch
>>> from speechbrain.lobes.models.transformer.Transformer import TransformerEncoder
>>> from speechbrain_mambadapter import inject
>>> encoder = TransformerEncoder(num_layers=2, nhead=2, d_ffn=16, d_model=8)
>>> x = torch.randn(2, 5, 8)
>>> before = encoder(x)[0]
>>> encoder = inject(encoder, method="bottleneck", rank=2)
>>> encoder.layers[0].petl_ffn_adapter
Bottleneck(...)
>>> torch.allclose(encoder(x)[0], before, atol=1e-6)
True

Authors
 * speechbrain-mambadapter contributors 2026
"""

import torch.nn as nn

from speechbrain_mambadapter.tuners.parallel import ParallelAdapter, insert_parallel_adapters


class Bottleneck(ParallelAdapter):
    """Bottleneck adapter, ``[B, T, d_model]`` in and out.

    Arguments
    ---------
    d_model : int
        Features of the backbone.
    rank : int
        Bottleneck size.
    dropout : float
        Dropout before the up projection.

    Example
    -------
    >>> import torch
    >>> adapter = Bottleneck(16, 4)
    >>> adapter(torch.randn(2, 5, 16)).abs().sum().item()
    0.0
    """

    def __init__(self, d_model, rank, dropout=0.0):
        super().__init__()
        if rank < 1:
            raise ValueError(f"rank must be at least 1, got {rank}.")
        self.down = nn.Linear(d_model, rank)
        self.act = nn.GELU()
        self.dropout = nn.Dropout(dropout)
        self.up = nn.Linear(rank, d_model)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def reduce(self, x):
        """The part that reads the d_model-wide input: ``[B, T, d_model]`` -> ``[B, T, rank]``."""
        return self.down(x)

    def transform(self, h):
        """The rest of the encoder, rank-wide: ``[B, T, rank]`` -> code ``[B, T, rank]``."""
        return self.dropout(self.act(h))

    def decode(self, code):
        """Bottleneck code ``[B, T, rank]`` -> ``[B, T, d_model]``."""
        return self.up(code)


NAME = "bottleneck"
TAKES_PLACEMENT = True
MODULES = (Bottleneck,)


def attach(backbone, placement, train_norms, rank, dropout=0.0):
    """Put a ``Bottleneck(d_model, rank, dropout)`` beside each sub-layer; return what to train.

    Arguments
    ---------
    backbone : speechbrain_mambadapter.backbones.Backbone
        Where the sites are.
    placement : str
        ``"pfeiffer"`` or ``"houlsby"``.
    train_norms : bool
        Also train the sites' LayerNorms and the final LayerNorm.
    rank : int
        Bottleneck size.
    dropout : float
        Dropout before the up projection.

    Returns
    -------
    list of torch.nn.Parameter
    """
    return insert_parallel_adapters(
        backbone, placement, train_norms, lambda: Bottleneck(backbone.d_model, rank, dropout)
    )
