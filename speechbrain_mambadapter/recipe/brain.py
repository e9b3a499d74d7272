"""``PETLBrain``: the machinery every recipe's Brain shares, and nothing of a recipe's own logic.

A recipe's ``train.py`` subclasses ``PETLBrain`` and writes its own ``compute_forward``,
``compute_objectives``, ``on_stage_start`` and ``on_stage_end`` (forward, loss, metrics), as an
upstream SpeechBrain recipe does. What it inherits:

* **valid/test sharded under DDP**: under ``torchrun`` SpeechBrain shards only the training set;
  here the validation and test loaders get a non-shuffling ``DistributedSampler`` too
  (``distributed.eval_loader_kwargs``), and the recipe merges its per-example records with
  ``distributed.gather_records``;
* **a per-step learning-rate schedule sized from the data**: ``lr_scheduler`` is a ``!name:`` of a
  schedule taking ``total_steps`` (``speechbrain_mambadapter.recipe.optim.PerStepLR``), built at the
  start of ``fit`` from the training loader's length (the rank's share under DDP), the gradient
  accumulation and ``number_of_epochs``, checkpointed as ``lr_scheduler`` and called before every
  optimiser step;
* **the step log**: ``step_log`` (a path, or null) gets one JSON line per training batch
  (``distributed.StepLossLog``);
* **graph modes**: :meth:`PETLBrain.use_graph_modes` routes a lobe's encoder through CUDA graphs
  as ``inference_mode`` and ``train_mode`` say (``speechbrain_mambadapter.recipe.modes``);
* **exact resume**: the random number generators are checkpointed (:class:`RNGState`) and the
  loaders draw their worker seeds from their own generator, not the global one, so a run killed
  at any checkpoint (end of epoch, or mid-epoch with ``ckpt_interval_minutes`` /
  ``ckpt_interval_steps``) and restarted ends with the weights of an uninterrupted run;
* **a writable save folder**, checked before the first step rather than at the first save.

The hparams keys it reads are :attr:`PETLBrain.HPARAMS`; a recipe adds its own in its subclass's
``HPARAMS``, and a hparams file missing one fails at once with the list of missing keys.

Authors
 * speechbrain-mambadapter contributors 2026
"""

import logging
import math
import os
import random
import tempfile

import numpy as np
import speechbrain as sb
import torch
from speechbrain.utils.checkpoints import mark_as_loader, mark_as_saver, register_checkpoint_hooks

from speechbrain_mambadapter.recipe import distributed, modes
from speechbrain_mambadapter.recipe.hparams import check_hparams

logger = logging.getLogger(__name__)


@register_checkpoint_hooks
class RNGState:
    """A Checkpointer recoverable holding the random generators' states (torch, CUDA, NumPy, random).

    Dropout, SpecAugment and shuffling draw from them; restoring them with the weights makes a
    resumed run draw what the uninterrupted run drew. Under several processes only the main
    process saves checkpoints, so the ranks' own states cannot be restored: there it saves and
    restores nothing (a resumed multi-GPU run is then not bit-exact).

    Example
    -------
    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "rng.ckpt"
    >>> state = RNGState()
    >>> _ = torch.manual_seed(0); state.save(path)
    >>> first = torch.rand(3)
    >>> state.load(path); bool(torch.equal(torch.rand(3), first))
    True
    """

    @mark_as_saver
    def save(self, path):
        """Write the states of this process's generators to ``path``."""
        states = {}
        if distributed.world_size() == 1:
            states = {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                # The legacy global state: what seed_everything seeds and libraries draw from.
                "numpy": np.random.get_state(),  # noqa: NPY002
                "random": random.getstate(),
            }
        torch.save(states, path)

    @mark_as_loader
    def load(self, path, end_of_epoch=False):
        """Restore the generators from ``path`` (nothing for a multi-process checkpoint)."""
        del end_of_epoch  # the states are saved at every checkpoint, mid-epoch ones too
        states = torch.load(path, weights_only=False)
        if not states or distributed.world_size() > 1:
            return
        torch.set_rng_state(states["torch"])
        if states["cuda"] and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states["cuda"])
        np.random.set_state(states["numpy"])  # noqa: NPY002
        random.setstate(states["random"])


def check_writable(folder):
    """Fail now, with a sentence, if ``folder`` cannot receive files (rather than at the first save).

    Example
    -------
    >>> check_writable(tempfile.mkdtemp())
    """
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write_test_"):
            pass
    except OSError as e:
        raise PermissionError(
            f"Cannot write to {folder} ({e.strerror}): checkpoints could not be saved there. Make it "
            "writable, or give the run another --output_folder (or --output_root)."
        ) from e


