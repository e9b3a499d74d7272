"""``inject``: put one PETL method into a backbone, freeze everything else, return the model.

(This module is ``injection``, not ``inject``: with a submodule of the function's name,
``pydoc.locate("speechbrain_mambadapter.inject")``, which HyperPyYAML's ``!apply:`` uses, returns
the module instead of the function on Python 3.12.)

Usable from HyperPyYAML::

    whisper: !apply:speechbrain_mambadapter.inject
        model: !new:speechbrain.integrations.huggingface.whisper.Whisper
            source: openai/whisper-small
            save_path: !ref <save_folder>/whisper
            encoder_only: True
            freeze: True
        method: mambadapter
        placement: houlsby
        rank: 104
        direction: inner

Methods and what they train (the task head lives outside the model passed in and is never
touched here). "Norms" are trained when ``train_norms=True`` (the default), following the
paper's AST code (PETL_AST ``AST_adapters.py``, ``AST_LoRA.py``, ``AST_prompt_tuning.py`` and
the MambAdapter AST code): it freezes embeddings and encoder, then unfreezes the adapters,
the LayerNorm in front of every adapted sub-layer (``layernorm_after``; plus
``layernorm_before`` for Houlsby) and leaves the final encoder LayerNorm trainable; for LoRA,
prompt and prefix tuning only the final LayerNorm. The paper's Whisper code wraps the model
in SpeechBrain's ``AdaptedModel``, which trains the adapters alone: ``train_norms=False``
gives that setting.

=========== ============================================================== ===================
method      trains                                                         norms (train_norms)
=========== ============================================================== ===================
mambadapter ``MambAdapter`` per site, one ``SharedProjections`` per model  site LNs, final LN
bottleneck  ``Bottleneck`` per site                                        site LNs, final LN
conformer   ``ConformerAdapter`` per site (its own LN and BN included)     site LNs, final LN
lora        ``LoRA`` on query and value of every self-attention            final LN
prompt      ``DeepPromptTuning``: N prompts per layer                      final LN
prefix      ``PrefixTuning``: N keys and N values per layer                final LN
bitfit      biases of the encoder's linear and norm layers                 (biases only)
linear      nothing (linear probing: only the head, outside the model)     none
full        every parameter of the model passed in (Whisper's fixed        all
            sinusoidal encoder positions excepted)
=========== ============================================================== ===================

Each method is a module of ``speechbrain_mambadapter.tuners`` whose ``attach`` function
states its settings and their defaults. Placement (adapters only): parallel insertion, the
adapter reads the sub-layer's input (after its LayerNorm) and its output is added to the
sub-layer's output before the residual. ``"pfeiffer"``: feed-forward sub-layers only (both
macaron FFNs of a Conformer layer); ``"houlsby"``: attention and feed-forward
(``speechbrain_mambadapter.tuners.parallel``). Adapters see no ``lengths``: a bidirectional
MambAdapter treats right padding as frames.

For SpeechBrain's Whisper lobe, ``freeze=True`` would run the whole forward under
``torch.no_grad()`` and no adapter would ever get a gradient; ``inject`` turns the flag off
and freezes the parameters itself.

Authors
 * speechbrain-mambadapter contributors 2026
"""

import inspect

from speechbrain_mambadapter import tuners
from speechbrain_mambadapter.backbones import find_backbone
from speechbrain_mambadapter.tuners.parallel import DEFAULT_PLACEMENT, PLACEMENTS


def _check_arguments(method, placement, method_kwargs):
    if method not in tuners.METHODS:
        raise ValueError(f"Unknown PETL method {method!r}; choose one of {sorted(tuners.METHODS)}.")
    tuner = tuners.METHODS[method]
    if tuner.TAKES_PLACEMENT:
        if placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS} for {method!r}, got {placement!r}.")
    elif placement is not None:
        placed = tuple(name for name, t in tuners.METHODS.items() if t.TAKES_PLACEMENT)
        raise ValueError(
            f"Method {method!r} has no placement (only {placed} do); remove placement={placement!r}."
        )
    params = inspect.signature(tuner.attach).parameters
    accepted = [name for name in params if name not in ("backbone", "placement", "train_norms")]
    unknown = sorted(set(method_kwargs) - set(accepted))
    if unknown:
        raise TypeError(f"Unknown argument(s) {unknown} for method {method!r}; it accepts {accepted}.")
    missing = [
        name
        for name in accepted
        if params[name].default is inspect.Parameter.empty and name not in method_kwargs
    ]
    if missing:
        example = ", ".join(f"{name}=..." for name in missing)
        raise TypeError(f"Method {method!r} needs {missing}: inject(model, method={method!r}, {example}).")


