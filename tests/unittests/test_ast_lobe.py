"""The AST lobe: front end against HF's ASTFeatureExtractor, lengths, pooling,
positional-embedding interpolation, freezing and loading errors.

About lengths: AST always sees ``max_length`` frames, padding included (its
attention has no mask and ``pooling="mean"`` averages every token). What the
lobe guarantees, and what is tested, is that samples beyond a clip's relative
length never reach it: a clip gives the same output alone as in a batch padded
with noise, i.e. the output is that of HF's extractor run on the clip alone.
"""

import math

import pytest
import torch
import torch.nn as nn
from transformers import ASTModel
from transformers.models.audio_spectrogram_transformer import (
    feature_extraction_audio_spectrogram_transformer as ast_feature_extraction,
)

from speechbrain_mambadapter.lobes.ast import AST, patch_grid, resize_position_embeddings
from tools.tiny_models import save_random_ast

SAMPLE_RATE = 16000


def synthetic_clip(seconds, seed):
    """A chirp with harmonics, a click train and noise, peak ~0.5: exercises all mel bands."""
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * SAMPLE_RATE), dtype=torch.float64) / SAMPLE_RATE
    phase = 2 * math.pi * (200 * t + 1500 * t**2)
    clip = 0.2 * torch.sin(phase) + 0.1 * torch.sin(3 * phase)
    clip += 0.05 * torch.randn(t.shape, generator=generator, dtype=torch.float64)
    clip[:: SAMPLE_RATE // 20] += 0.3
    return clip.float()


def hf_features(clips, max_length):
    """What the paper's pipeline feeds AST: ASTFeatureExtractor on each clip alone."""
    extractor = ast_feature_extraction.ASTFeatureExtractor(max_length=max_length, num_mel_bins=128)
    out = extractor([c.numpy() for c in clips], sampling_rate=SAMPLE_RATE, return_tensors="pt")
    return out["input_values"]


def pad_batch(clips, noise_seed=123):
    """Right-pad with noise (not zeros), so a lobe that ignored lengths would be caught."""
    longest = max(len(c) for c in clips)
    generator = torch.Generator().manual_seed(noise_seed)
    batch = torch.randn(len(clips), longest, generator=generator)
    for i, clip in enumerate(clips):
        batch[i, : len(clip)] = clip
    lengths = torch.tensor([len(c) / longest for c in clips])
    return batch, lengths


@pytest.fixture(scope="module")
def lobe(tiny_ast_dir):
    return AST(source=tiny_ast_dir).eval()


def test_fbank_matches_hf_feature_extractor(lobe):
    # 0.7 s is padded to max_length=100 frames, 1.3 s (128 frames) is truncated.
    clips = [synthetic_clip(0.7, seed=0), synthetic_clip(1.3, seed=1)]
    wavs, lengths = pad_batch(clips)
    ours = lobe.compute_features(wavs, lengths)
    reference = hf_features(clips, max_length=100)
    assert ours.shape == reference.shape == (2, 100, 128)
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=0)
    # Padding frames carry AST's normalised zero, not the log of silence.
    torch.testing.assert_close(ours[0, 70:], torch.full((30, 128), 4.2677393 / (2 * 4.5689974)))


def test_fbank_matches_hf_numpy_implementation(lobe, monkeypatch):
    # Without torchaudio, HF computes the fbank with its own NumPy code: an independent reference.
    monkeypatch.setattr(ast_feature_extraction, "is_speech_available", lambda: False)
    clips = [synthetic_clip(0.7, seed=0), synthetic_clip(1.3, seed=1)]
    wavs, lengths = pad_batch(clips)
    with pytest.warns(UserWarning, match="mel filter has all zero values"):
        reference = hf_features(clips, max_length=100)
    torch.testing.assert_close(lobe.compute_features(wavs, lengths), reference, atol=2e-4, rtol=0)


def test_padding_beyond_length_does_not_change_output(lobe):
    short = synthetic_clip(0.6, seed=2)
    alone = lobe(short[None])
    wavs, lengths = pad_batch([short, synthetic_clip(1.0, seed=3)])
    with torch.no_grad():
        batched = lobe(wavs, lengths)
        ignoring_lengths = lobe(wavs)
    torch.testing.assert_close(batched[0], alone[0], atol=1e-5, rtol=1e-5)
    # Without lengths the noise is treated as signal: the check above can fail.
    assert (ignoring_lengths[0] - alone[0]).abs().max() > 1e-3


