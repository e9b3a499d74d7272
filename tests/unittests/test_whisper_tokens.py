"""lobes/whisper_tokens.py: new language tokens, whose embedding row alone trains, and prompts."""

import pytest
import torch

from speechbrain_mambadapter.lobes.whisper_tokens import (
    LanguageTokenEmbedding,
    add_language_token,
    whisper_prompt_ids,
)
from tools.whisper_assets import MULTILINGUAL_VOCAB_SIZE


@pytest.fixture(scope="module")
def tokenizer(tiny_whisper_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_whisper_dir)


@pytest.fixture
def whisper(tiny_whisper_dir, tmp_path):
    """A fresh SpeechBrain Whisper wrapper (tests below modify its tokenizer and decoder)."""
    from speechbrain.integrations.huggingface.whisper import Whisper

    return Whisper(tiny_whisper_dir, save_path=str(tmp_path), language="en")


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
