"""The PETL library, table-driven: every method x placement x backbone (tiny random HF Whisper
encoder, tiny HF AST in the installed 5.x layout and in the 4.x layout of ``legacy_ast.py``,
tiny SpeechBrain TransformerEncoder).

For each case: identity at initialisation where the method allows it; exactly the expected
parameters trainable; after one optimizer step every trainable parameter gets a non-zero
gradient (zero-initialised up projections only let their own weights learn at step 0); PETL
weights saved and loaded into a freshly built backbone reproduce the outputs.
"""

import copy

import pytest
import torch
from speechbrain.lobes.models.transformer.Conformer import ConformerEncoder
from speechbrain.lobes.models.transformer.Transformer import TransformerEncoder
from transformers import ASTConfig, ASTModel, WhisperConfig, WhisperForConditionalGeneration, WhisperModel
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from speechbrain_mambadapter import (
    MambAdapter,
    PETLCheckpoint,
    inject,
    load_petl,
    merge_lora,
    petl_state_dict,
    save_petl,
)
from tests.unittests.legacy_ast import build_legacy_ast

D = 16


def build_whisper(seed=0):
    torch.manual_seed(seed)
    config = WhisperConfig(
        d_model=D,
        encoder_layers=2,
        encoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_layers=1,
        decoder_attention_heads=2,
        decoder_ffn_dim=32,
        num_mel_bins=8,
        max_source_positions=12,
        vocab_size=40,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=1,
        decoder_start_token_id=1,
    )
    return WhisperEncoder(config).eval()


def tiny_ast_config():
    return ASTConfig(
        hidden_size=D,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        patch_size=4,
        frequency_stride=4,
        time_stride=4,
        num_mel_bins=8,
        max_length=12,
    )


def build_ast(seed=0):
    torch.manual_seed(seed)
    model = ASTModel(tiny_ast_config()).eval()
    with torch.no_grad():  # HF zero-initialises these; random values make the test stricter
        for p in model.embeddings.parameters():
            p.normal_(std=0.5)
    return model


def build_ast4(seed=0):
    torch.manual_seed(seed)
    return build_legacy_ast(tiny_ast_config())


def build_sb(seed=0):
    torch.manual_seed(seed)
    return TransformerEncoder(num_layers=2, nhead=2, d_ffn=32, d_model=D, dropout=0.0).eval()


def run_whisper(model, x):
    return model(x).last_hidden_state


def run_ast(model, x):
    return model(x).last_hidden_state


def run_ast4(model, x):
    return model(x)


def run_sb(model, x):
    return model(x)[0]


# Inputs are built with their own generator so they do not depend on the global seed.
BACKBONES = {
    "whisper": (build_whisper, run_whisper, (2, 8, 24)),
    "ast": (build_ast, run_ast, (2, 12, 8)),
    "ast4": (build_ast4, run_ast4, (2, 12, 8)),
    "sb": (build_sb, run_sb, (2, 7, D)),
}

# The sub-layer LayerNorms (attention, feed-forward) and the final one, by backbone.
NORMS = {
    "whisper": ("self_attn_layer_norm.", "final_layer_norm.", "layer_norm."),
    "ast": ("layernorm_before.", "layernorm_after.", "layernorm."),
    "ast4": ("layernorm_before.", "layernorm_after.", "layernorm."),
    "sb": ("norm1.", "norm2.", "norm.norm."),
}

METHOD_KWARGS = {
    "mambadapter": dict(rank=4, d_state=4, d_conv=2, expand=1),
    "bottleneck": dict(rank=4),
    "conformer": dict(rank=4, kernel_size=3),
    "lora": dict(rank=2),
    "prompt": dict(num_tokens=2),
    "prefix": dict(num_tokens=2),
    "bitfit": {},
    "linear": {},
    "full": {},
}
ADAPTERS = ("mambadapter", "bottleneck", "conformer")
IDENTITY_AT_INIT = ADAPTERS + ("lora", "bitfit", "linear", "full")

