"""Fast inference: replay the whole forward of a module as a captured CUDA graph.

A MambAdapter adds ~15 small kernels per adapted sub-layer; at small batch their launch and
Python overhead, not their arithmetic, is what makes an adapted encoder slower than the plain
one. ``CUDAGraphModule`` records one forward per input shape into a CUDA graph and replays it,
so every kernel of the encoder (the fused Mamba kernels included) launches from the GPU's own
queue with no Python in between. It needs no tracing or compilation, so the mamba-ssm kernels
need no ``torch.library`` registration.

Graphs are only used where they are valid: CUDA inputs, gradients off (``torch.no_grad`` or
``torch.inference_mode``) and the wrapped module in eval mode. Anything else (training, CPU,
a new shape beyond ``max_graphs``) runs the module eagerly, so the wrapper can stay in place
for a whole recipe. Parameters must not be replaced after capture (in-place updates, such as
loading a checkpoint with ``load_state_dict``, are fine: the graph reads the same memory).
Under ``torch.autocast`` the graph is captured with the caller's autocast settings, and an
fp32 call never replays a graph captured under bf16 autocast (nor the reverse).

The recipes reach it through their hparams: ``inference_mode: cuda_graph`` (on the command
line ``--inference_mode=cuda_graph``) makes their Brains call :func:`set_inference_mode`, which
routes the encoder of the AST or Whisper lobe (``AST.encode``, ``Whisper.forward_encoder``;
its input has one shape per batch size, as both pad to a fixed number of frames) through a
``CUDAGraphModule`` for validation and test, while training stays eager.

Authors
 * speechbrain-mambadapter contributors 2026
"""

import contextlib
import logging
import sys

import torch
import torch.nn as nn

logger = logging.getLogger(__name__)

INFERENCE_MODES = ("eager", "cuda_graph")


def autocast_state(device_type):
    """The autocast settings in force for ``device_type``: ``(enabled, dtype)``.

    Arguments
    ---------
    device_type : str
        ``"cuda"``, ``"cpu"``, ...

    Returns
    -------
    tuple
        ``(True, dtype)`` inside an enabled ``torch.autocast`` for that device type,
        ``(False, None)`` otherwise (the dtype of a disabled autocast does not matter).

    Example
    -------
    >>> autocast_state("cpu")
    (False, None)
    >>> with torch.autocast("cpu", dtype=torch.bfloat16):
    ...     autocast_state("cpu")
    (True, torch.bfloat16)
    """
    if not torch.is_autocast_enabled(device_type):
        return (False, None)
    return (True, torch.get_autocast_dtype(device_type))


def _tensors(output):
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and all(isinstance(o, torch.Tensor) for o in output):
        return type(output)(output)
    raise TypeError(
        "CUDAGraphModule needs a module that returns a tensor or a tuple of tensors, got "
        f"{type(output).__name__}; wrap the module so that it returns tensors."
    )


@contextlib.contextmanager
def _hf_masks_as_eager():
    """During a capture, let Hugging Face models skip the attention mask they skip eagerly.

    transformers (5.17 at least; fixed by 5.23) decides whether an encoder without padding needs
    an attention mask with ``not is_tracing(padding_mask) and padding_mask is None or ...``, and
    counts a CUDA-graph capture as tracing: inside a capture it builds a full mask, which makes
    SDPA leave its flash kernel for the math one (x3.8 slower for AST-base at 590 tokens,
    batch 32, measured on an H100). With no padding mask there is nothing to inspect, so the
    eager answer (no mask) is safe to give during the capture too.
    """
    module = sys.modules.get("transformers.masking_utils")
    original = getattr(module, "_ignore_bidirectional_mask_sdpa", None)
    if original is None:
        yield
        return

    def ignore_mask(padding_mask, kv_length, local_attention_size=None, *args, **kwargs):
        if padding_mask is None and (local_attention_size is None or kv_length < local_attention_size):
            return True
        return original(padding_mask, kv_length, local_attention_size, *args, **kwargs)

    module._ignore_bidirectional_mask_sdpa = ignore_mask
    try:
        yield
    finally:
        module._ignore_bidirectional_mask_sdpa = original