class PETLBrain(sb.Brain):
    """SpeechBrain ``Brain`` with sharded evaluation, a per-step schedule, a step log and graph modes.

    Same constructor as ``speechbrain.core.Brain``. Subclasses define the recipe: forward,
    objectives, stage start/end (call ``super().on_stage_start``, which keeps the epoch number
    for the step log).

    Example
    -------
    >>> import collections, functools, torch
    >>> from speechbrain_mambadapter.recipe.optim import PerStepLR
    >>> Batch = collections.namedtuple("Batch", "id x y")
    >>> class Regression(PETLBrain):
    ...     def compute_forward(self, batch, stage):
    ...         return self.modules.layer(batch.x)
    ...     def compute_objectives(self, predictions, batch, stage):
    ...         return torch.nn.functional.mse_loss(predictions, batch.y)
    >>> hparams = {"number_of_epochs": 2, "sorting": "random", "step_log": None,
    ...            "inference_mode": "eager", "train_mode": "eager",
    ...            "lr_scheduler": functools.partial(PerStepLR, lr_initial=0.1)}
    >>> brain = Regression({"layer": torch.nn.Linear(2, 1)}, lambda p: torch.optim.SGD(p, lr=0.1),
    ...                    hparams, run_opts={"device": "cpu"})
    >>> data = [Batch(list("abcd"), torch.randn(4, 2), torch.randn(4, 1)) for _ in range(3)]
    >>> brain.fit(range(2), data, train_loader_kwargs={"batch_size": None})
    >>> brain.lr_scheduler.total_steps, brain.lr_scheduler.step
    (6, 6)
    >>> Regression({"layer": torch.nn.Linear(2, 1)}, None, {"sorting": "random"})
    Traceback (most recent call last):
      ...
    speechbrain_mambadapter.recipe.hparams.MissingHparamsError: The hparams file lacks the key(s) ...
    """

    HPARAMS = ("number_of_epochs", "lr_scheduler", "sorting", "step_log", "inference_mode", "train_mode")

    def __init__(self, modules=None, opt_class=None, hparams=None, run_opts=None, checkpointer=None):
        check_hparams(hparams or {}, self.HPARAMS)
        super().__init__(modules, opt_class, hparams, run_opts, checkpointer)
        distributed.check_sorting(self.hparams.sorting)
        self.step_log = distributed.StepLossLog(self.hparams.step_log, self.device)
        self.epoch = 0
        self.train_batches = None  # set by make_dataloader; sizes the per-step schedule
        self.lr_scheduler = None

    def use_graph_modes(self, lobe):
        """Replay ``lobe``'s encoder as CUDA graphs as ``inference_mode`` and ``train_mode`` say.

        Call it once, on the lobe as built (DDP, added later, calls the same lobe's forward).
        Evaluation graphs fold the MambAdapters when evaluation runs in half precision
        (``--eval_precision=bf16`` or ``fp16``), where folding was measured faster; in fp32 the
        folded matrices, ``d_model`` wide, cost more than the two products they replace
        (``benchmarks/RESULTS.md``).
        """
        fold = self.eval_precision in ("bf16", "fp16")
        modes.set_graph_mode(lobe, self.hparams.inference_mode, fold=fold)
        modes.set_graph_mode(lobe, self.hparams.train_mode, training=True)

    def make_dataloader(self, dataset, stage, ckpt_prefix="dataloader-", **loader_kwargs):
        """As ``Brain.make_dataloader``, with valid/test sharded over the ranks under DDP;
        remembers the training batches per epoch for the schedule."""
        if stage != sb.Stage.TRAIN:
            loader_kwargs = distributed.eval_loader_kwargs(dataset, loader_kwargs)
        # A loader's iterator draws its workers' base seed from this generator instead of the
        # global one, so starting an epoch (or a validation) consumes no global random numbers:
        # a run resumed from a checkpoint then draws the dropout masks the uninterrupted run drew.
        loader_kwargs.setdefault("generator", torch.Generator().manual_seed(0))
        loader = super().make_dataloader(dataset, stage, ckpt_prefix, **loader_kwargs)
        if stage == sb.Stage.TRAIN:
            self.train_batches = len(loader)
        return loader

    def on_fit_start(self):
        """Build the schedule over ``number_of_epochs`` x optimiser steps, register it, recover.

        With ``number_of_epochs: 0`` (test only) the schedule spans one epoch and is never stepped.
        """
        if self.train_batches is None:
            raise ValueError(
                "The learning-rate schedule needs the number of training batches per epoch: pass a "
                "Dataset (not a DataLoader) to fit(), so that the Brain builds the DataLoader itself."
            )
        if self.hparams.number_of_epochs < 0:
            raise ValueError(
                f"number_of_epochs must be 0 (test only) or more, got {self.hparams.number_of_epochs}."
            )
        steps_per_epoch = math.ceil(self.train_batches / self.grad_accumulation_factor)
        total_steps = steps_per_epoch * max(1, self.hparams.number_of_epochs)
        self.lr_scheduler = self.hparams.lr_scheduler(total_steps=total_steps)
        if self.checkpointer is not None:
            check_writable(self.checkpointer.checkpoints_dir)
            self.checkpointer.add_recoverable("lr_scheduler", self.lr_scheduler)
            self.checkpointer.add_recoverable("rng", RNGState())
        super().on_fit_start()  # optimiser and checkpoint recovery (the schedule included)

    def on_fit_batch_start(self, batch, should_step):
        """Set the rate of the coming optimiser step (step s gets the schedule's rate at s)."""
        if should_step:
            self.lr_scheduler(self.optimizer)

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        """One line of the step log (when ``step_log`` is set)."""
        self.step_log.log(self.epoch, loss, len(batch.id))

    def on_stage_start(self, stage, epoch=None):
        """Keep the training epoch's number (for the step log)."""
        if stage == sb.Stage.TRAIN and epoch is not None:
            self.epoch = epoch
