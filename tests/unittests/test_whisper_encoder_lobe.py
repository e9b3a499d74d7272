"""The Whisper-encoder classification lobe (``lobes.whisper_encoder.WhisperEncoder``) on CPU, with a
tiny random Whisper: features and encoder equal to Whisper's own on a 30 s clip, variable lengths,
padding invariance of the pooled output (alone or with PETL methods injected), SpecAugment kept
off the padding, gradients, errors, and the graph modes' method.
"""

import shutil

import pytest
import torch
from speechbrain.integrations.huggingface.whisper import Whisper

from speechbrain_mambadapter import inject
from speechbrain_mambadapter.cuda_graphs import graph_method
from speechbrain_mambadapter.lobes.whisper_encoder import WhisperEncoder
from speechbrain_mambadapter.recipe.modes import _encoder_method

# Methods whose modules work position by position or causally: a clip's embedding must not
# depend on the padding of its batch (see the lobe's docstring for the others).
POSITIONWISE = [
    ("linear", {}),
    ("full", {}),
    ("bitfit", {}),
    ("lora", {"rank": 4}),
    ("bottleneck", {"placement": "houlsby", "rank": 4}),
    ("mambadapter", {"placement": "houlsby", "rank": 4}),
    ("mambadapter", {"placement": "pfeiffer", "rank": 4, "use_mamba": False}),
]


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory):
    """A tiny random Whisper (2 encoder layers, 64 wide; Whisper's 80 mel bins and 1,500 positions)."""
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    folder = tmp_path_factory.mktemp("tiny_whisper_encoder")
    config = WhisperConfig(
        d_model=64,
        encoder_layers=2,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
    )
    torch.manual_seed(0)
    WhisperModel(config).save_pretrained(folder)
    WhisperFeatureExtractor().save_pretrained(folder)
    return str(folder)


def make_encoder(whisper_dir, tmp_path, **kwargs):
    return WhisperEncoder(whisper_dir, save_path=str(tmp_path), freeze=True, **kwargs)


def perturb(model):
    """Non-zero adapter outputs (most methods are the identity at initialisation)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    return model


def batch_of(lengths_in_samples, seed=0):
    """Random clips of these lengths, right-padded into one batch, with relative lengths."""
    generator = torch.Generator().manual_seed(seed)
    longest = max(lengths_in_samples)
    wavs = torch.zeros(len(lengths_in_samples), longest)
    for i, n in enumerate(lengths_in_samples):
        wavs[i, :n] = 0.1 * torch.randn(n, generator=generator)
    return wavs, torch.tensor([n / longest for n in lengths_in_samples])


def test_features_and_encoder_equal_whisper_on_a_30_second_clip(whisper_dir, tmp_path):
    """On Whisper's own input (one 30 s clip) the lobe computes exactly what SpeechBrain's Whisper
    lobe and Hugging Face's encoder compute."""
    encoder = make_encoder(whisper_dir, tmp_path).eval()
    reference = Whisper(whisper_dir, save_path=str(tmp_path), encoder_only=True, freeze=True).eval()
    wav = 0.1 * torch.randn(1, 30 * 16000)
    feats, frames = encoder.compute_features(wav)
    expected_feats = reference._get_mel(wav)
    assert feats.shape == expected_feats.shape == (1, 80, 3000) and frames.tolist() == [3000]
    torch.testing.assert_close(feats, expected_feats)
    with torch.no_grad():
        expected = reference.model.encoder(expected_feats).last_hidden_state
        torch.testing.assert_close(encoder.encode(feats), expected, atol=1e-5, rtol=1e-4)


def test_each_clip_is_normalised_with_its_own_maximum(whisper_dir, tmp_path):
    """SpeechBrain's lobe clamps with one maximum over the whole batch; here a loud clip does not
    change a quiet one's features."""
    encoder = make_encoder(whisper_dir, tmp_path)
    quiet = 0.01 * torch.randn(1, 16000)
    loud = 10 * torch.randn(1, 16000)
    alone, _ = encoder.compute_features(quiet)
    together, _ = encoder.compute_features(torch.cat([quiet, loud]))
    torch.testing.assert_close(together[:1], alone)