@pytest.mark.parametrize("max_length", [100, 64, 300])
def test_shapes_follow_the_patch_convolution(tiny_ast_dir, max_length):
    ast = AST(source=tiny_ast_dir, max_length=max_length)
    feats = ast.compute_features(torch.randn(3, SAMPLE_RATE) * 0.1)
    assert feats.shape == (3, max_length, 128)
    tokens = ast.encode(feats)
    patches = ast.model.embeddings.patch_embeddings(feats)
    frequency, time = patch_grid(ast.model.config, 128, max_length)
    assert patches.shape[1] == frequency * time == tokens.shape[1] - 2
    assert time == (max_length - 16) // 10 + 1
    assert tokens.shape == (3, 2 + frequency * time, 32)
    assert ast.pool(tokens).shape == (3, 32)


def test_pooling_modes(tiny_ast_dir):
    wavs = torch.randn(2, SAMPLE_RATE) * 0.1
    mean_ast = AST(source=tiny_ast_dir, pooling="mean").eval()
    cls_ast = AST(source=tiny_ast_dir, pooling="cls").eval()
    with torch.no_grad():
        feats = mean_ast.compute_features(wavs)
        tokens = mean_ast.encode(feats)
        reference = ASTModel.from_pretrained(tiny_ast_dir).eval()(input_values=feats)
        torch.testing.assert_close(tokens, reference.last_hidden_state)
        torch.testing.assert_close(mean_ast(wavs), tokens.mean(dim=1))
        # "cls" is AST's own pooler: mean of the CLS and distillation tokens.
        torch.testing.assert_close(cls_ast(wavs), reference.pooler_output)
        assert (mean_ast(wavs) - cls_ast(wavs)).abs().max() > 1e-3


def test_same_max_length_keeps_embeddings_exactly(tiny_ast_dir):
    saved = ASTModel.from_pretrained(tiny_ast_dir).embeddings
    loaded = AST(source=tiny_ast_dir, max_length=100).model.embeddings
    assert torch.equal(loaded.position_embeddings, saved.position_embeddings)
    assert torch.equal(loaded.cls_token, saved.cls_token)


def linear_field_ast(folder, max_length=100):
    """A saved AST whose patch position embedding is 0.1 * t + 1.0 * f (both channels)."""
    save_random_ast(folder, max_length=max_length, hidden_size=4, num_attention_heads=1, intermediate_size=8)
    model = ASTModel.from_pretrained(folder)
    frequency, time = patch_grid(model.config, 128, max_length)
    f, t = torch.meshgrid(torch.arange(frequency), torch.arange(time), indexing="ij")
    field = (0.1 * t + 1.0 * f).float().reshape(-1, 1).expand(-1, 4)
    with torch.no_grad():
        model.embeddings.position_embeddings[0, 2:] = field
    model.save_pretrained(folder)
    return model.embeddings.position_embeddings.detach().clone()


