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

Placement (adapters only): parallel insertion, the adapter reads the sub-layer's input
(after its LayerNorm) and its output is added to the sub-layer's output before the
residual. ``"pfeiffer"``: feed-forward sub-layers only (both macaron FFNs of a Conformer
layer); ``"houlsby"``: attention and feed-forward. Adapters see no ``lengths``: a
bidirectional MambAdapter treats right padding as frames.

For SpeechBrain's Whisper lobe, ``freeze=True`` would run the whole forward under
``torch.no_grad()`` and no adapter would ever get a gradient; ``inject`` turns the flag off
and freezes the parameters itself.

Authors
 * speechbrain-mambadapter contributors 2026
"""

import inspect

import torch

from speechbrain_mambadapter.backbones import attention_projections, find_backbone, first_input
from speechbrain_mambadapter.bitfit import bitfit_parameters
from speechbrain_mambadapter.bottleneck import Bottleneck
from speechbrain_mambadapter.conformer_adapter import ConformerAdapter
from speechbrain_mambadapter.recipe.distributed import is_distributed
from speechbrain_mambadapter.lora import LoRA, attach_lora
from speechbrain_mambadapter.mambadapter import MambAdapter, SharedProjections
from speechbrain_mambadapter.prefix_tuning import PrefixTuning
from speechbrain_mambadapter.prompt_tuning import DeepPromptTuning

PLACEMENTS = ("pfeiffer", "houlsby")
ADAPTER_METHODS = ("mambadapter", "bottleneck", "conformer")


def _side_stream(device):
    """The side stream of ``device`` on which parallel adapters overlap their sub-layer."""
    index = torch.device(device).index
    if index is None:
        index = torch.cuda.current_device()
    stream = _SIDE_STREAMS.get(index)
    if stream is None:
        stream = _SIDE_STREAMS[index] = torch.cuda.Stream(device=index)
    return stream


_SIDE_STREAMS = {}


class _ParallelTap:
    """Runs an adapter on a sub-layer's input and adds the result to the sub-layer's output.

    The input hook keeps only the adapter's bottleneck code (``adapter.encode``, rank r) while
    the sub-layer runs; the output hook projects it back (``adapter.decode``) and adds it. Keeping
    the d_model-wide output instead would hold one extra [B, T, d_model] tensor alive through
    the feed-forward's widest activation: +8 % peak memory for Whisper-small at batch 32
    (``benchmarks/RESULTS.md``).

    On CUDA, with ``adapter.overlap`` true (see :func:`set_adapter_overlap`), the rank-wide
    part of the encoder (``adapter.transform``: the Mamba block, for a MambAdapter) runs on a
    side stream while the frozen sub-layer runs on the current one; the output hook joins the
    two streams before decoding. The kernels are the same, so is the result. Autograd runs
    each backward kernel on its forward's stream, so the backward overlaps too; CUDA graphs
    capture the two streams as parallel branches. Only the rank-wide input ``h`` crosses to
    the side stream, and it is kept referenced until the join, so the caching allocator
    cannot hand its memory to the current stream while the side stream reads it.

    A plain object whose bound methods are the hooks, so ``copy.deepcopy`` of the model
    rebinds them to the copied adapter (a closure would keep pointing at the original).
    """

    def __init__(self, adapter):
        self.adapter = adapter
        self._pending = None

    def read(self, module, args, kwargs):
        x = first_input(args, kwargs)
        # Under several processes, one stream: DistributedDataParallel launches each bucket's
        # all-reduce after the stream of the gradient that completed the bucket, and a gradient
        # made on the side stream could still be in flight.
        if not (x.is_cuda and getattr(self.adapter, "overlap", False)) or is_distributed():
            self._pending = (self.adapter.encode(x), None, None)
            return
        h = self.adapter.reduce(x)
        side = _side_stream(x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):
            code = self.adapter.transform(h)
        self._pending = (code, side, h)

    def write(self, module, args, output):
        if self._pending is None:
            raise RuntimeError(
                f"The adapter on {type(module).__name__} found no input: the sub-layer's output module "
                "ran without its input module; this layer layout is not supported."
            )
        (code, side, _), self._pending = self._pending, None
        if side is not None:
            torch.cuda.current_stream(code.device).wait_stream(side)
        delta = self.adapter.decode(code)
        if isinstance(output, tuple):
            return (output[0] + delta,) + tuple(output[1:])
        return output + delta


def set_adapter_overlap(model, enabled=True):
    """Run the parallel adapters of ``model`` on a side stream, overlapping their sub-layer (CUDA).

    Off by default. Measured on one H100 (``benchmarks/RESULTS.md``), it saves 1-3 % of Whisper
    encoder inference latency and 4-14 % of a graphed Whisper training step. In that run, the
    side stream's memory blocks also raised peak memory, by up to 1.1 GiB.

    Arguments
    ---------
    model : torch.nn.Module
        A model ``inject`` put parallel adapters into (``mambadapter``, ``bottleneck``,
        ``conformer``); other modules are left alone.
    enabled : bool
        True: on CUDA inputs each adapter's rank-wide part runs concurrently with the frozen
        sub-layer it is attached to (same kernels, same results). False: one stream. Under
        ``torch.distributed`` with several processes the adapters stay on one stream
        (``DistributedDataParallel`` only orders its all-reduces after the current stream).

    Returns
    -------
    int
        The number of adapters set.

    Example
    -------
    >>> import torch
    >>> from speechbrain.lobes.models.transformer.Transformer import TransformerEncoder
    >>> encoder = inject(TransformerEncoder(num_layers=2, nhead=2, d_ffn=16, d_model=8),
    ...                  method="mambadapter", rank=4, d_state=4)
    >>> set_adapter_overlap(encoder, False)
    2
    """
    count = 0
    for module in model.modules():
        if isinstance(module, (MambAdapter, Bottleneck, ConformerAdapter)):
            module.overlap = bool(enabled)
            count += 1
    return count


def _sites(backbone, placement):
    for layer in backbone.layers:
        named = [("ffn", site) for site in layer.ffns]
        if len(named) > 1:
            named = [(f"ffn{i + 1}", site) for i, (_, site) in enumerate(named)]
        if placement == "houlsby":
            named.insert(0, ("attention", layer.attention))
        for name, site in named:
            yield layer, name, site


def _insert_adapters(backbone, placement, train_norms, make):
    norms = [backbone.final_norm] if train_norms and backbone.final_norm is not None else []
    for layer, name, site in _sites(backbone, placement):
        adapter = make()
        layer.module.add_module(f"petl_{name}_adapter", adapter)
        tap = _ParallelTap(adapter)
        site.reader.register_forward_pre_hook(tap.read, with_kwargs=True)
        site.writer.register_forward_hook(tap.write)
        if train_norms and site.norm is not None:
            norms.append(site.norm)
    return [p for norm in norms for p in norm.parameters()]


def _mambadapter(
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
):
    shared = None
    if share_projections:
        # One object per model, registered once on the encoder; adapters hold references.
        shared = SharedProjections(backbone.d_model, rank)
        backbone.encoder.add_module("petl_shared_projections", shared)
    kwargs = dict(direction=direction, d_state=d_state, d_conv=d_conv, expand=expand, dropout=dropout)
    kwargs.update(use_mamba=use_mamba, use_alpha=use_alpha, alpha_init=alpha_init)
    return _insert_adapters(
        backbone,
        placement,
        train_norms,
        lambda: MambAdapter(backbone.d_model, rank, shared, use_fast_path=use_fast_path, **kwargs),
    )


def _bottleneck(backbone, placement, train_norms, rank, dropout=0.0):
    return _insert_adapters(
        backbone, placement, train_norms, lambda: Bottleneck(backbone.d_model, rank, dropout)
    )


def _conformer(backbone, placement, train_norms, rank, kernel_size=31, dropout=0.0):
    def make():
        return ConformerAdapter(backbone.d_model, rank, kernel_size, dropout)

    return _insert_adapters(backbone, placement, train_norms, make)


def _final_norm(backbone, train_norms):
    if train_norms and backbone.final_norm is not None:
        return list(backbone.final_norm.parameters())
    return []


def _lora(backbone, placement, train_norms, rank=8, alpha=1.0):
    targets = [t for layer in backbone.layers for t in attention_projections(layer.attn).qv_targets]
    attach_lora(targets, rank, alpha)
    return _final_norm(backbone, train_norms)


def _prompt(backbone, placement, train_norms, num_tokens):
    from speechbrain.nnet.attention import RelPosMHAXL

    if any(isinstance(layer.attn, RelPosMHAXL) for layer in backbone.layers):
        raise ValueError(
            "Deep prompt tuning lengthens the sequence, which relative positional attention (RelPosMHAXL, "
            "the Conformer default) does not support; use attention_type='regularMHA' or another method."
        )
    prompts = DeepPromptTuning(len(backbone.layers), num_tokens, backbone.d_model)
    backbone.encoder.add_module("petl_prompts", prompts)
    prompts.attach(backbone.encoder, [layer.module for layer in backbone.layers], backbone.final_norm)
    return _final_norm(backbone, train_norms)


def _prefix(backbone, placement, train_norms, num_tokens):
    for layer in backbone.layers:
        wrapped = PrefixTuning(layer.attn, num_tokens)
        setattr(layer.attn_parent, layer.attn_name, wrapped)
    return _final_norm(backbone, train_norms)


def _bitfit(backbone, placement, train_norms):
    return bitfit_parameters(backbone.encoder)


def _linear(backbone, placement, train_norms):
    return []


def _full(backbone, placement, train_norms):
    fixed = {id(p) for p in backbone.fixed}
    return [p for p in backbone.root.parameters() if id(p) not in fixed]


METHODS = {
    "mambadapter": _mambadapter,
    "bottleneck": _bottleneck,
    "conformer": _conformer,
    "lora": _lora,
    "prompt": _prompt,
    "prefix": _prefix,
    "bitfit": _bitfit,
    "linear": _linear,
    "full": _full,
}

# Modules created by inject whose every parameter trains.
PETL_MODULES = (
    MambAdapter,
    SharedProjections,
    Bottleneck,
    ConformerAdapter,
    LoRA,
    DeepPromptTuning,
    PrefixTuning,
)


def _check_arguments(method, placement, method_kwargs):
    if method not in METHODS:
        raise ValueError(f"Unknown PETL method {method!r}; choose one of {sorted(METHODS)}.")
    if method in ADAPTER_METHODS:
        if placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS} for {method!r}, got {placement!r}.")
    elif placement is not None:
        raise ValueError(
            f"Method {method!r} has no placement (only {ADAPTER_METHODS} do); remove placement={placement!r}."
        )
    params = inspect.signature(METHODS[method]).parameters
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
        raise TypeError(f"Method {method!r} needs {missing}, e.g. inject(model, method={method!r}, rank=16).")


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
        The method's settings, e.g. ``rank``, ``direction``, ``num_tokens`` (see the
        ``_<method>`` functions of this module for each method's names and defaults).

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
    if method in ADAPTER_METHODS and placement is None:
        placement = "pfeiffer"
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
    trainable = METHODS[method](backbone, placement, train_norms, **method_kwargs)
    device = next((p.device for p in backbone.encoder.parameters()), None)
    for module in model.modules():
        if isinstance(module, PETL_MODULES):
            # New modules go where the backbone is; dtypes stay fp32 (use autocast for half precision).
            module.to(device)
            trainable += [p for name, p in module.named_parameters() if not _inside_wrapped(module, name)]
    for param in trainable:
        param.requires_grad_(True)
    if method not in ("linear", "full") and not trainable:
        raise ValueError(f"Method {method!r} matched nothing to train in {type(model).__name__}.")
    if backbone.sb_whisper is not None and any(p.requires_grad for p in model.parameters()):
        backbone.sb_whisper.freeze = False
    model.petl_config = {
        "method": method,
        "placement": placement,
        "train_norms": train_norms,
        "kwargs": dict(sorted(method_kwargs.items())),
    }
    return model


def _inside_wrapped(module, name):
    """The frozen attention a ``PrefixTuning`` wraps is not part of the method."""
    return isinstance(module, PrefixTuning) and name.startswith("attention.")


def trainable_parameter_count(model):
    """Number of trainable parameters (shared tensors counted once).

    Example
    -------
    >>> import torch
    >>> trainable_parameter_count(torch.nn.Linear(3, 2))
    8
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
