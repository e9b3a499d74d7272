#!/usr/bin/env python3
"""ESC-50 environmental sound classification: AST adapted with a PETL method.

The method is chosen by the hparams file (``hparams/<method>.yaml``; see README.md). Run::

    python recipes/ESC50/train.py recipes/ESC50/hparams/mambadapter.yaml \\
        --data_folder=/path/to/ESC-50-master --fold=1 --seed=10

``--fold=k`` tests on fold k, validates on fold k-1 and trains on the other three (5-fold
rotation, ``esc50_prepare.esc50_folds``); ``python recipes/run_folds.py`` runs all folds and seeds.
Offline, pass ``--pretrained_source=<local dir>`` with a saved AST.

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
from esc50_prepare import prepare_esc50  # noqa: E402

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
        prepare_esc50,
        kwargs={
            "data_folder": hparams["data_folder"],
            "save_folder": hparams["prepared_folder"],
            "fold": hparams["fold"],
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
