"""Shared optimiser and schedules."""

import math

import pytest
import torch

from speechbrain_mambadapter.mamba import Mamba
from speechbrain_mambadapter.training import AdamW, PerStepLR


def test_adamw_drops_frozen_and_skips_decay_on_marked_parameters():
    block = Mamba(8, d_state=4)
    block.out_proj.requires_grad_(False)
    opt = AdamW(block.parameters(), lr=1e-3, betas=[0.9, 0.98], weight_decay=0.1)
    decay, no_decay = opt.param_groups
    assert {id(p) for p in no_decay["params"]} == {id(block.A_log), id(block.D)}
    assert id(block.out_proj.weight) not in {id(p) for p in decay["params"]}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert opt.defaults["betas"] == (0.9, 0.98)
    A_log = block.A_log.detach().clone()
    block(torch.randn(1, 3, 8)).sum().backward()
    block.A_log.grad.zero_()
    opt.step()
    assert torch.equal(block.A_log, A_log)  # zero gradient and no decay: unchanged


def test_adamw_with_nothing_trainable_says_what_to_check():
    with pytest.raises(ValueError, match="no trainable parameter"):
        AdamW(Mamba(8).requires_grad_(False).parameters(), lr=1e-3)


def test_cosine_schedule_with_warmup_and_resume(tmp_path):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.0)
    sched = PerStepLR(lr_initial=1.0, total_steps=12, warmup_steps=2)
    rates = [sched(opt) for _ in range(6)]
    assert rates[:3] == [0.0, 0.5, 1.0]
    assert rates[3] == pytest.approx(0.5 * (1 + math.cos(math.pi / 10)))
    assert opt.param_groups[0]["lr"] == rates[-1]
    sched.save(tmp_path / "s.ckpt")
    resumed = PerStepLR(lr_initial=1.0, total_steps=12, warmup_steps=2)
    resumed.load(tmp_path / "s.ckpt")
    assert [resumed(opt) for _ in range(7)] == [sched(opt) for _ in range(7)]
    assert sched.lr_at(12) == pytest.approx(0.0) and sched.lr_at(100) == pytest.approx(0.0)


def test_linear_schedule_reaches_final_rate():
    sched = PerStepLR(lr_initial=1e-3, lr_final=2e-5, total_steps=10, shape="linear")
    assert sched.lr_at(0) == pytest.approx(1e-3) and sched.lr_at(10) == pytest.approx(2e-5)
    with pytest.raises(ValueError, match="shape"):
        PerStepLR(1.0, 10, shape="step")
    with pytest.raises(ValueError, match="warmup_steps"):
        PerStepLR(1.0, 10, warmup_steps=10)
