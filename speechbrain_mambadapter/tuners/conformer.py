"""Conformer adapter: the Conformer convolution module in a rank-r bottleneck.

LayerNorm -> pointwise conv to 2r -> GLU -> depthwise conv (kernel k) -> BatchNorm -> SiLU
-> pointwise conv back to d_model -> dropout. The last convolution starts at zero, so the
adapted model equals the base model at step 0. Unlike the PETL_AST reference, whose forward
computes the LayerNorm and then discards it, the LayerNorm is applied.

The BatchNorm's running statistics are buffers of this module: ``save_petl`` and the
checkpoint hooks store them with the trainable weights. They include padded frames of a
batch, as in the reference.

``attach`` puts one beside each sub-layer the placement names (see
``speechbrain_mambadapter.tuners.parallel``).

Example
-------
>>> from speechbrain.lobes.models.transformer.Transformer import TransformerEncoder
>>> from speechbrain_mambadapter import inject
>>> encoder = inject(TransformerEncoder(num_layers=1, nhead=2, d_ffn=16, d_model=8),
...                  method="conformer", placement="houlsby", rank=2, kernel_size=3)
>>> sorted(n for n, m in encoder.named_modules() if isinstance(m, ConformerAdapter))
['layers.0.petl_attention_adapter', 'layers.0.petl_ffn_adapter']

Authors
 * speechbrain-mambadapter contributors 2026
"""

import torch.nn as nn

from speechbrain_mambadapter.tuners.parallel import ParallelAdapter, insert_parallel_adapters


class ConformerAdapter(ParallelAdapter):
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

    def decode(self, code):
        """Bottleneck code ``[B, rank, T]`` -> ``[B, T, d_model]``."""
        return self.dropout(self.pointwise_out(code)).transpose(1, 2)


NAME = "conformer"
TAKES_PLACEMENT = True
MODULES = (ConformerAdapter,)


def attach(backbone, placement, train_norms, rank, kernel_size=31, dropout=0.0):
    """Put a ``ConformerAdapter`` beside each sub-layer ``placement`` names; return what to train.

    Arguments
    ---------
    backbone : speechbrain_mambadapter.backbones.Backbone
        Where the sites are.
    placement : str
        ``"pfeiffer"`` or ``"houlsby"``.
    train_norms : bool
        Also train the sites' LayerNorms and the final LayerNorm.
    rank, kernel_size, dropout
        As in ``ConformerAdapter``.

    Returns
    -------
    list of torch.nn.Parameter
    """

    def make():
        return ConformerAdapter(backbone.d_model, rank, kernel_size, dropout)

    return insert_parallel_adapters(backbone, placement, train_norms, make)
