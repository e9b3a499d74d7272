"""Audio classification on AST, shared by the ESC50, UrbanSound8k, GSC and FSC recipes.

Each recipe's ``train.py`` only prepares its dataset; everything else lives here, once:

* ``AudioClassificationBrain``: waveform -> AST filterbank -> SpecAugment (training only, when
  the hparams give one) -> AST with the PETL method the YAML injected -> pooled embedding ->
  linear head; cross-entropy; accuracy per epoch in the train log; the learning rate set before
  every optimiser step by the YAML's ``lr_scheduler``; a checkpoint per epoch that keeps the
  latest (for resuming after a kill) and the best on validation accuracy, holding only the PETL
  weights (``PETLCheckpoint``), the head, the optimiser, the schedule and the epoch counter; on
  the test set, ``metrics.json`` (accuracy, per-class accuracy, confusion matrix, trainable
  parameters, the ``inject`` call) and ``confusion_matrix.png``. Under ``torchrun`` the
  validation and test sets are sharded over the processes too, and every metric (training loss
  and accuracy included) is that of the whole set, merged over the ranks
  (``speechbrain_mambadapter.recipe.distributed``).
* ``dataio_prepare(hparams)``: the train/valid/test ``DynamicItemDataset`` of the manifests the
  prepare scripts write, with labels indexed by ``classes.txt``.
* ``SpecAugment``: the paper's frequency and time masking of the normalised filterbank.

Keys the Brain reads from the hparams: ``ast`` and ``classifier`` (in ``modules``),
``spec_augment`` (a module or ``null``), ``lr_scheduler`` (``!name:`` of a schedule taking
``total_steps`` and called with the optimiser before each optimiser step, e.g.
``speechbrain_mambadapter.recipe.optim.PerStepLR``), ``number_of_epochs``,
``train_logger``, ``metrics_file``, ``confusion_matrix_file``, ``classes`` (set by
``dataio_prepare``), and ``dataset``, ``experiment``, ``fold``, ``seed`` (recorded in the
metrics file for ``speechbrain_mambadapter.results``). Optional: ``step_log`` (a path: one JSON
line per training batch, see ``distributed.StepLossLog``; null or absent: none),
``inference_mode`` (``eager``, the default, or ``cuda_graph``: validation and test replay the AST
encoder as CUDA graphs, see ``fast_inference.set_inference_mode``) and ``train_mode`` (``eager``,
the default, or ``cuda_graph``: training replays the AST encoder's forward and backward as CUDA
graphs captured at the first batch, on CUDA only; batches of another size, such as an epoch's
last, run eagerly; it composes with ``--precision=bf16``, see ``fast_inference.set_train_mode``).

Authors
 * speechbrain-mambadapter contributors 2026
"""

import json
import logging
import math
import os

import speechbrain as sb
import torch
import torch.nn.functional as F
import torchaudio
from speechbrain.dataio.dataio import read_audio
from speechbrain.dataio.dataset import DynamicItemDataset

from speechbrain_mambadapter import fast_inference
from speechbrain_mambadapter.recipe import distributed
from speechbrain_mambadapter.recipe.dataprep import CLASSES_FILE, SPLITS, read_classes

logger = logging.getLogger(__name__)

METRICS_VERSION = 1


class SpecAugment(torch.nn.Module):
    """One frequency mask and one time mask per clip, as the paper's AST code.

    The paper applies ``torchaudio.transforms.FrequencyMasking(24)`` and ``TimeMasking(80)`` to
    each normalised filterbank; masked values become 0 (the normalised mean). Here each clip of
    the batch draws its own masks (``iid_masks=True``), which is the same distribution.

    Arguments
    ---------
    freq_mask : int
        Largest number of consecutive mel bins masked (width drawn uniformly in ``[0, freq_mask)``).
    time_mask : int
        Largest number of consecutive frames masked.

    Example
    -------
    >>> feats = torch.ones(4, 100, 128)
    >>> masked = SpecAugment(freq_mask=24, time_mask=80)(feats)
    >>> masked.shape, bool((masked == 0).any()), bool((masked <= 1).all())
    (torch.Size([4, 100, 128]), True, True)
    """

    def __init__(self, freq_mask=24, time_mask=80):
        super().__init__()
        if freq_mask < 0 or time_mask < 0:
            raise ValueError(f"Mask widths must be >= 0, got freq_mask={freq_mask}, time_mask={time_mask}.")
        self.freq = torchaudio.transforms.FrequencyMasking(freq_mask, iid_masks=True)
        self.time = torchaudio.transforms.TimeMasking(time_mask, iid_masks=True)

    def forward(self, feats):
        """Mask ``feats`` ``[B, frames, bins]``; returns a new tensor of the same shape."""
        spec = feats.transpose(1, 2).unsqueeze(1)  # torchaudio wants [B, C, freq, time]
        spec = self.time(self.freq(spec))
        return spec.squeeze(1).transpose(1, 2)