CASES = [
    (backbone, method, placement)
    for backbone in BACKBONES
    for method in METHOD_KWARGS
    for placement in (("pfeiffer", "houlsby") if method in ADAPTERS else (None,))
]


def make_input(backbone):
    generator = torch.Generator().manual_seed(123)
    return torch.randn(BACKBONES[backbone][2], generator=generator)


def build_injected(backbone, method, placement, seed=0):
    model = BACKBONES[backbone][0](seed)
    return inject(model, method=method, placement=placement, **METHOD_KWARGS[method])


def forward(backbone, model, x):
    return BACKBONES[backbone][1](model, x)


def loss_of(out):
    # A fixed random projection: a plain sum after the final LayerNorm has zero gradient.
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(7))
    return (out * weights).sum()


def expected_trainable(backbone, method, placement, names):
    attn_norm, ffn_norm, final_norm = NORMS[backbone]
    is_final = [n for n in names if n.startswith(final_norm)]
    if method in ADAPTERS:
        site_norms = (ffn_norm, attn_norm) if placement == "houlsby" else (ffn_norm,)
        keep = {n for n in names if "petl_" in n or any(f".{norm}" in n for norm in site_norms)}
        return keep | set(is_final)
    if method == "lora":
        return {n for n in names if ".loras." in n} | set(is_final)
    if method == "prompt":
        return {n for n in names if "petl_prompts" in n} | set(is_final)
    if method == "prefix":
        return {n for n in names if n.endswith((".keys", ".values"))} | set(is_final)
    if method == "bitfit":
        return {n for n in names if n.endswith("bias")}
    if method == "linear":
        return set()
    return {n for n in names if "embed_positions" not in n}


@pytest.mark.parametrize("backbone,method,placement", CASES)
def test_identity_and_trainable_set(backbone, method, placement):
    x = make_input(backbone)
    with torch.no_grad():
        reference = forward(backbone, BACKBONES[backbone][0](0), x)
    model = build_injected(backbone, method, placement)
    with torch.no_grad():
        out = forward(backbone, model, x)
    assert out.shape == reference.shape
    if method in IDENTITY_AT_INIT:
        torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)
    else:  # prompts and prefixes act from the start
        assert not torch.allclose(out, reference, atol=1e-4)
    names = [n for n, _ in model.named_parameters()]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == expected_trainable(backbone, method, placement, names)
    if method not in ("linear",):
        assert trainable


@pytest.mark.parametrize("backbone,method,placement", CASES)
def test_gradients_reach_every_trainable_parameter(backbone, method, placement):
    model = build_injected(backbone, method, placement).train()
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        pytest.skip("linear probing trains only the head, which lives outside the backbone")
    x = make_input(backbone)
    optimizer = torch.optim.Adam(params, lr=1e-2)
    loss_of(forward(backbone, model, x)).backward()
    optimizer.step()
    optimizer.zero_grad()
    loss_of(forward(backbone, model, x)).backward()
    silent = [n for n, p in model.named_parameters() if p.requires_grad and not bool(p.grad.abs().sum() > 0)]
    assert not silent, f"no gradient after one step: {silent}"


