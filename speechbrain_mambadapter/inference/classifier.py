"""``AdaptedEncoderClassifier``: SpeechBrain's ``EncoderClassifier`` for an exported classification adapter.

The adapted backbone (e.g. AST with MambAdapter) maps waveforms to one embedding per clip, the
linear head to class scores, exactly as the classification recipes' ``compute_forward`` at test
time (no SpecAugment, modules in eval mode). ``classify_batch`` and ``classify_file`` return what
``EncoderClassifier``'s do: log posteriors, the best one's score and index, and its label.

Example (``folder`` written by ``python -m speechbrain_mambadapter export <run> <folder>``)::

    from speechbrain_mambadapter.inference import AdaptedEncoderClassifier
    classifier = AdaptedEncoderClassifier.from_hparams(source=folder)
    log_probs, score, index, labels = classifier.classify_file("dog_bark.wav")

Authors
 * speechbrain-mambadapter contributors 2026
"""

import torch
from speechbrain.inference.classifiers import EncoderClassifier

from speechbrain_mambadapter.inference.adapter import AdapterFolderMixin


class AdaptedEncoderClassifier(AdapterFolderMixin, EncoderClassifier):
    """Waveform -> adapted backbone -> pooled embedding -> linear head -> labels.

    Built by ``from_hparams(source=<adapter folder>)`` (see ``AdapterFolderMixin.from_hparams``);
    the folder's ``hyperparams.yaml`` provides the modules ``backbone`` and ``classifier`` and
    the hparams ``sample_rate`` and ``label_encoder``.

    Arguments
    ---------
    *args, **kwargs
        As ``speechbrain.inference.interfaces.Pretrained``, plus ``merge`` (fold LoRA in).
    """

    MODULES_NEEDED = ["backbone", "classifier"]
    HPARAMS_NEEDED = ["sample_rate", "label_encoder"]
    ADAPTED_MODULE = "backbone"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        labels, outputs = len(self.hparams.label_encoder), self.mods.classifier.out_features
        if labels != outputs:
            raise ValueError(
                f"The adapter's label list has {labels} labels but its head {outputs} outputs; the folder's "
                "label_encoder.txt does not belong to its classifier.safetensors. Export the run again."
            )
        self.hparams.label_encoder.expect_len(labels)

    @torch.no_grad()
    def encode_batch(self, wavs, wav_lens=None):
        """Embeddings ``[B, D]`` of waveforms ``[B, T]`` at ``sample_rate`` (relative lengths ``[B]``)."""
        if wavs.dim() == 1:
            wavs = wavs.unsqueeze(0)
        if wav_lens is None:
            wav_lens = torch.ones(wavs.shape[0])
        wavs, wav_lens = wavs.to(self.device).float(), wav_lens.to(self.device)
        with self.inference_ctx:
            return self.mods.backbone(wavs, wav_lens)

    @torch.no_grad()
    def classify_batch(self, wavs, wav_lens=None):
        """Classify a batch of waveforms.

        Arguments
        ---------
        wavs : torch.Tensor
            ``[B, T]`` waveforms at ``sample_rate`` (right-padded).
        wav_lens : torch.Tensor, optional
            ``[B]`` lengths relative to ``T``; None: all full length.

        Returns
        -------
        out_prob : torch.Tensor
            Log posteriors ``[B, n_classes]``.
        score : torch.Tensor
            The best log posterior of each clip ``[B]``.
        index : torch.Tensor
            The best class of each clip ``[B]``.
        text_lab : list of str
            Its label.
        """
        embeddings = self.encode_batch(wavs, wav_lens)
        with self.inference_ctx:
            logits = self.mods.classifier(embeddings)
        out_prob = torch.log_softmax(logits.float(), dim=-1)
        score, index = out_prob.max(dim=-1)
        return out_prob, score, index, self.hparams.label_encoder.decode_torch(index)

    def classify_file(self, path, **kwargs):
        """Classify one audio file (any rate or channel count; read as the recipes read audio).

        Returns what :meth:`classify_batch` returns, for a batch of one.
        """
        wav = self.load_audio(path, **kwargs)
        return self.classify_batch(wav.unsqueeze(0), torch.ones(1))

    def forward(self, wavs, wav_lens=None):
        """Runs :meth:`classify_batch`."""
        return self.classify_batch(wavs, wav_lens)