class _Graph:
    """One captured forward: static inputs, static outputs, and the graph that links them."""

    def __init__(self, module, args, warmup, autocast):
        self.inputs = [a.clone() for a in args]
        enabled, dtype = autocast
        # The caller's autocast settings, but with autocast's cast cache off. Inside an enabled
        # torch.autocast (SpeechBrain evaluates under one for --eval_precision=bf16) the low-
        # precision copy of a weight that requires grad (adapter weights do) is made once and
        # cached until the outermost autocast exits, which frees it. A graph captured with the
        # cache on would replay on that freed memory, and would never see later in-place weight
        # updates (load_state_dict). With the cache off the casts are kernels of the graph,
        # redone from the current weights at every replay.
        with torch.autocast("cuda", dtype=dtype, enabled=enabled, cache_enabled=False):
            # Warm-up on a side stream (as PyTorch requires before capture) also lets lazy
            # initialisations, cuBLAS handles and autotuning happen outside the graph.
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(warmup):
                    module(*self.inputs)
            torch.cuda.current_stream().wait_stream(stream)
            self.graph = torch.cuda.CUDAGraph()
            # thread_local: only this thread's CUDA calls must be capture-safe; other threads
            # (NCCL's watchdog under torchrun, a DataLoader's pin-memory thread) may go on
            # querying events or allocating pinned memory while the encoder is captured.
            with torch.cuda.graph(self.graph, capture_error_mode="thread_local"), _hf_masks_as_eager():
                self.outputs = _tensors(module(*self.inputs))

    def __call__(self, args, clone):
        for static, new in zip(self.inputs, args):
            static.copy_(new)
        self.graph.replay()
        if not clone:
            return self.outputs
        if isinstance(self.outputs, torch.Tensor):
            return self.outputs.clone()
        return type(self.outputs)(o.clone() for o in self.outputs)


class CUDAGraphModule(nn.Module):
    """Run ``module``'s inference forward as a replayed CUDA graph, one graph per input shape.

    Arguments
    ---------
    module : torch.nn.Module
        Takes tensors only (positional) and returns a tensor or a tuple of tensors.
    max_graphs : int
        Shapes to capture; later new shapes run eagerly (each graph keeps its own memory).
    warmup : int
        Eager passes before a capture.
    clone_outputs : bool
        Return copies. With False the returned tensors are the graph's own buffers, which
        the next call overwrites (saves one copy of the output per call).

    Example
    -------
    >>> lin = torch.nn.Linear(4, 2)
    >>> fast = CUDAGraphModule(lin)
    >>> x = torch.randn(3, 4)
    >>> torch.equal(fast(x), lin(x))  # on CPU, or with gradients on, it runs the module eagerly
    True
    """

    def __init__(self, module, max_graphs=4, warmup=3, clone_outputs=True):
        super().__init__()
        if max_graphs < 0 or warmup < 1:
            raise ValueError(f"Need max_graphs >= 0 and warmup >= 1, got {max_graphs} and {warmup}.")
        self.module = module
        self.max_graphs = max_graphs
        self.warmup = warmup
        self.clone_outputs = clone_outputs
        self.captures = 0  # graphs captured so far (reset() does not lower it)
        self._graphs = {}

    def _graphable(self, args):
        return (
            not torch.is_grad_enabled()
            and not self.module.training
            and all(isinstance(a, torch.Tensor) and a.is_cuda for a in args)
        )

    def forward(self, *args):
        """Replay the graph captured for these input shapes (capturing it first), or run eagerly."""
        if not self._graphable(args):
            return self.module(*args)
        key = self._key(args)
        graph = self._graphs.get(key)
        if graph is None:
            if len(self._graphs) >= self.max_graphs:
                return self.module(*args)
            graph = self._graphs[key] = _Graph(self.module, args, self.warmup, autocast=key[0])
            self.captures += 1
            logger.info("CUDAGraphModule: captured %s for inputs %s", type(self.module).__name__, key)
        return graph(args, self.clone_outputs)

    def _key(self, args):
        """The graph of these inputs: one per autocast state and input shapes, dtypes and devices.

        The autocast state is part of it so that, e.g., an fp32 call never replays a graph
        captured under bf16 autocast.
        """
        device_type = args[0].device.type if args else "cuda"
        return autocast_state(device_type), tuple((a.shape, a.dtype, a.device) for a in args)

    def reset(self):
        """Drop every captured graph (call after replacing parameters or buffers)."""
        self._graphs.clear()