@pytest.mark.parametrize("backbone,method,placement", CASES)
def test_save_load_round_trip(backbone, method, placement, tmp_path):
    model = build_injected(backbone, method, placement).train()
    x = make_input(backbone)
    params = [p for p in model.parameters() if p.requires_grad]
    if params:
        optimizer = torch.optim.Adam(params, lr=1e-2)
        for _ in range(2):  # the second step moves what W_up = 0 held still in the first
            loss_of(forward(backbone, model, x)).backward()
            optimizer.step()
            optimizer.zero_grad()
    model.eval()
    with torch.no_grad():
        expected = forward(backbone, model, x)
    save_petl(model, tmp_path / "petl.safetensors")
    fresh = build_injected(backbone, method, placement, seed=0).eval()
    fresh_state = petl_state_dict(fresh)
    if method in ("mambadapter", "bottleneck", "conformer", "prompt", "prefix"):
        # Adapters get fresh random weights before loading: the load has to put them back.
        assert any(not torch.equal(fresh_state[k], v) for k, v in petl_state_dict(model).items())
    load_petl(fresh, tmp_path / "petl.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(forward(backbone, fresh, x), expected, rtol=1e-5, atol=1e-5)


def test_checkpointer_resume_restores_batchnorm_statistics(tmp_path):
    from speechbrain.utils.checkpoints import Checkpointer

    model = build_injected("sb", "conformer", "houlsby").train()
    x = make_input("sb")
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        loss_of(forward("sb", model, x)).backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    with torch.no_grad():
        expected = forward("sb", model, x)
    Checkpointer(tmp_path, {"petl": PETLCheckpoint(model)}).save_checkpoint()
    stored = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    fresh = build_injected("sb", "conformer", "houlsby").eval()
    running_mean = "layers.0.petl_ffn_adapter.batch_norm.running_mean"
    assert not torch.equal(petl_state_dict(fresh)[running_mean], petl_state_dict(model)[running_mean])
    assert Checkpointer(tmp_path, {"petl": PETLCheckpoint(fresh)}).recover_if_possible() is not None
    with torch.no_grad():
        torch.testing.assert_close(forward("sb", fresh, x), expected)
    # Adapter-only: the file is far smaller than the frozen backbone.
    size = sum(p.stat().st_size for p in tmp_path.rglob("petl.ckpt"))
    backbone_bytes = sum(p.numel() * 4 for p in model.parameters())
    assert stored and size < backbone_bytes


def test_two_models_share_nothing():
    first = build_injected("whisper", "mambadapter", "houlsby")
    second = build_injected("whisper", "mambadapter", "houlsby")
    pointers = {p.data_ptr() for p in first.parameters()}
    assert not pointers & {p.data_ptr() for p in second.parameters()}
    shared = {id(m.projections) for m in first.modules() if isinstance(m, MambAdapter)}
    assert len(shared) == 1  # one SharedProjections per model ...
    assert shared.isdisjoint({id(m.projections) for m in second.modules() if isinstance(m, MambAdapter)})
    x = make_input("whisper")
    with torch.no_grad():
        before = forward("whisper", second, x)
    optimizer = torch.optim.Adam([p for p in first.parameters() if p.requires_grad], lr=1e-1)
    for _ in range(2):
        loss_of(forward("whisper", first, x)).backward()
        optimizer.step()
        optimizer.zero_grad()
    with torch.no_grad():
        assert torch.equal(forward("whisper", second, x), before)  # ... and training one leaves the other
        assert not torch.allclose(forward("whisper", first, x), before)


def test_deepcopy_rebinds_adapters():
    model = build_injected("sb", "bottleneck", "pfeiffer")
    clone = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in clone.named_parameters():
            if "petl_" in name and name.endswith("up.bias"):
                p.fill_(1.0)
    x = make_input("sb")
    with torch.no_grad():
        assert not torch.allclose(forward("sb", clone, x), forward("sb", model, x))


@pytest.mark.parametrize("direction", ["causal", "inner", "ext"])
def test_mambadapter_directions_and_ablations(direction):
    model = build_whisper()
    inject(model, "mambadapter", rank=4, d_state=4, d_conv=2, direction=direction, share_projections=False)
    adapters = [m for m in model.modules() if isinstance(m, MambAdapter)]
    assert len(adapters) == 2 and adapters[0].projections is not adapters[1].projections
    assert (
        type(adapters[0].mamba).__name__
        == {"causal": "Mamba", "inner": "BiMambaInner", "ext": "BiMambaExt"}[direction]
    )
    plain = inject(build_whisper(), "mambadapter", rank=4, use_mamba=False, use_alpha=False)
    trainable = [n for n, p in plain.named_parameters() if p.requires_grad and "petl" in n]
    assert trainable == ["petl_shared_projections.down.weight", "petl_shared_projections.down.bias"] + [
        "petl_shared_projections.up.weight",
        "petl_shared_projections.up.bias",
    ]


def test_mambadapter_parameter_count():
    model = build_injected("whisper", "mambadapter", "pfeiffer")
    r, d = 4, D
    # Mamba(d_model=r=4, d_state=4, d_conv=2, expand=1): in_proj 4x8, conv 4x1x2 + 4, x_proj (1 + 8) x 4,
    # dt_proj 4x1 + 4, A_log 4x4, D 4, out_proj 4x4; plus alpha.
    per_adapter = 32 + 12 + 36 + 8 + 16 + 4 + 16 + 1
    shared = d * r + r + r * d + d
    final_norm, ffn_norms = 2 * d, 2 * 2 * d
    count = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert count == 2 * per_adapter + shared + final_norm + ffn_norms


def test_lora_merge_keeps_outputs():
    model = build_injected("ast", "lora", None).train()
    x = make_input("ast")
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        loss_of(forward("ast", model, x)).backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    with torch.no_grad():
        expected = forward("ast", model, x)
        assert merge_lora(model) == 4  # query and value of two layers
        torch.testing.assert_close(forward("ast", model, x), expected, rtol=1e-5, atol=1e-5)
    assert not any(".loras." in n for n, _ in model.named_parameters())


@pytest.mark.parametrize("cls", [WhisperModel, WhisperForConditionalGeneration])
def test_whisper_model_adapts_the_encoder_only(cls):
    torch.manual_seed(0)
    model = cls(build_whisper().config)
    inject(model, "bottleneck", rank=4)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    encoder = "encoder." if cls is WhisperModel else "model.encoder."
    assert trainable and all(n.startswith(encoder) for n in trainable)
    assert any("petl_ffn_adapter" in n for n in trainable)


def test_sb_whisper_lobe_gets_gradients_despite_freeze(tmp_path):
    from speechbrain.integrations.huggingface.whisper import Whisper
    from transformers import WhisperFeatureExtractor

    config = build_whisper().config
    config.max_source_positions = 1500  # the lobe always feeds 30 s (3000 mel frames)
    torch.manual_seed(0)
    WhisperModel(config).save_pretrained(tmp_path)
    WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(tmp_path)
    lobe = Whisper(source=str(tmp_path), save_path=str(tmp_path / "cache"), encoder_only=True, freeze=True)
    inject(lobe, "mambadapter", rank=4, d_state=4, d_conv=2)
    assert lobe.freeze is False
    lobe(torch.randn(1, 1600)).pow(2).sum().backward()
    grads = [p.grad for p in lobe.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)
    assert all(p.grad is None for p in lobe.parameters() if not p.requires_grad)


def test_prompt_tuning_extends_key_padding_mask_and_keeps_length():
    model = build_injected("sb", "prompt", None)
    x = make_input("sb")
    mask = torch.zeros(2, 7, dtype=torch.bool)
    mask[1, 5:] = True
    out = model(x, src_key_padding_mask=mask)[0]
    assert out.shape == x.shape
    # Padding frames must not influence the valid ones.
    noisy = x.clone()
    noisy[1, 5:] = 100.0
    torch.testing.assert_close(model(noisy, src_key_padding_mask=mask)[0][1, :5], out[1, :5])


def test_prefix_tuning_respects_key_padding_mask():
    model = build_injected("sb", "prefix", None)
    x = make_input("sb")
    mask = torch.zeros(2, 7, dtype=torch.bool)
    mask[0, 4:] = True
    out = model(x, src_key_padding_mask=mask)[0]
    noisy = x.clone()
    noisy[0, 4:] = -50.0
    torch.testing.assert_close(model(noisy, src_key_padding_mask=mask)[0][0, :4], out[0, :4])


def test_conformer_encoder_adapters():
    torch.manual_seed(0)
    encoder = ConformerEncoder(num_layers=1, d_model=D, d_ffn=32, nhead=2, kernel_size=3).eval()
    x = torch.randn(2, 5, D)
    from speechbrain.nnet.attention import RelPosEncXL

    pos = RelPosEncXL(D)(x)
    with torch.no_grad():
        before = encoder(x, pos_embs=pos)[0]
    inject(encoder, "mambadapter", "houlsby", rank=4, d_state=4, d_conv=2)
    names = {n.split(".")[2] for n, p in encoder.named_parameters() if p.requires_grad and "layers." in n}
    assert names == {
        "petl_attention_adapter",
        "petl_ffn1_adapter",
        "petl_ffn2_adapter",
        "norm1",
        "ffn_module1",
    } | {"ffn_module2"}
    with torch.no_grad():
        torch.testing.assert_close(encoder(x, pos_embs=pos)[0], before)


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: inject(build_sb(), "adapterx"), "Unknown PETL method 'adapterx'"),
        (lambda: inject(torch.nn.Linear(3, 3), "bottleneck", rank=2), "Unknown backbone Linear"),
        (lambda: inject(build_sb(), "lora", placement="houlsby"), "has no placement"),
        (
            lambda: inject(build_sb(), "bottleneck", placement="sequential", rank=2),
            "placement must be one of",
        ),
        (lambda: inject(build_sb(), "bottleneck", rank=2, kernel=3), "Unknown argument(s) ['kernel']"),
        (lambda: inject(build_sb(), "bottleneck"), "needs ['rank']"),
        (lambda: inject(inject(build_sb(), "bitfit"), "bitfit"), "already has 'bitfit' injected"),
        (
            lambda: inject(ConformerEncoder(1, D, 32, 2), "prompt", num_tokens=2),
            "lengthens the sequence",
        ),
        (
            lambda: inject(ConformerEncoder(1, D, 32, 2), "lora", rank=2),
            "relative-position attention is not supported",
        ),
    ],
)
def test_errors(call, message):
    with pytest.raises((ValueError, TypeError)) as error:
        call()
    assert message in str(error.value)


