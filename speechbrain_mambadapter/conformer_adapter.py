"""Conformer adapter: the Conformer convolution module in a rank-r bottleneck.

LayerNorm -> pointwise conv to 2r -> GLU -> depthwise conv (kernel k) -> BatchNorm -> SiLU
-> pointwise conv back to d_model -> dropout. The last convolution starts at zero, so the
adapted model equals the base model at step 0. Unlike the PETL_AST reference, whose forward
computes the LayerNorm and then discards it, the LayerNorm is applied.

The BatchNorm's running statistics are buffers of this module: ``save_petl`` and the
checkpoint hooks store them with the trainable weights. They include padded frames of a
batch, as in the reference.

Authors
 * speechbrain-mambadapter contributors 2026
"""

import torch.nn as nn


class ConformerAdapter(nn.Module):
    """Conformer convolution adapter, ``[B, T, d_model]`` in and out.

    Arguments
    ---------
    d_model : int
        Features of the backbone.
    rank : int
        Bottleneck channels r (the first pointwise convolution outputs 2r for the GLU).
    kernel_size : int
        Depthwise convolution width ("same" padding, so any width >= 1).
    dropout : float
        Dropout on the output.

    Example
    -------
    >>> import torch
    >>> adapter = ConformerAdapter(16, 4, kernel_size=3)
    >>> adapter(torch.randn(2, 5, 16)).abs().sum().item()
    0.0
    """

    def __init__(self, d_model, rank, kernel_size=31, dropout=0.0):
        super().__init__()
        if rank < 1:
            raise ValueError(f"rank must be at least 1, got {rank}.")
        if kernel_size < 1:
            raise ValueError(f"kernel_size must be at least 1, got {kernel_size}.")
        self.norm = nn.LayerNorm(d_model)
        self.pointwise_in = nn.Conv1d(d_model, 2 * rank, kernel_size=1)
        self.glu = nn.GLU(dim=1)
        self.depthwise = nn.Conv1d(rank, rank, kernel_size, groups=rank, padding="same")
        self.batch_norm = nn.BatchNorm1d(rank)
        self.act = nn.SiLU()
        self.pointwise_out = nn.Conv1d(rank, d_model, kernel_size=1)
        self.dropout = nn.Dropout(dropout)
        nn.init.zeros_(self.pointwise_out.weight)
        nn.init.zeros_(self.pointwise_out.bias)

    def reduce(self, x):
        """The part that reads the d_model-wide input: ``[B, T, d_model]`` -> ``[B, rank, T]``."""
        h = self.norm(x).transpose(1, 2)  # [B, d_model, T]
        return self.glu(self.pointwise_in(h))

    def transform(self, h):
        """The rest of the encoder, rank-wide: ``[B, rank, T]`` -> code ``[B, rank, T]``."""
        return self.act(self.batch_norm(self.depthwise(h)))

    def encode(self, x):
        """``[B, T, d_model]`` -> bottleneck code ``[B, rank, T]``."""
        return self.transform(self.reduce(x))

    def decode(self, code):
        """Bottleneck code ``[B, rank, T]`` -> ``[B, T, d_model]``."""
        return self.dropout(self.pointwise_out(code)).transpose(1, 2)

    def forward(self, x):
        """``[B, T, d_model]`` -> ``[B, T, d_model]``."""
        return self.decode(self.encode(x))
