"""Whisper's encoder as an audio-classification backbone: waveforms in, one embedding per clip out.

``WhisperEncoder`` is SpeechBrain's Hugging Face ``Whisper`` lobe with ``encoder_only=True`` (the
decoder is deleted at load time) and the interface of this package's AST lobe, which the
classification recipes use: ``forward(wavs, lengths, augment=None) -> [B, D]`` and
``hidden_size``. ``inject`` finds the encoder through SpeechBrain's lobe as usual, and the graph
modes replay :meth:`WhisperEncoder.encode`.

Whisper itself always reads 30 s: its feature extractor pads every clip to 3,000 mel frames and
its encoder refuses any other length. Here the encoder runs on the batch's own length (the
longest clip), and padding is handled per clip:

* each clip's log-mel spectrogram is computed on its own samples, with its own maximum for
  Whisper's dynamic-range clamp (``max - 8``; SpeechBrain's lobe takes one maximum over the
  whole padded batch), then zero-padded to the batch's frames;
* the convolutional front end sees exactly the zeros its own padding would add: the mel frames
  and the first convolution's outputs past a clip's end are zeroed;
* Whisper's positions are a fixed sinusoid table: the encoder takes its first rows, as many as
  the input needs (``ceil(frames / 2)`` after the stride-2 convolution);
* attention ignores the padded positions of each clip (a key padding mask, only when the batch
  has padding), and the pooled output averages each clip's valid positions only.

So a clip's embedding does not depend on the other clips of its batch for every PETL method
whose modules work position by position or causally (Bottleneck, LoRA, BitFit, causal
MambAdapter, linear, full fine-tuning). Modules that look ahead in time, the Conformer adapter's
convolution and a bidirectional Mamba, see the padded positions past a clip's last few frames,
as they do in any padded encoder; prompt and prefix tuning refuse attention masks, so they take
batches without padding only (as ESC-50, whose clips are all 5 s).

Authors
 * speechbrain-mambadapter contributors 2026
"""

import logging

import torch
import torch.nn.functional as F
from speechbrain.integrations.huggingface.whisper import Whisper

logger = logging.getLogger(__name__)

POOLING_MODES = ("mean",)
# Whisper's dynamic range: log10 mel values below (clip maximum - 8) are raised to it.
DYNAMIC_RANGE = 8.0