def test_load_errors(tmp_path):
    path = tmp_path / "petl.safetensors"
    save_petl(build_injected("sb", "bottleneck", "pfeiffer"), path)
    with pytest.raises(ValueError, match="was injected with"):
        load_petl(build_injected("sb", "bottleneck", "houlsby"), path)
    other = inject(build_sb(), "bottleneck", rank=3)
    with pytest.raises(
        ValueError, match=r"layers.0.petl_ffn_adapter.down.weight: file \(4, 16\) vs model \(3, 16\)"
    ):
        load_petl(other, path, strict_config=False)
    with pytest.raises(ValueError, match="call speechbrain_mambadapter.inject"):
        load_petl(build_sb(), path)


def test_ast_lobe_is_unwrapped(tmp_path):
    from speechbrain_mambadapter.lobes.ast import AST
    from tools.tiny_models import save_random_ast

    lobe = AST(source=save_random_ast(tmp_path / "ast", max_length=100), freeze=True)
    wavs, lengths = torch.randn(2, 8000), torch.tensor([1.0, 0.6])
    with torch.no_grad():
        before = lobe(wavs, lengths)
    inject(lobe, "mambadapter", "houlsby", rank=4, d_state=4, d_conv=2)
    assert sum(isinstance(m, MambAdapter) for m in lobe.modules()) == 4
    out = lobe(wavs, lengths)
    torch.testing.assert_close(out.detach(), before)
    out.pow(2).sum().backward()
    up = lobe.model.petl_shared_projections.up.weight
    assert up.grad is not None and bool(up.grad.abs().sum() > 0)


