#!/usr/bin/env python3
"""Run one classification configuration over every fold and seed, then print its table command.

The smallest study: one hparams file x the dataset's folds x the seeds, run by the study launcher
(``speechbrain_mambadapter.study``) on this machine; arguments after ``--`` go to every run.
Example (ESC-50, 5 folds x 5 seeds, two runs at a time on one GPU)::

    python recipes/run_folds.py recipes/ESC50/hparams/mambadapter.yaml --jobs 2 --gpus 0 \\
        -- --data_folder=/data/ESC-50-master

Folds default to all folds of the dataset (the ``NUM_FOLDS`` of the recipe's ``*_prepare.py``:
5 for ESC-50, 10 for UrbanSound8K; GSC and FSC have one official split, so no ``--fold`` is
passed); seeds default to 10 11 12 13 14. ``--folds 1 2`` and ``--seeds 10`` choose subsets,
``--jobs`` runs several at once (``--gpus`` spreads them over GPUs), ``--dry-run`` prints the
commands. Runs write to ``results/<dataset>/<experiment>/[fold<f>/]seed<s>`` (``--output`` replaces
``results``); an ablation named with ``-- --experiment=<name>`` gets its own folders. Finished runs
are skipped when the driver is started again, interrupted ones resume from their last checkpoint,
and a failed run does not stop the others (the summary lists it with its log's tail). For grids of
configurations, several datasets or SLURM, write a study file (``studies/``, README "Studies").

Authors
 * speechbrain-mambadapter contributors 2026
"""

import argparse
import os
import sys

from speechbrain_mambadapter.study import status as st
from speechbrain_mambadapter.study.local import LocalLauncher
from speechbrain_mambadapter.study.spec import StudyError, shell_line, study_of_hparams

DEFAULT_SEEDS = [10, 11, 12, 13, 14]


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
    parser.add_argument("--jobs", type=int, default=None, help="runs at once (default: one per GPU, else 1)")
    parser.add_argument("--gpus", type=int, nargs="+", help="GPU indices to spread the runs over")
    parser.add_argument("--output", default="results", help="the results folder (default: results)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = parser.parse_args(argv)

    experiment = next((arg.split("=", 1)[1] for arg in extra if arg.startswith("--experiment=")), None)
    try:
        study = study_of_hparams(args.hparams_file, args.folds or "all", args.seeds, experiment)
    except StudyError as error:
        parser.error(str(error))
    runs = study.runs(args.output)
    jobs = [(run, run.command(extra=extra)) for run in runs]
    prepares = [(run, run.command(extra=extra)) for run in study.prepare_runs(runs, args.output)]
    recipe = study.tasks[0].recipe
    table = f"python -m speechbrain_mambadapter.results {os.path.join(args.output, recipe)}"
    if args.dry_run:
        for run, command in jobs:
            print(f"# {run.name}: {st.run_state(run)[0]}")
            print(shell_line(command))
        print(f"Table: {table}")
        return 0
    launcher = LocalLauncher(jobs=args.jobs or (len(args.gpus) if args.gpus else 1), gpus=args.gpus)
    try:
        counts = launcher.run(jobs, prepares)
    except KeyboardInterrupt:
        print("Interrupted; start the driver again to continue (finished runs are kept).", file=sys.stderr)
        return 130
    print(st.format_progress(study, runs))
    print(f"Table: {table}")
    return 0 if counts["done"] == len(runs) else 1


if __name__ == "__main__":
    sys.exit(main())
