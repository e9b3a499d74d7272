"""Deep prompt tuning (VPT-deep, Jia et al. 2022): N learnable tokens at the input of every layer.

Before layer 0 the N prompts of layer 0 are prepended to the sequence; before every later
layer the N prompt positions of the previous layer's output are replaced by that layer's own
prompts. Before the encoder's final norm the prompt positions are removed again, so the
encoder's output has its usual length and a downstream decoder, pooling or ``lengths``
keep working. (The PETL_AST reference keeps them and pools over them; here prompts act on
the other tokens through attention in every layer.) A key padding mask, where the layer
takes one, is extended with "not padding" for the prompts.

The prompts are initialised U(-v, v) with ``v = sqrt(6 / (3 * 16 * 16 + d_model))``, VPT's
Xavier-style rule for 16x16 patches, as in the PETL_AST reference.

Example
-------
>>> from speechbrain.lobes.models.transformer.Transformer import TransformerEncoder
>>> from speechbrain_mambadapter import inject
>>> encoder = inject(TransformerEncoder(num_layers=2, nhead=2, d_ffn=16, d_model=8),
...                  method="prompt", num_tokens=3)
>>> encoder.petl_prompts.prompts.shape
torch.Size([2, 3, 8])
>>> encoder(torch.randn(2, 5, 8))[0].shape  # the prompts are removed before the final norm
torch.Size([2, 5, 8])

Authors
 * speechbrain-mambadapter contributors 2026
"""

import math

import torch
import torch.nn as nn

# Per-layer inputs that index positions and cannot simply be extended by N prompts.
_POSITIONAL_INPUTS = ("attention_mask", "src_mask", "pos_embs", "head_mask")


class DeepPromptTuning(nn.Module):
    """Learnable prompts ``[num_layers, num_tokens, d_model]`` and the hooks that insert them.

    Arguments
    ---------
    num_layers : int
        Encoder layers (one set of prompts each).
    num_tokens : int
        Prompts per layer, N.
    d_model : int
        Features of the backbone.

    Example
    -------
    >>> layers = nn.ModuleList([nn.Linear(8, 8), nn.Linear(8, 8)])
    >>> prompts = DeepPromptTuning(num_layers=2, num_tokens=3, d_model=8)
    >>> prompts.prompts.shape
    torch.Size([2, 3, 8])
    """

    def __init__(self, num_layers, num_tokens, d_model):
        super().__init__()
        if num_tokens < 1:
            raise ValueError(f"num_tokens must be at least 1, got {num_tokens}.")
        bound = math.sqrt(6.0 / (3 * 16 * 16 + d_model))
        self.prompts = nn.Parameter(torch.empty(num_layers, num_tokens, d_model).uniform_(-bound, bound))
        self.num_tokens = num_tokens
        # Length of the sequence the prompts were prepended to in this forward (None: not yet).
        self._length = None

    def attach(self, encoder, layers, final_norm):
        """Register the hooks on ``encoder`` (reset), each layer (insert) and ``final_norm`` (strip)."""
        if len(layers) != self.prompts.shape[0]:
            raise ValueError(f"Have prompts for {self.prompts.shape[0]} layers, got {len(layers)} layers.")
        encoder.register_forward_pre_hook(self._reset)
        for index, layer in enumerate(layers):
            layer.petl_prompt_index = index
            layer.register_forward_pre_hook(self._insert, with_kwargs=True)
        final_norm.register_forward_pre_hook(self._strip)

    def _reset(self, module, args):
        self._length = None

    def _has_prompts(self, hidden):
        # Decided by length, not by a flag: activation checkpointing re-runs layer 0 on the
        # prompt-free input during backward, and LayerDrop may skip layer 0 altogether.
        return self._length is not None and hidden.shape[1] == self._length + self.num_tokens

    def _insert(self, layer, args, kwargs):
        for name in _POSITIONAL_INPUTS:
            if kwargs.get(name) is not None:
                raise RuntimeError(
                    f"Deep prompt tuning lengthens the sequence, but this layer also got `{name}`, "
                    "whose shape follows the sequence; run the encoder without it or use another method."
                )
        if any(isinstance(a, torch.Tensor) for a in args[1:]):
            raise RuntimeError(
                "Deep prompt tuning lengthens the sequence, but this layer got a mask tensor as a "
                "positional argument; run the encoder without attention masks or use another method."
            )
        args = list(args)
        hidden = args[0] if args else kwargs["hidden_states"]
        prompts = self.prompts[layer.petl_prompt_index].to(hidden.dtype).expand(hidden.shape[0], -1, -1)
        if self._has_prompts(hidden):
            hidden = torch.cat([prompts, hidden[:, self.num_tokens :]], dim=1)
        else:
            self._length = hidden.shape[1]
            hidden = torch.cat([prompts, hidden], dim=1)
        if args:
            args[0] = hidden
        else:
            kwargs["hidden_states"] = hidden
        mask = kwargs.get("src_key_padding_mask")
        if mask is not None and mask.shape[1] != hidden.shape[1]:
            keep = torch.zeros(mask.shape[0], self.num_tokens, dtype=mask.dtype, device=mask.device)
            kwargs["src_key_padding_mask"] = torch.cat([keep, mask], dim=1)
        return tuple(args), kwargs

    def _strip(self, module, args):
        if not self._has_prompts(args[0]):
            return None
        return (args[0][:, self.num_tokens :],) + tuple(args[1:])


NAME = "prompt"
TAKES_PLACEMENT = False
MODULES = (DeepPromptTuning,)


def attach(backbone, placement, train_norms, num_tokens):
    """Register ``DeepPromptTuning`` on the encoder as ``petl_prompts``; return what to train.

    Arguments
    ---------
    backbone : speechbrain_mambadapter.backbones.Backbone
        Where the layers are.
    placement : None
        Prompt tuning has no placement.
    train_norms : bool
        Also train the encoder's final LayerNorm.
    num_tokens : int
        Prompts per layer, N.

    Returns
    -------
    list of torch.nn.Parameter
    """
    from speechbrain.nnet.attention import RelPosMHAXL

    if any(isinstance(layer.attn, RelPosMHAXL) for layer in backbone.layers):
        raise ValueError(
            "Deep prompt tuning lengthens the sequence, which relative positional attention (RelPosMHAXL, "
            "the Conformer default) does not support; use attention_type='regularMHA' or another method."
        )
    prompts = DeepPromptTuning(len(backbone.layers), num_tokens, backbone.d_model)
    backbone.encoder.add_module("petl_prompts", prompts)
    prompts.attach(backbone.encoder, [layer.module for layer in backbone.layers], backbone.final_norm)
    trainable = backbone.final_norm_parameters() if train_norms else []
    return trainable + list(prompts.parameters())