@pytest.mark.parametrize("max_length", [50, 250])
def test_interpolation_over_the_time_axis(tmp_path, max_length):
    original = linear_field_ast(tmp_path)
    ast = AST(source=tmp_path, max_length=max_length)
    pos = ast.model.embeddings.position_embeddings.detach()
    frequency, time = patch_grid(ast.model.config, 128, max_length)
    assert (frequency, time) == (12, (max_length - 16) // 10 + 1)
    assert pos.shape == (1, 2 + frequency * time, 4)
    # CLS and distillation rows untouched.
    assert torch.equal(pos[0, :2], original[0, :2])
    # Bilinear, align_corners=False: new column j samples old coordinate (j + 0.5) * 9 / time - 0.5.
    old_time = 9
    source = ((torch.arange(time) + 0.5) * old_time / time - 0.5).clamp(0, old_time - 1)
    expected = 0.1 * source[None, :] + 1.0 * torch.arange(frequency)[:, None].float()
    torch.testing.assert_close(pos[0, 2:, 0].reshape(frequency, time), expected, atol=1e-5, rtol=0)
    # And the model runs on the new length.
    assert ast(torch.randn(1, 8000) * 0.1).shape == (1, 4)


def test_interpolation_over_both_axes_bicubic(tmp_path):
    linear_field_ast(tmp_path)
    ast = AST(source=tmp_path, max_length=500, num_mel_bins=64, interpolation="bicubic")
    frequency, time = patch_grid(ast.model.config, 64, 500)
    assert (frequency, time) == (5, 49)
    grid = ast.model.embeddings.position_embeddings.detach()[0, 2:, 0].reshape(frequency, time)
    # PyTorch's cubic kernel (a = -0.75) only approximates a linear field: within 5 % of a
    # frequency step away from the clamped borders, and monotone (no overshoot) everywhere.
    source_t = (torch.arange(time) + 0.5) * 9 / time - 0.5
    source_f = (torch.arange(frequency) + 0.5) * 12 / frequency - 0.5
    expected = 0.1 * source_t[None, :] + 1.0 * source_f[:, None]
    inner = (slice(1, -1), slice(6, -6))
    torch.testing.assert_close(grid[inner], expected[inner], atol=0.05, rtol=0)
    assert (grid.diff(dim=0) > 0).all() and (grid.diff(dim=1) > 0).all()
    assert ast(torch.randn(1, 8000) * 0.1).shape == (1, 4)


def test_resized_model_saves_and_reloads_unchanged(tiny_ast_dir, tmp_path):
    resized = AST(source=tiny_ast_dir, max_length=240)
    resized.model.save_pretrained(tmp_path)
    reloaded = AST(source=tmp_path, max_length=240)
    assert torch.equal(
        reloaded.model.embeddings.position_embeddings, resized.model.embeddings.position_embeddings
    )


def test_resize_rejects_a_wrong_grid():
    with pytest.raises(ValueError, match="patch grid"):
        resize_position_embeddings(torch.zeros(1, 50, 8), (12, 9), (12, 5))


def test_freeze_keeps_gradients_flowing_through_the_backbone(tiny_ast_dir):
    ast = AST(source=tiny_ast_dir, freeze=True)
    assert not any(p.requires_grad for p in ast.parameters())
    # A trainable module before the frozen backbone must still learn.
    front = nn.Linear(128, 128)
    feats = ast.compute_features(torch.randn(2, SAMPLE_RATE) * 0.1)
    ast.pool(ast.encode(front(feats))).pow(2).sum().backward()
    assert front.weight.grad is not None and front.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in ast.parameters())


def test_unfrozen_backbone_gets_gradients(tiny_ast_dir):
    ast = AST(source=tiny_ast_dir, freeze=False)
    ast(torch.randn(2, SAMPLE_RATE) * 0.1).pow(2).sum().backward()
    position = ast.model.embeddings.position_embeddings
    assert position.grad is not None and position.grad.abs().sum() > 0
    assert all(p.requires_grad for p in ast.parameters())


def test_layers_are_the_transformer_blocks(lobe):
    assert len(lobe.layers) == 2
    assert all(hasattr(layer, "layernorm_before") for layer in lobe.layers)


def test_missing_local_folder_names_the_option(tmp_path):
    with pytest.raises(FileNotFoundError, match="--pretrained_source"):
        AST(source=tmp_path / "no_such_model")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        AST(source=tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"pooling": "max"}, "pooling must be one of"), ({"max_length": 8}, "smaller than AST's patch size")],
)
def test_constructor_checks(tiny_ast_dir, kwargs, message):
    with pytest.raises(ValueError, match=message):
        AST(source=tiny_ast_dir, **kwargs)


def test_input_checks(lobe):
    with pytest.raises(ValueError, match="mono waveforms"):
        lobe.compute_features(torch.zeros(2, 1000, 2))
    with pytest.raises(ValueError, match="relative lengths"):
        lobe.compute_features(torch.zeros(2, 1000), torch.tensor([1.0, 1.5]))
    with pytest.raises(ValueError, match="fewer than one 25 ms"):
        lobe.compute_features(torch.zeros(2, 1000), torch.tensor([1.0, 0.2]))
    with pytest.raises(ValueError, match="compute_features"):
        lobe.encode(torch.zeros(2, 128, 100))


@pytest.mark.parametrize(
    "counts",
    [
        [16000, 16000],  # full clips
        [16000, 400, 401, 559, 560, 12345],  # one window exactly, just under/over a frame shift
        [24000, 17000],  # longer than max_length frames: truncated
    ],
)
def test_batched_fbank_equals_one_kaldi_call_per_clip(lobe, counts):
    torch.manual_seed(0)
    n_samples = max(counts)
    wavs = torch.randn(len(counts), n_samples) * 0.1
    for i, count in enumerate(counts):
        wavs[i, count:] = 0.5  # padding that must not leak into the features
    lengths = torch.tensor(counts, dtype=torch.float) / n_samples
    batched = lobe.compute_features(wavs, lengths)
    reference = lobe.compute_features_reference(wavs, lengths)
    assert batched.shape == reference.shape == (len(counts), lobe.max_length, lobe.num_mel_bins)
    torch.testing.assert_close(batched, reference, atol=2e-5, rtol=1e-5)
