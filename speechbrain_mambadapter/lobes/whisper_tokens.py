"""New Whisper language tokens (``<|eo|>``, ``<|ab|>`` ...) whose embedding row is the only
trainable part of the decoder's token table.

None of ab, ckb, eo, kab, rw is a Whisper language (``set_prefix_tokens(language="eo")`` raises
"Unsupported language"). :func:`add_language_token` appends the token to the tokenizer and makes
the decoder's token table a :class:`LanguageTokenEmbedding`: the pretrained rows are a frozen
parameter, the new rows a separate trainable parameter, and its ``weight`` property concatenates
both. SpeechBrain's wrapper computes its logits from ``decoder.embed_tokens.weight``, so the new
token is scored like any other. Keeping the rows in two parameters, rather than masking gradients
of one big table with a hook, means AdamW's weight decay and moments can never touch the
pretrained rows, and the trainable-parameter count is exactly ``num_new_tokens * d_model``.
:func:`whisper_prompt_ids` builds the decoder prompt for Whisper's languages and new ones alike.

The Common Voice recipe calls it from its YAML, after ``inject`` froze the model::

    language_token_id: !apply:speechbrain_mambadapter.lobes.whisper_tokens.add_language_token
        tokenizer: !ref <whisper.tokenizer>
        model: !ref <whisper>
        language: !ref <language>

Authors
 * speechbrain-mambadapter contributors 2026
"""

import logging
from typing import List

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

# The language tokens of multilingual Whisper up to large-v2, in id order (50259 ... 50357);
# identical to the first 99 keys of transformers' ``tokenization_whisper.LANGUAGES`` (the 100th,
# "yue", exists only in large-v3).
NUM_WHISPER_LANGUAGES = 99


