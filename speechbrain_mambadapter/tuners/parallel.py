"""Parallel adapters: the base class, the hooks that put them beside a sub-layer, the side streams.

A parallel adapter reads a sub-layer's input (after its LayerNorm) and its output is added to
the sub-layer's output before the residual. The placement says which sub-layers of every
encoder layer get one: ``"pfeiffer"`` (the default) the feed-forward sub-layers only (both
macaron FFNs of a Conformer layer), ``"houlsby"`` the attention and the feed-forward ones.
Adapters see no ``lengths``: a bidirectional MambAdapter treats right padding as frames.

Every adapter that subclasses ``ParallelAdapter`` can be inserted with
:func:`insert_parallel_adapters` and run on a CUDA side stream with :func:`set_adapter_overlap`.

Example
-------
>>> import torch
>>> from speechbrain.lobes.models.transformer.Transformer import TransformerEncoder
>>> from speechbrain_mambadapter import inject
>>> encoder = inject(TransformerEncoder(num_layers=2, nhead=2, d_ffn=16, d_model=8),
...                  method="bottleneck", placement="houlsby", rank=2)
>>> [n for n, m in encoder.named_modules() if isinstance(m, ParallelAdapter)][:2]
['layers.0.petl_attention_adapter', 'layers.0.petl_ffn_adapter']

Authors
 * speechbrain-mambadapter contributors 2026
"""

import torch
import torch.nn as nn

from speechbrain_mambadapter.backbones import first_input
from speechbrain_mambadapter.recipe.distributed import is_distributed

PLACEMENTS = ("pfeiffer", "houlsby")
DEFAULT_PLACEMENT = "pfeiffer"


class ParallelAdapter(nn.Module):
    """Base class of the parallel adapters: ``forward(x) = decode(transform(reduce(x)))``.

    A subclass defines three steps, so that the hooks can keep only the rank-wide code
    between a sub-layer's input and output, and run the rank-wide part on a side stream:

    * ``reduce(x)``: reads the d_model-wide input ``[B, T, d_model]``, returns a rank-wide tensor;
    * ``transform(h)``: the rest of the encoder, rank-wide, returns the bottleneck code;
    * ``decode(code)``: returns the ``[B, T, d_model]`` addition to the sub-layer's output.

    ``overlap`` (set by :func:`set_adapter_overlap`) lets the hooks run ``transform`` on a
    CUDA side stream.

    Example
    -------
    >>> class Scale(ParallelAdapter):
    ...     def reduce(self, x):
    ...         return x
    ...     def transform(self, h):
    ...         return 2 * h
    ...     def decode(self, code):
    ...         return code + 1
    >>> Scale()(torch.zeros(1, 2, 3)).sum().item(), Scale().overlap
    (6.0, False)
    """

    overlap = False

    def encode(self, x):
        """``[B, T, d_model]`` -> the bottleneck code, ``transform(reduce(x))``."""
        return self.transform(self.reduce(x))

    def forward(self, x):
        """``[B, T, d_model]`` -> ``[B, T, d_model]``."""
        return self.decode(self.encode(x))


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
        if not (x.is_cuda and self.adapter.overlap) or is_distributed():
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
        A model ``inject`` put parallel adapters into (every ``ParallelAdapter``: ``mambadapter``,
        ``bottleneck``, ``conformer``); other modules are left alone.
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
    >>> from speechbrain_mambadapter import inject
    >>> encoder = inject(TransformerEncoder(num_layers=2, nhead=2, d_ffn=16, d_model=8),
    ...                  method="mambadapter", rank=4, d_state=4)
    >>> set_adapter_overlap(encoder, False)
    2
    """
    count = 0
    for module in model.modules():
        if isinstance(module, ParallelAdapter):
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


def insert_parallel_adapters(backbone, placement, train_norms, make):
    """Put one adapter from ``make()`` beside each sub-layer that ``placement`` names.

    Each adapter is registered on its layer as ``petl_<sub-layer>_adapter`` (``attention``,
    ``ffn``, or ``ffn1``/``ffn2`` for a Conformer's two macaron FFNs) and hooked to the
    sub-layer by a ``_ParallelTap``.

    Arguments
    ---------
    backbone : speechbrain_mambadapter.backbones.Backbone
        Where the sites are.
    placement : str
        One of ``PLACEMENTS``.
    train_norms : bool
        Also train each site's LayerNorm and the encoder's final LayerNorm.
    make : callable
        Returns a new ``ParallelAdapter`` for one site.

    Returns
    -------
    list of torch.nn.Parameter
        What to train: the adapters' parameters and, with ``train_norms``, the norms'.

    Example
    -------
    >>> from speechbrain.lobes.models.transformer.Transformer import TransformerEncoder
    >>> from speechbrain_mambadapter.backbones import find_backbone
    >>> from speechbrain_mambadapter.tuners.bottleneck import Bottleneck
    >>> backbone = find_backbone(TransformerEncoder(num_layers=2, nhead=2, d_ffn=16, d_model=8))
    >>> params = insert_parallel_adapters(backbone, "pfeiffer", False, lambda: Bottleneck(8, 2))
    >>> len(params), backbone.encoder.layers[0].petl_ffn_adapter.up.out_features
    (8, 8)
    """
    trainable = backbone.final_norm_parameters() if train_norms else []
    for layer, name, site in _sites(backbone, placement):
        adapter = make()
        if not isinstance(adapter, ParallelAdapter):
            raise TypeError(f"make() must return a ParallelAdapter, got {type(adapter).__name__}.")
        layer.module.add_module(f"petl_{name}_adapter", adapter)
        tap = _ParallelTap(adapter)
        site.reader.register_forward_pre_hook(tap.read, with_kwargs=True)
        site.writer.register_forward_hook(tap.write)
        trainable += adapter.parameters()
        if train_norms and site.norm is not None:
            trainable += site.norm.parameters()
    return trainable
