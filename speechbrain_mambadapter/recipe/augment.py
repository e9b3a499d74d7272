"""SpecAugment as the paper's AST code applies it: one frequency and one time mask per clip.

Authors
 * speechbrain-mambadapter contributors 2026
"""

import torch
import torchaudio


class SpecAugment(torch.nn.Module):
    """One frequency mask and one time mask per clip, as the paper's AST code.

    The paper applies ``torchaudio.transforms.FrequencyMasking(24)`` and ``TimeMasking(80)`` to
    each normalised filterbank; masked values become 0 (the normalised mean). Here each clip of
    the batch draws its own masks (``iid_masks=True``), which is the same distribution.

    Arguments
    ---------
    freq_mask : int
        Largest number of consecutive mel bins masked (width drawn uniformly in ``[0, freq_mask)``).
    time_mask : int
        Largest number of consecutive frames masked.

    Example
    -------
    >>> feats = torch.ones(4, 100, 128)
    >>> masked = SpecAugment(freq_mask=24, time_mask=80)(feats)
    >>> masked.shape, bool((masked == 0).any()), bool((masked <= 1).all())
    (torch.Size([4, 100, 128]), True, True)
    """

    def __init__(self, freq_mask=24, time_mask=80):
        super().__init__()
        if freq_mask < 0 or time_mask < 0:
            raise ValueError(f"Mask widths must be >= 0, got freq_mask={freq_mask}, time_mask={time_mask}.")
        self.freq = torchaudio.transforms.FrequencyMasking(freq_mask, iid_masks=True)
        self.time = torchaudio.transforms.TimeMasking(time_mask, iid_masks=True)

    def forward(self, feats):
        """Mask ``feats`` ``[B, frames, bins]``; returns a new tensor of the same shape."""
        spec = feats.transpose(1, 2).unsqueeze(1)  # torchaudio wants [B, C, freq, time]
        spec = self.time(self.freq(spec))
        return spec.squeeze(1).transpose(1, 2)
