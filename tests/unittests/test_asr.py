"""The ASR helpers the Common Voice recipe needs: the training prompt is the decoding prompt, for
multilingual and English-only Whisper tokenizers alike."""

import pytest

from speechbrain_mambadapter.recipe.asr import decoder_prompt


@pytest.fixture
def whisper(tiny_whisper_dir, tmp_path):
    from speechbrain.integrations.huggingface.whisper import Whisper

    return Whisper(tiny_whisper_dir, save_path=str(tmp_path)).requires_grad_(False)


def test_multilingual_prompt_has_the_new_language(whisper):
    from speechbrain_mambadapter.lobes.whisper_tokens import add_language_token, whisper_prompt_ids

    language_id = add_language_token(whisper.tokenizer, whisper, "eo")
    prompt = decoder_prompt(whisper.tokenizer, language_id)
    assert prompt == whisper_prompt_ids(whisper.tokenizer, "eo")
    assert whisper.tokenizer.convert_ids_to_tokens(prompt) == [
        "<|startoftranscript|>",
        "<|eo|>",
        "<|transcribe|>",
        "<|notimestamps|>",
    ]
    with pytest.raises(ValueError, match="multilingual"):
        decoder_prompt(whisper.tokenizer, None)


def test_english_only_prompt_has_no_language(whisper):
    # As an English-only Whisper's tokenizer is (tiny.en's, converted): SpeechBrain sets no
    # language nor task for it. set_prefix_tokens(language=None) would keep the current ones.
    tokenizer = whisper.tokenizer
    tokenizer.language, tokenizer.task = None, None
    prompt = decoder_prompt(tokenizer, None)
    assert tokenizer.convert_ids_to_tokens(prompt) == ["<|startoftranscript|>", "<|notimestamps|>"]
    with pytest.raises(ValueError, match="English-only"):
        decoder_prompt(tokenizer, 51865)