@pytest.mark.parametrize(
    "samples", [[16000], [16000, 8000], [16000, 12345, 401, 9999], [48000, 16160, 16320]]
)
def test_variable_lengths_give_each_clip_its_own_frames_and_positions(whisper_dir, tmp_path, samples):
    encoder = make_encoder(whisper_dir, tmp_path).eval()
    wavs, lengths = batch_of(samples)
    feats, frames = encoder.compute_features(wavs, lengths)
    assert frames.tolist() == [n // 160 for n in samples]
    assert feats.shape == (len(samples), 80, max(samples) // 160)
    for i, n in enumerate(frames.tolist()):
        assert bool((feats[i, :, n:] == 0).all()), "features past a clip's end must be zeros"
    with torch.no_grad():
        tokens = encoder.encode(feats, frames)
        pooled = encoder(wavs, lengths)
    assert tokens.shape == (len(samples), (max(samples) // 160 + 1) // 2, 64)
    assert encoder.positions(frames).tolist() == [(n // 160 + 1) // 2 for n in samples]
    assert pooled.shape == (len(samples), 64) and bool(torch.isfinite(pooled).all())


@pytest.mark.parametrize("method, kwargs", POSITIONWISE, ids=lambda v: str(v))
def test_pooled_output_does_not_depend_on_the_padding(whisper_dir, tmp_path, method, kwargs):
    """Each clip's embedding in a padded batch equals its embedding alone, with a PETL method in."""
    encoder = make_encoder(whisper_dir, tmp_path)
    encoder = perturb(inject(encoder, method=method, **kwargs)).eval()
    samples = [16000, 11200, 5123, 16000]
    wavs, lengths = batch_of(samples)
    with torch.no_grad():
        batched = encoder(wavs, lengths)
        for i, n in enumerate(samples):
            alone = encoder(wavs[i : i + 1, :n])
            torch.testing.assert_close(batched[i : i + 1], alone, atol=2e-5, rtol=1e-4)


def test_padding_would_change_the_output_without_the_masks(whisper_dir, tmp_path):
    """The invariance above is the masks' doing: the plain mean over a padded batch differs."""
    encoder = make_encoder(whisper_dir, tmp_path).eval()
    wavs, lengths = batch_of([16000, 8000])
    with torch.no_grad():
        feats, frames = encoder.compute_features(wavs, lengths)
        alone = encoder(wavs[1:, :8000])
        unmasked = encoder.pool(encoder.encode(feats))[1:]
        masked = encoder.pool(encoder.encode(feats, frames), frames)[1:]
    torch.testing.assert_close(masked, alone, atol=2e-5, rtol=1e-4)
    assert not torch.allclose(unmasked, alone, atol=1e-3)


def test_augment_sees_frames_first_and_never_fills_the_padding(whisper_dir, tmp_path):
    encoder = make_encoder(whisper_dir, tmp_path).eval()
    seen = []

    def shift(feats):
        seen.append(feats.shape)
        return feats + 1.0  # also writes into the padding, which the lobe must zero again

    wavs, lengths = batch_of([16000, 8000])
    with torch.no_grad():
        batched = encoder(wavs, lengths, augment=shift)
        alone = encoder(wavs[1:, :8000], augment=shift)
    assert seen[0] == (2, 100, 80)  # [batch, frames, mel bins], as the recipes' SpecAugment takes
    torch.testing.assert_close(batched[1:], alone, atol=2e-5, rtol=1e-4)


def test_gradients_reach_the_adapters_through_a_padded_batch(whisper_dir, tmp_path):
    encoder = inject(make_encoder(whisper_dir, tmp_path), method="mambadapter", placement="houlsby", rank=4)
    wavs, lengths = batch_of([16000, 7000])
    encoder(wavs, lengths).pow(2).sum().backward()
    trainable = [(n, p) for n, p in encoder.named_parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None for _, p in trainable)
    assert any(float(p.grad.abs().sum()) > 0 for n, p in trainable if "petl" in n)


def test_half_precision_checkpoints_load_as_float32(whisper_dir, tmp_path):
    from transformers import WhisperModel

    folder = tmp_path / "fp16"
    WhisperModel.from_pretrained(whisper_dir).half().save_pretrained(folder)
    shutil.copy(f"{whisper_dir}/preprocessor_config.json", folder)
    assert WhisperModel.from_pretrained(folder).encoder.conv1.weight.dtype == torch.float16
    encoder = make_encoder(str(folder), tmp_path)
    assert {p.dtype for p in encoder.parameters()} == {torch.float32}
    assert encoder(0.1 * torch.randn(1, 4000)).dtype == torch.float32


def test_clips_longer_than_30_seconds_are_cut_to_whispers_positions(whisper_dir, tmp_path):
    encoder = make_encoder(whisper_dir, tmp_path)
    assert encoder.max_samples == 480000
    feats, frames = encoder.compute_features(torch.zeros(1, 480000 + 3200))
    assert feats.shape[-1] == 3000 and frames.tolist() == [3000]


def test_errors_say_what_to_do(whisper_dir, tmp_path):
    encoder = make_encoder(whisper_dir, tmp_path)
    with pytest.raises(ValueError, match=r"mono waveforms \[batch, time\].*average or select channels"):
        encoder(torch.zeros(1, 2, 16000))
    with pytest.raises(ValueError, match="Clip 1 of the batch has 300 samples, fewer than one Whisper"):
        encoder(torch.zeros(2, 16000), torch.tensor([1.0, 300 / 16000]))
    with pytest.raises(ValueError, match=r"relative lengths in \(0, 1\]"):
        encoder(torch.zeros(2, 16000), torch.tensor([1.0, 1.5]))
    with pytest.raises(ValueError, match="expects log-mel features"):
        encoder.encode(torch.zeros(1, 128, 100))
    with pytest.raises(ValueError, match="pooling must be one of"):
        make_encoder(whisper_dir, tmp_path, pooling="cls")


def test_graph_modes_graph_the_encode_method_with_its_lengths(whisper_dir, tmp_path):
    """The graph modes replay ``encode`` (features, and frames when the batch is padded); off CUDA
    the graphed method runs eagerly with both arguments and gives the same embeddings."""
    encoder = inject(make_encoder(whisper_dir, tmp_path), method="bottleneck", rank=4).eval()
    assert _encoder_method(encoder) == "encode"
    wavs, lengths = batch_of([16000, 9000])
    with torch.no_grad():
        expected = encoder(wavs, lengths)
        graphed = graph_method(encoder, "encode", max_graphs=2)
        assert encoder.encode is graphed
        torch.testing.assert_close(encoder(wavs, lengths), expected)
