"""Find the encoder layers of a supported backbone, by structure.

``find_backbone(model)`` returns a ``Backbone``: the encoder, its final norm and, for every
layer, where a parallel adapter reads and writes for the attention and feed-forward sub-layers,
and how to reach the attention projections (for LoRA and prefix tuning). Supported:

* HF Whisper: ``WhisperEncoder``, ``WhisperModel``, ``WhisperForConditionalGeneration`` and
  SpeechBrain's ``speechbrain.integrations.huggingface.whisper.Whisper`` (the encoder only is
  adapted; a decoder, if present, stays frozen);
* HF ``ASTModel`` (the transformers 5.x layout, ``layers[i].attention.q_proj`` and
  ``layers[i].mlp``, and the 4.x one, ``encoder.layer[i].attention.attention.query`` and
  ``intermediate``/``output``) and any object holding one at ``.model``, such as
  this package's AST lobe;
* SpeechBrain's ``TransformerEncoder`` and ``ConformerEncoder``, also when nested in a larger
  module (exactly one of them).

Layouts are recognised by the sub-modules they have, not by class names alone, so a
transformers release that moves things around fails here with the names that were expected.

Authors
 * speechbrain-mambadapter contributors 2026
"""

from dataclasses import dataclass, field
from typing import Callable, List, Optional

import torch
import torch.nn as nn


@dataclass
class Site:
    """One adapted sub-layer: the adapter reads ``reader``'s input and adds to ``writer``'s output.

    ``norm`` is the LayerNorm that feeds the sub-layer (trained with the adapter methods).
    """

    reader: nn.Module
    writer: nn.Module
    norm: Optional[nn.Module]


@dataclass
class Layer:
    """One encoder layer: its module, attention and feed-forward sites, attention module."""

    module: nn.Module
    attention: Site
    ffns: List[Site]
    attn: nn.Module
    attn_parent: nn.Module
    attn_name: str


@dataclass
class Backbone:
    """What ``inject`` needs to know about a model (see the module docstring)."""

    kind: str
    root: nn.Module
    encoder: nn.Module
    layers: List[Layer]
    final_norm: Optional[nn.Module]
    d_model: int
    sb_whisper: Optional[nn.Module] = None
    fixed: List[nn.Parameter] = field(default_factory=list)

    def final_norm_parameters(self):
        """The parameters of the encoder's final norm (none when it has no final norm)."""
        return [] if self.final_norm is None else list(self.final_norm.parameters())


def _has(module, *names):
    return all(isinstance(getattr(module, n, None), nn.Module) for n in names)


def _layout_error(what, layer, expected):
    children = ", ".join(name for name, _ in layer.named_children())
    return ValueError(
        f"Unknown {what} layer layout: expected sub-modules {expected}, found [{children}]. "
        "This transformers/SpeechBrain version moved things; please open an issue with the version."
    )


def _whisper_layers(encoder):
    layers = []
    for layer in encoder.layers:
        expected = "self_attn, self_attn_layer_norm, fc1, fc2, final_layer_norm"
        if not _has(layer, "self_attn", "self_attn_layer_norm", "fc1", "fc2", "final_layer_norm"):
            raise _layout_error("Whisper encoder", layer, expected)
        layers.append(
            Layer(
                module=layer,
                attention=Site(layer.self_attn, layer.self_attn, layer.self_attn_layer_norm),
                ffns=[Site(layer.fc1, layer.fc2, layer.final_layer_norm)],
                attn=layer.self_attn,
                attn_parent=layer,
                attn_name="self_attn",
            )
        )
    return layers


def _ast_layers(model):
    new_layout = isinstance(getattr(model, "layers", None), nn.ModuleList)
    layer_list = model.layers if new_layout else getattr(getattr(model, "encoder", None), "layer", None)
    if not isinstance(layer_list, nn.ModuleList):
        raise ValueError(
            "Unknown ASTModel layout: expected `model.layers` (transformers 5.x) or "
            "`model.encoder.layer` (4.x); found neither."
        )
    layers = []
    for layer in layer_list:
        if _has(layer, "attention", "layernorm_before", "layernorm_after", "mlp"):
            ffn = Site(layer.mlp, layer.mlp, layer.layernorm_after)
        elif _has(layer, "attention", "layernorm_before", "layernorm_after", "intermediate", "output"):
            # The old ASTOutput adds the residual inside; adding the adapter there is the same sum.
            ffn = Site(layer.intermediate, layer.output, layer.layernorm_after)
        else:
            raise _layout_error(
                "AST",
                layer,
                "attention, layernorm_before, layernorm_after and mlp (or intermediate + output)",
            )
        layers.append(
            Layer(
                module=layer,
                attention=Site(layer.attention, layer.attention, layer.layernorm_before),
                ffns=[ffn],
                attn=layer.attention,
                attn_parent=layer,
                attn_name="attention",
            )
        )
    return layers


