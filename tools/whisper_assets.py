"""Whisper assets built offline: the real multilingual tokenizer and a tiny random Whisper.

The tokenizer comes from ``whisper/assets/multilingual.tiktoken`` inside the
``openai-whisper==20250625`` sdist on PyPI (no model weights involved): 50,257 byte-level BPE
ranks, to which Whisper adds ``<|endoftext|>``, ``<|startoftranscript|>``, 99 language tokens,
the task tokens and 1,501 timestamps (51,865 ids, the vocabulary of every multilingual Whisper
up to large-v2). :func:`fetch_multilingual_tiktoken` downloads the sdist with ``pip download``,
checks both sha256 sums below and caches the one file it needs. :func:`cached_tiny_whisper`
builds, once, the tiny random Whisper the tests and debug runs load (``--whisper_source=<dir>``).

Authors
 * speechbrain-mambadapter contributors 2026
"""

import base64
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import torch

from speechbrain_mambadapter.lobes.whisper_tokens import NUM_WHISPER_LANGUAGES

WHISPER_SDIST = "openai-whisper==20250625"
WHISPER_SDIST_FILE = "openai_whisper-20250625.tar.gz"
WHISPER_SDIST_SHA256 = "37a91a3921809d9f44748ffc73c0a55c9f366c85a3ef5c2ae0cc09540432eb96"
TIKTOKEN_MEMBER = "openai_whisper-20250625/whisper/assets/multilingual.tiktoken"
TIKTOKEN_SHA256 = "b34b360dbb493e781e479794586d661700670d65564001f23024971d1f2fa126"

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
