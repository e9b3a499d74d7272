"""The ASR recipe's Whisper lobe (``lobes.whisper_asr.Whisper``): a clip's log-mel features do not
depend on the clips batched with it, and are SpeechBrain's features of that clip alone."""

import torch


def test_a_clip_has_the_same_features_alone_and_batched_with_a_loud_one(tiny_whisper_dir, tmp_path):
    from speechbrain.integrations.huggingface.whisper import Whisper as SpeechBrainWhisper

    from speechbrain_mambadapter.lobes.whisper_asr import Whisper

    g = torch.Generator().manual_seed(0)
    quiet = 1e-3 * torch.randn(16000, generator=g)
    loud = torch.randn(16000, generator=g)
    batch = torch.stack([quiet, loud])
    ours = Whisper(tiny_whisper_dir, save_path=str(tmp_path / "a")).eval()
    theirs = SpeechBrainWhisper(tiny_whisper_dir, save_path=str(tmp_path / "b")).eval()
    alone = ours._get_mel(quiet.unsqueeze(0))
    batched = ours._get_mel(batch)
    assert batched.shape == (2, *alone.shape[1:])
    torch.testing.assert_close(batched[0], alone[0], rtol=0, atol=0)
    torch.testing.assert_close(batched[1], ours._get_mel(loud.unsqueeze(0))[0], rtol=0, atol=0)
    # A batch of one is SpeechBrain's computation itself ...
    torch.testing.assert_close(alone, theirs._get_mel(quiet.unsqueeze(0)), rtol=0, atol=0)
    # ... while SpeechBrain's lobe clamps the quiet clip at the loud one's maximum - 8: its floor
    # rises by 35 dB (features are (log10 + 4) / 4, so 0.875 is 3.5 decades).
    raised = theirs._get_mel(batch)[0]
    assert raised.min() > alone[0].min() + 0.8
