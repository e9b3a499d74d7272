"""The tuner registry: METHODS and the PETL module types come from the tuner modules, and inject
dispatches to any tuner that follows the protocol of ``speechbrain_mambadapter.tuners``."""

import inspect
import pkgutil
import types

import pytest
import torch
from speechbrain.lobes.models.transformer.Transformer import TransformerEncoder

from speechbrain_mambadapter import checkpoint, inject, set_adapter_overlap, tuners
from speechbrain_mambadapter.backbones import find_backbone
from speechbrain_mambadapter.tuners import bitfit
from speechbrain_mambadapter.tuners.parallel import ParallelAdapter

SETTINGS = {"mambadapter": dict(rank=4, d_state=4), "bottleneck": dict(rank=4), "conformer": dict(rank=4)}


def build_sb():
    torch.manual_seed(0)
    return TransformerEncoder(num_layers=2, nhead=2, d_ffn=16, d_model=8)


def test_every_tuner_module_is_registered():
    files = {info.name for info in pkgutil.iter_modules(tuners.__path__)} - {"parallel"}
    assert {tuner.__name__.rsplit(".", 1)[1] for tuner in tuners.TUNERS} == files
    assert tuners.METHODS == {tuner.NAME: tuner for tuner in tuners.TUNERS}
    for tuner in tuners.TUNERS:
        assert set(tuner.MODULES) <= set(tuners.PETL_MODULES), tuner.__name__
        leading = list(inspect.signature(tuner.attach).parameters)[:3]
        assert leading == ["backbone", "placement", "train_norms"], tuner.__name__
        assert tuner.TAKES_PLACEMENT == any(issubclass(cls, ParallelAdapter) for cls in tuner.MODULES)


@pytest.mark.parametrize("method", [t.NAME for t in tuners.TUNERS if t.TAKES_PLACEMENT])
def test_set_adapter_overlap_reaches_every_placed_method(method):
    model = inject(build_sb(), method, "houlsby", **SETTINGS[method])
    assert set_adapter_overlap(model, True) == 4  # 2 layers x (attention + FFN)
    adapters = [m for m in model.modules() if isinstance(m, tuners.METHODS[method].MODULES[0])]
    assert len(adapters) == 4 and all(a.overlap for a in adapters)


class Gain(torch.nn.Module):
    """A made-up PETL module: a trainable gain and a buffer that is PETL state too."""

    def __init__(self, d_model, scale):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.full((d_model,), float(scale)))
        self.register_buffer("calls", torch.zeros(()))


def gain_tuner():
    tuner = types.ModuleType("gain_tuner")
    tuner.NAME, tuner.TAKES_PLACEMENT, tuner.MODULES = "gain", False, (Gain,)

    def attach(backbone, placement, train_norms, scale, bias=False):
        gain = Gain(backbone.d_model, scale)
        backbone.encoder.add_module("petl_gain", gain)
        return list(gain.parameters())

    tuner.attach = attach
    return tuner


def test_a_new_tuner_is_checked_dispatched_and_saved(monkeypatch):
    registered = tuners.TUNERS + (gain_tuner(),)
    monkeypatch.setattr(tuners, "METHODS", tuners.methods(registered))
    monkeypatch.setattr(tuners, "PETL_MODULES", tuners.petl_modules(registered))
    model = inject(build_sb(), "gain", scale=2.0)
    assert model.petl_config["method"] == "gain" and model.petl_config["kwargs"] == {"scale": 2.0}
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["petl_gain.weight"]
    assert set(checkpoint.petl_state_dict(model)) == {"petl_gain.weight", "petl_gain.calls"}
    with pytest.raises(TypeError, match=r"needs \['scale'\]"):
        inject(build_sb(), "gain")
    with pytest.raises(TypeError, match=r"it accepts \['scale', 'bias'\]"):
        inject(build_sb(), "gain", scale=1.0, width=2)
    with pytest.raises(ValueError, match="has no placement"):
        inject(build_sb(), "gain", placement="houlsby", scale=1.0)


def test_two_tuners_with_one_name_are_refused():
    with pytest.raises(ValueError, match="are both named 'gain'"):
        tuners.methods([gain_tuner(), gain_tuner()])


def test_bitfit_without_biases_is_an_error():
    backbone = find_backbone(build_sb())
    backbone.encoder = torch.nn.Linear(8, 8, bias=False)
    with pytest.raises(ValueError, match="'bitfit' matched nothing to train in TransformerEncoder"):
        bitfit.attach(backbone, None, True)