class WhisperEncoder(Whisper):
    """Whisper's encoder on each clip's own length, mean-pooled over its valid positions.

    The weights are kept in float32 whatever the checkpoint stores (run with autocast, e.g. the
    recipes' ``--precision=bf16``). ``freeze=True`` sets ``requires_grad=False`` on every
    parameter but does not run the encoder under ``torch.no_grad()``: modules injected into it
    still receive gradients. LayerDrop (0 in every released Whisper) is not applied.

    Arguments
    ---------
    source : str
        Hugging Face model id or a local folder (``config.json``, the weights and
        ``preprocessor_config.json``; a folder holding the encoder's weights only loads too, the
        decoder is built at random and deleted at once).
    save_path : str
        Cache folder for hub downloads.
    sampling_rate : int
        Sampling rate of the input waveforms (Whisper's is 16 kHz).
    freeze : bool
        Freeze every parameter (see above).
    pooling : str
        ``"mean"``: the mean of each clip's valid output positions.

    Example
    -------
    >>> from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel
    >>> folder = str(getfixture("tmp_path") / "whisper")  # a tiny random Whisper (base: 6 x 512)
    >>> config = WhisperConfig(d_model=64, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
    ...                        decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=128)
    >>> WhisperModel(config).save_pretrained(folder)
    >>> _ = WhisperFeatureExtractor().save_pretrained(folder)
    >>> encoder = WhisperEncoder(folder, save_path=folder, freeze=True)
    >>> wavs = torch.randn(2, 16000)  # 1 s, and a 0.5 s clip padded to 1 s
    >>> lengths = torch.tensor([1.0, 0.5])
    >>> encoder(wavs, lengths).shape, encoder.hidden_size
    (torch.Size([2, 64]), 64)
    >>> feats, frames = encoder.compute_features(wavs, lengths)
    >>> feats.shape, frames.tolist()  # 80 mel bins, one frame per 10 ms
    (torch.Size([2, 80, 100]), [100, 50])
    >>> encoder.encode(feats, frames).shape  # one position per 20 ms, not Whisper's 1,500
    torch.Size([2, 50, 64])
    >>> alone = encoder(wavs[1:, :8000])  # the padded clip alone: the same embedding
    >>> torch.allclose(alone, encoder(wavs, lengths)[1:], atol=1e-5)
    True
    """

    def __init__(self, source, save_path, sampling_rate=16000, freeze=False, pooling="mean"):
        if pooling not in POOLING_MODES:
            raise ValueError(f"pooling must be one of {POOLING_MODES}, got {pooling!r}.")
        super().__init__(source, save_path, sampling_rate=sampling_rate, encoder_only=True, freeze=freeze)
        self.pooling = pooling
        # Checkpoints may store half precision; frozen fp16 weights next to fp32 adapters break
        # eager fp32 runs, and autocast gives the speed anyway.
        self.model.float()
        encoder = self.model.encoder
        self.max_positions = encoder.config.max_source_positions
        # Mel frames per encoder position (the second convolution's stride).
        self.frames_per_position = encoder.conv1.stride[0] * encoder.conv2.stride[0]

    @property
    def hidden_size(self):
        """Width ``D`` of the encoder's output and of the pooled embedding."""
        return self.model.config.d_model

    @property
    def max_samples(self):
        """Longest input in samples (30 s): the positions table has no rows beyond it."""
        return self.max_positions * self.frames_per_position * self._hop_length

    def compute_features(self, wavs, lengths=None):
        """Whisper's normalised log-mel spectrogram of each clip, on its own samples.

        Clips longer than :attr:`max_samples` (30 s) are cut there.

        Arguments
        ---------
        wavs : torch.Tensor
            ``[B, T]`` mono waveforms at ``sampling_rate``.
        lengths : torch.Tensor, optional
            ``[B]`` relative lengths in (0, 1] (SpeechBrain's convention); None: every clip
            fills ``T``.

        Returns
        -------
        feats : torch.Tensor
            ``[B, n_mels, frames]`` float32, zero past each clip's frames (zero is what the
            encoder's convolutions pad with).
        frames : torch.Tensor
            ``[B]`` long, each clip's mel frames (one per 10 ms: ``samples // hop_length``).
        """
        if wavs.dim() != 2:
            raise ValueError(
                f"WhisperEncoder expects mono waveforms [batch, time], got shape {tuple(wavs.shape)}; "
                "average or select channels first."
            )
        batch, n_samples = wavs.shape
        if lengths is None:
            lengths = torch.ones(batch, device=wavs.device)
        if lengths.shape != (batch,) or bool((lengths <= 0).any()) or bool((lengths > 1).any()):
            raise ValueError(
                f"lengths must be [batch]={batch} relative lengths in (0, 1], got {lengths.tolist()}."
            )
        counts = [min(c, self.max_samples) for c in torch.round(lengths.float() * n_samples).long().tolist()]
        for i, count in enumerate(counts):
            if count < self._n_fft:
                raise ValueError(
                    f"Clip {i} of the batch has {count} samples, fewer than one Whisper analysis window "
                    f"({self._n_fft} samples, 25 ms at 16 kHz); remove such clips in data preparation "
                    "or pad them."
                )
        frames = [count // self._hop_length for count in counts]
        feats = wavs.new_zeros(batch, self._mel_filters.shape[0], max(frames), dtype=torch.float32)
        # Clips of one length share one STFT; the spectrogram stays in float32 under autocast.
        with torch.autocast(wavs.device.type, enabled=False):
            for count in sorted(set(counts)):
                rows = [i for i, c in enumerate(counts) if c == count]
                index = torch.tensor(rows, device=wavs.device)
                mel = self._log_mel(wavs[index, :count].float())
                feats[index, :, : mel.shape[-1]] = mel
        return feats, torch.tensor(frames, device=wavs.device)

    def _log_mel(self, audio):
        """``[N, samples]`` (one length) -> ``[N, n_mels, samples // hop]``, each clip normalised
        with its own maximum, as Whisper's feature extractor does for a single clip."""
        window = torch.hann_window(self._n_fft, device=audio.device)
        stft = torch.stft(audio, self._n_fft, self._hop_length, window=window, return_complex=True)
        magnitudes = stft[..., :-1].abs() ** 2
        log_spec = torch.clamp(self._mel_filters @ magnitudes, min=1e-10).log10()
        peak = log_spec.amax(dim=(1, 2), keepdim=True)
        log_spec = torch.maximum(log_spec, peak - DYNAMIC_RANGE)
        return (log_spec + 4.0) / 4.0

    def positions(self, frames):
        """Encoder positions of clips of ``frames`` mel frames: ``ceil(frames / 2)``.

        Example
        -------
        >>> WhisperEncoder.positions(None, torch.tensor([3000, 500, 7]))
        tensor([1500,  250,    4])
        """
        return (frames + 1) // 2

    def encode(self, feats, frames=None):
        """Output positions of the encoder (after its final LayerNorm) for ``compute_features``' output.

        Arguments
        ---------
        feats : torch.Tensor
            ``[B, n_mels, T]``, zero past each clip's frames.
        frames : torch.Tensor, optional
            ``[B]`` long, each clip's valid frames; None: no padding (every clip has ``T``).

        Returns
        -------
        torch.Tensor
            ``[B, ceil(T / 2), D]``; the positions past a clip's own are padding.
        """
        encoder = self.model.encoder
        length = (feats.shape[-1] + 1) // 2
        if feats.dim() != 3 or feats.shape[1] != encoder.conv1.in_channels or length > self.max_positions:
            raise ValueError(
                f"WhisperEncoder.encode expects log-mel features [batch, {encoder.conv1.in_channels}, "
                f"frames <= {2 * self.max_positions}], got {tuple(feats.shape)}; compute them with "
                "WhisperEncoder.compute_features."
            )
        hidden = F.gelu(encoder.conv1(feats))
        mask = None
        if frames is not None:
            time = torch.arange(feats.shape[-1], device=feats.device)
            # Zeros past each clip, where the clip alone would have the convolution's zero padding.
            hidden = hidden * (time[None, :] < frames[:, None]).unsqueeze(1).to(hidden.dtype)
            valid = torch.arange(length, device=feats.device)[None, :] < self.positions(frames)[:, None]
            mask = self._attention_mask(valid, hidden.dtype)
        hidden = F.gelu(encoder.conv2(hidden)).permute(0, 2, 1)
        hidden = hidden + encoder.embed_positions.weight[:length]
        hidden = F.dropout(hidden, p=encoder.dropout, training=encoder.training)
        for layer in encoder.layers:
            hidden = layer(hidden, mask)
            # transformers 4.x returns a tuple, 5.x the tensor.
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden
        return encoder.layer_norm(hidden)

    def _attention_mask(self, valid, dtype):
        """Key padding mask ``[B, 1, 1, L]`` in the form the attention implementation takes:
        boolean (True = attend) for SDPA, additive for the eager one."""
        if self.model.config._attn_implementation == "eager":
            return torch.zeros(valid.shape, dtype=dtype, device=valid.device).masked_fill(
                ~valid, torch.finfo(dtype).min
            )[:, None, None, :]
        return valid[:, None, None, :]

    def pool(self, tokens, frames=None):
        """The mean of each clip's valid positions: ``[B, L, D]`` -> ``[B, D]``."""
        if frames is None:
            return tokens.mean(dim=1)
        counts = self.positions(frames)
        valid = torch.arange(tokens.shape[1], device=tokens.device)[None, :] < counts[:, None]
        summed = (tokens * valid.unsqueeze(-1).to(tokens.dtype)).sum(dim=1)
        return summed / counts.unsqueeze(-1).to(summed.dtype)

    def forward(self, wavs, lengths=None, augment=None):
        """Pooled embedding of each clip.

        Recipes call this (not the stages one by one) so that the whole trainable computation
        runs inside ``forward``: under DistributedDataParallel only a call of the wrapped
        module's forward synchronises the gradients.

        Arguments
        ---------
        wavs : torch.Tensor
            ``[B, T]`` mono waveforms.
        lengths : torch.Tensor, optional
            ``[B]`` relative lengths in (0, 1].
        augment : callable, optional
            Applied to the features as ``[B, frames, n_mels]`` (the recipes' SpecAugment)
            before the encoder; padding frames are zeroed again after it.

        Returns
        -------
        torch.Tensor
            ``[B, D]``.
        """
        feats, frames = self.compute_features(wavs, lengths)
        padded = bool((frames < feats.shape[-1]).any())
        if augment is not None:
            feats = augment(feats.transpose(1, 2)).transpose(1, 2)
            if padded:
                time = torch.arange(feats.shape[-1], device=feats.device)
                feats = feats * (time[None, :] < frames[:, None]).unsqueeze(1)
        if not padded:
            # One tensor in: the encoder keeps the fastest attention kernel (no mask) and the
            # graph modes capture one graph per batch size.
            return self.pool(self.encode(feats))
        return self.pool(self.encode(feats, frames), frames)
