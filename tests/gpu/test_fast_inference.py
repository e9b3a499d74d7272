"""CUDA-graph inference gives the eager results (adapted Whisper encoder, fp32 and bf16)."""

import pytest
import torch

from speechbrain_mambadapter import inject
from speechbrain_mambadapter.fast_inference import CUDAGraphModule

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


class EncoderOutput(torch.nn.Module):
    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, x):
        return self.encoder(x).last_hidden_state


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_graph_replay_matches_eager(dtype):
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    torch.manual_seed(0)
    config = WhisperConfig(d_model=128, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=256)
    encoder = inject(WhisperEncoder(config), method="mambadapter", placement="houlsby", rank=16)
    with torch.no_grad():
        for p in encoder.parameters():
            p.add_(torch.randn_like(p) * 0.02)  # W_up starts at zero: make the adapters matter
    model = EncoderOutput(encoder).to("cuda", dtype).eval()
    fast = CUDAGraphModule(model)
    with torch.inference_mode():
        for batch in (1, 2, 1):
            x = torch.randn(batch, 80, 3000, device="cuda", dtype=dtype)
            torch.testing.assert_close(fast(x), model(x), rtol=0, atol=0)
    assert len(fast._graphs) == 2