class LanguageTokenEmbedding(nn.Module):
    """Token table whose pretrained rows are frozen and whose appended rows are trainable.

    Drop-in for the decoder's ``nn.Embedding``: ``forward`` looks ids up in ``weight``, the
    concatenation ``[base_weight; new_rows]``, so the new ids embed and (through SpeechBrain's
    ``x @ embed_tokens.weight.T``) score like the others.

    Arguments
    ---------
    embedding : nn.Embedding
        The pretrained table ``[V, D]``; its weight becomes the frozen ``base_weight``.
    new_rows : torch.Tensor
        Initial values of the appended rows ``[K, D]``.

    Example
    -------
    >>> table = LanguageTokenEmbedding(nn.Embedding(10, 4), torch.zeros(1, 4))
    >>> table.weight.shape, table(torch.tensor([[9, 10]])).shape
    (torch.Size([11, 4]), torch.Size([1, 2, 4]))
    >>> [name for name, p in table.named_parameters() if p.requires_grad]
    ['new_rows']
    """

    def __init__(self, embedding: nn.Embedding, new_rows: torch.Tensor):
        super().__init__()
        if new_rows.dim() != 2 or new_rows.shape[1] != embedding.embedding_dim:
            raise ValueError(
                f"new_rows must be [K, {embedding.embedding_dim}] to extend a table of width "
                f"{embedding.embedding_dim}; got {list(new_rows.shape)}."
            )
        self.base_weight = nn.Parameter(embedding.weight.detach(), requires_grad=False)
        self.new_rows = nn.Parameter(new_rows.detach().clone().to(embedding.weight))
        self.padding_idx = embedding.padding_idx

    @property
    def num_embeddings(self) -> int:
        """Rows of the whole table (pretrained + new)."""
        return self.base_weight.shape[0] + self.new_rows.shape[0]

    @property
    def embedding_dim(self) -> int:
        """Width of the table."""
        return self.base_weight.shape[1]

    @property
    def weight(self) -> torch.Tensor:
        """The whole table ``[V + K, D]``."""
        return torch.cat([self.base_weight, self.new_rows], dim=0)

    def append_rows(self, rows: torch.Tensor) -> None:
        """Appends trainable rows ``[K', D]`` (a second new language)."""
        self.new_rows = nn.Parameter(torch.cat([self.new_rows.detach(), rows.to(self.new_rows)], dim=0))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Embeds ``input_ids`` ``[B, L]`` into ``[B, L, D]``."""
        return F.embedding(input_ids, self.weight, self.padding_idx)


def _whisper_decoder(model: nn.Module) -> nn.Module:
    from transformers import WhisperForConditionalGeneration, WhisperModel

    if isinstance(model, WhisperForConditionalGeneration):
        raise TypeError(
            "add_language_token needs the WhisperModel used by SpeechBrain's Whisper wrapper "
            "(whisper.model), whose logits come from decoder.embed_tokens.weight; "
            "WhisperForConditionalGeneration has a separate proj_out that would not see the new row."
        )
    if isinstance(model, WhisperModel):
        return model.decoder
    inner = getattr(model, "model", None)
    if isinstance(inner, WhisperModel):
        return inner.decoder
    raise TypeError(
        f"add_language_token expects SpeechBrain's Whisper wrapper or a transformers WhisperModel, "
        f"got {type(model).__name__}."
    )


def add_language_token(tokenizer, model: nn.Module, language: str) -> int:
    """Adds ``<|language|>`` to a Whisper tokenizer and a trainable row for it to the decoder's
    token table; returns the new token id.

    The decoder's ``embed_tokens`` becomes a :class:`LanguageTokenEmbedding` (pretrained rows
    frozen, the new row trainable, initialised to the mean of the 99 pretrained language-token
    rows, so it starts as "some language"). Freeze the rest of the model *before* calling this:
    a later ``model.requires_grad_(False)`` would freeze the new row too. Calling it again for a
    language that is already there returns the existing id and changes nothing.

    Arguments
    ---------
    tokenizer : transformers.WhisperTokenizer
        The multilingual Whisper tokenizer (modified in place).
    model : nn.Module
        SpeechBrain's ``Whisper`` wrapper, or its ``.model`` (a transformers ``WhisperModel``);
        modified in place.
    language : str
        Language code, e.g. ``"eo"``; ``<|eo|>`` must not be a Whisper language already.

    Returns
    -------
    int
        The id of ``<|language|>``.
    """
    from tokenizers import AddedToken

    token = f"<|{language}|>"
    decoder = _whisper_decoder(model)
    table = decoder.embed_tokens
    existing = tokenizer.convert_tokens_to_ids(token)
    if existing is not None and existing != tokenizer.unk_token_id:
        if existing >= table.num_embeddings:
            raise ValueError(
                f"The tokenizer has {token} (id {existing}) but the decoder's table has only "
                f"{table.num_embeddings} rows; add the token to tokenizer and model together."
            )
        if isinstance(table, LanguageTokenEmbedding) and existing >= table.base_weight.shape[0]:
            return existing
        raise ValueError(
            f"{token} is already a pretrained Whisper token (id {existing}); pass it as the "
            f"Whisper language instead of adding it."
        )
    if len(tokenizer) != table.num_embeddings:
        raise ValueError(
            f"The tokenizer has {len(tokenizer)} ids but the decoder's table {table.num_embeddings} "
            f"rows; they must match before a language token is added."
        )
    sot = tokenizer.convert_tokens_to_ids("<|startoftranscript|>")
    language_ids = list(range(sot + 1, sot + 1 + NUM_WHISPER_LANGUAGES))
    init = table.weight.detach()[language_ids].mean(dim=0, keepdim=True)
    tokenizer.add_tokens([AddedToken(token, special=True, normalized=False)])
    new_id = tokenizer.convert_tokens_to_ids(token)
    if isinstance(table, LanguageTokenEmbedding):
        table.append_rows(init)
    else:
        decoder.embed_tokens = LanguageTokenEmbedding(table, init)
    if new_id != decoder.embed_tokens.num_embeddings - 1:
        raise RuntimeError(f"{token} got id {new_id}, expected {decoder.embed_tokens.num_embeddings - 1}.")
    decoder.config.vocab_size = decoder.embed_tokens.num_embeddings
    logger.info("Added language token %s (id %d), its embedding row is trainable", token, new_id)
    return new_id


def whisper_prompt_ids(tokenizer, language: str, task: str = "transcribe") -> List[int]:
    """Decoder prompt ``<|startoftranscript|> <|language|> <|task|> <|notimestamps|>``, for
    Whisper languages and for tokens added with :func:`add_language_token` alike.

    Arguments
    ---------
    tokenizer : transformers.WhisperTokenizer
        The tokenizer.
    language : str
        Language code, e.g. ``"en"`` or ``"eo"``.
    task : str
        ``"transcribe"`` or ``"translate"``.

    Returns
    -------
    list of int
        The four ids.

    Raises
    ------
    ValueError
        If ``<|language|>`` is not in the tokenizer.
    """
    if task not in ("transcribe", "translate"):
        raise ValueError(f"task must be 'transcribe' or 'translate', got {task!r}.")
    tokens = ["<|startoftranscript|>", f"<|{language}|>", f"<|{task}|>", "<|notimestamps|>"]
    ids = tokenizer.convert_tokens_to_ids(tokens)
    if ids[1] is None or ids[1] == tokenizer.unk_token_id:
        raise ValueError(
            f"<|{language}|> is not in the tokenizer; add it with add_language_token(tokenizer, "
            f"whisper, {language!r}) first."
        )
    return ids
