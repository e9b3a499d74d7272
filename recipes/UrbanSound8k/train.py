#!/usr/bin/env python3
"""UrbanSound8K urban sound classification: AST adapted with a PETL method.

The frozen Audio Spectrogram Transformer gets the PETL method of the hparams file (MambAdapter,
Bottleneck, Conformer, LoRA, BitFit, prompt, prefix, linear probing or full fine-tuning) and a
linear head over its mean-pooled output tokens. Run::

    python recipes/UrbanSound8k/train.py recipes/UrbanSound8k/hparams/mambadapter.yaml \\
        --data_folder=/path/to/UrbanSound8K --fold=1 --seed=10

``--fold=k`` tests on fold k and trains on the other nine; the checkpoint is chosen on a
validation split taken from those nine training folds (``--valid_fraction``, ``--split_seed``),
never on the test fold. ``python recipes/run_folds.py`` runs all folds and seeds. The method's
settings are top-level keys: ``--rank=8``, ``--use_mamba=False --experiment=no_mamba``. Offline,
pass ``--pretrained_source=<local dir>`` with a saved AST.

Outputs (``output_folder``): ``train_log.txt``, adapter-only checkpoints in ``save/`` (the latest,
to resume, and the best on validation accuracy, which the test uses), ``metrics.json`` and
``confusion_matrix.png``.

Authors
 * speechbrain-mambadapter contributors 2026
"""

import json
import logging
import os
import sys

import speechbrain as sb
import torch
import torch.nn.functional as F
from hyperpyyaml import load_hyperpyyaml
from speechbrain.dataio.dataio import read_audio
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.utils.distributed import if_main_process, run_on_main
from urbansound8k_prepare import check_urbansound8k_folder, prepare_urbansound8k

from speechbrain_mambadapter.recipe import distributed, metrics
from speechbrain_mambadapter.recipe.brain import PETLBrain
from speechbrain_mambadapter.recipe.dataprep import CLASSES_FILE, SPLITS, read_classes
from speechbrain_mambadapter.recipe.hparams import check_hparams, peek_hparams

logger = logging.getLogger(__name__)

# The keys __main__ and dataio_prepare read (the Brain's own are ClassificationBrain.HPARAMS).
DATA_HPARAMS = (
    "data_folder",
    "prepared_folder",
    "skip_prep",
    "max_skipped_fraction",
    "sample_rate",
    "n_classes",
    "fold",
    "valid_fraction",
    "split_seed",
    "modules",
    "opt_class",
    "checkpointer",
    "train_dataloader_opts",
    "valid_dataloader_opts",
    "test_dataloader_opts",
)


