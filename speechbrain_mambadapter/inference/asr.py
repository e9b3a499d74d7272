"""``AdaptedWhisperASR``: SpeechBrain's ``WhisperASR`` for an exported Whisper adapter (Common Voice recipe).

Whisper with the adapter in its encoder and, for a language Whisper does not know, the trained
row of the new language token ``<|xx|>``. ``transcribe_batch`` decodes as the recipe's test stage
does: the recipe's test searcher (greedy or beam search, as its hparams file chose), prompted in
the adapter's language (``speechbrain_mambadapter.recipe.asr.transcribe``).

The base model is built as the run built it. Runs of the recipe since it computes each clip's
log-mel features on their own (``speechbrain_mambadapter.lobes.whisper_asr.Whisper``) give each
clip a transcript that does not depend on the clips batched with it. Folders exported from
earlier runs use SpeechBrain's Whisper wrapper, which floors a batch's features 8 (log10) below
the loudest value *of the batch*: there ``--batch_size=1`` on the command line
(``python -m speechbrain_mambadapter transcribe``, which batches clips by duration as the recipe's
test stage does) makes every file independent of the others.

Example (``folder`` written by ``python -m speechbrain_mambadapter export <run> <folder>``)::

    from speechbrain_mambadapter.inference import AdaptedWhisperASR
    asr = AdaptedWhisperASR.from_hparams(source=folder)
    asr.transcribe_file("clip.mp3")

Authors
 * speechbrain-mambadapter contributors 2026
"""

import torch
from speechbrain.inference.ASR import WhisperASR
from speechbrain.integrations.huggingface.whisper import CHUNK_LENGTH

from speechbrain_mambadapter.inference.adapter import AdapterFolderMixin
from speechbrain_mambadapter.recipe import asr


class AdaptedWhisperASR(AdapterFolderMixin, WhisperASR):
    """Whisper with a trained adapter (and language token), decoding clips of up to 30 s.

    Built by ``from_hparams(source=<adapter folder>)``; the folder's ``hyperparams.yaml``
    provides the modules ``whisper`` and ``decoder`` (the recipe's test searcher) and the
    hparams ``language``, ``language_token_id`` (None for an English-only Whisper) and
    ``sample_rate``.

    Unlike ``WhisperASR.transcribe_file``, which cuts long audio into 30 s segments and detects
    each segment's language (a language token added by the recipe is not one Whisper can
    detect), :meth:`transcribe_file` decodes one clip of up to 30 s in the adapter's language and
    returns its transcript.

    Arguments
    ---------
    *args, **kwargs
        As ``speechbrain.inference.interfaces.Pretrained``, plus ``merge`` (fold LoRA in).
    """

    HPARAMS_NEEDED = ["language", "language_token_id", "sample_rate"]
    MODULES_NEEDED = ["whisper", "decoder"]
    ADAPTED_MODULE = "whisper"

    def check_duration(self, num_samples, name="The audio"):
        """Refuse audio longer than the 30 s Whisper reads at once (it would be cut silently)."""
        seconds = num_samples / self.hparams.sample_rate
        if seconds > CHUNK_LENGTH:
            raise ValueError(
                f"{name} is {seconds:.1f} s long; Whisper reads at most {CHUNK_LENGTH} s at a time and "
                f"would drop the rest. Cut it into pieces of at most {CHUNK_LENGTH} s and transcribe those."
            )

    @torch.no_grad()
    def transcribe_batch(self, wavs, wav_lens=None):
        """Transcribe a batch of waveforms, as the recipe's test stage does.

        Arguments
        ---------
        wavs : torch.Tensor
            ``[B, T]`` waveforms at ``sample_rate`` (right-padded), ``T`` at most 30 s.
        wav_lens : torch.Tensor, optional
            ``[B]`` lengths relative to ``T``; None: all full length.

        Returns
        -------
        list of str
            The transcripts (special tokens removed, stripped).
        list of list of int
            Their token ids.
        """
        if wavs.dim() == 1:
            wavs = wavs.unsqueeze(0)
        self.check_duration(wavs.shape[-1])
        if wav_lens is None:
            wav_lens = torch.ones(wavs.shape[0])
        wav_lens = wav_lens.float().to(self.device)
        with self.inference_ctx:
            encoder_out = self.encode_batch(wavs, wav_lens)
            tokens = asr.transcribe(self.mods.decoder, encoder_out, wav_lens, self.hparams.language_token_id)
        texts = self.tokenizer.batch_decode(tokens, skip_special_tokens=True)
        return [text.strip() for text in texts], tokens

    def transcribe_file(self, path, **kwargs):
        """The transcript of one audio file of up to 30 s (any rate or channel count).

        Arguments
        ---------
        path : str or os.PathLike
            The file.
        **kwargs
            Passed to ``load_audio``.

        Returns
        -------
        str
        """
        wav = self.load_audio(path, **kwargs)
        self.check_duration(wav.shape[-1], str(path))
        texts, _ = self.transcribe_batch(wav.unsqueeze(0), torch.ones(1))
        return texts[0]

    def forward(self, wavs, wav_lens=None):
        """Runs :meth:`transcribe_batch`."""
        return self.transcribe_batch(wavs, wav_lens)
