"""Audio Spectrogram Transformer (AST) as a SpeechBrain-style lobe.

``AST`` wraps Hugging Face's ``ASTModel`` (kept at ``.model``; its transformer
blocks are ``.layers``) behind SpeechBrain's usual constructor (``source``,
``save_path``, ``freeze``) and takes waveforms with SpeechBrain relative lengths.
The front end reproduces ``transformers.ASTFeatureExtractor``: a Kaldi-compatible
log-mel filterbank (``torchaudio.compliance.kaldi.fbank``, 25 ms Hann window,
10 ms shift, no dither) of each clip's valid samples, zero-padded or truncated
to ``max_length`` frames, then normalised as ``(x - mean) / (2 * std)``.

AST has a fixed input length: its positional embeddings cover a fixed grid of
16x16 patches over frequency x time. When ``max_length`` (or ``num_mel_bins``)
differs from the checkpoint's configuration, the patch part of the positional
embeddings is resized by 2-D interpolation over that grid; the CLS and
distillation token embeddings are kept as they are. (The paper's code instead
loads with ``ignore_mismatched_sizes=True``, which re-initialises them.)

Authors
 * speechbrain-mambadapter contributors 2026
"""

import logging
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchaudio.compliance.kaldi as kaldi
from transformers import ASTModel

from speechbrain_mambadapter.compat import ast_encoder_layers

logger = logging.getLogger(__name__)

AUDIOSET_MEAN = -4.2677393
AUDIOSET_STD = 4.5689974
POOLING_MODES = ("mean", "cls")
# Kaldi's default analysis window (frame_length=25 ms); shorter clips have no frame at all.
FRAME_LENGTH_MS = 25.0
FRAME_SHIFT_MS = 10.0
PREEMPHASIS = 0.97  # Kaldi's default pre-emphasis coefficient


def patch_grid(config, num_mel_bins, max_length):
    """Patch grid ``(frequency, time)`` that AST's patch convolution produces.

    Arguments
    ---------
    config : transformers.ASTConfig
        Gives ``patch_size``, ``frequency_stride`` and ``time_stride``.
    num_mel_bins : int
        Filterbank channels of the input.
    max_length : int
        Frames of the input.

    Returns
    -------
    tuple of int
        ``(F, T)``: the convolution's output height and width, so the model has
        ``2 + F * T`` tokens.

    Example
    -------
    >>> from transformers import ASTConfig
    >>> patch_grid(ASTConfig(), num_mel_bins=128, max_length=1024)
    (12, 101)
    >>> patch_grid(ASTConfig(), num_mel_bins=128, max_length=500)
    (12, 49)
    """
    for name, size in (("num_mel_bins", num_mel_bins), ("max_length", max_length)):
        if size < config.patch_size:
            raise ValueError(
                f"{name}={size} is smaller than AST's patch size {config.patch_size}; "
                f"use at least {config.patch_size}."
            )
    frequency = (num_mel_bins - config.patch_size) // config.frequency_stride + 1
    time = (max_length - config.patch_size) // config.time_stride + 1
    return frequency, time