def inject(model, method, placement=None, train_norms=True, **method_kwargs):
    """Add a PETL method to ``model``'s encoder, freeze everything else, return ``model``.

    Arguments
    ---------
    model : torch.nn.Module
        A supported backbone (see ``speechbrain_mambadapter.backbones``). Everything in it
        is frozen except the method's parameters: keep the task head outside it.
    method : str
        One of ``METHODS`` (table in the module docstring).
    placement : str, optional
        ``"pfeiffer"`` (default for adapters) or ``"houlsby"``; adapters only.
    train_norms : bool
        Train the norms the paper's code trains (module docstring).
    **method_kwargs
        The method's settings, e.g. ``rank``, ``direction``, ``num_tokens``: the arguments of
        its tuner's ``attach`` (``speechbrain_mambadapter.tuners.<method>.attach``), which
        states their defaults.

    Returns
    -------
    torch.nn.Module
        ``model``, modified in place; ``model.petl_config`` records the call.

    Raises
    ------
    ValueError, TypeError
        Unknown method, placement or argument; unknown backbone; nothing to adapt.

    Example
    -------
    >>> import torch
    >>> from speechbrain.lobes.models.transformer.Transformer import TransformerEncoder
    >>> encoder = TransformerEncoder(num_layers=2, nhead=2, d_ffn=16, d_model=8)
    >>> x = torch.randn(2, 5, 8)
    >>> before = encoder(x)[0]
    >>> encoder = inject(encoder, method="bottleneck", placement="houlsby", rank=2)
    >>> torch.allclose(encoder(x)[0], before, atol=1e-6)
    True
    >>> sorted({n.split(".")[2] for n, p in encoder.named_parameters() if p.requires_grad and "layers" in n})
    ['norm1', 'norm2', 'petl_attention_adapter', 'petl_ffn_adapter']
    >>> [n for n, p in encoder.named_parameters() if p.requires_grad and "layers" not in n]
    ['norm.norm.weight', 'norm.norm.bias']
    """
    tuner = tuners.METHODS.get(method)
    if tuner is not None and tuner.TAKES_PLACEMENT and placement is None:
        placement = DEFAULT_PLACEMENT
    _check_arguments(method, placement, method_kwargs)
    if getattr(model, "petl_config", None) is not None:
        raise ValueError(
            f"This model already has {model.petl_config['method']!r} injected; "
            "build a fresh model to inject again."
        )
    backbone = find_backbone(model)
    if not backbone.layers:
        raise ValueError(f"Found no encoder layers to adapt in {type(model).__name__}.")
    model.requires_grad_(False)
    trainable = tuner.attach(backbone, placement, train_norms, **method_kwargs)
    device = next((p.device for p in backbone.encoder.parameters()), None)
    for module in model.modules():
        if isinstance(module, tuners.PETL_MODULES):
            # New modules go where the backbone is; dtypes stay fp32 (use autocast for half precision).
            module.to(device)
    for param in trainable:
        param.requires_grad_(True)
    if backbone.sb_whisper is not None and any(p.requires_grad for p in model.parameters()):
        backbone.sb_whisper.freeze = False
    model.petl_config = {
        "method": method,
        "placement": placement,
        "train_norms": train_norms,
        "kwargs": dict(sorted(method_kwargs.items())),
    }
    return model


def trainable_parameter_count(model):
    """Number of trainable parameters (shared tensors counted once).

    Example
    -------
    >>> import torch
    >>> trainable_parameter_count(torch.nn.Linear(3, 2))
    8
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
