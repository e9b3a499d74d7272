"""Fast inference and training: replay a module's forward (and backward) as captured CUDA graphs.

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

Training has its own counterpart, ``CUDAGraphTrainingModule``: the forward *and* backward of a
module captured by ``torch.cuda.make_graphed_callables`` and replayed as one autograd node per
call. An eager MambAdapter training step is bound by the CPU issuing kernels; with the AST-base
encoder graphed, a step at batch 32 takes 42.7 ms instead of 70.6 ms on an H100 (bf16,
``benchmarks/train_graphs.py``). It is captured at the first training batch of each input shape
(``max_graphs`` of them, one by default: the recipes' fixed batch size), and only runs its graphs
on CUDA inputs with gradients on and the module in training mode.

The recipes reach both through their hparams: ``inference_mode: cuda_graph`` (on the command
line ``--inference_mode=cuda_graph``) and ``train_mode: cuda_graph`` (``--train_mode=cuda_graph``)
make their Brains call :func:`set_inference_mode` and :func:`set_train_mode`, which route the
encoder of the AST or Whisper lobe (``AST.encode``, ``Whisper.forward_encoder``; its input has
one shape per batch size, as both pad to a fixed number of frames) through a ``CUDAGraphModule``
for validation and test and through a ``CUDAGraphTrainingModule`` for training. The two settings
are independent: either, both or neither.

Authors
 * speechbrain-mambadapter contributors 2026
"""

import contextlib
import inspect
import logging
import sys

import torch
import torch.nn as nn

from speechbrain_mambadapter.recipe.distributed import is_distributed

logger = logging.getLogger(__name__)

INFERENCE_MODES = ("eager", "cuda_graph")
TRAIN_MODES = ("eager", "cuda_graph")


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


def _graph_outputs_own_gradients(grad_inputs, grad_outputs):
    # make_graphed_callables' backward returns views of the graph's static gradient buffers, and
    # autograd, seeing no other reference, stores such a view as a parameter's .grad instead of
    # copying it. The next backward replay would then overwrite that .grad before accumulating into
    # it: gradient accumulation (or a .grad zeroed in place) would give 2 x the last gradient
    # instead of the sum. A copy per call keeps every .grad the parameter's own.
    return tuple(None if g is None else g.clone() for g in grad_inputs)


@contextlib.contextmanager
def _thread_local_captures():
    """Make ``torch.cuda.graph`` capture in ``thread_local`` mode unless told otherwise, for
    ``make_graphed_callables`` of PyTorch versions that do not take ``capture_error_mode`` (it
    looks ``torch.cuda.graph`` up when it runs)."""
    original = torch.cuda.graph

    class ThreadLocalGraph(original):
        def __init__(self, *args, capture_error_mode="thread_local", **kwargs):
            super().__init__(*args, capture_error_mode=capture_error_mode, **kwargs)

    torch.cuda.graph = ThreadLocalGraph
    try:
        yield
    finally:
        torch.cuda.graph = original


def _make_graphed(module, sample, warmup):
    # allow_unused_input: the wrapped module may hold trainable parameters its forward does not use
    # (the Whisper lobe's decoder, e.g. a new language token's embedding row).
    options = {"num_warmup_iters": warmup, "allow_unused_input": True}
    # thread_local, as in _Graph: other threads (NCCL's watchdog under torchrun, a pin-memory
    # thread) may go on with their CUDA calls during the capture.
    if "capture_error_mode" in inspect.signature(torch.cuda.make_graphed_callables).parameters:
        return torch.cuda.make_graphed_callables(module, sample, capture_error_mode="thread_local", **options)
    with _thread_local_captures():
        return torch.cuda.make_graphed_callables(module, sample, **options)