def resize_position_embeddings(position_embeddings, old_grid, new_grid, mode="bilinear"):
    """Interpolate AST's positional embeddings to a new patch grid.

    The first two rows (CLS and distillation tokens) are copied; the remaining
    ``F * T`` rows, laid out frequency-major as AST's patch embedding flattens
    them, are resized as a ``[D, F, T]`` image (``align_corners=False``, in fp32).

    Arguments
    ---------
    position_embeddings : torch.Tensor
        ``[1, 2 + F * T, D]``.
    old_grid : tuple of int
        ``(F, T)`` of ``position_embeddings``.
    new_grid : tuple of int
        ``(F', T')`` wanted.
    mode : str
        ``"bilinear"`` or ``"bicubic"`` (``torch.nn.functional.interpolate`` modes).

    Returns
    -------
    torch.Tensor
        ``[1, 2 + F' * T', D]``, same dtype; the input itself when the grids agree.

    Example
    -------
    >>> pos = torch.randn(1, 2 + 12 * 101, 8)
    >>> resize_position_embeddings(pos, (12, 101), (12, 49)).shape
    torch.Size([1, 590, 8])
    >>> resize_position_embeddings(pos, (12, 101), (12, 101)) is pos
    True
    """
    if mode not in ("bilinear", "bicubic"):
        raise ValueError(f"mode must be 'bilinear' or 'bicubic', got {mode!r}.")
    old_f, old_t = old_grid
    expected = 2 + old_f * old_t
    if position_embeddings.shape[1] != expected:
        raise ValueError(
            f"position_embeddings has {position_embeddings.shape[1]} rows, but a {old_f}x{old_t} "
            f"patch grid plus CLS and distillation tokens needs {expected}; check old_grid."
        )
    if tuple(old_grid) == tuple(new_grid):
        return position_embeddings
    dim = position_embeddings.shape[-1]
    special, patches = position_embeddings[:, :2], position_embeddings[:, 2:]
    image = patches.reshape(1, old_f, old_t, dim).permute(0, 3, 1, 2).float()
    image = F.interpolate(image, size=tuple(new_grid), mode=mode, align_corners=False)
    patches = image.permute(0, 2, 3, 1).reshape(1, -1, dim).to(position_embeddings.dtype)
    return torch.cat([special, patches], dim=1)


def _load_ast(source, save_path):
    """``ASTModel.from_pretrained`` with errors that say how to work offline."""
    looks_local = os.path.isabs(source) or source.startswith((".", "~")) or os.path.exists(source)
    if looks_local:
        folder = os.path.expanduser(source)
        if not os.path.isdir(folder):
            raise FileNotFoundError(
                f"AST source folder {folder!r} does not exist. Pass source=<folder holding config.json "
                "and model.safetensors> (recipes: --pretrained_source=<local dir>), e.g. one written by "
                "ASTModel.save_pretrained."
            )
        if not os.path.isfile(os.path.join(folder, "config.json")):
            raise FileNotFoundError(
                f"AST source folder {folder!r} has no config.json, so it is not a saved Hugging Face "
                "model. Point source (recipes: --pretrained_source) at the folder that "
                "ASTModel.save_pretrained wrote."
            )
    try:
        return ASTModel.from_pretrained(source, cache_dir=save_path)
    except (OSError, ValueError) as error:
        raise OSError(
            f"Could not load AST from source={source!r}: {error}\n"
            "Without access to the Hugging Face hub, copy the model to a local folder (config.json and "
            "model.safetensors, as written by save_pretrained) and pass source=<that folder> "
            "(recipes: --pretrained_source=<local dir>)."
        ) from error


