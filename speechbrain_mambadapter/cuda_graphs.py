"""CUDA graphs: replay a module's forward (and backward) as captured CUDA graphs.

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
call; an eager MambAdapter training step is bound by the CPU issuing kernels
(``benchmarks/train_graphs.py`` measures the difference). It is captured at the first training
batch of each input shape (``max_graphs`` of them, one by default: a fixed batch size), and only
runs its graphs on CUDA inputs with gradients on and the module in training mode.

:func:`graph_method` puts both on one method of a module (a tensor in, a tensor out, such as an
encoder), on that instance only, without changing the module tree or its ``state_dict``. The
recipes do not call it directly: ``speechbrain_mambadapter.recipe.modes.set_graph_mode`` knows
which method of which lobe to graph and when graphs cannot be used.

Authors
 * speechbrain-mambadapter contributors 2026
"""

import logging

import torch
import torch.nn as nn

from speechbrain_mambadapter.compat import hf_masks_as_eager, make_graphed_callables_thread_local

logger = logging.getLogger(__name__)


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
            with torch.cuda.graph(self.graph, capture_error_mode="thread_local"), hf_masks_as_eager():
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


def _make_graphed(module, sample, warmup):
    # allow_unused_input: the wrapped module may hold trainable parameters its forward does not use
    # (graph_method graphs one method of a model: the rest of the model, e.g. a decoder).
    # thread_local, as in _Graph: other threads (NCCL's watchdog under torchrun, a pin-memory
    # thread) may go on with their CUDA calls during the capture.
    return make_graphed_callables_thread_local(
        module, sample, num_warmup_iters=warmup, allow_unused_input=True
    )


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
    sums as usual (not under ``DistributedDataParallel``, where the capture fails). Other calls
    run ``module`` eagerly: eval mode, gradients off, CPU inputs, and shapes beyond
    ``max_graphs`` (logged once per shape), such as the smaller last batch of an epoch.

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
            with caller_autocast, hf_masks_as_eager():
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


class _MethodCall(nn.Module):
    """``owner.<method>(inputs)`` as a module, through the class's method (not an instance override)."""

    def __init__(self, owner, method, training=False):
        super().__init__()
        self.owner = owner
        self.method = method
        # The graph modules read this flag; GraphedMethod calls the evaluation one (training=False)
        # only in eval mode and the training one only in training mode. Setting it with .train()
        # or .eval() would switch the whole owner.
        self.training = training

    def forward(self, *inputs):
        return getattr(type(self.owner), self.method)(self.owner, *inputs)


class GraphedMethod:
    """A module's method that replays CUDA graphs; :func:`graph_method` installs it.

    In eval mode it goes through ``graphs``, a ``CUDAGraphModule`` that captures at the first
    batch of each size, or runs eagerly when that is None. In training mode it drops the
    evaluation graphs, so that their memory is free for training, and goes through
    ``train_graphs``, a ``CUDAGraphTrainingModule`` (kept over evaluation: capturing it again
    every epoch would cost more than its memory), or runs eagerly when that is None.
    ``prepare``, when set, is called before each call as ``prepare(evaluating)``, ``evaluating``
    being True for a call that the evaluation graphs may take (eval mode, gradients off); a True
    return means that it replaced tensors the captured graphs read, which are then captured again
    (the graph modes fold MambAdapters there: ``speechbrain_mambadapter.recipe.modes``). Not an
    ``nn.Module`` on purpose: set as an attribute of its owner, a module would become its child,
    and the owner's parameters would appear twice in its ``state_dict``.

    Arguments
    ---------
    owner : torch.nn.Module
        The module whose method this is.
    method : str
        Name of the method: tensors in (positional), a tensor out.

    Example
    -------
    >>> graphed = GraphedMethod(torch.nn.Linear(4, 2), "forward")
    >>> graphed.graphs is None and graphed.train_graphs is None  # eager until told otherwise
    True
    >>> graphed.graph_evaluation(4)
    >>> graphed(torch.randn(3, 4)).shape  # on CPU, or with gradients on, it runs eagerly
    torch.Size([3, 2])
    """

    def __init__(self, owner, method):
        self.owner = owner
        self.method = method
        self.graphs = None
        self.train_graphs = None
        self.prepare = None

    def graph_evaluation(self, max_graphs):
        """Capture up to ``max_graphs`` input shapes for evaluation (new, empty graphs); None: eager."""
        self.graphs = None
        if max_graphs is not None:
            self.graphs = CUDAGraphModule(_MethodCall(self.owner, self.method), max_graphs=max_graphs)

    def graph_training(self, max_graphs):
        """Capture up to ``max_graphs`` input shapes for training (new, empty graphs); None: eager."""
        self.train_graphs = None
        if max_graphs is not None:
            call = _MethodCall(self.owner, self.method, training=True)
            self.train_graphs = CUDAGraphTrainingModule(call, max_graphs=max_graphs)

    def __call__(self, *inputs):
        if self.owner.training:
            if self.graphs is not None:
                self.graphs.reset()
            self._prepare(False)
            if self.train_graphs is not None:
                return self.train_graphs(*inputs)
        elif self.graphs is not None:
            self._prepare(not torch.is_grad_enabled())
            return self.graphs(*inputs)
        else:
            self._prepare(False)
        return getattr(type(self.owner), self.method)(self.owner, *inputs)

    def _prepare(self, evaluating):
        if self.prepare is not None and self.prepare(evaluating) and self.graphs is not None:
            self.graphs.reset()


