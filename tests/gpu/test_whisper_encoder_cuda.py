"""The Whisper-encoder classification lobe (``lobes.whisper_encoder.WhisperEncoder``) on CUDA: padding
invariance under bf16 autocast, and its graph modes (``inference_mode`` / ``train_mode:
cuda_graph``, which replay ``encode`` with or without the clips' frames) against eager runs.
"""

import copy

import pytest
import torch

from speechbrain_mambadapter import inject
from speechbrain_mambadapter.recipe.modes import set_graph_mode
from tests.unittests.test_whisper_encoder_lobe import batch_of, perturb, whisper_dir  # noqa: F401

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
BF16 = dict(rtol=3e-2, atol=3e-2)


def adapted(whisper_dir, tmp_path):  # noqa: F811
    """A Houlsby MambAdapter (no dropout, so that graphed and eager training draw nothing)."""
    from speechbrain_mambadapter.lobes.whisper_encoder import WhisperEncoder

    torch.manual_seed(0)
    encoder = WhisperEncoder(whisper_dir, save_path=str(tmp_path), freeze=True)
    encoder = inject(encoder, method="mambadapter", placement="houlsby", rank=8, dropout=0.0)
    return perturb(encoder).cuda()


def test_padding_invariance_under_bf16_autocast(whisper_dir, tmp_path):  # noqa: F811
    encoder = adapted(whisper_dir, tmp_path).eval()
    samples = [80000, 41000, 16000]
    wavs, lengths = batch_of(samples)
    wavs, lengths = wavs.cuda(), lengths.cuda()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        batched = encoder(wavs, lengths).float()
        for i, n in enumerate(samples):
            torch.testing.assert_close(batched[i : i + 1], encoder(wavs[i : i + 1, :n]).float(), **BF16)


@pytest.mark.parametrize("padded", [False, True], ids=["equal_lengths", "padded"])
def test_evaluation_graphs_match_eager(whisper_dir, tmp_path, padded):  # noqa: F811
    encoder = adapted(whisper_dir, tmp_path).eval()
    wavs, lengths = batch_of([32000, 20000] if padded else [32000, 32000])
    wavs, lengths = wavs.cuda(), lengths.cuda()
    with torch.no_grad():
        expected = encoder(wavs, lengths)
        graphed = set_graph_mode(encoder, "cuda_graph")
        for _ in range(3):  # capture, then replays
            torch.testing.assert_close(encoder(wavs, lengths), expected, rtol=1e-4, atol=1e-4)
    assert graphed.graphs.captures == 1


@pytest.mark.parametrize("padded", [False, True], ids=["equal_lengths", "padded"])
def test_training_graphs_match_eager(whisper_dir, tmp_path, padded):  # noqa: F811
    encoder = adapted(whisper_dir, tmp_path).train()
    reference = copy.deepcopy(encoder)
    graphed = set_graph_mode(encoder, "cuda_graph", training=True)
    names = [n for n, p in encoder.named_parameters() if p.requires_grad]
    for step in range(3):
        wavs, lengths = batch_of([32000, 20000] if padded else [32000, 32000], seed=step)
        wavs, lengths = wavs.cuda(), lengths.cuda()
        for model in (encoder, reference):
            model.zero_grad(set_to_none=True)
            model(wavs, lengths).pow(2).sum().backward()
    assert graphed.train_graphs.captures == 1
    params, reference_params = dict(encoder.named_parameters()), dict(reference.named_parameters())
    got = torch.cat([params[n].grad.flatten() for n in names])
    expected = torch.cat([reference_params[n].grad.flatten() for n in names])
    assert expected.norm() > 0
    assert (got - expected).norm() <= 1e-3 * expected.norm()