def test_lora_targets_query_and_value_only():
    whisper = build_injected("whisper", "lora", None)
    parametrized = sorted(
        {n.split(".parametrizations")[0] for n, _ in whisper.named_parameters() if ".loras." in n}
    )
    assert parametrized == [f"layers.{i}.self_attn.{p}_proj" for i in range(2) for p in "qv"]
    sb = build_injected("sb", "lora", None)
    fused = sb.layers[0].self_att.att.parametrizations.in_proj_weight[0]
    assert fused.row_offsets == [0, 2 * D]  # query and value blocks of in_proj_weight


def test_prefix_equals_attention_over_extra_tokens():
    """Prefix keys/values that are projections of extra tokens == attending over those tokens."""
    from speechbrain.nnet.attention import MultiheadAttention

    from speechbrain_mambadapter import PrefixTuning

    torch.manual_seed(0)
    x, extra = torch.randn(2, 5, D), torch.randn(2, 3, D)
    sb_attn = MultiheadAttention(nhead=2, d_model=D).eval()
    wrapped = PrefixTuning(sb_attn, num_tokens=3)
    q, k, v = torch.nn.functional.linear(
        extra[0], sb_attn.att.in_proj_weight, sb_attn.att.in_proj_bias
    ).chunk(3, -1)
    context = torch.cat([extra[:1].expand(2, -1, -1), x], dim=1)
    with torch.no_grad():
        wrapped.keys.copy_(k)
        wrapped.values.copy_(v)
        torch.testing.assert_close(wrapped(x, x, x)[0], sb_attn(x, context, context)[0], rtol=1e-5, atol=1e-5)

    whisper_attn = build_whisper().layers[0].self_attn
    wrapped = PrefixTuning(whisper_attn, num_tokens=3)
    with torch.no_grad():
        wrapped.keys.copy_(whisper_attn.k_proj(extra[0]))
        wrapped.values.copy_(whisper_attn.v_proj(extra[0]))
        expected = whisper_attn(hidden_states=x, key_value_states=context)[0]
        torch.testing.assert_close(wrapped(hidden_states=x)[0], expected, rtol=1e-5, atol=1e-5)


