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

Authors
 * speechbrain-mambadapter contributors 2026
"""

import logging

import torch
import torch.nn as nn

logger = logging.getLogger(__name__)


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

    def __init__(self, module, args, warmup):
        self.inputs = [a.clone() for a in args]
        # Warm-up on a side stream (as PyTorch requires before capture) also lets lazy
        # initialisations, cuBLAS handles and autotuning happen outside the graph.
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(warmup):
                module(*self.inputs)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
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
        key = tuple((a.shape, a.dtype, a.device) for a in args)
        graph = self._graphs.get(key)
        if graph is None:
            if len(self._graphs) >= self.max_graphs:
                return self.module(*args)
            graph = self._graphs[key] = _Graph(self.module, args, self.warmup)
            logger.info("CUDAGraphModule: captured %s for input shapes %s", type(self.module).__name__, key)
        return graph(args, self.clone_outputs)

    def reset(self):
        """Drop every captured graph (call after replacing parameters or buffers)."""
        self._graphs.clear()
