"""Parallel adapters on a side stream (``set_adapter_overlap``) compute what one stream computes:
same outputs and gradients, eagerly, in a training loop, and replayed as a CUDA graph."""

import pytest
import torch

from speechbrain_mambadapter import inject, set_adapter_overlap
from speechbrain_mambadapter.cuda_graphs import CUDAGraphModule

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

METHODS = {
    "mambadapter": dict(method="mambadapter", rank=8, d_state=16, dropout=0.0),
    # Dropout off: the two models draw their masks one after the other, so with dropout they
    # differ (4.8e-3 at most here, hidden below the tolerance by the paper's tiny Mamba weights).
    "mambadapter-houlsby-inner": dict(
        method="mambadapter", placement="houlsby", rank=8, direction="inner", dropout=0.0
    ),
    "bottleneck": dict(method="bottleneck", rank=8),
    "conformer": dict(method="conformer", rank=8, kernel_size=31),
}


class LastHidden(torch.nn.Module):
    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, features):
        return self.encoder(features).last_hidden_state


def adapted_encoder(kwargs, seed=0):
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    torch.manual_seed(seed)
    config = WhisperConfig(
        d_model=64, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=128, max_source_positions=200
    )
    encoder = inject(WhisperEncoder(config), **kwargs).cuda()
    with torch.no_grad():  # leave the zero-initialised up-projections, so the adapters count
        for p in encoder.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    return LastHidden(encoder)


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_overlap_gives_the_same_values_and_gradients(name):
    kwargs = METHODS[name]
    one, two = adapted_encoder(kwargs), adapted_encoder(kwargs)
    assert set_adapter_overlap(two.encoder, True) > 0
    x = torch.randn(3, 80, 400, device="cuda")
    for model in (one, two):
        model.train()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            model.out = model(x)
        model.out.float().pow(2).mean().backward()
    torch.testing.assert_close(two.out, one.out, rtol=1e-3, atol=1e-3)
    g1, g2 = grads(one), grads(two)
    assert g1.keys() == g2.keys() and len(g1) > 0
    for key in g1:
        torch.testing.assert_close(g2[key], g1[key], rtol=1e-5, atol=1e-6, msg=key)


def test_overlap_trains_like_one_stream():
    kwargs = METHODS["mambadapter"]
    losses = []
    for overlap in (False, True):
        model = adapted_encoder(kwargs).train()
        set_adapter_overlap(model, overlap)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        generator = torch.Generator(device="cuda").manual_seed(1)
        run = []
        for _ in range(5):
            x = torch.randn(4, 80, 400, device="cuda", generator=generator)
            loss = model(x).pow(2).mean()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            run.append(loss.item())
        losses.append(run)
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


@pytest.mark.parametrize("name", ["mambadapter", "conformer"])
def test_overlap_is_captured_in_cuda_graphs(name):
    eager = adapted_encoder(METHODS[name]).eval()
    graphed = adapted_encoder(METHODS[name]).eval()
    set_adapter_overlap(graphed.encoder, True)
    fast = CUDAGraphModule(graphed)
    with torch.no_grad():
        for batch in (2, 2, 5):  # capture, replay, second shape
            x = torch.randn(batch, 80, 400, device="cuda")
            torch.testing.assert_close(fast(x), eager(x), rtol=1e-5, atol=1e-5)
    assert fast.captures == 2


def test_overlap_in_a_graphed_training_step():
    """Forward and backward captured by make_graphed_callables, side stream included."""
    losses = []
    for overlap, graphed in ((False, False), (True, True)):
        model = adapted_encoder(METHODS["mambadapter"]).train()
        set_adapter_overlap(model, overlap)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=1e-3)
        generator = torch.Generator(device="cuda").manual_seed(1)
        batches = [torch.randn(4, 80, 400, device="cuda", generator=generator) for _ in range(4)]
        step = model
        if graphed:
            step = torch.cuda.make_graphed_callables(model, (batches[0].clone(),), num_warmup_iters=3)
            # The warm-up iterations accumulated gradients: start from the same state as eager.
            optimizer.zero_grad(set_to_none=True)
        run = []
        for x in batches:
            loss = step(x).pow(2).mean()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            run.append(loss.item())
        losses.append(run)
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
