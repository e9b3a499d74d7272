"""Merging MambAdapter for inference: W_down folded into in_proj, alpha·W_up into out_proj."""

import pytest
import torch
from speechbrain.lobes.models.transformer.Transformer import TransformerEncoder

from speechbrain_mambadapter import inject
from speechbrain_mambadapter.tuners import MambAdapter, merge_mambadapter, unmerge_mambadapter
from speechbrain_mambadapter.tuners.mambadapter import SharedProjections


def trained_like(module, seed=0):
    """Move every trainable weight away from its initialisation (W_up starts at zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return module


@pytest.mark.parametrize("direction", ["causal", "inner", "ext"])
@pytest.mark.parametrize("use_alpha", [True, False])
def test_merged_adapter_gives_the_same_output(direction, use_alpha):
    shared = SharedProjections(16, 4)
    adapter = trained_like(MambAdapter(16, 4, shared, direction=direction, d_state=4, use_alpha=use_alpha))
    adapter.eval()
    x = torch.randn(3, 9, 16)
    lengths = torch.tensor([1.0, 0.6, 0.3])
    state = {k: v.clone() for k, v in adapter.state_dict().items()}
    before = adapter(x, lengths)
    assert merge_mambadapter(adapter) == 1
    assert adapter.merged_blocks == (2 if direction == "ext" else 1)
    torch.testing.assert_close(adapter(x, lengths), before, rtol=1e-5, atol=1e-6)
    # The folded matrices are buffers outside the state_dict: checkpoints do not change.
    assert adapter.state_dict().keys() == state.keys()
    assert all(torch.equal(v, state[k]) for k, v in adapter.state_dict().items())
    assert unmerge_mambadapter(adapter) == 1 and adapter.merged_blocks == 0
    assert not any(name.startswith("merged_") for name, _ in adapter.named_buffers())
    torch.testing.assert_close(adapter(x, lengths), before)


def test_merge_on_an_injected_encoder_and_again_after_the_weights_change():
    torch.manual_seed(0)
    encoder = inject(TransformerEncoder(num_layers=2, nhead=2, d_ffn=16, d_model=8), method="mambadapter",
                     placement="houlsby", rank=4, d_state=4)  # fmt: skip
    trained_like(encoder).eval()
    x = torch.randn(2, 7, 8)
    before = encoder(x)[0]
    assert merge_mambadapter(encoder) == 4
    torch.testing.assert_close(encoder(x)[0], before, rtol=1e-5, atol=1e-6)
    trained_like(encoder, seed=1)  # training went on: the merged matrices are stale until merged again
    assert unmerge_mambadapter(encoder) == 4
    expected = encoder(x)[0]
    merge_mambadapter(encoder)
    torch.testing.assert_close(encoder(x)[0], expected, rtol=1e-5, atol=1e-6)


def test_training_a_merged_adapter_is_refused():
    adapter = MambAdapter(16, 4, SharedProjections(16, 4), d_state=4)
    merge_mambadapter(adapter)
    with pytest.raises(RuntimeError, match="unmerge_mambadapter"):
        adapter.train()(torch.randn(1, 3, 16))


def test_adapters_without_mamba_are_left_alone():
    adapter = MambAdapter(16, 4, SharedProjections(16, 4), use_mamba=False)
    assert merge_mambadapter(adapter) == 0 and adapter.merged_blocks == 0


def test_merging_again_refreshes_in_place_only_after_the_weights_change():
    adapter = trained_like(MambAdapter(16, 4, SharedProjections(16, 4), d_state=4)).eval()
    x = torch.randn(2, 7, 16)
    with torch.inference_mode():  # as evaluation may call it: the buffers must stay writable
        adapter.merge()
    buffers = {name: b.data_ptr() for name, b in adapter.named_buffers()}
    adapter.merge()
    assert {name: b.data_ptr() for name, b in adapter.named_buffers()} == buffers
    folded = adapter.merged_0_in_weight.clone()
    adapter.load_state_dict({k: v + 0.1 for k, v in adapter.state_dict().items()})  # in place
    adapter.merge()
    assert {name: b.data_ptr() for name, b in adapter.named_buffers()} == buffers  # same memory
    assert not torch.equal(adapter.merged_0_in_weight, folded)
    got = adapter(x)
    adapter.unmerge()
    torch.testing.assert_close(got, adapter(x), rtol=1e-5, atol=1e-6)


def test_merging_after_a_dtype_change_folds_the_converted_weights():
    adapter = trained_like(MambAdapter(16, 4, SharedProjections(16, 4), d_state=4)).eval()
    adapter.merge()
    adapter.to(torch.float64)  # new storage for every parameter (the buffers are converted too)
    adapter.projections.to(torch.float64)
    adapter.merge()
    assert adapter.merged_0_in_weight.dtype == torch.float64
    x = torch.randn(2, 7, 16, dtype=torch.float64)
    got = adapter(x)
    adapter.unmerge()
    torch.testing.assert_close(got, adapter(x), rtol=1e-10, atol=1e-12)


def test_folding_inside_autocast_is_done_in_full_precision():
    """Evaluation in bf16 runs under autocast: the folded matrices must not be bf16 products."""
    adapter = trained_like(MambAdapter(16, 4, SharedProjections(16, 4), d_state=4)).eval()
    adapter.merge()
    expected = {name: b.clone() for name, b in adapter.named_buffers() if name.startswith("merged_")}
    adapter.unmerge()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        adapter.merge()
    for name, value in expected.items():
        assert torch.equal(getattr(adapter, name), value), name
