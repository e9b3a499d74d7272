"""Bottleneck adapter (Houlsby et al. 2019; He et al. 2022 for the parallel form).

``up(dropout(GELU(down(x))))``. ``down`` keeps PyTorch's default (Kaiming-uniform)
initialisation and only ``up`` starts at zero: the adapted model equals the base model at
step 0 and still learns. The PETL_AST reference zeroes both projections, which with
GELU(0) = 0 leaves every weight without gradient forever.

Authors
 * speechbrain-mambadapter contributors 2026
"""

import torch.nn as nn


class Bottleneck(nn.Module):
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

    def encode(self, x):
        """``[B, T, d_model]`` -> bottleneck code ``[B, T, rank]``."""
        return self.transform(self.reduce(x))

    def decode(self, code):
        """Bottleneck code ``[B, T, rank]`` -> ``[B, T, d_model]``."""
        return self.up(code)

    def forward(self, x):
        """``[B, T, d_model]`` -> ``[B, T, d_model]``."""
        return self.decode(self.encode(x))
