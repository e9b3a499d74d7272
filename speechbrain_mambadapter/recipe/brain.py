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
  as ``inference_mode`` and ``train_mode`` say (``speechbrain_mambadapter.recipe.modes``).

The hparams keys it reads are :attr:`PETLBrain.HPARAMS`; a recipe adds its own in its subclass's
``HPARAMS``, and a hparams file missing one fails at once with the list of missing keys.

Authors
 * speechbrain-mambadapter contributors 2026
"""

import math

import speechbrain as sb

from speechbrain_mambadapter.recipe import distributed, modes


class MissingHparamsError(KeyError):
    """A hparams file lacks keys its recipe reads."""

    def __str__(self):
        return str(self.args[0])


def check_hparams(hparams, required, hparams_file=None):
    """Fail with one sentence naming every key of ``required`` that ``hparams`` lacks.

    Arguments
    ---------
    hparams : dict
        The loaded hyperparameters.
    required : iterable of str
        Keys the recipe reads.
    hparams_file : str, optional
        The file they came from (named in the error).

    Raises
    ------
    MissingHparamsError
        When keys are missing.

    Example
    -------
    >>> check_hparams({"seed": 1, "lr": 0.1}, ["seed", "lr"])
    >>> check_hparams({"seed": 1}, ["seed", "lr", "sorting"], "hparams/x.yaml")
    Traceback (most recent call last):
      ...
    speechbrain_mambadapter.recipe.brain.MissingHparamsError: hparams/x.yaml lacks ... ['lr', 'sorting'] ...
    """
    missing = sorted(set(required) - set(hparams))
    if missing:
        where = hparams_file or "The hparams file"
        raise MissingHparamsError(
            f"{where} lacks the key(s) {missing} that this recipe reads; add them (the recipe's "
            "hparams/mambadapter.yaml has every key with its default and a comment)."
        )


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
    speechbrain_mambadapter.recipe.brain.MissingHparamsError: The hparams file lacks the key(s) ...
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
        """
        modes.set_graph_mode(lobe, self.hparams.inference_mode)
        modes.set_graph_mode(lobe, self.hparams.train_mode, training=True)

    def make_dataloader(self, dataset, stage, ckpt_prefix="dataloader-", **loader_kwargs):
        """As ``Brain.make_dataloader``, with valid/test sharded over the ranks under DDP;
        remembers the training batches per epoch for the schedule."""
        if stage != sb.Stage.TRAIN:
            loader_kwargs = distributed.eval_loader_kwargs(dataset, loader_kwargs)
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
            self.checkpointer.add_recoverable("lr_scheduler", self.lr_scheduler)
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