class _Forward(nn.Module):
    """``module(*args)`` behind a module of its own: ``make_graphed_callables`` needs a module
    without hooks and replaces its ``forward``, so each captured graph gets a fresh one."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, *args):
        return self.module(*args)


class CUDAGraphTrainingModule(nn.Module):
    """Run ``module``'s training forward and backward as replayed CUDA graphs, one pair per input shape.

    At the first training call with new input shapes (CUDA inputs, gradients on, ``module`` in
    training mode), ``torch.cuda.make_graphed_callables`` runs ``warmup`` eager forward and
    backward passes on a copy of the inputs, then captures one forward and one backward graph
    under the caller's autocast settings (with autocast's cast cache off, which capture
    requires). Every later call with those shapes replays the forward graph inside one autograd
    node, whose backward replays the backward graph: the gradients leave the graph through that
    node and are accumulated into each parameter's ``.grad`` eagerly, so gradient accumulation
    sums as usual (:func:`set_train_mode` does not use it under ``DistributedDataParallel``,
    where the capture fails). Other calls run ``module`` eagerly: eval mode,
    gradients off, CPU inputs, and shapes beyond ``max_graphs`` (logged once per shape), such as
    the smaller last batch of an epoch.

    Constraints, from CUDA graphs: the outputs, and the activations the backward reads, are the
    graph's own buffers, overwritten by the next replay, so run one forward and then its backward
    before the next forward, as a training step does, and do not keep an output across steps;
    what the forward decides on the CPU (Python control flow, e.g. a LayerDrop draw) is fixed at
    capture; parameters must not be replaced or added after capture (in-place updates such as
    optimiser steps and ``load_state_dict`` are fine). Dropout is fine: each replay draws new
    numbers.
    Buffers (BatchNorm statistics) are reset after the capture's warm-up passes, so only the real
    batches update them. Each captured pair keeps the forward's activations in memory of its own,
    also while the module is in eval mode.

    Arguments
    ---------
    module : torch.nn.Module
        Takes tensors only (positional) and returns a tensor or a tuple of tensors. Only its
        parameters (``module.parameters()``) may be trained through the graph.
    max_graphs : int
        Input shapes to capture; later new shapes run eagerly.
    warmup : int
        Eager forward and backward passes before a capture.

    Example
    -------
    >>> lin = torch.nn.Linear(4, 2)
    >>> fast = CUDAGraphTrainingModule(lin)
    >>> x = torch.randn(3, 4)
    >>> torch.equal(fast(x), lin(x))  # on CPU it runs the module eagerly
    True
    >>> fast(x).sum().backward()
    >>> lin.weight.grad.shape
    torch.Size([2, 4])
    """

    def __init__(self, module, max_graphs=1, warmup=3):
        super().__init__()
        if max_graphs < 0 or warmup < 1:
            raise ValueError(f"Need max_graphs >= 0 and warmup >= 1, got {max_graphs} and {warmup}.")
        self.module = module
        self.max_graphs = max_graphs
        self.warmup = warmup
        self.captures = 0  # graphs captured so far (reset() does not lower it)
        self._graphs = {}
        self._eager_keys = set()

    def _graphable(self, args):
        return (
            torch.is_grad_enabled()
            and self.module.training
            and all(isinstance(a, torch.Tensor) and a.is_cuda for a in args)
        )

    def forward(self, *args):
        """Replay the graphs captured for these inputs (capturing them first), or run eagerly."""
        if not self._graphable(args):
            return self.module(*args)
        key = self._key(args)
        graphed = self._graphs.get(key)
        if graphed is None:
            if len(self._graphs) >= self.max_graphs:
                if key not in self._eager_keys:
                    self._eager_keys.add(key)
                    logger.info(
                        "CUDAGraphTrainingModule: %s trains eagerly on inputs of shape %s (graphs are "
                        "captured for the first max_graphs=%d input shapes only)",
                        type(self.module).__name__,
                        [tuple(a.shape) for a in args],
                        self.max_graphs,
                    )
                return self.module(*args)
            graphed = self._graphs[key] = self._capture(args, autocast=key[0])
            self.captures += 1
            logger.info(
                "CUDAGraphTrainingModule: captured the forward and backward of %s for inputs %s",
                type(self.module).__name__,
                key,
            )
        outputs = graphed(*args)
        tensors = (outputs,) if isinstance(outputs, torch.Tensor) else _tensors(outputs)
        node = next((o.grad_fn for o in tensors if o.grad_fn is not None), None)
        if node is not None:  # None when nothing in the module trains
            node.register_hook(_graph_outputs_own_gradients)
        return outputs

    def _capture(self, args, autocast):
        enabled, dtype = autocast
        # The inputs' requires_grad is part of the capture: real features come without one.
        sample = tuple(a.detach().clone().requires_grad_(a.requires_grad) for a in args)
        buffers = [(buffer, buffer.clone()) for buffer in self.module.buffers()]
        try:
            # Capture needs autocast's cast cache off (see _Graph for why it is safe anyway).
            caller_autocast = torch.autocast("cuda", dtype=dtype, enabled=enabled, cache_enabled=False)
            with caller_autocast, _hf_masks_as_eager():
                return _make_graphed(_Forward(self.module), sample, self.warmup)
        except RuntimeError as error:
            shapes = [tuple(a.shape) for a in args]
            raise RuntimeError(
                f"Capturing the training forward and backward of {type(self.module).__name__} as CUDA "
                f"graphs failed for inputs of shape {shapes}: {error}. If memory ran out, lower the "
                "batch size; if the module cannot be captured (it synchronises with the CPU or has "
                "data-dependent shapes), train it eagerly (train_mode: eager in the recipes)."
            ) from error
        finally:
            with torch.no_grad():
                for buffer, value in buffers:
                    buffer.copy_(value)

    def _key(self, args):
        """The graphs of these inputs: one pair per autocast state and input shapes, dtypes,
        devices and ``requires_grad``."""
        return autocast_state("cuda"), tuple((a.shape, a.dtype, a.device, a.requires_grad) for a in args)

    def reset(self):
        """Drop every captured graph (call after replacing parameters or buffers)."""
        self._graphs.clear()
        self._eager_keys.clear()


class _EncoderCall(nn.Module):
    """``lobe.<method>(inputs)`` as a module, through the class's method (not an instance override)."""

    def __init__(self, lobe, method, training=False):
        super().__init__()
        self.lobe = lobe
        self.method = method
        # The graph modules read this flag; GraphedEncoder calls the evaluation one (training=False)
        # only in eval mode and the training one only in training mode. Setting it with .train()
        # or .eval() would switch the whole lobe.
        self.training = training

    def forward(self, inputs):
        return getattr(type(self.lobe), self.method)(self.lobe, inputs)


