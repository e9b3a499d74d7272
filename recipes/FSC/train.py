#!/usr/bin/env python3
"""Fluent Speech Commands intent classification (31 intents): AST adapted with a PETL method.

The method is chosen by the hparams file (``hparams/<method>.yaml``; see README.md). Run::

    python recipes/FSC/train.py recipes/FSC/hparams/mambadapter.yaml \\
        --data_folder=/path/to/fluent_speech_commands_dataset --seed=10

Official train/valid/test split; the label is action + object + location.
``python recipes/run_folds.py`` runs all seeds. Offline, pass ``--pretrained_source=<local dir>``
with a saved AST.

Authors
 * speechbrain-mambadapter contributors 2026
"""

import os
import sys

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import run_on_main

from speechbrain_mambadapter.classification import AudioClassificationBrain, dataio_prepare
from speechbrain_mambadapter.recipe.distributed import shutdown_process_group

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fsc_prepare import prepare_fsc  # noqa: E402

if __name__ == "__main__":
    hparams_file, run_opts, overrides = sb.parse_arguments(sys.argv[1:])
    # Under torchrun: join the process group (a no-op for a plain `python train.py`).
    sb.utils.distributed.ddp_init_group(run_opts)
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)

    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )

    run_on_main(
        prepare_fsc,
        kwargs={
            "data_folder": hparams["data_folder"],
            "save_folder": hparams["prepared_folder"],
            "sample_rate": hparams["sample_rate"],
            "skip_prep": hparams["skip_prep"],
        },
    )
    datasets = dataio_prepare(hparams)

    brain = AudioClassificationBrain(
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
    # Under torchrun: leave the process group cleanly (a no-op otherwise).
    shutdown_process_group()
