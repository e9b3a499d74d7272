"""Parallel adapters hold only their rank-r code between the sub-layer's input and output hooks."""

import pytest
import torch
from transformers import WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from speechbrain_mambadapter import Bottleneck, ConformerAdapter, MambAdapter, SharedProjections, inject
from speechbrain_mambadapter.tuners.parallel import _ParallelTap, set_adapter_overlap

ADAPTERS = {
    "mambadapter": lambda: MambAdapter(16, 4, SharedProjections(16, 4), d_state=4, dropout=0.0),
    "bottleneck": lambda: Bottleneck(16, 4),
    "conformer": lambda: ConformerAdapter(16, 4, kernel_size=3),
}


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_decode_of_encode_is_forward_and_the_code_is_rank_wide(name):
    torch.manual_seed(0)
    adapter = ADAPTERS[name]().eval()
    params = list(adapter.parameters())
    if name == "mambadapter":  # the shared projections are held by reference, not registered
        params += list(adapter.projections.parameters())
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn_like(p) * 0.1)  # leave the zero initialisation
    x = torch.randn(2, 7, 16)
    code = adapter.encode(x)
    assert code.numel() == 2 * 7 * 4
    torch.testing.assert_close(adapter.decode(code), adapter(x))
    assert adapter(x).abs().sum() > 0


@pytest.mark.parametrize("method,kwargs", [("mambadapter", {"rank": 8}), ("bottleneck", {"rank": 8})])
def test_tap_keeps_the_code_not_the_output_while_the_ffn_runs(method, kwargs, monkeypatch):
    seen = []
    original = _ParallelTap.write

    def spy(self, module, args, output):
        seen.append(tuple(self._pending[0].shape))
        return original(self, module, args, output)

    monkeypatch.setattr(_ParallelTap, "write", spy)  # before inject binds the hooks
    config = WhisperConfig(d_model=32, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64)
    encoder = inject(WhisperEncoder(config), method=method, placement="pfeiffer", **kwargs)
    encoder(torch.randn(2, 80, 3000))
    assert seen == [(2, 1500, 8)]


def test_yaml_name_of_inject_is_the_function():
    """HyperPyYAML resolves ``!apply:speechbrain_mambadapter.inject`` with pydoc.locate."""
    import pydoc

    assert pydoc.locate("speechbrain_mambadapter.inject") is inject


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_encode_is_transform_of_reduce(name):
    """The tap may run ``reduce`` and ``transform`` on different streams: together they are ``encode``."""
    torch.manual_seed(0)
    adapter = ADAPTERS[name]().eval()
    x = torch.randn(2, 7, 16)
    h = adapter.reduce(x)
    assert h.numel() == 2 * 7 * 4  # rank-wide: only this crosses to the side stream
    torch.testing.assert_close(adapter.transform(h), adapter.encode(x))


def test_set_adapter_overlap_marks_the_parallel_adapters_only():
    config = WhisperConfig(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64)
    encoder = inject(WhisperEncoder(config), method="mambadapter", placement="houlsby", rank=8, d_state=4)
    x = torch.randn(2, 80, 3000)
    with torch.no_grad():
        before = encoder(x).last_hidden_state
        assert set_adapter_overlap(encoder, True) == 4  # 2 layers x (attention + FFN)
        adapters = [m for m in encoder.modules() if isinstance(m, MambAdapter)]
        assert all(a.overlap for a in adapters)
        # CPU tensors: one stream whatever the flag says.
        torch.testing.assert_close(encoder(x).last_hidden_state, before, rtol=0, atol=0)
    assert set_adapter_overlap(encoder, False) == 4 and not any(a.overlap for a in adapters)
    lora = inject(WhisperEncoder(config), method="lora", rank=2)
    assert set_adapter_overlap(lora, True) == 0
