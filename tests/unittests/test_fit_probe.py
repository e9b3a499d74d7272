"""benchmarks/fit_probe.py: the overfitting probe's core on the tiny random Whisper (CPU, seconds)."""

import pytest
import torch

from tests.scripts import load_script


@pytest.fixture(scope="module")
def probe():
    return load_script("benchmarks/fit_probe.py", "fit_probe")


@pytest.fixture(scope="module")
def clips():
    generator = torch.Generator().manual_seed(0)
    wavs = [0.1 * torch.randn(16000 * (1 + i % 2) // 2, generator=generator) for i in range(4)]
    texts = ["ahoj světe", "dobrý den", "jak se máš", "na shledanou"]
    return wavs, texts


def _setup(probe, source, tmp_path, variant, rank=8, frames=25, **overrides):
    settings, options = probe.VARIANTS[variant]
    settings = dict(settings, rank=rank, **overrides)
    if settings["method"] == "mambadapter":
        settings["d_state"] = 4
    whisper, trainable = probe.build_model(
        source,
        settings,
        freeze_adapters=options.get("freeze_adapters", False),
        seed=0,
        save_path=str(tmp_path),
    )
    return whisper, trainable


def _data(probe, whisper, clips, frames=25):
    wavs, texts = clips
    mel = probe.mel_features(whisper, wavs, frames)
    bos, eos = probe.token_tensors(whisper.tokenizer, texts)
    return mel, bos, eos


def test_bottleneck_fits_the_probe_set(probe, tiny_whisper_dir, tmp_path, clips):
    whisper, trainable = _setup(probe, tiny_whisper_dir, tmp_path, "bottleneck")
    mel, bos, eos = _data(probe, whisper, clips)
    assert mel.shape == (4, 80, 50) and bos.shape == eos.shape
    record = probe.train_variant(
        whisper, trainable, mel, bos, eos, steps=8, batch_size=4, lr=1e-2, eval_every=8, log=lambda *a: None
    )
    assert len(record["train_loss"]) == 8
    assert record["eval_loss"][8] < record["eval_loss"][0] - 0.05


def test_every_trainable_parameter_gets_a_gradient(probe, tiny_whisper_dir, tmp_path, clips):
    for variant in ("mambadapter", "mambadapter_mamba_default_init", "bottleneck"):
        whisper, trainable = _setup(probe, tiny_whisper_dir, tmp_path / variant, variant, dropout=0.0)
        mel, bos, eos = _data(probe, whisper, clips)
        # One step makes W_up (zero at first) nonzero; the second step's gradients reach everything.
        probe.train_variant(whisper, trainable, mel, bos, eos, steps=1, lr=1e-2, log=lambda *a: None)
        whisper.zero_grad(set_to_none=True)
        probe.batch_loss(whisper, mel, bos, eos).backward()
        named = [(n, p) for n, p in whisper.named_parameters() if p.requires_grad]
        assert {id(p) for _, p in named} == {id(p) for p in trainable}
        missing = [n for n, p in named if p.grad is None or not bool((p.grad != 0).any())]
        assert not missing, f"{variant}: no gradient for {missing}"
        assert all(probe.parameter_group(n) != "other" for n, _ in named)


def test_norms_only_freezes_the_adapters(probe, tiny_whisper_dir, tmp_path):
    whisper, trainable = _setup(probe, tiny_whisper_dir, tmp_path, "norms_only")
    names = [n for n, p in whisper.named_parameters() if p.requires_grad]
    assert names and all("petl" not in n and "norm" in n for n in names)
    assert len(trainable) == len(names)


def test_cropped_encoder_runs_the_adapters(probe, tiny_whisper_dir, tmp_path, clips):
    whisper, _ = _setup(probe, tiny_whisper_dir, tmp_path, "mambadapter_mamba_default_init", dropout=0.0)
    mel, _, _ = _data(probe, whisper, clips)
    whisper.eval()
    with torch.no_grad():
        before = probe.encode(whisper, mel)
        assert before.shape == (4, 25, whisper.model.config.d_model)
        whisper.model.encoder.petl_shared_projections.up.weight.normal_()
        after = probe.encode(whisper, mel)
    assert not torch.allclose(before, after)


def test_instrumentation_reports_groups_scales_and_adam_eps(probe, tiny_whisper_dir, tmp_path, clips):
    whisper, trainable = _setup(probe, tiny_whisper_dir, tmp_path, "mambadapter_mamba_default_init")
    mel, bos, eos = _data(probe, whisper, clips)
    record = probe.train_variant(
        whisper, trainable, mel, bos, eos, steps=2, lr=1e-3, instrument_steps={0, 1}, log=lambda *a: None
    )
    step0 = record["instrument"][0]
    assert step0["grad_norm"]["W_up.weight"] > 0
    assert step0["grad_norm"]["mamba.in_proj"] == 0  # W_up starts at zero: nothing reaches the Mamba
    assert step0["weight_norm_before"]["W_up.weight"] == 0
    assert step0["update_over_weight"]["W_up.weight"] is None
    assert all(0.0 <= share <= 1.0 for share in step0["adam_sqrt_v_below_eps"].values())
    assert record["instrument"][1]["grad_norm"]["mamba.in_proj"] > 0
    init = record["scales_init"]
    assert len(init) == whisper.model.config.encoder_layers
    for row in init:
        assert row["adapter_rms"] == 0 and row["alpha"] == pytest.approx(0.1)
        # The Mamba block's own initialisation gives a bottleneck code of the input's order.
        assert row["code_rms"] > 1e-3 * row["input_rms"]
    assert all(row["adapter_rms"] > 0 for row in step0["scales_after_step"])