def _inner_norm(norm):
    """SpeechBrain's LayerNorm wraps ``torch.nn.LayerNorm`` at ``.norm``."""
    return norm.norm if isinstance(getattr(norm, "norm", None), nn.LayerNorm) else norm


def _sb_layers(encoder):
    layers = []
    for layer in encoder.layers:
        if _has(layer, "self_att", "pos_ffn", "norm1", "norm2"):
            attn_name, ffns = "self_att", [Site(layer.pos_ffn, layer.pos_ffn, _inner_norm(layer.norm2))]
            attn_norm = _inner_norm(layer.norm1)
        elif _has(layer, "mha_layer", "ffn_module1", "ffn_module2", "norm1"):
            attn_name, attn_norm = "mha_layer", _inner_norm(layer.norm1)
            # Both macaron feed-forward modules: LayerNorm first, then the FFN proper.
            ffns = [Site(ffn[1], ffn, ffn[0]) for ffn in (layer.ffn_module1, layer.ffn_module2)]
        else:
            raise _layout_error(
                "SpeechBrain encoder",
                layer,
                "self_att, pos_ffn, norm1, norm2 (Transformer) or "
                "mha_layer, ffn_module1/2, norm1 (Conformer)",
            )
        attn = getattr(layer, attn_name)
        layers.append(Layer(layer, Site(attn, attn, attn_norm), ffns, attn, layer, attn_name))
    return layers


def _sb_encoder_classes():
    from speechbrain.lobes.models.transformer.Conformer import ConformerEncoder
    from speechbrain.lobes.models.transformer.Transformer import TransformerEncoder

    return TransformerEncoder, ConformerEncoder


def find_backbone(model):
    """Recognise a supported backbone and describe its encoder layers.

    Arguments
    ---------
    model : torch.nn.Module
        See the module docstring for what is accepted.

    Returns
    -------
    Backbone

    Raises
    ------
    TypeError
        When the model is none of the supported backbones.

    Example
    -------
    >>> from speechbrain.lobes.models.transformer.Transformer import TransformerEncoder
    >>> backbone = find_backbone(TransformerEncoder(num_layers=2, nhead=2, d_ffn=16, d_model=8))
    >>> backbone.kind, len(backbone.layers), backbone.d_model
    ('sb_transformer', 2, 8)
    """
    from transformers import ASTModel, WhisperForConditionalGeneration, WhisperModel
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    root, sb_whisper, inner = model, None, model
    # SpeechBrain's Whisper lobe and this package's AST lobe hold the HF model at `.model`.
    if not isinstance(inner, (WhisperEncoder, WhisperModel, WhisperForConditionalGeneration, ASTModel)):
        held = getattr(inner, "model", None)
        if isinstance(held, (WhisperModel, WhisperForConditionalGeneration)):
            sb_whisper = inner if hasattr(inner, "freeze") else None
            inner = held
        elif isinstance(held, ASTModel):
            inner = held
    if isinstance(inner, WhisperForConditionalGeneration):
        inner = inner.model
    if isinstance(inner, WhisperModel):
        inner = inner.encoder
    if isinstance(inner, WhisperEncoder):
        return Backbone(
            kind="whisper",
            root=root,
            encoder=inner,
            layers=_whisper_layers(inner),
            final_norm=inner.layer_norm,
            d_model=inner.config.d_model,
            sb_whisper=sb_whisper,
            # Whisper's encoder positions are fixed sinusoids; HF freezes them, so does "full".
            fixed=[inner.embed_positions.weight],
        )
    if isinstance(inner, ASTModel):
        return Backbone(
            kind="ast",
            root=root,
            encoder=inner,
            layers=_ast_layers(inner),
            final_norm=inner.layernorm,
            d_model=inner.config.hidden_size,
        )
    sb_classes = _sb_encoder_classes()
    found = [m for m in model.modules() if isinstance(m, sb_classes)] if isinstance(model, nn.Module) else []
    if len(found) == 1:
        encoder = found[0]
        kind = "sb_transformer" if isinstance(encoder, sb_classes[0]) else "sb_conformer"
        layers = _sb_layers(encoder)
        d_model = _inner_norm(encoder.norm).normalized_shape[0]
        return Backbone(kind, root, encoder, layers, _inner_norm(encoder.norm), d_model)
    if len(found) > 1:
        raise TypeError(
            f"Found {len(found)} SpeechBrain Transformer/Conformer encoders in {type(model).__name__}; "
            "pass the one to adapt to inject()."
        )
    raise TypeError(
        f"Unknown backbone {type(model).__name__}: inject() supports HF WhisperEncoder/WhisperModel/"
        "WhisperForConditionalGeneration, SpeechBrain's Whisper lobe, HF ASTModel (or a lobe holding one "
        "at `.model`), and SpeechBrain TransformerEncoder/ConformerEncoder."
    )


