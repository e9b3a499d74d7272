"""Prefix tuning (Li & Liang 2021): N learnable keys and N learnable values per attention layer.

``PrefixTuning`` wraps one frozen self-attention module and computes
``out(softmax(q [P_k; K]^T / sqrt(d_head)) [P_v; V])``, with the prefix keys ``P_k`` and
values ``P_v`` (``[N, d_model]``, in the projected space) shared across the batch. The
wrapped module's own query/key/value/output projections are used, found by structure
(``backbones.attention_projections``): Whisper, AST (either layout) and SpeechBrain's
``MultiheadAttention``. A key padding mask is extended with "attend" for the prefix; other
masks and relative positional embeddings are refused with an error. Attention dropout of the
frozen backbone is not applied (the reference keeps the frozen encoder in eval mode).

The PETL_AST reference splits N tokens into N/2 keys and N/2 values; here ``num_tokens`` is
the number of keys (and of values), as in the prefix-tuning paper. Initialisation as there:
U(-v, v), ``v = sqrt(6 / (3 * 16 * 16 + d_model))``.

Example
-------
>>> from speechbrain.lobes.models.transformer.Transformer import TransformerEncoder
>>> from speechbrain_mambadapter import inject
>>> encoder = inject(TransformerEncoder(num_layers=2, nhead=2, d_ffn=16, d_model=8),
...                  method="prefix", num_tokens=3)
>>> type(encoder.layers[0].self_att).__name__
'PrefixTuning'
>>> sorted(n for n, p in encoder.layers[0].named_parameters() if p.requires_grad)
['self_att.keys', 'self_att.values']

Authors
 * speechbrain-mambadapter contributors 2026
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from speechbrain_mambadapter.backbones import attention_projections, first_input

_REFUSED = ("attention_mask", "attn_mask", "pos_embs", "head_mask", "layer_head_mask")


class PrefixTuning(nn.Module):
    """A frozen self-attention module with ``num_tokens`` learnable prefix keys and values.

    Arguments
    ---------
    attention : torch.nn.Module
        The self-attention module to wrap (kept frozen, called through its projections).
    num_tokens : int
        Prefix length N.

    Example
    -------
    >>> from speechbrain.nnet.attention import MultiheadAttention
    >>> attn = PrefixTuning(MultiheadAttention(nhead=2, d_model=8), num_tokens=3)
    >>> x = torch.randn(2, 5, 8)
    >>> out, _ = attn(x, x, x)
    >>> out.shape, attn.keys.shape
    (torch.Size([2, 5, 8]), torch.Size([3, 8]))
    """

    def __init__(self, attention, num_tokens):
        super().__init__()
        if num_tokens < 1:
            raise ValueError(f"num_tokens must be at least 1, got {num_tokens}.")
        d_model = attention_projections(attention).d_model
        self.attention = attention
        bound = math.sqrt(6.0 / (3 * 16 * 16 + d_model))
        self.keys = nn.Parameter(torch.empty(num_tokens, d_model).uniform_(-bound, bound))
        self.values = nn.Parameter(torch.empty(num_tokens, d_model).uniform_(-bound, bound))

    def forward(self, *args, **kwargs):
        """Self-attention over ``[prefix; sequence]``; returns ``(output [B, T, d_model], None)``."""
        # SpeechBrain calls (query, key, value, ...); HF calls (hidden_states, mask, ...).
        sb_call = len(args) >= 3 and args[1] is args[0] and args[2] is args[0]
        refused = [name for name in _REFUSED if kwargs.get(name) is not None]
        if not sb_call and any(isinstance(a, torch.Tensor) for a in args[1:]):
            refused.append("a positional mask")
        if refused:
            raise RuntimeError(
                f"Prefix tuning got {refused}; it supports self-attention without masks other than a "
                "key padding mask. Run the encoder without them or use another method."
            )
        x = first_input(args, kwargs)
        proj = attention_projections(self.attention)
        q, k, v = proj.qkv(x)
        batch, length, _ = q.shape
        k = torch.cat([self.keys.to(k.dtype).expand(batch, -1, -1), k], dim=1)
        v = torch.cat([self.values.to(v.dtype).expand(batch, -1, -1), v], dim=1)
        mask = None
        padding = kwargs.get("key_padding_mask")
        if padding is not None:
            prefix = torch.zeros(batch, self.keys.shape[0], dtype=torch.bool, device=padding.device)
            attend = torch.cat([prefix, padding.bool()], dim=1)
            mask = ~attend[:, None, None, :]  # True = attend, for SDPA

        def heads(t):
            return t.reshape(batch, t.shape[1], proj.num_heads, -1).transpose(1, 2)

        y = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), attn_mask=mask)
        return proj.out(y.transpose(1, 2).reshape(batch, length, -1)), None


NAME = "prefix"
TAKES_PLACEMENT = False
MODULES = (PrefixTuning,)


def attach(backbone, placement, train_norms, num_tokens):
    """Wrap every self-attention in a ``PrefixTuning``; return what to train.

    Arguments
    ---------
    backbone : speechbrain_mambadapter.backbones.Backbone
        Where the attention modules are.
    placement : None
        Prefix tuning has no placement.
    train_norms : bool
        Also train the encoder's final LayerNorm.
    num_tokens : int
        Prefix length N (keys, and as many values).

    Returns
    -------
    list of torch.nn.Parameter
        The prefixes, not the frozen attention they wrap.
    """
    trainable = backbone.final_norm_parameters() if train_norms else []
    for layer in backbone.layers:
        wrapped = PrefixTuning(layer.attn, num_tokens)
        setattr(layer.attn_parent, layer.attn_name, wrapped)
        trainable += [wrapped.keys, wrapped.values]
    return trainable