class ClassificationBrain(PETLBrain):
    """Waveform -> AST (with the PETL method) -> pooled embedding -> linear head; cross-entropy."""

    HPARAMS = PETLBrain.HPARAMS + (
        "dataset",
        "experiment",
        "fold",
        "seed",
        "spec_augment",
        "epoch_counter",
        "train_logger",
        "metrics_file",
        "confusion_matrix_file",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.use_graph_modes(self.modules.backbone)

    def compute_forward(self, batch, stage):
        """Logits ``[B, n_classes]`` of a batch of waveforms."""
        batch = batch.to(self.device)
        wavs, lens = batch.sig
        augment = self.hparams.spec_augment if stage == sb.Stage.TRAIN else None
        # One call of the lobe's forward (features, SpecAugment, encoder, pooling): under DDP
        # only the wrapped module's forward synchronises the adapters' gradients.
        embeddings = self.modules.backbone(wavs, lens, augment=augment)
        return self.modules.classifier(embeddings)

    def compute_objectives(self, predictions, batch, stage):
        """Cross-entropy; keeps (clip, prediction, target, loss) for the stage's metrics."""
        targets = batch.label_index.data.to(self.device).view(-1)
        losses = F.cross_entropy(predictions.float(), targets, reduction="none")
        # Per clip, so that the ranks' records can be merged (and deduplicated) by clip id.
        predicted = predictions.detach().argmax(dim=-1).tolist()
        self.records.extend(zip(batch.id, predicted, targets.tolist(), losses.tolist()))
        return losses.mean()

    def on_fit_start(self):
        """Build the schedule and recover (``PETLBrain``), then log what trains."""
        super().on_fit_start()
        logger.info(
            "%s: %s trainable backbone parameters (PETL method and the norms it trains) + %s in the head",
            self.hparams.experiment,
            f"{metrics.count_parameters(self.modules.backbone):,}",
            f"{metrics.count_parameters(self.modules.classifier):,}",
        )

    def on_stage_start(self, stage, epoch=None):
        """Start collecting the stage's records."""
        super().on_stage_start(stage, epoch)
        self.records = []

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Log loss and accuracy of every rank's clips; checkpoint after validation; write the
        test metrics."""
        records = distributed.gather_records(self.records, key=lambda record: record[0])
        predictions = torch.tensor([r[1] for r in records], dtype=torch.long)
        targets = torch.tensor([r[2] for r in records], dtype=torch.long)
        if stage == sb.Stage.TRAIN:
            # The mean of the ranks' running means (the sampler gives every rank as many batches).
            loss = distributed.mean_over_ranks(stage_loss, self.device)
        else:
            loss = sum(r[3] for r in records) / max(1, len(records))
        stats = {"loss": loss, "accuracy": metrics.accuracy(predictions, targets)}
        if stage == sb.Stage.TRAIN:
            self.train_stats = stats
        elif stage == sb.Stage.VALID:
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"]},
                train_stats=self.train_stats,
                valid_stats=stats,
            )
            # Keeps the latest checkpoint (to resume) and the best one on validation accuracy.
            self.checkpointer.save_and_keep_only(
                meta={"accuracy": stats["accuracy"], "epoch": epoch}, max_keys=["accuracy"]
            )
        else:
            self.hparams.train_logger.log_stats(
                stats_meta={"Epoch loaded": self.hparams.epoch_counter.current},
                test_stats=stats,
            )
            self.write_test_metrics(stats, predictions, targets)

    def write_test_metrics(self, stats, predictions, targets):
        """``metrics.json`` (read by ``speechbrain_mambadapter.results``) and the confusion matrix."""
        if not if_main_process():
            return
        classes = self.hparams.classes
        matrix = metrics.confusion_matrix(predictions, targets, len(classes))
        best = self.checkpointer.find_checkpoint(max_key="accuracy")
        report = {
            "version": metrics.METRICS_VERSION,
            "dataset": self.hparams.dataset,
            "experiment": self.hparams.experiment,
            "fold": self.hparams.fold,
            "seed": self.hparams.seed,
            "test_accuracy": stats["accuracy"],
            "test_loss": float(stats["loss"]),
            "test_clips": int(targets.numel()),
            "valid_accuracy": None if best is None else best.meta.get("accuracy"),
            "checkpoint_epoch": None if best is None else best.meta.get("epoch"),
            "trainable_parameters": metrics.count_parameters(self.modules.backbone),
            "head_parameters": metrics.count_parameters(self.modules.classifier),
            "backbone_parameters": metrics.count_parameters(self.modules.backbone, trainable=False),
            "petl_config": distributed.unwrap(self.modules.backbone).petl_config,
            "classes": classes,
            "per_class_accuracy": metrics.per_class_accuracy(matrix, classes),
            "confusion_matrix": matrix.tolist(),
        }
        with open(self.hparams.metrics_file, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
        title = f"{self.hparams.dataset} {self.hparams.experiment}: test accuracy {stats['accuracy']:.4f}"
        metrics.plot_confusion_matrix(matrix, classes, self.hparams.confusion_matrix_file, title)
        logger.info("Test accuracy %.4f; metrics in %s", stats["accuracy"], self.hparams.metrics_file)


def dataio_prepare(hparams):
    """The train/valid/test datasets of the prepared manifests; sets ``hparams["classes"]``.

    Reads ``train.csv``, ``valid.csv``, ``test.csv`` and ``classes.txt`` from
    ``hparams["prepared_folder"]`` (written by ``urbansound8k_prepare.py``) and checks the number of
    classes against the head's ``n_classes``. Items provide ``sig`` (16 kHz mono waveform),
    ``label`` and ``label_index``.
    """
    folder = hparams["prepared_folder"]
    for name in [f"{split}.csv" for split in SPLITS] + [CLASSES_FILE]:
        if not os.path.isfile(os.path.join(folder, name)):
            raise FileNotFoundError(
                f"{folder} has no {name}: data preparation did not run or was interrupted. Run the recipe "
                "without --skip_prep=True (it prepares the data), or point --prepared_folder at a folder "
                "urbansound8k_prepare.py wrote."
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
        manifest = os.path.join(folder, f"{split}.csv")
        dataset = DynamicItemDataset.from_csv(manifest)
        if len(dataset) == 0:
            raise ValueError(f"{manifest} is empty; check the data folder and the fold.")
        dataset.add_dynamic_item(audio_pipeline)
        dataset.add_dynamic_item(label_pipeline)
        dataset.set_output_keys(["id", "sig", "label", "label_index"])
        datasets[split] = dataset
    return datasets


if __name__ == "__main__":
    hparams_file, run_opts, overrides = sb.parse_arguments(sys.argv[1:])
    # The inputs first: a missing flag or a wrong data folder fails here, before any model loads.
    data = peek_hparams(hparams_file, overrides, ["data_folder", "skip_prep"])
    if not data["skip_prep"]:
        check_urbansound8k_folder(data["data_folder"])
    # Under torchrun: join the process group (a no-op for a plain `python train.py`).
    sb.utils.distributed.ddp_init_group(run_opts)
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    check_hparams(hparams, ClassificationBrain.HPARAMS + DATA_HPARAMS, hparams_file)

    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )

    run_on_main(
        prepare_urbansound8k,
        kwargs={
            "data_folder": hparams["data_folder"],
            "save_folder": hparams["prepared_folder"],
            "fold": hparams["fold"],
            "valid_fraction": hparams["valid_fraction"],
            "split_seed": hparams["split_seed"],
            "sample_rate": hparams["sample_rate"],
            "max_skipped_fraction": hparams["max_skipped_fraction"],
            "skip_prep": hparams["skip_prep"],
        },
    )
    datasets = dataio_prepare(hparams)

    brain = ClassificationBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    brain.fit(
        brain.hparams.epoch_counter,
        datasets["train"],
        datasets["valid"],
        train_loader_kwargs=hparams["train_dataloader_opts"],
        valid_loader_kwargs=hparams["valid_dataloader_opts"],
    )
    brain.evaluate(
        datasets["test"],
        max_key="accuracy",
        test_loader_kwargs=hparams["test_dataloader_opts"],
    )
    distributed.shutdown_process_group(brain)  # under torchrun (a no-op otherwise)
