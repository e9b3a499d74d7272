"""The workarounds for versions of other libraries: each changes only what it says, only while
it is in force."""

import inspect

import torch

from speechbrain_mambadapter.compat import _thread_local_captures, ast_encoder_layers, hf_masks_as_eager


def test_hf_mask_workaround_only_during_capture_and_only_without_padding():
    from transformers import masking_utils

    original = masking_utils._ignore_bidirectional_mask_sdpa
    with hf_masks_as_eager():
        patched = masking_utils._ignore_bidirectional_mask_sdpa
        assert patched is not original
        assert patched(None, 590) is True  # no padding mask: no mask, as in eager
        padding = torch.tensor([[1, 1, 0]], dtype=torch.bool)
        assert patched(padding, 3) == original(padding, 3)  # a real padding mask is left to HF
    assert masking_utils._ignore_bidirectional_mask_sdpa is original


def test_captures_default_to_thread_local_only_inside_the_shim():
    """For PyTorch versions whose make_graphed_callables takes no capture_error_mode."""
    original = torch.cuda.graph
    with _thread_local_captures():
        assert issubclass(torch.cuda.graph, original)
        mode = inspect.signature(torch.cuda.graph.__init__).parameters["capture_error_mode"]
        assert mode.default == "thread_local"
    assert torch.cuda.graph is original


def test_ast_encoder_layers_reads_both_layouts():
    blocks = torch.nn.ModuleList([torch.nn.Linear(2, 2)])
    new_layout = torch.nn.Module()
    new_layout.layers = blocks
    old_layout = torch.nn.Module()
    old_layout.encoder = torch.nn.Module()
    old_layout.encoder.layer = blocks
    assert ast_encoder_layers(new_layout) is blocks and ast_encoder_layers(old_layout) is blocks