def accuracy(predictions, targets):
    """Share of ``predictions`` equal to ``targets`` (0.0 for empty inputs).

    Arguments
    ---------
    predictions, targets : torch.Tensor
        ``[N]`` class indices.

    Returns
    -------
    float

    Example
    -------
    >>> accuracy(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 1, 2]))
    0.75
    """
    if targets.numel() == 0:
        return 0.0
    return (predictions == targets).float().mean().item()


def confusion_matrix(predictions, targets, n_classes):
    """``[n_classes, n_classes]`` counts; row = true class, column = predicted class.

    Arguments
    ---------
    predictions, targets : torch.Tensor
        ``[N]`` class indices below ``n_classes``.
    n_classes : int
        Number of classes.

    Returns
    -------
    torch.Tensor
        ``[n_classes, n_classes]`` int64.

    Example
    -------
    >>> confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]), 2).tolist()
    [[1, 1], [0, 1]]
    """
    flat = targets.long() * n_classes + predictions.long()
    return torch.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def per_class_accuracy(matrix, classes):
    """``{class: recall}`` from a confusion matrix; classes absent from the data map to None.

    Arguments
    ---------
    matrix : torch.Tensor
        ``confusion_matrix`` output.
    classes : list of str
        Class names, in index order.

    Returns
    -------
    dict

    Example
    -------
    >>> per_class_accuracy(torch.tensor([[1, 1], [0, 0]]), ["dog", "cat"])
    {'dog': 0.5, 'cat': None}
    """
    totals = matrix.sum(dim=1)
    return {
        name: (matrix[i, i].item() / totals[i].item() if totals[i] > 0 else None)
        for i, name in enumerate(classes)
    }


