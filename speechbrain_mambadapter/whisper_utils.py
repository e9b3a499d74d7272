"""Whisper helpers: the real multilingual tokenizer built offline, a tiny random Whisper saved
locally, and new language tokens (``<|eo|>``, ``<|ab|>`` ...) whose embedding row is the only
trainable part of the token table.

The tokenizer comes from ``whisper/assets/multilingual.tiktoken`` inside the
``openai-whisper==20250625`` sdist on PyPI (no model weights involved): 50,257 byte-level BPE
ranks, to which Whisper adds ``<|endoftext|>``, ``<|startoftranscript|>``, 99 language tokens,
the task tokens and 1,501 timestamps (51,865 ids, the vocabulary of every multilingual Whisper
up to large-v2). :func:`fetch_multilingual_tiktoken` downloads the sdist with ``pip download``,
checks both sha256 sums below and caches the one file it needs.

New language tokens (:func:`add_language_token`): none of ab, ckb, eo, kab, rw is a Whisper
language (``set_prefix_tokens(language="eo")`` raises "Unsupported language"). The token is
appended to the tokenizer and the decoder's token table becomes a :class:`LanguageTokenEmbedding`:
the pretrained rows are a frozen parameter, the new rows a separate trainable parameter, and its
``weight`` property concatenates both. SpeechBrain's wrapper computes its logits from
``decoder.embed_tokens.weight``, so the new token is scored like any other. Keeping the rows in
two parameters, rather than masking gradients of one big table with a hook, means AdamW's weight
decay and moments can never touch the pretrained rows, and the trainable-parameter count is
exactly ``num_new_tokens * d_model``.

Authors
 * speechbrain-mambadapter contributors 2026
"""

import base64
import hashlib
import json
import logging
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

WHISPER_SDIST = "openai-whisper==20250625"
WHISPER_SDIST_FILE = "openai_whisper-20250625.tar.gz"
WHISPER_SDIST_SHA256 = "37a91a3921809d9f44748ffc73c0a55c9f366c85a3ef5c2ae0cc09540432eb96"
TIKTOKEN_MEMBER = "openai_whisper-20250625/whisper/assets/multilingual.tiktoken"
TIKTOKEN_SHA256 = "b34b360dbb493e781e479794586d661700670d65564001f23024971d1f2fa126"

# The language tokens of multilingual Whisper up to large-v2, in id order (50259 ... 50357);
# identical to the first 99 keys of transformers' ``tokenization_whisper.LANGUAGES`` (the 100th,
# "yue", exists only in large-v3).
NUM_WHISPER_LANGUAGES = 99
NUM_TIMESTAMPS = 1501
MULTILINGUAL_VOCAB_SIZE = 51865

# Configuration of the tiny random model used by the tests: small enough to run a forward on
# 30 s of audio on CPU in well under a second, with Whisper's real vocabulary and mel front end.
TINY_WHISPER_CONFIG = {
    "d_model": 64,
    "encoder_layers": 2,
    "decoder_layers": 2,
    "encoder_attention_heads": 2,
    "decoder_attention_heads": 2,
    "encoder_ffn_dim": 128,
    "decoder_ffn_dim": 128,
    "num_mel_bins": 80,
    "max_source_positions": 1500,
    "max_target_positions": 448,
}


class WhisperAssetDownloadError(RuntimeError):
    """``pip download`` of the ``openai-whisper`` sdist failed (typically: no access to PyPI)."""