class GraphedEncoder:
    """A lobe's encoder method that replays CUDA graphs (made by :func:`graph_encoder` and
    :func:`graph_encoder_training`).

    In eval mode it goes through ``graphs``, a ``CUDAGraphModule`` that captures at the first
    batch of each size, or runs eagerly when that is None. In training mode it drops the
    evaluation graphs, so that their memory is free for training, and goes through
    ``train_graphs``, a ``CUDAGraphTrainingModule`` (kept over evaluation: capturing it again
    every epoch would cost more than its memory), or runs eagerly when that is None. Not an
    ``nn.Module`` on purpose: set as an attribute of the lobe, a module would become its child,
    and the lobe's parameters would appear twice in its ``state_dict``.

    Arguments
    ---------
    lobe : torch.nn.Module
        The AST or Whisper lobe.
    method : str
        Name of its encoder method: a tensor in, a tensor out.
    max_graphs : int or None
        Batch sizes (input shapes) to capture for evaluation, more run eagerly; None: evaluation
        runs eagerly.
    train_max_graphs : int or None
        The same for training (None, the default: training runs eagerly).
    """

    def __init__(self, lobe, method, max_graphs=4, train_max_graphs=None):
        self.lobe = lobe
        self.method = method
        self.graph_evaluation(max_graphs)
        self.graph_training(train_max_graphs)

    def graph_evaluation(self, max_graphs):
        """Capture up to ``max_graphs`` input shapes for evaluation (new, empty graphs); None: eager."""
        self.graphs = None
        if max_graphs is not None:
            self.graphs = CUDAGraphModule(_EncoderCall(self.lobe, self.method), max_graphs=max_graphs)

    def graph_training(self, max_graphs):
        """Capture up to ``max_graphs`` input shapes for training (new, empty graphs); None: eager."""
        self.train_graphs = None
        if max_graphs is not None:
            encoder = _EncoderCall(self.lobe, self.method, training=True)
            self.train_graphs = CUDAGraphTrainingModule(encoder, max_graphs=max_graphs)

    def __call__(self, inputs):
        if self.lobe.training:
            if self.graphs is not None:
                self.graphs.reset()
            if self.train_graphs is not None:
                return self.train_graphs(inputs)
        elif self.graphs is not None:
            return self.graphs(inputs)
        return getattr(type(self.lobe), self.method)(self.lobe, inputs)