@dataclass
class Projections:
    """The q/k/v/out projections of one attention module, however it stores them.

    ``qv_targets`` lists ``(module, tensor_name, row_offset)`` for the query and value weights
    (LoRA); ``row_offset`` locates them inside a fused ``in_proj_weight``.
    """

    num_heads: int
    d_model: int
    qkv: Callable
    out: Callable
    qv_targets: list


def attention_projections(attn):
    """Describe the projections of a Whisper, AST or SpeechBrain attention module.

    Arguments
    ---------
    attn : torch.nn.Module
        ``WhisperAttention``, ``ASTAttention`` (either layout) or SpeechBrain's ``MultiheadAttention``.

    Returns
    -------
    Projections

    Example
    -------
    >>> from speechbrain.nnet.attention import MultiheadAttention
    >>> proj = attention_projections(MultiheadAttention(nhead=2, d_model=8))
    >>> q, k, v = proj.qkv(torch.randn(1, 3, 8))
    >>> q.shape, proj.num_heads
    (torch.Size([1, 3, 8]), 2)
    """
    if _has(attn, "q_proj", "k_proj", "v_proj") and (_has(attn, "o_proj") or _has(attn, "out_proj")):
        out = attn.o_proj if _has(attn, "o_proj") else attn.out_proj
        heads = getattr(attn, "num_heads", None) or getattr(attn, "num_attention_heads", None)
        return Projections(
            num_heads=heads,
            d_model=attn.q_proj.in_features,
            qkv=lambda x: (attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)),
            out=out,
            qv_targets=[(attn.q_proj, "weight", 0), (attn.v_proj, "weight", 0)],
        )
    inner = getattr(attn, "attention", None)
    if inner is not None and _has(inner, "query", "key", "value") and _has(attn, "output"):
        return Projections(
            num_heads=inner.num_attention_heads,
            d_model=inner.query.in_features,
            qkv=lambda x: (inner.query(x), inner.key(x), inner.value(x)),
            out=attn.output.dense,
            qv_targets=[(inner.query, "weight", 0), (inner.value, "weight", 0)],
        )
    mha = getattr(attn, "att", None)
    if isinstance(mha, nn.MultiheadAttention):
        if not mha._qkv_same_embed_dim or mha.in_proj_weight is None:
            raise ValueError("LoRA/prefix tuning need a MultiheadAttention with kdim == vdim == d_model.")
        d = mha.embed_dim

        def qkv(x):
            return nn.functional.linear(x, mha.in_proj_weight, mha.in_proj_bias).chunk(3, dim=-1)

        return Projections(
            mha.num_heads,
            d,
            qkv,
            mha.out_proj,
            [(mha, "in_proj_weight", 0)] + [(mha, "in_proj_weight", 2 * d)],
        )
    names = ", ".join(name for name, _ in attn.named_children())
    raise ValueError(
        f"Unsupported attention module {type(attn).__name__} (children: [{names}]): LoRA and prefix tuning "
        "need separate or fused query/key/value projections (Whisper, AST, SpeechBrain MultiheadAttention "
        "with attention_type='regularMHA'); relative-position attention is not supported."
    )


def first_input(args, kwargs):
    """The tensor a sub-layer reads: the first positional argument, else the first tensor kwarg."""
    if args:
        return args[0]
    for value in kwargs.values():
        if isinstance(value, torch.Tensor):
            return value
    raise ValueError("Could not find the sub-layer input: no tensor among the call's arguments.")