class _EncoderCall(nn.Module):
    """``lobe.<method>(inputs)`` as a module, through the class's method (not an instance override)."""

    def __init__(self, lobe, method):
        super().__init__()
        self.lobe = lobe
        self.method = method
        # CUDAGraphModule reads this flag; GraphedEncoder keeps training calls away from it, and
        # .eval() would switch the whole lobe to eval mode.
        self.training = False

    def forward(self, inputs):
        return getattr(type(self.lobe), self.method)(self.lobe, inputs)


class GraphedEncoder:
    """A lobe's encoder method that replays CUDA graphs in evaluation (made by :func:`graph_encoder`).

    While the lobe is in training mode it runs the method eagerly and drops the graphs, so their
    memory is free for training; in eval mode it goes through a ``CUDAGraphModule``, which
    captures at the first batch of each size. Not an ``nn.Module`` on purpose: set as an
    attribute of the lobe, a module would become its child, and the lobe's parameters would
    appear twice in its ``state_dict``.

    Arguments
    ---------
    lobe : torch.nn.Module
        The AST or Whisper lobe.
    method : str
        Name of its encoder method: a tensor in, a tensor out.
    max_graphs : int
        Batch sizes (input shapes) to capture; more run eagerly.
    """

    def __init__(self, lobe, method, max_graphs=4):
        self.lobe = lobe
        self.method = method
        self.graphs = CUDAGraphModule(_EncoderCall(lobe, method), max_graphs=max_graphs)

    def __call__(self, inputs):
        if self.lobe.training:
            self.graphs.reset()
            return self.graphs.module(inputs)
        return self.graphs(inputs)


def _unwrap(model):
    """The module inside ``DistributedDataParallel`` or ``DataParallel`` (SpeechBrain wraps its
    modules under torchrun); the model itself otherwise."""
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        return model.module
    return model


def _encoder_method(lobe):
    # Imported here: both lobes import transformers, which CUDAGraphModule does not need.
    from speechbrain.integrations.huggingface.whisper import Whisper

    from speechbrain_mambadapter.lobes.ast import AST

    if isinstance(lobe, AST):
        return "encode"
    if isinstance(lobe, Whisper):
        return "forward_encoder"
    raise TypeError(
        "inference_mode='cuda_graph' knows the encoders of speechbrain_mambadapter.lobes.ast.AST and "
        f"speechbrain.integrations.huggingface.whisper.Whisper, got a {type(lobe).__name__}. Use "
        "inference_mode='eager', or wrap a tensor-in, tensor-out part of the model in CUDAGraphModule."
    )


def _remove_graphs(lobe):
    for name, value in list(vars(lobe).items()):
        if isinstance(value, GraphedEncoder):
            delattr(lobe, name)