def _unwrap(model):
    """The module inside ``DistributedDataParallel`` or ``DataParallel`` (SpeechBrain wraps its
    modules under torchrun); the model itself otherwise."""
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        return model.module
    return model


def _encoder_method(lobe, option="inference_mode"):
    # Imported here: both lobes import transformers, which CUDAGraphModule does not need.
    from speechbrain.integrations.huggingface.whisper import Whisper

    from speechbrain_mambadapter.lobes.ast import AST

    if isinstance(lobe, AST):
        return "encode"
    if isinstance(lobe, Whisper):
        return "forward_encoder"
    wrapper = "CUDAGraphModule" if option == "inference_mode" else "CUDAGraphTrainingModule"
    raise TypeError(
        f"{option}='cuda_graph' knows the encoders of speechbrain_mambadapter.lobes.ast.AST and "
        f"speechbrain.integrations.huggingface.whisper.Whisper, got a {type(lobe).__name__}. Use "
        f"{option}='eager', or wrap a tensor-in, tensor-out part of the model in {wrapper}."
    )


def _installed(lobe):
    """The ``GraphedEncoder`` set on ``lobe``, or None."""
    return next((value for value in vars(lobe).values() if isinstance(value, GraphedEncoder)), None)


def _install(lobe, method):
    graphed = _installed(lobe)
    if graphed is None:
        graphed = GraphedEncoder(lobe, method, max_graphs=None)
        # An instance attribute shadows the class's method: the lobe's forward (also when called
        # by DistributedDataParallel) reaches the graphs through its usual self.<method>(...) call.
        setattr(lobe, method, graphed)
    return graphed


def _uninstall_if_idle(lobe):
    """Give the lobe its class's encoder method back once neither evaluation nor training graphs."""
    graphed = _installed(lobe)
    if graphed is not None and graphed.graphs is None and graphed.train_graphs is None:
        delattr(lobe, graphed.method)


def _cuda_device(lobe):
    """``(on_cuda, device)``: whether the lobe's parameters are on a CUDA device, and that device
    (None for a lobe without parameters)."""
    parameter = next(lobe.parameters(), None)
    device = None if parameter is None else parameter.device
    return (device is not None and device.type == "cuda"), device