def test_deep_prompts_match_a_manual_forward():
    model = build_injected("sb", "prompt", None)
    reference = build_sb(0)  # same frozen weights, no hooks
    prompts, n = model.petl_prompts.prompts, model.petl_prompts.num_tokens
    x = make_input("sb")
    with torch.no_grad():
        h = x
        for i, layer in enumerate(reference.layers):
            h = torch.cat([prompts[i].expand(2, -1, -1), h[:, n:] if i else h], dim=1)
            h = layer(h)[0]
        torch.testing.assert_close(model(x)[0], reference.norm(h[:, n:]))


def test_inject_from_hyperpyyaml():
    from hyperpyyaml import load_hyperpyyaml

    hparams = load_hyperpyyaml(
        """
        encoder: !apply:speechbrain_mambadapter.inject
            model: !new:speechbrain.lobes.models.transformer.Transformer.TransformerEncoder
                num_layers: 2
                nhead: 2
                d_ffn: 32
                d_model: 16
            method: mambadapter
            placement: houlsby
            rank: 4
            d_state: 4
            direction: ext
        """
    )
    encoder = hparams["encoder"]
    assert encoder.petl_config["method"] == "mambadapter"
    assert sum(isinstance(m, MambAdapter) for m in encoder.modules()) == 4


def test_prompt_tuning_on_conformer_with_regular_attention():
    torch.manual_seed(0)
    encoder = ConformerEncoder(1, D, 32, 2, kernel_size=3, attention_type="regularMHA")
    inject(encoder, "prompt", num_tokens=2)
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[1, 3:] = True
    out = encoder(torch.randn(2, 5, D), src_key_padding_mask=mask)[0]
    assert out.shape == (2, 5, D)
    loss_of(out).backward()
    assert bool(encoder.petl_prompts.prompts.grad.abs().sum() > 0)


@pytest.mark.parametrize("method", ["prompt", "mambadapter", "prefix"])
def test_activation_checkpointing_gives_the_same_gradients(method):
    """HF re-runs each layer during backward: hooks with per-forward state must cope."""
    grads = []
    for checkpointing in (False, True):
        model = build_injected("whisper", method, "houlsby" if method in ADAPTERS else None).train()
        if checkpointing:  # renamed activation_checkpointing_enable in recent transformers
            getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad:
                    p.add_(0.05)  # identical in both runs; lets W_up = 0 adapters pass gradients
        loss_of(forward("whisper", model, make_input("whisper"))).backward()
        grads.append([p.grad for p in model.parameters() if p.requires_grad])
    for plain, checkpointed in zip(*grads):
        torch.testing.assert_close(checkpointed, plain)