def default_cache_dir() -> Path:
    """Returns the cache folder: ``$SPEECHBRAIN_MAMBADAPTER_CACHE`` or
    ``~/.cache/speechbrain_mambadapter``.

    Returns
    -------
    pathlib.Path
        The folder (not created).

    Example
    -------
    >>> isinstance(default_cache_dir(), Path)
    True
    """
    env = os.environ.get("SPEECHBRAIN_MAMBADAPTER_CACHE")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "speechbrain_mambadapter"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_multilingual_tiktoken(cache_dir: Optional[Union[str, Path]] = None) -> Path:
    """Returns the path of Whisper's ``multilingual.tiktoken``, downloading the pinned
    ``openai-whisper`` sdist with ``pip download`` the first time.

    Both the sdist and the extracted file are checked against pinned sha256 sums; only the
    0.8 MB tiktoken file is kept in the cache.

    Arguments
    ---------
    cache_dir : str or pathlib.Path, optional
        Where to keep the file; :func:`default_cache_dir` by default.

    Returns
    -------
    pathlib.Path
        ``<cache_dir>/openai-whisper-20250625/multilingual.tiktoken``.

    Raises
    ------
    WhisperAssetDownloadError
        If ``pip download`` fails (no access to PyPI).
    RuntimeError
        If a checksum does not match.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache_dir / "openai-whisper-20250625" / "multilingual.tiktoken"
    if target.is_file() and sha256_file(target) == TIKTOKEN_SHA256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        # --no-build-isolation: pip only reads the sdist's metadata, no need to fetch setuptools.
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--no-build-isolation",
            WHISPER_SDIST,
            "-d",
            tmp,
        ]
        result = subprocess.run(cmd, capture_output=True, text=True)
        sdist = Path(tmp) / WHISPER_SDIST_FILE
        if result.returncode != 0 or not sdist.is_file():
            raise WhisperAssetDownloadError(
                f"Could not download {WHISPER_SDIST} from PyPI (needed for Whisper's multilingual "
                f"tokenizer); `{' '.join(cmd)}` said: {result.stderr.strip()[-500:]}. Check the "
                f"network access to PyPI, or put a multilingual.tiktoken with sha256 "
                f"{TIKTOKEN_SHA256} at {target}."
            )
        if sha256_file(sdist) != WHISPER_SDIST_SHA256:
            raise RuntimeError(
                f"{WHISPER_SDIST_FILE} from PyPI has sha256 {sha256_file(sdist)}, expected "
                f"{WHISPER_SDIST_SHA256}; refusing to use it. Check the package index pip uses."
            )
        with tarfile.open(sdist) as tar:
            member = tar.extractfile(TIKTOKEN_MEMBER)
            data = member.read()
        if hashlib.sha256(data).hexdigest() != TIKTOKEN_SHA256:
            raise RuntimeError(f"{TIKTOKEN_MEMBER} in {sdist} does not match sha256 {TIKTOKEN_SHA256}.")
        partial = target.with_suffix(".partial")
        partial.write_bytes(data)
        partial.replace(target)
    return target


def read_tiktoken_ranks(tiktoken_path: Union[str, Path]) -> Dict[bytes, int]:
    """Reads a ``.tiktoken`` file: one ``<base64 token> <rank>`` per line.

    Arguments
    ---------
    tiktoken_path : str or pathlib.Path
        The file.

    Returns
    -------
    dict
        Token bytes to rank (= id).

    Example
    -------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "toy.tiktoken"
    >>> _ = path.write_text("YQ== 0\\nYg== 1\\nYWI= 2\\n")
    >>> read_tiktoken_ranks(path)
    {b'a': 0, b'b': 1, b'ab': 2}
    """
    ranks = {}
    with open(tiktoken_path, encoding="ascii") as f:
        for line in f:
            if line.strip():
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _bytes_to_unicode() -> Dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters (byte-level BPE vocabularies)."""
    printable = list(range(ord("!"), ord("~") + 1))
    printable += list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(printable, [chr(c) for c in chars]))


def _last_merge(ranks: Dict[bytes, int], token: bytes) -> Tuple[bytes, bytes]:
    """The pair whose merge creates ``token``: run tiktoken's BPE on the token's bytes with the
    merges ranked before it, which always ends in exactly two parts."""
    max_rank = ranks[token]
    parts = [bytes([b]) for b in token]
    while True:
        best_index, best_rank = None, None
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < max_rank and (best_rank is None or rank < best_rank):
                best_index, best_rank = i, rank
        if best_index is None:
            break
        parts[best_index : best_index + 2] = [parts[best_index] + parts[best_index + 1]]
    if len(parts) != 2:
        raise ValueError(f"Token {token!r} (rank {max_rank}) cannot be built by one BPE merge.")
    return parts[0], parts[1]


def whisper_special_tokens() -> List[str]:
    """Whisper's special tokens after the BPE ranks, in id order (as in ``whisper/tokenizer.py``).

    Returns
    -------
    list of str
        ``<|endoftext|>``, ``<|startoftranscript|>``, 99 languages, task and timestamp tokens.

    Example
    -------
    >>> specials = whisper_special_tokens()
    >>> len(specials), specials[:3], specials[-1]
    (1608, ['<|endoftext|>', '<|startoftranscript|>', '<|en|>'], '<|30.00|>')
    """
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    languages = list(LANGUAGES)[:NUM_WHISPER_LANGUAGES]
    return [
        "<|endoftext|>",
        "<|startoftranscript|>",
        *[f"<|{code}|>" for code in languages],
        "<|translate|>",
        "<|transcribe|>",
        "<|startoflm|>",
        "<|startofprev|>",
        "<|nospeech|>",
        "<|notimestamps|>",
        *[f"<|{i * 0.02:.2f}|>" for i in range(NUM_TIMESTAMPS)],
    ]