def graph_encoder(model, max_graphs=4):
    """Route the encoder of an AST or Whisper lobe through CUDA graphs in evaluation.

    The lobe's encoder method (``AST.encode``, ``Whisper.forward_encoder``) is replaced, on this
    instance only, by a :class:`GraphedEncoder` (the one already there, if
    :func:`graph_encoder_training` set it, keeps its training graphs); the lobe's ``forward`` calls
    it as before, so nothing else changes: same module tree, same ``state_dict``, same (shared)
    parameters, and checkpoints loaded in place later are seen by the graphs. Graphs are only
    captured for CUDA inputs in eval mode with gradients off; anything else runs eagerly. Not
    for ``torch.compile``-d lobes. :func:`set_inference_mode` is the checked entry point.

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
    graphed = _install(lobe, _encoder_method(lobe))
    graphed.graph_evaluation(max_graphs)
    return graphed


def graph_encoder_training(model, max_graphs=1):
    """Route the training forward and backward of an AST or Whisper lobe's encoder through CUDA graphs.

    As :func:`graph_encoder`, for training: the lobe's encoder method becomes (or stays) a
    :class:`GraphedEncoder`, whose ``train_graphs`` (a :class:`CUDAGraphTrainingModule`) captures
    the encoder's forward and backward at the first training batch of each input shape, up to
    ``max_graphs`` shapes, and replays them for later batches of those shapes; evaluation graphs
    set by :func:`graph_encoder` stay. The module tree, the ``state_dict`` and the parameters do
    not change. Only the encoder is graphed: the features, the rest of the model (Whisper's
    decoder, the head), the loss and the optimiser step stay eager. :func:`set_train_mode` is the
    checked entry point.

    Arguments
    ---------
    model : torch.nn.Module
        ``speechbrain_mambadapter.lobes.ast.AST`` or SpeechBrain's Hugging Face ``Whisper``
        (not inside ``DistributedDataParallel``: the capture fails there).
    max_graphs : int
        Input shapes (batch sizes) to capture; more run eagerly. One suits a fixed batch size,
        whose epochs end with one smaller batch.

    Returns
    -------
    GraphedEncoder
        What the encoder method now is; ``.train_graphs`` is its ``CUDAGraphTrainingModule``.

    Example
    -------
    >>> from speechbrain_mambadapter.lobes.ast import AST, save_random_ast
    >>> ast = AST(source=save_random_ast(getfixture("tmp_path") / "ast"))
    >>> keys = list(ast.state_dict())
    >>> graphed = graph_encoder_training(ast)
    >>> ast.encode is graphed, graphed.graphs is None, list(ast.state_dict()) == keys
    (True, True, True)
    >>> graph_encoder(ast) is graphed and graphed.train_graphs is not None  # both, on one lobe
    True
    >>> ast.train()(torch.randn(2, 16000)).shape  # on CPU the encoder runs eagerly
    torch.Size([2, 32])
    """
    lobe = _unwrap(model)
    graphed = _install(lobe, _encoder_method(lobe, option="train_mode"))
    graphed.graph_training(max_graphs)
    return graphed


def set_inference_mode(model, mode, max_graphs=4):
    """Set how validation and test run the encoder of an AST or Whisper lobe (recipes'
    ``inference_mode``).

    Arguments
    ---------
    model : torch.nn.Module
        The lobe (possibly inside ``DistributedDataParallel``), on its device.
    mode : str
        ``"eager"``: PyTorch as is (removes evaluation graphs a previous call set). ``"cuda_graph"``:
        the encoder replays CUDA graphs in evaluation (:func:`graph_encoder`). Training is left as
        :func:`set_train_mode` set it. Off CUDA it logs a warning and stays eager, so a CPU run of a
        GPU configuration works.
    max_graphs : int
        Input shapes (batch sizes) to capture; more run eagerly.

    Returns
    -------
    GraphedEncoder or None
        The graphed encoder, or None when evaluation runs eagerly.

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
    if mode == "cuda_graph":
        _encoder_method(lobe)  # a model without a known encoder fails here, on CPU too
    graphed = _installed(lobe)
    if graphed is not None:
        graphed.graph_evaluation(None)
        _uninstall_if_idle(lobe)
    if mode == "eager":
        return None
    on_cuda, device = _cuda_device(lobe)
    if not on_cuda:
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
        "one per batch size.",
        type(lobe).__name__,
        graphed.method,
    )
    return graphed


