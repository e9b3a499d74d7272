"""SpeechBrain's Whisper lobe with each clip's log-mel features computed on their own.

Whisper's features clamp the log-mel spectrogram from below at its maximum minus 8 (80 dB of
dynamic range). OpenAI's ``whisper.log_mel_spectrogram`` and transformers'
``WhisperFeatureExtractor`` take that maximum per clip; SpeechBrain's
``Whisper.log_mel_spectrogram`` takes it over the whole batch tensor. There, a quiet clip batched
with a loud one gets a higher floor than it gets alone, so a clip's features, and the error rates,
depend on which clips share its batch, on the batch size and on the number of GPUs the batch is
split over. (On the quick start's frozen Whisper tiny.en, batch 1 against batch 8 moved the test
WER from 162 % to 163.6 %.) :class:`Whisper` here is SpeechBrain's lobe with SpeechBrain's own
feature code run on one clip at a time, so each clip is clamped at its own maximum, as Whisper was
trained.

The Common Voice recipe's hparams files build it::

    model: !new:speechbrain_mambadapter.lobes.whisper_asr.Whisper
        source: !ref <whisper_source>

Authors
 * speechbrain-mambadapter contributors 2026
"""

import torch
from speechbrain.integrations.huggingface.whisper import Whisper as SpeechBrainWhisper


class Whisper(SpeechBrainWhisper):
    """``speechbrain.integrations.huggingface.whisper.Whisper`` with per-clip log-mel features.

    Same arguments, weights, ``state_dict`` and outputs as SpeechBrain's lobe, except that
    :meth:`log_mel_spectrogram` clamps each clip at its own maximum (see the module's docstring).

    Example
    -------
    >>> Whisper.__mro__[1].__module__
    'speechbrain.integrations.huggingface.whisper'
    """

    def log_mel_spectrogram(self, audio, padding: int = 0):
        """Log-mel spectrogram of each clip of ``audio`` ``[batch, samples]`` on its own.

        Arguments
        ---------
        audio : torch.Tensor
            A batch of 16 kHz waveforms, ``[batch, samples]``.
        padding : int
            Samples of zeros appended to each clip first.

        Returns
        -------
        torch.Tensor
            ``[batch, n_mels, frames]``, each clip's features as SpeechBrain computes those of a
            batch of one.
        """
        if audio.dim() < 2:
            return super().log_mel_spectrogram(audio, padding)
        clips = [super(Whisper, self).log_mel_spectrogram(clip.unsqueeze(0), padding) for clip in audio]
        return torch.cat(clips, dim=0)