class Checkpointed(torch.nn.Module):
    """Checkpoints a whole layer call, hooks included, as transformers < 5.20 does."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, *args, **kwargs):
        return torch.utils.checkpoint.checkpoint(self.layer.__call__, *args, use_reentrant=False, **kwargs)


def test_deep_prompts_survive_checkpointing_that_reruns_layer_hooks():
    grads = []
    for checkpointing in (False, True):
        model = build_injected("sb", "prompt", None).train()
        if checkpointing:
            model.layers = torch.nn.ModuleList(Checkpointed(layer) for layer in model.layers)
        loss_of(forward("sb", model, make_input("sb"))).backward()
        grads.append(model.petl_prompts.prompts.grad)
    torch.testing.assert_close(grads[1], grads[0])


def test_module_initialisation():
    from speechbrain_mambadapter import Bottleneck, SharedProjections

    torch.manual_seed(0)
    shared = SharedProjections(64, 16)
    adapter = MambAdapter(64, 16, shared, d_state=4)
    assert adapter.alpha.item() == pytest.approx(0.1)
    assert shared.up.weight.abs().sum() == 0 and shared.up.bias.abs().sum() == 0
    assert 0.005 < shared.down.weight.std().item() < 0.02  # N(0, 0.01)
    assert not [n for n, _ in adapter.named_parameters() if "projections" in n]  # shared: not owned
    bottleneck = Bottleneck(64, 16)
    assert bottleneck.down.weight.abs().sum() > 0 and bottleneck.up.weight.abs().sum() == 0


def test_mamba_init_choices():
    """``paper``: every Mamba weight matrix Xavier gain 0.02 (the code starts ~1e-10 x the input);
    ``mamba``: the block's own initialisation. Both leave the adapted model equal to the base."""
    from speechbrain_mambadapter import SharedProjections
    from speechbrain_mambadapter.mamba import Mamba

    x = torch.randn(2, 7, 64)
    stds = {}
    for choice in ("paper", "mamba"):
        torch.manual_seed(0)
        adapter = MambAdapter(64, 16, SharedProjections(64, 16), d_state=4, mamba_init=choice)
        assert adapter(x).abs().sum() == 0  # W_up = 0
        weights = [(n, p) for n, p in adapter.mamba.named_parameters() if n.endswith("weight")]
        stds[choice] = {n: p.std().item() for n, p in weights}
        code = adapter.mamba(adapter.projections.down(x))
        stds[choice]["code/input"] = (code.norm() / x.norm()).item()
    torch.manual_seed(0)
    own = Mamba(16, d_state=4)
    for name, param in own.named_parameters():
        if name.endswith("weight"):
            assert stds["mamba"][name] == pytest.approx(param.std().item(), rel=0.2), name
            bound = 0.02 * (6 / (param.shape[0] + param[0].numel())) ** 0.5  # Xavier, gain 0.02
            assert stds["paper"][name] < bound, name
    assert stds["paper"]["code/input"] < 1e-6 < 1e-4 < stds["mamba"]["code/input"]
    # The default is the block's own (the paper's trains slowly: benchmarks/RESULTS.md).
    torch.manual_seed(0)
    default = MambAdapter(64, 16, SharedProjections(64, 16), d_state=4)
    torch.manual_seed(0)
    own = MambAdapter(64, 16, SharedProjections(64, 16), d_state=4, mamba_init="mamba")
    for (name, a), (_, b) in zip(default.named_parameters(), own.named_parameters()):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="mamba_init must be one of"):
        MambAdapter(64, 16, mamba_init="xavier")


def test_conformer_adapter_applies_its_layernorm():
    """The reference computes the LayerNorm and discards it; here the output is scale-invariant."""
    from speechbrain_mambadapter import ConformerAdapter

    torch.manual_seed(0)
    adapter = ConformerAdapter(16, 4, kernel_size=3).eval()
    with torch.no_grad():
        adapter.pointwise_out.weight.normal_()
    x = torch.randn(2, 6, 16)
    torch.testing.assert_close(adapter(5.0 * x), adapter(x), rtol=1e-4, atol=1e-4)