def build_whisper_tokenizer(tiktoken_path: Union[str, Path]):
    """Builds the multilingual Whisper tokenizer (transformers' ``WhisperTokenizer``) from
    Whisper's ``multilingual.tiktoken``.

    The BPE merges are recovered exactly as tiktoken applies them (each token of rank r is the
    merge of the two parts that BPE reaches using ranks below r), so ids equal those of the
    ``openai-whisper`` package and of the Hugging Face hub's Whisper tokenizers.

    Arguments
    ---------
    tiktoken_path : str or pathlib.Path
        ``multilingual.tiktoken`` (see :func:`fetch_multilingual_tiktoken`).

    Returns
    -------
    transformers.WhisperTokenizer
        51,865 ids; ``<|endoftext|>`` is bos, eos, unk and pad as on the hub.
    """
    from tokenizers import AddedToken
    from transformers import WhisperTokenizer

    ranks = read_tiktoken_ranks(tiktoken_path)
    byte_encoder = _bytes_to_unicode()

    def to_str(token: bytes) -> str:
        return "".join(byte_encoder[b] for b in token)

    vocab = {to_str(token): rank for token, rank in ranks.items()}
    merges = [
        tuple(to_str(part) for part in _last_merge(ranks, token))
        for token, _ in sorted(ranks.items(), key=lambda item: item[1])
        if len(token) > 1
    ]
    tokenizer = WhisperTokenizer(
        vocab=vocab,
        merges=merges,
        unk_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        model_max_length=448,
    )
    specials = whisper_special_tokens()
    is_timestamp = [token[2].isdigit() for token in specials]
    tokenizer.add_tokens(
        [
            # Timestamps are plain added tokens on the hub (decode keeps them unless filtered).
            AddedToken(token, special=not ts, normalized=False)
            for token, ts in zip(specials, is_timestamp)
        ]
    )
    if len(tokenizer) != MULTILINGUAL_VOCAB_SIZE:
        raise RuntimeError(
            f"The Whisper tokenizer built from {tiktoken_path} has {len(tokenizer)} ids, expected "
            f"{MULTILINGUAL_VOCAB_SIZE}; is it the multilingual (not the gpt2) tiktoken file?"
        )
    # The special-token flags above are what lets AutoTokenizer restore them; the prefix tokens
    # (startoftranscript, language, task) are set by set_prefix_tokens once ids exist.
    tokenizer.set_prefix_tokens(task="transcribe")
    return tokenizer


def save_whisper_tokenizer(folder: Union[str, Path], tiktoken_path: Union[str, Path]) -> Path:
    """Builds the tokenizer (:func:`build_whisper_tokenizer`) and saves it to ``folder``
    (``tokenizer.json``, ``tokenizer_config.json``).

    Arguments
    ---------
    folder : str or pathlib.Path
        Output folder (created).
    tiktoken_path : str or pathlib.Path
        Whisper's ``multilingual.tiktoken``.

    Returns
    -------
    pathlib.Path
        ``folder``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    build_whisper_tokenizer(tiktoken_path).save_pretrained(folder)
    return folder


def save_tiny_whisper(
    folder: Union[str, Path], tokenizer_dir: Union[str, Path], seed: int = 0, **config
) -> Path:
    """Saves a randomly initialised Whisper with the real tokenizer, loadable by SpeechBrain's
    ``speechbrain.integrations.huggingface.whisper.Whisper(source=folder, ...)``.

    Writes ``config.json``, ``model.safetensors``, ``preprocessor_config.json``,
    ``tokenizer.json`` and ``tokenizer_config.json``.

    Arguments
    ---------
    folder : str or pathlib.Path
        Output folder (created).
    tokenizer_dir : str or pathlib.Path
        A folder written by :func:`save_whisper_tokenizer`.
    seed : int
        Seed of the random weights.
    **config
        ``transformers.WhisperConfig`` fields overriding :data:`TINY_WHISPER_CONFIG`.

    Returns
    -------
    pathlib.Path
        ``folder``.
    """
    from transformers import (
        AutoTokenizer,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
    )

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    if len(tokenizer) != MULTILINGUAL_VOCAB_SIZE:
        raise ValueError(
            f"{tokenizer_dir} holds a tokenizer of {len(tokenizer)} ids, expected the multilingual "
            f"Whisper tokenizer ({MULTILINGUAL_VOCAB_SIZE}); build it with save_whisper_tokenizer()."
        )
    sot = tokenizer.convert_tokens_to_ids("<|startoftranscript|>")
    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    fields = {**TINY_WHISPER_CONFIG, **config}
    whisper_config = WhisperConfig(
        vocab_size=MULTILINGUAL_VOCAB_SIZE,
        decoder_start_token_id=sot,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        **fields,
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(whisper_config)
    model.save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=whisper_config.num_mel_bins).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def cached_tiny_whisper(cache_dir: Optional[Union[str, Path]] = None) -> Path:
    """Returns a folder holding the tiny random Whisper of :data:`TINY_WHISPER_CONFIG` with the
    real multilingual tokenizer, building it in the cache the first time (a few seconds).

    For tests and ``--whisper_source=<dir>`` debug runs; treat the folder as read-only.

    Arguments
    ---------
    cache_dir : str or pathlib.Path, optional
        Cache folder; :func:`default_cache_dir` by default.

    Returns
    -------
    pathlib.Path
        ``<cache_dir>/tiny-whisper-<hash of the config>``.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    tag = hashlib.sha256(json.dumps([TINY_WHISPER_CONFIG, TIKTOKEN_SHA256], sort_keys=True).encode())
    folder = cache_dir / f"tiny-whisper-{tag.hexdigest()[:12]}"
    if (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file():
        return folder
    tiktoken_path = fetch_multilingual_tiktoken(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Build next to the target and rename, so an interrupted build never looks complete.
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        save_whisper_tokenizer(Path(tmp) / "tokenizer", tiktoken_path)
        built = save_tiny_whisper(Path(tmp) / "model", Path(tmp) / "tokenizer")
        if not folder.exists():
            built.rename(folder)
    return folder


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
