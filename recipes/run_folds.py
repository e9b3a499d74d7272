#!/usr/bin/env python3
"""Run one classification configuration over every fold and seed, then summarise.

Runs the recipe's ``train.py`` once per (fold, seed), one after the other, as separate
processes; arguments after ``--`` go to every run. Example (ESC-50, 5 folds x 5 seeds)::

    python recipes/run_folds.py recipes/ESC50/hparams/mambadapter.yaml -- --data_folder=/data/ESC-50-master

Folds default to all folds of the dataset (the ``NUM_FOLDS`` of the recipe's ``*_prepare.py``:
5 for ESC-50, 10 for UrbanSound8K; GSC and FSC have one official split, so no ``--fold`` is
passed); seeds default to 10 11 12 13 14. ``--folds 1 2`` and ``--seeds 10`` choose subsets.
A run that was interrupted resumes from its last checkpoint when the driver is started again
(SpeechBrain's Checkpointer); a finished one only re-runs its test. At the end it prints the
``speechbrain_mambadapter.results`` command for the table.

Authors
 * speechbrain-mambadapter contributors 2026
"""

import argparse
import glob
import importlib.util
import os
import subprocess
import sys

DEFAULT_SEEDS = [10, 11, 12, 13, 14]


def recipe_of(hparams_file):
    """``(recipe folder, train.py)`` of ``recipes/<recipe>/hparams/<name>.yaml``."""
    hparams_dir = os.path.dirname(os.path.abspath(hparams_file))
    recipe_dir = os.path.dirname(hparams_dir)
    train = os.path.join(recipe_dir, "train.py")
    if os.path.basename(hparams_dir) != "hparams" or not os.path.isfile(train):
        raise FileNotFoundError(
            f"{hparams_file} is not in a recipe's hparams/ folder next to a train.py; pass e.g. "
            "recipes/ESC50/hparams/mambadapter.yaml."
        )
    return recipe_dir, train


def dataset_folds(recipe_dir):
    """The folds of the recipe's dataset (``NUM_FOLDS`` of its ``*_prepare.py``), or None."""
    for path in sorted(glob.glob(os.path.join(recipe_dir, "*_prepare.py"))):
        spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if getattr(module, "NUM_FOLDS", None):
            return list(range(1, module.NUM_FOLDS + 1))
    return None


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    extra = []
    if "--" in argv:
        split = argv.index("--")
        argv, extra = argv[:split], argv[split + 1 :]
    parser = argparse.ArgumentParser(description="Run a classification configuration over folds and seeds.")
    parser.add_argument("hparams_file", help="e.g. recipes/ESC50/hparams/mambadapter.yaml")
    parser.add_argument("--folds", type=int, nargs="+", help="folds to run (default: all of the dataset)")
    parser.add_argument("--seeds", type=int, nargs="+", default=DEFAULT_SEEDS, help="training seeds")
    parser.add_argument(
        "--keep_going", action="store_true", help="continue with the next run after a failure"
    )
    args = parser.parse_args(argv)

    recipe_dir, train = recipe_of(args.hparams_file)
    all_folds = dataset_folds(recipe_dir)
    if args.folds is not None and all_folds is None:
        parser.error(f"{os.path.basename(recipe_dir)} uses the dataset's official split and has no folds.")
    folds = args.folds if args.folds is not None else all_folds
    runs = [(fold, seed) for fold in (folds or [None]) for seed in args.seeds]

    failed = []
    for n, (fold, seed) in enumerate(runs, 1):
        command = [sys.executable, train, args.hparams_file, f"--seed={seed}"]
        if fold is not None:
            command.append(f"--fold={fold}")
        command += extra
        print(f"[{n}/{len(runs)}] {' '.join(command)}", flush=True)
        if subprocess.call(command) != 0:
            failed.append((fold, seed))
            if not args.keep_going:
                print(
                    f"Run fold={fold} seed={seed} failed; fix it and start the driver again (finished runs "
                    "are kept, interrupted ones resume), or pass --keep_going.",
                    file=sys.stderr,
                )
                return 1
    recipe = os.path.basename(recipe_dir)
    print(
        f"Done: {len(runs) - len(failed)} of {len(runs)} runs succeeded"
        + (f"; failed (fold, seed): {failed}" if failed else "")
        + "."
    )
    print(f"Table: python -m speechbrain_mambadapter.results results/{recipe}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
