"""Shared optimiser and schedules."""

import math

import pytest
import torch

from speechbrain_mambadapter.mamba import Mamba
from speechbrain_mambadapter.recipe.optim import AdamW, PerStepLR


def test_adamw_is_one_group_and_equals_torch_adamw_with_a_no_decay_group():
    torch.manual_seed(0)
    block = Mamba(8, d_state=4)
    block.out_proj.requires_grad_(False)
    twin = Mamba(8, d_state=4)
    twin.load_state_dict(block.state_dict())
    twin.out_proj.requires_grad_(False)
    ours = AdamW(block.parameters(), lr=1e-2, betas=[0.9, 0.98], weight_decay=0.1)
    # One group: SpeechBrain clips the gradients of param_groups[0] only.
    assert len(ours.param_groups) == 1 and len(ours.param_groups[0]["params"]) == 8
    no_decay = [twin.A_log, twin.D]
    decay = [p for p in twin.parameters() if p.requires_grad and all(p is not q for q in no_decay)]
    reference = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=1e-2,
        betas=(0.9, 0.98),
    )
    x = torch.randn(2, 5, 8)
    for _ in range(3):
        for model, opt in ((block, ours), (twin, reference)):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    for (name, p), q in zip(block.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, msg=name)
    assert not torch.equal(block.A_log, Mamba(8, d_state=4).A_log)  # it trained


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