def plot_confusion_matrix(matrix, classes, path, title):
    """Save a row-normalised confusion matrix as a PNG (matplotlib, Agg backend).

    Arguments
    ---------
    matrix : torch.Tensor
        ``confusion_matrix`` output.
    classes : list of str
        Class names (axis labels).
    path : str
        Output PNG file.
    title : str
        Figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = matrix.float()
    normalised = counts / counts.sum(dim=1, keepdim=True).clamp(min=1)
    size = max(4.0, 0.22 * len(classes) + 2.0)
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(normalised.numpy(), cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=6)
    ax.set_yticks(range(len(classes)), classes, fontsize=6)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def count_parameters(module, trainable=True):
    """Parameters of ``module`` (only trainable ones by default), shared tensors counted once.

    Example
    -------
    >>> layer = torch.nn.Linear(3, 2)
    >>> _ = layer.bias.requires_grad_(False)
    >>> count_parameters(layer), count_parameters(layer, trainable=False)
    (6, 8)
    """
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)


class AudioClassificationBrain(sb.Brain):
    """Clip classification with a PETL-adapted AST and a linear head (see the module docstring)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.train_batches = None  # set by make_dataloader; sizes the per-step schedule
        distributed.check_sorting(getattr(self.hparams, "sorting", "random"))
        self.step_log = distributed.StepLossLog(getattr(self.hparams, "step_log", None), self.device)
        self.epoch = 0
        # Once, on the unwrapped lobe: DDP, added later, calls the same lobe's forward.
        fast_inference.set_inference_mode(self.modules.ast, getattr(self.hparams, "inference_mode", "eager"))
        fast_inference.set_train_mode(self.modules.ast, getattr(self.hparams, "train_mode", "eager"))

    def compute_forward(self, batch, stage):
        """Logits ``[B, n_classes]`` of a batch of waveforms."""
        batch = batch.to(self.device)
        wavs, lens = batch.sig
        augment = self.hparams.spec_augment if stage == sb.Stage.TRAIN else None
        # One call of the AST's forward (features, SpecAugment, encoder, pooling): under DDP
        # only the wrapped module's forward synchronises the adapters' gradients.
        embeddings = self.modules.ast(wavs, lens, augment=augment)
        return self.modules.classifier(embeddings)

    def compute_objectives(self, predictions, batch, stage):
        """Cross-entropy; also collects predictions for the stage's accuracy."""
        targets = batch.label_index.data.to(self.device).view(-1)
        losses = F.cross_entropy(predictions.float(), targets, reduction="none")
        # Per clip, so that the ranks' results can be merged (and deduplicated) by clip id.
        for clip_id, predicted, target, loss in zip(
            batch.id, predictions.detach().argmax(dim=-1).tolist(), targets.tolist(), losses.tolist()
        ):
            self.stage_records.append((clip_id, predicted, target, loss))
        return losses.mean()

    def on_fit_batch_start(self, batch, should_step):
        """Set the rate of the coming optimiser step (the paper's cosine schedule is per batch, not epoch)."""
        if should_step:
            self.scheduler(self.optimizer)

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        """One line of the step log (when ``step_log`` is set)."""
        self.step_log.log(self.epoch, loss, len(batch.id))

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
        """Build the schedule over ``number_of_epochs`` x batches, register it, then recover."""
        if self.train_batches is None:
            raise ValueError(
                "The learning-rate schedule needs the number of training batches per epoch: pass a "
                "Dataset (not a DataLoader) to fit(), so that the Brain builds the DataLoader itself."
            )
        steps_per_epoch = math.ceil(self.train_batches / self.grad_accumulation_factor)
        total_steps = self.hparams.number_of_epochs * steps_per_epoch
        self.scheduler = self.hparams.lr_scheduler(total_steps=total_steps)
        if self.checkpointer is not None:
            self.checkpointer.add_recoverable("scheduler", self.scheduler)
        super().on_fit_start()  # optimiser and checkpoint recovery (schedule included)
        trainable = count_parameters(self.modules.ast)
        head = count_parameters(self.modules.classifier)
        logger.info(
            "%s: %s trainable backbone parameters (PETL method and the norms it trains) + %s in the head",
            self.hparams.experiment,
            f"{trainable:,}",
            f"{head:,}",
        )

    def on_stage_start(self, stage, epoch=None):
        """Reset the collected predictions."""
        self.stage_records = []
        if stage == sb.Stage.TRAIN and epoch is not None:
            self.epoch = epoch

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Log loss and accuracy (of every rank's clips); checkpoint after validation; write the
        test metrics."""
        records = distributed.gather_records(self.stage_records, key=lambda record: record[0])
        predictions = torch.tensor([r[1] for r in records], dtype=torch.long)
        targets = torch.tensor([r[2] for r in records], dtype=torch.long)
        if stage == sb.Stage.TRAIN:
            # The mean of the ranks' running means (the sampler gives every rank as many batches).
            loss = distributed.mean_over_ranks(stage_loss, self.device)
        else:
            loss = sum(r[3] for r in records) / max(1, len(records))
        stats = {"loss": loss, "accuracy": accuracy(predictions, targets)}
        if stage == sb.Stage.TRAIN:
            self.train_stats = stats
        elif stage == sb.Stage.VALID:
            lr = self.optimizer.param_groups[0]["lr"]
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "lr": lr},
                train_stats=self.train_stats,
                valid_stats=stats,
            )
            if self.checkpointer is not None:
                # Keeps the latest checkpoint (to resume) and the best one on validation accuracy.
                self.checkpointer.save_and_keep_only(
                    meta={"accuracy": stats["accuracy"], "epoch": epoch}, max_keys=["accuracy"]
                )
        else:
            self.hparams.train_logger.log_stats(
                stats_meta={"Epoch loaded": self.hparams.epoch_counter.current},
                test_stats=stats,
            )
            self._write_test_metrics(stats, predictions, targets)

    def _write_test_metrics(self, stats, predictions, targets):
        classes = self.hparams.classes
        matrix = confusion_matrix(predictions, targets, len(classes))
        best = self.checkpointer.find_checkpoint(max_key="accuracy") if self.checkpointer else None
        metrics = {
            "version": METRICS_VERSION,
            "dataset": self.hparams.dataset,
            "experiment": self.hparams.experiment,
            "fold": self.hparams.fold,
            "seed": self.hparams.seed,
            "test_accuracy": stats["accuracy"],
            "test_loss": float(stats["loss"]),
            "test_clips": int(targets.numel()),
            "valid_accuracy": None if best is None else best.meta.get("accuracy"),
            "checkpoint_epoch": None if best is None else best.meta.get("epoch"),
            "trainable_parameters": count_parameters(self.modules.ast),
            "head_parameters": count_parameters(self.modules.classifier),
            "backbone_parameters": count_parameters(self.modules.ast, trainable=False),
            # None when a YAML builds the AST without inject (then every unfrozen weight trains);
            # under DDP the lobe is inside the DistributedDataParallel wrapper (.module).
            "petl_config": getattr(
                getattr(self.modules.ast, "module", self.modules.ast), "petl_config", None
            ),
            "classes": classes,
            "per_class_accuracy": per_class_accuracy(matrix, classes),
            "confusion_matrix": matrix.tolist(),
        }
        if not sb.utils.distributed.if_main_process():
            return
        with open(self.hparams.metrics_file, "w", encoding="utf-8") as f:
            json.dump(metrics, f, indent=2)
        title = f"{self.hparams.dataset} {self.hparams.experiment}: test accuracy {stats['accuracy']:.4f}"
        plot_confusion_matrix(matrix, classes, self.hparams.confusion_matrix_file, title)
        logger.info(
            "Test accuracy %.4f; metrics in %s, confusion matrix in %s",
            stats["accuracy"],
            self.hparams.metrics_file,
            self.hparams.confusion_matrix_file,
        )


def dataio_prepare(hparams):
    """The train/valid/test datasets of the prepared manifests, and the class list.

    Reads ``train.csv``, ``valid.csv``, ``test.csv`` and ``classes.txt`` from
    ``hparams["prepared_folder"]`` (written by the recipe's ``*_prepare.py``), checks that the
    number of classes matches ``hparams["n_classes"]`` (the head's size), and stores the class
    list in ``hparams["classes"]`` for the Brain's per-class metrics.

    Arguments
    ---------
    hparams : dict
        The loaded hyperparameters.

    Returns
    -------
    dict
        ``{"train": DynamicItemDataset, "valid": ..., "test": ...}``; items provide ``sig``
        (16 kHz mono waveform), ``label`` and ``label_index``.
    """
    folder = hparams["prepared_folder"]
    for name in [f"{split}.csv" for split in SPLITS] + [CLASSES_FILE]:
        if not os.path.isfile(os.path.join(folder, name)):
            raise FileNotFoundError(
                f"{folder} has no {name}: data preparation did not run or was interrupted. Run the recipe "
                "without --skip_prep=True (it prepares the data), or point --prepared_folder at a folder "
                "the recipe's *_prepare.py wrote."
            )
    classes = read_classes(folder)
    if len(classes) != hparams["n_classes"]:
        raise ValueError(
            f"{os.path.join(folder, CLASSES_FILE)} lists {len(classes)} classes but the head has "
            f"n_classes={hparams['n_classes']}; pass --n_classes={len(classes)} (a subset of the "
            "dataset) or prepare the full dataset."
        )
    index_of = {name: i for i, name in enumerate(classes)}
    hparams["classes"] = classes

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav):
        return read_audio(wav)

    @sb.utils.data_pipeline.takes("label")
    @sb.utils.data_pipeline.provides("label_index")
    def label_pipeline(label):
        if label not in index_of:
            raise KeyError(
                f"Label {label!r} is not in {os.path.join(folder, CLASSES_FILE)}; prepare the data again "
                "(delete the prepared folder) so that the manifests and the class list agree."
            )
        return torch.LongTensor([index_of[label]])

    datasets = {}
    for split in SPLITS:
        dataset = DynamicItemDataset.from_csv(os.path.join(folder, f"{split}.csv"))
        if len(dataset) == 0:
            raise ValueError(
                f"{os.path.join(folder, split + '.csv')} is empty; check the data folder and the fold."
            )
        dataset.add_dynamic_item(audio_pipeline)
        dataset.add_dynamic_item(label_pipeline)
        dataset.set_output_keys(["id", "sig", "label", "label_index"])
        datasets[split] = dataset
    return datasets