class AST(nn.Module):
    """Audio Spectrogram Transformer encoder: waveforms in, one embedding per clip out.

    ``forward`` runs the whole chain. Recipes that augment the filterbank (the
    paper applies SpecAugment to the normalised fbank) call the three stages
    themselves: ``feats = ast.compute_features(wavs, lengths)``, augment ``feats``,
    then ``ast.pool(ast.encode(feats))``; ``encode`` gives the token sequence.

    ``freeze=True`` sets ``requires_grad=False`` on every parameter of the
    backbone but does *not* run it under ``torch.no_grad()``: adapters injected
    into the frozen blocks, and modules before it, still receive gradients
    through it. Nor does it switch the backbone to eval mode, so injected
    modules with dropout or BatchNorm follow the Brain's train/eval switching
    (the released AST checkpoints have no dropout, so the backbone's own output
    does not depend on the mode).

    Arguments
    ---------
    source : str
        Hugging Face model id (e.g. ``"MIT/ast-finetuned-audioset-10-10-0.4593"``)
        or a local folder written by ``save_pretrained``; an
        ``ASTForAudioClassification`` checkpoint loads without its head.
    save_path : str, optional
        Cache folder for hub downloads.
    freeze : bool
        Freeze all backbone parameters (see above).
    pooling : str
        ``"mean"``: mean of all output tokens (CLS, distillation and every patch,
        padding included), what the paper's code uses by default (PETL_AST,
        ``final_output: 'ALL'``); ``"cls"``: mean of the CLS and distillation
        tokens, AST's own pooler (the paper's ``'CLS'`` option takes the CLS
        token alone).
    max_length : int, optional
        Frames (10 ms each) the clips are padded or truncated to; None keeps the
        checkpoint's ``max_length``. Otherwise the positional embeddings are
        interpolated to the new patch grid.
    num_mel_bins : int
        Filterbank channels (128 for the released checkpoints).
    mean : float
        Normalisation mean (AudioSet statistics by default).
    std : float
        Normalisation standard deviation; features are divided by ``2 * std`` as in AST.
    sample_rate : int
        Sample rate of the input waveforms (AST was trained at 16 kHz).
    interpolation : str
        ``"bilinear"`` or ``"bicubic"``, for resizing the positional embeddings.

    Example
    -------
    >>> from transformers import ASTConfig
    >>> config = ASTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    >>> folder = str(getfixture("tmp_path") / "ast")
    >>> ASTModel(config).save_pretrained(folder)  # a tiny random AST (the released one is 12 x 768)
    >>> ast = AST(source=folder, max_length=200, freeze=True)
    >>> wavs = torch.randn(2, 16000)
    >>> ast(wavs, torch.tensor([1.0, 0.5])).shape
    torch.Size([2, 32])
    >>> feats = ast.compute_features(wavs)
    >>> feats.shape
    torch.Size([2, 200, 128])
    >>> ast.encode(feats).shape  # CLS, distillation, 12 x 19 patches
    torch.Size([2, 230, 32])
    >>> any(p.requires_grad for p in ast.parameters())
    False
    """

    def __init__(
        self,
        source,
        save_path=None,
        freeze=False,
        pooling="mean",
        max_length=None,
        num_mel_bins=128,
        mean=AUDIOSET_MEAN,
        std=AUDIOSET_STD,
        sample_rate=16000,
        interpolation="bilinear",
    ):
        super().__init__()
        if pooling not in POOLING_MODES:
            raise ValueError(f"pooling must be one of {POOLING_MODES}, got {pooling!r}.")
        if std <= 0:
            raise ValueError(f"std must be positive, got {std}.")
        self.pooling = pooling
        self.mean = mean
        self.std = std
        self.sample_rate = sample_rate
        self.num_mel_bins = num_mel_bins
        self.freeze = freeze

        self.model = _load_ast(str(source), save_path)
        config = self.model.config
        self.max_length = config.max_length if max_length is None else int(max_length)
        self._resize_to(num_mel_bins, self.max_length, interpolation)

        if freeze:
            self.model.requires_grad_(False)

    def _resize_to(self, num_mel_bins, max_length, interpolation):
        config = self.model.config
        old_grid = patch_grid(config, config.num_mel_bins, config.max_length)
        new_grid = patch_grid(config, num_mel_bins, max_length)
        embeddings = self.model.embeddings
        if old_grid != new_grid:
            logger.info(
                "AST: interpolating positional embeddings (%s) from the %dx%d patch grid of "
                "num_mel_bins=%d, max_length=%d to %dx%d for num_mel_bins=%d, max_length=%d.",
                interpolation,
                *old_grid,
                config.num_mel_bins,
                config.max_length,
                *new_grid,
                num_mel_bins,
                max_length,
            )
            with torch.no_grad():
                resized = resize_position_embeddings(
                    embeddings.position_embeddings.data, old_grid, new_grid, interpolation
                )
            embeddings.position_embeddings = nn.Parameter(resized)
        # Keep the config truthful, so that save_pretrained writes a model that reloads as is.
        config.max_length = max_length
        config.num_mel_bins = num_mel_bins

    @property
    def layers(self):
        """The transformer blocks (where they are depends on the transformers version)."""
        return ast_encoder_layers(self.model)

    @property
    def hidden_size(self):
        """Width ``D`` of the tokens and of the pooled output."""
        return self.model.config.hidden_size

    def compute_features(self, wavs, lengths=None):
        """Normalised log-mel filterbank, as ``ASTFeatureExtractor`` computes it.

        Each clip's fbank is computed on its valid samples only, so padding in the
        batch never reaches it; it is then zero-padded or truncated to
        ``max_length`` frames and normalised (padding frames become
        ``-mean / (2 * std)``, as in AST).

        Arguments
        ---------
        wavs : torch.Tensor
            ``[B, T]`` mono waveforms at ``sample_rate``, float in [-1, 1].
        lengths : torch.Tensor, optional
            ``[B]`` relative lengths in (0, 1] (SpeechBrain's convention); None
            means every clip fills ``T``.

        Returns
        -------
        torch.Tensor
            ``[B, max_length, num_mel_bins]`` float32.
        """
        if wavs.dim() != 2:
            raise ValueError(
                f"AST expects mono waveforms [batch, time], got shape {tuple(wavs.shape)}; "
                "average or select channels first."
            )
        batch, n_samples = wavs.shape
        if lengths is None:
            lengths = torch.ones(batch, device=wavs.device)
        if lengths.shape != (batch,) or bool((lengths <= 0).any()) or bool((lengths > 1).any()):
            raise ValueError(
                f"lengths must be [batch]={batch} relative lengths in (0, 1], got {lengths.tolist()}."
            )
        counts = torch.round(lengths.float() * n_samples).long().tolist()
        min_samples = int(self.sample_rate * FRAME_LENGTH_MS / 1000)
        for i, count in enumerate(counts):
            if count < min_samples:
                raise ValueError(
                    f"Clip {i} of the batch has {count} samples, fewer than one {FRAME_LENGTH_MS:g} ms "
                    f"analysis window ({min_samples} samples at {self.sample_rate} Hz); remove such "
                    "clips in data preparation or pad them."
                )
        feats = batched_kaldi_fbank(wavs, counts, self.sample_rate, self.num_mel_bins, self.max_length)
        return (feats - self.mean) / (2 * self.std)

    def compute_features_reference(self, wavs, lengths=None):
        """``compute_features`` with one ``torchaudio.compliance.kaldi.fbank`` call per clip.

        The reference of :func:`batched_kaldi_fbank` (same arguments, same result within float
        rounding), kept for the parity test; a Python loop over the batch, slow on GPU.
        """
        batch, n_samples = wavs.shape
        if lengths is None:
            lengths = torch.ones(batch, device=wavs.device)
        counts = torch.round(lengths.float() * n_samples).long().tolist()
        feats = wavs.new_zeros(batch, self.max_length, self.num_mel_bins, dtype=torch.float32)
        for i, count in enumerate(counts):
            fbank = kaldi.fbank(
                wavs[i : i + 1, :count].float(),
                sample_frequency=self.sample_rate,
                window_type="hanning",
                num_mel_bins=self.num_mel_bins,
                dither=0.0,
            )
            frames = min(fbank.shape[0], self.max_length)
            feats[i, :frames] = fbank[:frames]
        return (feats - self.mean) / (2 * self.std)

    def encode(self, feats):
        """Token sequence of normalised filterbanks (the output of ``compute_features``).

        Arguments
        ---------
        feats : torch.Tensor
            ``[B, max_length, num_mel_bins]``.

        Returns
        -------
        torch.Tensor
            ``[B, 2 + F * T, D]`` after AST's final LayerNorm: CLS, distillation,
            then the patches frequency-major (see ``patch_grid``).
        """
        expected = (self.max_length, self.num_mel_bins)
        if feats.dim() != 3 or tuple(feats.shape[1:]) != expected:
            raise ValueError(
                f"AST.encode expects normalised fbanks [batch, {expected[0]}, {expected[1]}] "
                f"(max_length, num_mel_bins), got {tuple(feats.shape)}; compute them with "
                "AST.compute_features."
            )
        return self.model(input_values=feats).last_hidden_state

    def pool(self, tokens):
        """One vector per clip from ``encode``'s tokens ``[B, N, D]`` -> ``[B, D]``."""
        if self.pooling == "mean":
            return tokens.mean(dim=1)
        return (tokens[:, 0] + tokens[:, 1]) / 2

    def forward(self, wavs, lengths=None, augment=None):
        """Pooled embedding of each clip.

        Recipes call this (not ``compute_features``/``encode``/``pool`` one by one) so that the
        whole trainable computation runs inside ``forward``: under DistributedDataParallel only
        a call of the wrapped module's forward synchronises the gradients.

        Arguments
        ---------
        wavs : torch.Tensor
            ``[B, T]`` mono waveforms.
        lengths : torch.Tensor, optional
            ``[B]`` relative lengths in (0, 1].
        augment : callable, optional
            Applied to the normalised fbank ``[B, frames, mel bins]`` before the encoder (e.g.
            SpeechBrain's ``SpectrogramDrop``-based SpecAugment during training).

        Returns
        -------
        torch.Tensor
            ``[B, D]``.
        """
        feats = self.compute_features(wavs, lengths)
        if augment is not None:
            feats = augment(feats)
        return self.pool(self.encode(feats))