def graph_method(module, method, max_graphs, training=False):
    """Replay ``module.<method>`` as CUDA graphs in evaluation or in training, on this instance only.

    The method is replaced, on ``module`` only, by a :class:`GraphedMethod` (the one already
    there keeps the graphs of the other stage); callers such as the module's ``forward`` reach it
    through their usual ``self.<method>(...)`` call, also under ``DistributedDataParallel``. So
    nothing else changes: same module tree, same ``state_dict``, same (shared) parameters, and
    checkpoints loaded in place later are seen by the graphs. Once neither stage has graphs, the
    instance gets its class's method back. Not for ``torch.compile``-d modules.

    Evaluation graphs (:class:`CUDAGraphModule`) are captured for CUDA inputs in eval mode with
    gradients off; training graphs (:class:`CUDAGraphTrainingModule`, forward and backward) for
    CUDA inputs in training mode with gradients on; anything else runs eagerly. Only the method
    is graphed: the rest of the model, the loss and the optimiser step stay eager.

    Arguments
    ---------
    module : torch.nn.Module
        The module (not a ``DistributedDataParallel`` wrapper: the module inside it).
    method : str
        Name of a method of ``module`` that takes tensors (positional; one per call shape, e.g.
        features and their lengths) and returns a tensor (or a tuple of tensors), e.g. an encoder's.
    max_graphs : int or None
        Input shapes (batch sizes) to capture for that stage (new, empty graphs), more run
        eagerly; None: that stage runs eagerly (its graphs are dropped).
    training : bool
        False: set the evaluation graphs; True: the training graphs.

    Returns
    -------
    GraphedMethod or None
        What ``module.<method>`` now is; None when it is the class's method again.

    Example
    -------
    >>> model = torch.nn.Linear(4, 2)
    >>> keys = list(model.state_dict())
    >>> graphed = graph_method(model, "forward", max_graphs=4)
    >>> model.forward is graphed, list(model.state_dict()) == keys
    (True, True)
    >>> graph_method(model, "forward", max_graphs=1, training=True) is graphed  # both, on one module
    True
    >>> model(torch.randn(3, 4)).shape  # on CPU the method runs eagerly
    torch.Size([3, 2])
    >>> graph_method(model, "forward", None) is graphed  # the training graphs stay
    True
    >>> graph_method(model, "forward", None, training=True) is None, "forward" in vars(model)
    (True, False)
    """
    graphed = vars(module).get(method)
    if not isinstance(graphed, GraphedMethod):
        if max_graphs is None:
            return None
        if not callable(getattr(type(module), method, None)):
            raise AttributeError(
                f"{type(module).__name__} has no method {method!r} to replay as CUDA graphs."
            )
        graphed = GraphedMethod(module, method)
        # An instance attribute shadows the class's method.
        setattr(module, method, graphed)
    if training:
        graphed.graph_training(max_graphs)
    else:
        graphed.graph_evaluation(max_graphs)
    if graphed.graphs is None and graphed.train_graphs is None:
        delattr(module, method)
        return None
    return graphed
