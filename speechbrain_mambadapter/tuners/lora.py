"""LoRA (Hu et al. 2021) on the attention query and value projections, with merge for inference.

A ``LoRA`` adds ``(alpha / rank) * up @ down`` to a frozen weight. It is attached as a
``torch.nn.utils.parametrize`` parametrization of the weight tensor, which covers both
separate projections (Whisper's ``q_proj``/``v_proj``, AST's ``query``/``value``) and
``torch.nn.MultiheadAttention``'s fused ``in_proj_weight`` (SpeechBrain's
``MultiheadAttention``), where query and value are row blocks of one matrix. ``merge_lora``
folds the update into the weights and removes the parametrizations.

Why not ``speechbrain.nnet.adapters.LoRA``: it wraps a whole ``nn.Linear`` (so it cannot
target the query and value blocks of a fused ``in_proj_weight``) and has no merge. The
initialisation is the same: ``down`` Kaiming-uniform, ``up`` zero (identity at step 0).

The PETL_AST reference applies one shared low-rank update to query *and key*; this follows
the LoRA paper and the issue (query and value, one update each).

Example
-------
>>> from speechbrain.lobes.models.transformer.Transformer import TransformerEncoder
>>> from speechbrain_mambadapter import inject
>>> encoder = inject(TransformerEncoder(num_layers=2, nhead=2, d_ffn=16, d_model=8), method="lora", rank=2)
>>> len([m for m in encoder.modules() if isinstance(m, LoRA)])  # query and value of 2 layers
4
>>> merge_lora(encoder)  # one fused in_proj_weight per layer
2

Authors
 * speechbrain-mambadapter contributors 2026
"""

import math

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from speechbrain_mambadapter.backbones import attention_projections


class LoRA(nn.Module):
    """Low-rank update ``scaling * up @ down`` of an ``[out_features, in_features]`` weight.

    Arguments
    ---------
    in_features, out_features : int
        Shape of the adapted weight block.
    rank : int
        Rank r.
    alpha : float
        ``scaling = alpha / rank``.

    Example
    -------
    >>> lora = LoRA(8, 6, rank=2)
    >>> lora.delta().shape, lora.delta().abs().sum().item()
    (torch.Size([6, 8]), 0.0)
    """

    def __init__(self, in_features, out_features, rank=8, alpha=1.0):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be at least 1, got {rank}.")
        self.down = nn.Parameter(torch.empty(rank, in_features))
        self.up = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.down, a=math.sqrt(5))
        self.scaling = alpha / rank

    def delta(self):
        """The weight update, ``[out_features, in_features]``."""
        return (self.up @ self.down) * self.scaling


class LoRAParametrization(nn.Module):
    """Adds one or more ``LoRA`` updates to row blocks of a weight (a parametrization).

    Arguments
    ---------
    loras : list of LoRA
        The updates.
    row_offsets : list of int
        First row of each update's block in the weight.

    Example
    -------
    >>> p = LoRAParametrization([LoRA(4, 4, 2), LoRA(4, 4, 2)], [0, 8])
    >>> p(torch.zeros(12, 4)).shape
    torch.Size([12, 4])
    """

    def __init__(self, loras, row_offsets):
        super().__init__()
        self.loras = nn.ModuleList(loras)
        self.row_offsets = list(row_offsets)

    def forward(self, weight):
        """Return ``weight`` plus each update in its row block."""
        for lora, start in zip(self.loras, self.row_offsets):
            delta = lora.delta().to(weight.dtype)
            pad = (0, 0, start, weight.shape[0] - start - delta.shape[0])
            weight = weight + nn.functional.pad(delta, pad)
        return weight


def attach_lora(targets, rank, alpha):
    """Attach LoRA updates to ``(module, tensor_name, row_offset)`` targets.

    Targets on the same tensor (query and value of a fused projection) share one
    parametrization. Each update covers ``in_features`` rows from its offset.

    Arguments
    ---------
    targets : list of (torch.nn.Module, str, int)
        Where the updates go (see ``backbones.attention_projections``).
    rank : int
        LoRA rank.
    alpha : float
        LoRA alpha.

    Returns
    -------
    list of LoRA
        The new modules, in the order of ``targets``.

    Example
    -------
    >>> linear = nn.Linear(8, 8)
    >>> loras = attach_lora([(linear, "weight", 0)], rank=2, alpha=1.0)
    >>> parametrize.is_parametrized(linear, "weight"), len(loras)
    (True, 1)
    """
    grouped = {}
    for module, name, start in targets:
        grouped.setdefault((id(module), name), (module, name, []))[2].append(start)
    made = {}
    for module, name, starts in grouped.values():
        weight = getattr(module, name)
        if weight.dim() != 2:
            raise ValueError(f"LoRA needs a 2-D weight, got {name} of shape {tuple(weight.shape)}.")
        width = weight.shape[1]
        loras = [LoRA(width, width, rank, alpha).to(weight.device) for _ in starts]
        parametrize.register_parametrization(module, name, LoRAParametrization(loras, starts), unsafe=True)
        for start, lora in zip(starts, loras):
            made[(id(module), name, start)] = lora
    return [made[(id(m), n, s)] for m, n, s in targets]


def merge_lora(model):
    """Fold every LoRA update of ``model`` into its weight and remove the parametrizations.

    Arguments
    ---------
    model : torch.nn.Module
        A model with LoRA attached (by ``inject(..., method="lora")``).

    Returns
    -------
    int
        How many weights were merged.

    Example
    -------
    >>> linear = nn.Linear(8, 8)
    >>> lora = attach_lora([(linear, "weight", 0)], rank=2, alpha=1.0)[0]
    >>> with torch.no_grad():
    ...     _ = lora.up.fill_(0.1)
    >>> x = torch.randn(3, 8)
    >>> before = linear(x)
    >>> merge_lora(linear), torch.allclose(linear(x), before, atol=1e-6)
    (1, True)
    """
    merged = 0
    for module in list(model.modules()):
        if not parametrize.is_parametrized(module):
            continue
        for name in list(module.parametrizations.keys()):
            if any(isinstance(p, LoRAParametrization) for p in module.parametrizations[name]):
                parametrize.remove_parametrizations(module, name, leave_parametrized=True)
                merged += 1
    return merged


NAME = "lora"
TAKES_PLACEMENT = False
MODULES = (LoRA,)


def attach(backbone, placement, train_norms, rank=8, alpha=1.0):
    """Attach LoRA updates to the query and value of every self-attention; return what to train.

    Arguments
    ---------
    backbone : speechbrain_mambadapter.backbones.Backbone
        Where the attention modules are.
    placement : None
        LoRA has no placement.
    train_norms : bool
        Also train the encoder's final LayerNorm.
    rank : int
        LoRA rank r.
    alpha : float
        ``scaling = alpha / rank``.

    Returns
    -------
    list of torch.nn.Parameter
    """
    targets = [t for layer in backbone.layers for t in attention_projections(layer.attn).qv_targets]
    loras = attach_lora(targets, rank, alpha)
    trainable = backbone.final_norm_parameters() if train_norms else []
    return trainable + [p for lora in loras for p in lora.parameters()]