def graph_encoder(model, max_graphs=4):
    """Route the encoder of an AST or Whisper lobe through CUDA graphs in evaluation.

    The lobe's encoder method (``AST.encode``, ``Whisper.forward_encoder``) is replaced, on this
    instance only, by a :class:`GraphedEncoder`; the lobe's ``forward`` calls it as before, so
    nothing else changes: same module tree, same ``state_dict``, same (shared) parameters, and
    checkpoints loaded in place later are seen by the graphs. Graphs are only captured for CUDA
    inputs in eval mode with gradients off; anything else runs eagerly. Not for
    ``torch.compile``-d lobes. :func:`set_inference_mode` is the checked entry point.

    Arguments
    ---------
    model : torch.nn.Module
        ``speechbrain_mambadapter.lobes.ast.AST`` or SpeechBrain's Hugging Face ``Whisper``,
        possibly inside ``DistributedDataParallel``.
    max_graphs : int
        Input shapes (batch sizes) to capture; more run eagerly.

    Returns
    -------
    GraphedEncoder
        What the encoder method now is; ``.graphs`` is its ``CUDAGraphModule``.

    Example
    -------
    >>> from speechbrain_mambadapter.lobes.ast import AST, save_random_ast
    >>> ast = AST(source=save_random_ast(getfixture("tmp_path") / "ast")).eval()
    >>> keys = list(ast.state_dict())
    >>> graphed = graph_encoder(ast)
    >>> ast.encode is graphed, list(ast.state_dict()) == keys
    (True, True)
    >>> ast(torch.randn(2, 16000)).shape  # on CPU the encoder runs eagerly
    torch.Size([2, 32])
    """
    lobe = _unwrap(model)
    method = _encoder_method(lobe)
    graphed = GraphedEncoder(lobe, method, max_graphs)
    # An instance attribute shadows the class's method: the lobe's forward (also when called by
    # DistributedDataParallel) reaches the graphs through its usual self.<method>(...) call.
    setattr(lobe, method, graphed)
    return graphed


def set_inference_mode(model, mode, max_graphs=4):
    """Set how validation and test run the encoder of an AST or Whisper lobe (recipes'
    ``inference_mode``).

    Arguments
    ---------
    model : torch.nn.Module
        The lobe (possibly inside ``DistributedDataParallel``), on its device.
    mode : str
        ``"eager"``: PyTorch as is (removes graphs a previous call set). ``"cuda_graph"``: the
        encoder replays CUDA graphs in evaluation (:func:`graph_encoder`); training stays eager.
        Off CUDA it logs a warning and stays eager, so a CPU run of a GPU configuration works.
    max_graphs : int
        Input shapes (batch sizes) to capture; more run eagerly.

    Returns
    -------
    GraphedEncoder or None
        The graphed encoder, or None when the encoder runs eagerly.

    Raises
    ------
    ValueError
        If ``mode`` is not one of ``INFERENCE_MODES``.
    TypeError
        For ``"cuda_graph"`` with a model whose encoder this module does not know.

    Example
    -------
    >>> from speechbrain_mambadapter.lobes.ast import AST, save_random_ast
    >>> ast = AST(source=save_random_ast(getfixture("tmp_path") / "ast"))
    >>> set_inference_mode(ast, "cuda_graph") is None  # on CPU: a warning, and eager
    True
    >>> set_inference_mode(ast, "fast")
    Traceback (most recent call last):
    ...
    ValueError: inference_mode must be one of ('eager', 'cuda_graph'), got 'fast'.
    """
    if mode not in INFERENCE_MODES:
        raise ValueError(f"inference_mode must be one of {INFERENCE_MODES}, got {mode!r}.")
    lobe = _unwrap(model)
    _remove_graphs(lobe)
    if mode == "eager":
        return None
    _encoder_method(lobe)  # a model without a known encoder fails here, on CPU too
    parameter = next(lobe.parameters(), None)
    device = None if parameter is None else parameter.device
    if device is None or device.type != "cuda":
        logger.warning(
            "inference_mode=cuda_graph needs the model on a CUDA device, but %s is on %s: validation "
            "and test run eagerly. Pass --device=cuda:0 to use CUDA graphs (or --inference_mode=eager "
            "to silence this warning).",
            type(lobe).__name__,
            device,
        )
        return None
    graphed = graph_encoder(lobe, max_graphs)
    logger.info(
        "inference_mode=cuda_graph: the %s encoder (%s) replays CUDA graphs in validation and test, "
        "one per batch size; training runs eagerly.",
        type(lobe).__name__,
        graphed.method,
    )
    return graphed
