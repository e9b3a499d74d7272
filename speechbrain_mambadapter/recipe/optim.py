"""Optimiser and learning-rate schedules shared by every recipe (usable from HyperPyYAML).

* ``AdamW(params, ...)``: takes the flat parameter iterator SpeechBrain's ``Brain`` passes to
  ``opt_class``, keeps only trainable parameters, and applies no weight decay to those marked
  ``_no_weight_decay`` (Mamba's ``A_log`` and ``D``, as in mamba-ssm).
* ``PerStepLR``: a learning-rate schedule stepped after every optimiser step (cosine, as the
  paper's AST code, or linear, as its Whisper code), with optional linear warm-up; it saves
  its position with the Checkpointer, so resumed runs continue the schedule.

Authors
 * speechbrain-mambadapter contributors 2026
"""

import math

import torch
from speechbrain.utils.checkpoints import mark_as_loader, mark_as_saver, register_checkpoint_hooks


class AdamW(torch.optim.AdamW):
    """``torch.optim.AdamW`` over the trainable parameters, without decay on ``_no_weight_decay`` ones.

    All parameters stay in ONE parameter group, because SpeechBrain's ``Brain`` clips the
    gradients of ``param_groups[0]`` only: a second group for the undecayed parameters would
    escape gradient clipping. The decay is therefore applied here, decoupled as in AdamW
    (``p -= lr * weight_decay * p`` before the Adam update), and skipped for parameters marked
    ``_no_weight_decay`` (Mamba's ``A_log`` and ``D``, as in mamba-ssm).

    Arguments
    ---------
    params : iterable of torch.nn.Parameter
        Typically ``brain.modules.parameters()``; frozen parameters are dropped.
    lr : float
        Learning rate.
    betas : tuple of float
        Adam's betas.
    eps : float
        Adam's epsilon.
    weight_decay : float
        Decoupled weight decay for every other trainable parameter.

    Example
    -------
    >>> from speechbrain_mambadapter.mamba import Mamba
    >>> opt = AdamW(Mamba(8, d_state=4).parameters(), lr=1e-3, weight_decay=0.1)
    >>> len(opt.param_groups), len(opt.param_groups[0]["params"]), opt.param_groups[0]["petl_weight_decay"]
    (1, 9, 0.1)
    """

    def __init__(self, params, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        trainable = [p for p in params if p.requires_grad]
        if not trainable:
            raise ValueError(
                "The optimiser got no trainable parameter: was the PETL method injected, and is the "
                "classification head listed in the Brain's modules?"
            )
        super().__init__(trainable, lr=lr, betas=tuple(betas), eps=eps, weight_decay=0.0)
        self.param_groups[0]["petl_weight_decay"] = weight_decay

    @torch.no_grad()
    def step(self, closure=None):
        """Decay the decayed parameters, then take the Adam step."""
        for group in self.param_groups:
            rate = group.get("petl_weight_decay", 0.0)
            decayed = [
                p for p in group["params"] if p.grad is not None and not getattr(p, "_no_weight_decay", False)
            ]
            if rate and decayed:
                torch._foreach_mul_(decayed, 1.0 - group["lr"] * rate)  # one launch, not one per tensor
        return super().step(closure)


@register_checkpoint_hooks
class PerStepLR:
    """Learning rate updated after every optimiser step: warm-up, then cosine or linear decay.

    Call it with the optimiser *before* each optimiser step (``on_fit_batch_start``), so that
    step ``s`` runs with ``lr_at(s)``. The rate of step
    ``s`` (counting from 0) is ``lr_initial * s / warmup_steps`` during warm-up, then decays
    from ``lr_initial`` to ``lr_final`` over the remaining ``total_steps - warmup_steps``
    steps and stays at ``lr_final`` after that.

    Arguments
    ---------
    lr_initial : float
        Peak learning rate.
    total_steps : int
        Steps of the whole training (epochs × batches per epoch).
    lr_final : float
        Rate at the end (0 for the paper's cosine schedule; 2e-5 for its Whisper one).
    shape : str
        ``"cosine"`` or ``"linear"``.
    warmup_steps : int
        Linear warm-up steps.

    Example
    -------
    >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    >>> sched = PerStepLR(lr_initial=1.0, total_steps=4, shape="linear", lr_final=0.0)
    >>> [round(sched(opt), 2) for _ in range(5)]
    [1.0, 0.75, 0.5, 0.25, 0.0]
    """

    def __init__(self, lr_initial, total_steps, lr_final=0.0, shape="cosine", warmup_steps=0):
        if shape not in ("cosine", "linear"):
            raise ValueError(f"shape must be 'cosine' or 'linear', got {shape!r}.")
        if total_steps < 1 or not 0 <= warmup_steps < total_steps:
            raise ValueError(
                f"Need total_steps >= 1 and 0 <= warmup_steps < total_steps, got total_steps={total_steps}, "
                f"warmup_steps={warmup_steps}."
            )
        self.lr_initial = lr_initial
        self.lr_final = lr_final
        self.total_steps = total_steps
        self.shape = shape
        self.warmup_steps = warmup_steps
        self.step = 0

    def lr_at(self, step):
        """The learning rate of step ``step``."""
        if step < self.warmup_steps:
            return self.lr_initial * step / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        if self.shape == "cosine":
            factor = 0.5 * (1.0 + math.cos(math.pi * progress))
        else:
            factor = 1.0 - progress
        return self.lr_final + (self.lr_initial - self.lr_final) * factor

    def __call__(self, optimizer):
        """Set the rate of the current step on every parameter group, advance, return the rate set."""
        lr = self.lr_at(self.step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        self.step += 1
        return lr

    @mark_as_saver
    def save(self, path):
        """Save the position in the schedule."""
        torch.save({"step": self.step}, path)

    @mark_as_loader
    def load(self, path, end_of_epoch=False):
        """Restore the position in the schedule."""
        del end_of_epoch  # the position is saved at every checkpoint, mid-epoch ones too
        self.step = torch.load(path)["step"]
