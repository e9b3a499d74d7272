"""What the Whisper ASR recipe needs beyond SpeechBrain: prompts with a new language token and
decoding in that language.

Whisper is prompted with ``<|startoftranscript|> <|xx|> <|transcribe|> <|notimestamps|>`` (an
English-only Whisper, e.g. ``tiny.en``, has neither language nor task in its prompt:
``<|startoftranscript|> <|notimestamps|>``, and the YAML sets ``language_token_id: null``). For a
language Whisper does not know, ``<|xx|>`` is added by
:func:`speechbrain_mambadapter.lobes.whisper_tokens.add_language_token` (from the recipe's YAML, after
``inject`` froze the model). SpeechBrain's ``S2SWhisperGreedySearcher`` and
``S2SWhisperBeamSearcher`` build their prompt from the tokenizer's prefix tokens, which only
know Whisper's own languages; their ``set_lang_tokens`` overwrites the language position of
that prompt, and :func:`transcribe` sets it before every search, so the language used for
decoding is always the recipe's ``--language``.

Authors
 * speechbrain-mambadapter contributors 2026
"""

import logging

from speechbrain_mambadapter.injection import trainable_parameter_count
from speechbrain_mambadapter.lobes.whisper_tokens import NUM_WHISPER_LANGUAGES, LanguageTokenEmbedding

logger = logging.getLogger(__name__)


def decoder_prompt(tokenizer, language_id):
    """The decoder prompt the searchers decode with (:func:`transcribe`), for the training targets.

    SpeechBrain's searchers start from ``tokenizer.prefix_tokens`` and put the language id
    right after ``<|startoftranscript|>``; this builds the same ids, so the model is trained
    with the prompt it is decoded with: ``<|startoftranscript|> <|xx|> <|transcribe|>
    <|notimestamps|>`` for a multilingual Whisper, ``<|startoftranscript|> <|notimestamps|>`` for
    an English-only one (``language_id`` None).

    Arguments
    ---------
    tokenizer : transformers.WhisperTokenizer
        The tokenizer of SpeechBrain's Whisper wrapper (its prefix tokens set by the wrapper).
    language_id : int or None
        Id of ``<|language|>`` (``add_language_token``), or None for an English-only Whisper.

    Returns
    -------
    list of int

    Raises
    ------
    ValueError
        If ``language_id`` is given to an English-only Whisper, or is None for a multilingual one.
    """
    prompt = list(tokenizer.prefix_tokens)
    sot = tokenizer.convert_tokens_to_ids("<|startoftranscript|>")
    has_language = len(prompt) > 1 and sot < prompt[1] <= sot + NUM_WHISPER_LANGUAGES
    if language_id is None and has_language:
        raise ValueError(
            "This Whisper is multilingual: its prompt needs a language token, but language_token_id "
            "is null; keep `language_token_id: !apply:speechbrain_mambadapter.lobes.whisper_tokens."
            "add_language_token` in the YAML (or use an English-only Whisper such as tiny.en)."
        )
    if language_id is not None and not has_language:
        raise ValueError(
            f"This Whisper is English-only (prompt {tokenizer.convert_ids_to_tokens(prompt)}, no "
            f"language token), but language_token_id is {language_id}; set `language_token_id: null` "
            f"in the YAML, or use a multilingual Whisper."
        )
    if language_id is not None:
        prompt[1] = language_id
    return prompt


def transcript_tokens(tokenizer, prompt_ids, text, max_tokens=448):
    """Token ids of one training target: ``prompt + text + <|endoftext|>``.

    The text gets a leading space, as in Whisper's own training data (its transcripts are
    decoded as ``" Hello"``). Teacher forcing feeds ``ids[:-1]`` and predicts ``ids[1:]``.

    Arguments
    ---------
    tokenizer : transformers.WhisperTokenizer
        The Whisper tokenizer.
    prompt_ids : list of int
        The decoder prompt (:func:`decoder_prompt`).
    text : str
        The normalised transcript.
    max_tokens : int
        The decoder's context (``max_target_positions``, 448 for every Whisper).

    Returns
    -------
    list of int

    Raises
    ------
    ValueError
        If the sequence does not fit in the decoder's context.
    """
    ids = list(prompt_ids) + tokenizer.encode(" " + text, add_special_tokens=False) + [tokenizer.eos_token_id]
    if len(ids) > max_tokens:
        raise ValueError(
            f"The transcript {text[:60]!r}... is {len(ids)} tokens with its prompt, more than the "
            f"{max_tokens} Whisper's decoder takes; lower max_duration or drop such utterances from the CSV."
        )
    return ids


def transcribe(searcher, enc_states, wav_lens, language_id):
    """Decodes a batch with a SpeechBrain Whisper searcher, prompting ``language_id``.

    Arguments
    ---------
    searcher : speechbrain.decoders.seq2seq.S2SWhisperGreedySearcher or S2SWhisperBeamSearcher
        The searcher.
    enc_states : torch.Tensor
        Encoder output ``[B, T, D]``.
    wav_lens : torch.Tensor
        Relative lengths ``[B]``.
    language_id : int or None
        Id of ``<|language|>``; None for an English-only Whisper (its prompt has no language).

    Returns
    -------
    list of list of int
        The hypotheses' token ids (prompt and ``<|endoftext|>`` excluded).
    """
    # The searchers reset their language after each call in some SpeechBrain versions and not
    # in others; setting it every time decodes in --language with both.
    searcher.set_lang_tokens(language_id)
    hyps, _, _, _ = searcher(enc_states, wav_lens)
    return hyps


def words(texts, normalize):
    """Normalised word lists, for ``ErrorRateStats``.

    Arguments
    ---------
    texts : list of str
        Decoded hypotheses or references.
    normalize : callable
        ``str -> str``, the same for hypotheses and references.

    Returns
    -------
    list of list of str

    Example
    -------
    >>> words(["Saluton, mondo!", ""], lambda text: text.lower().replace(",", "").replace("!", ""))
    [['saluton', 'mondo'], []]
    """
    return [normalize(text).split() for text in texts]


def trainable_parameter_summary(whisper):
    """Trainable parameters of a Whisper after ``inject`` and ``add_language_token``, and logs them.

    Arguments
    ---------
    whisper : torch.nn.Module
        SpeechBrain's Whisper wrapper, returned by ``inject``.

    Returns
    -------
    dict
        ``total`` (all parameters), ``trainable`` (everything that trains, the new
        language rows included) and ``language_rows`` (those rows).
    """
    tables = [m for m in whisper.modules() if isinstance(m, LanguageTokenEmbedding)]
    language_rows = sum(t.new_rows.numel() for t in tables if t.new_rows.requires_grad)
    summary = {
        "total": sum(p.numel() for p in whisper.parameters()),
        "trainable": trainable_parameter_count(whisper),
        "language_rows": language_rows,
    }
    logger.info(
        "Whisper with %s: %.3fM trainable parameters of %.1fM (%.2f %%), of which %d in the new "
        "language token row(s)",
        whisper.petl_config["method"],
        summary["trainable"] / 1e6,
        summary["total"] / 1e6,
        100.0 * summary["trainable"] / max(1, summary["total"]),
        language_rows,
    )
    return summary
