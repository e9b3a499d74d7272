"""Workarounds for versions of other libraries (PyTorch, transformers), kept in one place.

Each function here exists because some release of a library this package runs on behaves
differently from the others; its docstring names the library, what differs and why the
workaround is safe, so that it can be deleted once those releases are no longer supported.

* :func:`hf_masks_as_eager`: transformers counts a CUDA-graph capture as tracing and builds a
  full attention mask there, which costs the flash kernel.
* :func:`make_graphed_callables_thread_local`: ``torch.cuda.make_graphed_callables`` takes no
  ``capture_error_mode`` in some PyTorch releases.
* :func:`ast_encoder_layers`: transformers 5 moved ``ASTModel``'s transformer blocks.
* :func:`quiet_speechbrain_whisper_deprecations`: SpeechBrain 1.1's Hugging Face wrappers call
  transformers APIs that transformers 5.2x deprecates; the warnings say nothing a user can act on.

Authors
 * speechbrain-mambadapter contributors 2026
"""

import contextlib
import inspect
import logging
import sys
import warnings

import torch


@contextlib.contextmanager
def hf_masks_as_eager():
    """During a capture, let Hugging Face models skip the attention mask they skip eagerly.

    Some transformers releases (5.17 at least, not 5.23) decide whether an encoder without padding
    needs an attention mask with ``not is_tracing(padding_mask) and padding_mask is None or ...``,
    and count a CUDA-graph capture as tracing: inside a capture they build a full mask, which
    makes SDPA leave its flash kernel for the math one (several times slower for AST-base; see
    ``benchmarks/RESULTS.md``). With no padding mask there is nothing to inspect, so the eager
    answer (no mask) is safe to give during the capture too. A transformers without that
    function is left as it is.

    Example
    -------
    >>> with hf_masks_as_eager():  # around a capture; outside one it changes no result
    ...     pass
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


def make_graphed_callables_thread_local(callables, sample_args, **kwargs):
    """``torch.cuda.make_graphed_callables`` capturing in ``thread_local`` mode, on every PyTorch.

    In ``thread_local`` mode only the capturing thread's CUDA calls must be capture-safe: other
    threads (NCCL's watchdog under torchrun, a DataLoader's pin-memory thread) may go on with
    theirs. PyTorch releases whose ``make_graphed_callables`` takes no ``capture_error_mode``
    get it through ``torch.cuda.graph``, which they look up when they run.

    Arguments
    ---------
    callables : torch.nn.Module or tuple
        As for ``torch.cuda.make_graphed_callables``.
    sample_args : tuple
        As for ``torch.cuda.make_graphed_callables``.
    **kwargs
        Its other arguments (``num_warmup_iters``, ``allow_unused_input``, ...).

    Returns
    -------
    What ``torch.cuda.make_graphed_callables`` returns.
    """
    if "capture_error_mode" in inspect.signature(torch.cuda.make_graphed_callables).parameters:
        return torch.cuda.make_graphed_callables(
            callables, sample_args, capture_error_mode="thread_local", **kwargs
        )
    with _thread_local_captures():
        return torch.cuda.make_graphed_callables(callables, sample_args, **kwargs)


def ast_encoder_layers(model):
    """The transformer blocks of a transformers ``ASTModel``, in either layout.

    transformers 5 keeps them at ``model.layers``; 4.x at ``model.encoder.layer``.

    Arguments
    ---------
    model : transformers.ASTModel

    Returns
    -------
    torch.nn.ModuleList

    Example
    -------
    >>> from transformers import ASTConfig, ASTModel
    >>> config = ASTConfig(hidden_size=8, num_hidden_layers=2, num_attention_heads=2, intermediate_size=8)
    >>> len(ast_encoder_layers(ASTModel(config)))
    2
    """
    if hasattr(model, "layers"):
        return model.layers
    return model.encoder.layer


def quiet_speechbrain_whisper_deprecations():
    """Silence the deprecation notes every Whisper run of SpeechBrain 1.1 prints with transformers 5.2x.

    SpeechBrain's ``HFTransformersInterface`` calls ``gradient_checkpointing_disable`` (renamed
    ``activation_checkpointing_disable`` in transformers 5.2x) and its ``Whisper.forward_decoder``
    passes ``past_key_values`` to the decoder (renamed ``cache``), which transformers reports both
    as FutureWarnings and once through its own logger. Both still work; the messages concern
    SpeechBrain's code, not the user's. Only these messages are filtered, by their text, so any
    other deprecation still shows.

    Example
    -------
    >>> quiet_speechbrain_whisper_deprecations()
    >>> with warnings.catch_warnings(record=True) as seen:
    ...     warnings.simplefilter("always")
    ...     quiet_speechbrain_whisper_deprecations()
    ...     warnings.warn("`gradient_checkpointing_disable` is deprecated ...", FutureWarning)
    ...     warnings.warn("something else is deprecated", FutureWarning)
    >>> [str(w.message) for w in seen]
    ['something else is deprecated']
    """
    for name in ("gradient_checkpointing_disable", "past_key_values"):
        warnings.filterwarnings("ignore", message=f"`{name}` is deprecated", category=FutureWarning)
    transformers_log = logging.getLogger("transformers.utils.generic")
    if not any(isinstance(f, _DropMessage) for f in transformers_log.filters):
        transformers_log.addFilter(_DropMessage("`past_key_values`/`cache_params` are deprecated"))


class _DropMessage(logging.Filter):
    """Drops the log records whose message starts with ``prefix``."""

    def __init__(self, prefix):
        super().__init__()
        self.prefix = prefix

    def filter(self, record):
        return not record.getMessage().startswith(self.prefix)