def batched_kaldi_fbank(wavs, counts, sample_rate, num_mel_bins, max_frames):
    """Kaldi log-mel filterbanks of a batch of clips at once, as AST's feature extractor computes
    them (``torchaudio.compliance.kaldi.fbank`` with a Hann window and no dither).

    Equal, within float rounding, to one ``kaldi.fbank`` call per clip on its first ``counts[i]``
    samples: every frame depends on its own 25 ms of samples only, so the frames of the padded
    batch that lie inside a clip are those of the clip alone, and the frames past a clip's end
    are zeroed. A few dozen batched kernels instead of a few dozen per clip, which made the GPU
    wait on Python in training.

    Arguments
    ---------
    wavs : torch.Tensor
        ``[B, T]`` waveforms (any float dtype; computed in float32).
    counts : list of int
        Valid samples of each clip (at least one 25 ms window).
    sample_rate : int
        Sampling rate in Hz.
    num_mel_bins : int
        Mel bands.
    max_frames : int
        Frames kept per clip (AST's ``max_length``); missing frames are zeros.

    Returns
    -------
    torch.Tensor
        ``[B, max_frames, num_mel_bins]`` float32.

    Example
    -------
    >>> wavs = torch.randn(2, 16000) * 0.1
    >>> feats = batched_kaldi_fbank(wavs, [16000, 8000], 16000, 128, 100)
    >>> reference = kaldi.fbank(wavs[1:, :8000], window_type="hanning", num_mel_bins=128, dither=0.0)
    >>> feats.shape, reference.shape
    (torch.Size([2, 100, 128]), torch.Size([48, 128]))
    >>> torch.allclose(feats[1, :48], reference, atol=1e-4), bool((feats[1, 48:] == 0).all())
    (True, True)
    """
    window = int(sample_rate * FRAME_LENGTH_MS / 1000)
    shift = int(sample_rate * FRAME_SHIFT_MS / 1000)
    padded = 1 << (window - 1).bit_length()  # Kaldi rounds the FFT size up to a power of two
    batch = wavs.shape[0]
    # Only the samples of the first max_frames frames are needed.
    wavs = wavs[:, : (max_frames - 1) * shift + window].float()
    if wavs.shape[1] < window:
        wavs = F.pad(wavs, (0, window - wavs.shape[1]))
    frames = wavs.unfold(1, window, shift)  # [B, M, window]
    frames = frames - frames.mean(dim=-1, keepdim=True)  # remove_dc_offset
    previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
    frames = frames - PREEMPHASIS * previous
    hann = torch.hann_window(window, periodic=False, device=wavs.device, dtype=torch.float32)
    spectrum = torch.fft.rfft(frames * hann, n=padded).abs().pow(2.0)  # [B, M, padded/2+1]
    banks, _ = kaldi.get_mel_banks(num_mel_bins, padded, float(sample_rate), 20.0, 0.0, 100.0, -500.0, 1.0)
    banks = F.pad(banks.to(device=wavs.device, dtype=torch.float32), (0, 1))
    mel = torch.matmul(spectrum, banks.T)
    mel = torch.clamp_min(mel, torch.finfo(torch.float32).eps).log()
    valid = torch.tensor(
        [max(0, 1 + (count - window) // shift) for count in counts], device=wavs.device
    )  # frames of each clip (Kaldi's snip_edges)
    keep = torch.arange(mel.shape[1], device=wavs.device)[None, :] < valid[:, None]
    mel = mel * keep[..., None]
    feats = mel.new_zeros(batch, max_frames, num_mel_bins)
    frames_out = min(max_frames, mel.shape[1])
    feats[:, :frames_out] = mel[:, :frames_out]
    return feats