def set_train_mode(model, mode, max_graphs=1):
    """Set how training runs the encoder of an AST or Whisper lobe (recipes' ``train_mode``).

    With ``"cuda_graph"`` the encoder's forward and backward are captured as CUDA graphs at the
    first training batch (:func:`graph_encoder_training`, :class:`CUDAGraphTrainingModule`) and
    replayed for every later batch of that shape; batches of other shapes (an epoch's last,
    smaller batch) run eagerly, which is logged once. It composes with bf16 or fp16 autocast
    (``--precision``) and with gradient accumulation. Under ``DistributedDataParallel`` or a
    multi-process ``torch.distributed`` group it logs a warning and trains eagerly: capturing
    the backward inside DDP fails (measured on H100 with torch 2.11). The encoder's outputs are
    the graph's buffers, overwritten by the next training forward: one forward per step, as
    SpeechBrain's ``fit_batch`` runs.

    Arguments
    ---------
    model : torch.nn.Module
        The lobe (possibly inside ``DistributedDataParallel``, then trained eagerly), on its
        device.
    mode : str
        ``"eager"``: PyTorch as is (removes training graphs a previous call set). ``"cuda_graph"``:
        the encoder trains through CUDA graphs. Evaluation is left as :func:`set_inference_mode`
        set it. Off CUDA it logs a warning and stays eager, so a CPU run of a GPU configuration
        works.
    max_graphs : int
        Input shapes (batch sizes) to capture; more run eagerly.

    Returns
    -------
    GraphedEncoder or None
        The graphed encoder, or None when training runs eagerly.

    Raises
    ------
    ValueError
        If ``mode`` is not one of ``TRAIN_MODES``.
    TypeError
        For ``"cuda_graph"`` with a model whose encoder this module does not know.

    Example
    -------
    >>> from speechbrain_mambadapter.lobes.ast import AST, save_random_ast
    >>> ast = AST(source=save_random_ast(getfixture("tmp_path") / "ast"))
    >>> set_train_mode(ast, "cuda_graph") is None  # on CPU: a warning, and eager
    True
    >>> set_train_mode(ast, "graph")
    Traceback (most recent call last):
    ...
    ValueError: train_mode must be one of ('eager', 'cuda_graph'), got 'graph'.
    """
    if mode not in TRAIN_MODES:
        raise ValueError(f"train_mode must be one of {TRAIN_MODES}, got {mode!r}.")
    lobe = _unwrap(model)
    if mode == "cuda_graph":
        _encoder_method(lobe, option="train_mode")  # fails here for an unknown model, on CPU too
    graphed = _installed(lobe)
    if graphed is not None:
        graphed.graph_training(None)
        _uninstall_if_idle(lobe)
    if mode == "eager":
        return None
    if isinstance(model, nn.parallel.DistributedDataParallel) or is_distributed():
        # Measured on H100, torch 2.11: capturing the backward inside DDP fails
        # (cudaErrorStreamCaptureInvalidated): DDP keeps the parameters' AccumulateGrad nodes,
        # made on the default stream, while make_graphed_callables captures on its own stream.
        logger.warning(
            "train_mode=cuda_graph is not supported with DistributedDataParallel (multi-GPU "
            "training): training runs eagerly. inference_mode=cuda_graph still applies. Train on "
            "one GPU to use training graphs (or --train_mode=eager to silence this warning)."
        )
        return None
    on_cuda, device = _cuda_device(lobe)
    if not on_cuda:
        logger.warning(
            "train_mode=cuda_graph needs the model on a CUDA device, but %s is on %s: training runs "
            "eagerly. Pass --device=cuda:0 to use CUDA graphs (or --train_mode=eager to silence this "
            "warning).",
            type(lobe).__name__,
            device,
        )
        return None
    graphed = graph_encoder_training(lobe, max_graphs)
    logger.info(
        "train_mode=cuda_graph: the %s encoder (%s) trains through CUDA graphs of its forward and "
        "backward, captured at the first training batch; batches of other sizes (max_graphs=%d) run "
        "eagerly.",
        type(lobe).__name__,
        graphed.method,
        max_graphs,
    )
    return graphed
