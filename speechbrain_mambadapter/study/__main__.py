"""``python -m speechbrain_mambadapter.study run|status|report STUDY.yaml``.

``run`` launches the study's runs not yet done (``--launcher local``: ``--jobs`` at a time on this
machine, spread over ``--gpus``; ``--launcher slurm``: job arrays through submitit) and, locally,
ends with its report; ``--dry-run`` prints each run's state and command instead. ``status`` prints
the progress view (``--watch 30`` refreshes it). ``report`` writes the table(s) and figure from what
has finished. Arguments after ``--`` go to every run (e.g. ``-- --precision=bf16``)::

    python -m speechbrain_mambadapter.study run studies/table3_ablations.yaml \\
        --data ESC50=/data/ESC-50-master GSC=/data/speech_commands_v0.02 \\
        FSC=/data/fluent_speech_commands_dataset --launcher slurm --partition gpu --time-min 600
    python -m speechbrain_mambadapter.study status studies/table3_ablations.yaml --watch 60

Outputs: ``results/studies/<name>/`` (``--output``): ``<task>/<experiment>/[fold<f>/]seed<s>/`` per
run and ``report/<name>.md``, ``.csv``, ``.png``.

Authors
 * speechbrain-mambadapter contributors 2026
"""

import argparse
import fnmatch
import os
import sys
import time

from speechbrain_mambadapter.study import report as rp
from speechbrain_mambadapter.study import status as st
from speechbrain_mambadapter.study.spec import StudyError, load_study, shell_line


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m speechbrain_mambadapter.study",
        description="Run a study (a grid of recipe runs), follow it, and write its table and figure.",
    )
    commands = parser.add_subparsers(dest="action", required=True)

    def common(sub):
        sub.add_argument("study", help="the study file, e.g. studies/fig2_scaling.yaml")
        sub.add_argument("--output", help="the study's folder (default: results/studies/<name>)")
        sub.add_argument("--recipes", help="the folder of the recipes (default: recipes/ beside studies/)")
        sub.add_argument("--seeds", type=int, nargs="+", help="these seeds instead of the study file's")
        sub.add_argument("--tasks", nargs="+", help="only these tasks of the study")
        sub.add_argument(
            "--points",
            nargs="+",
            metavar="NAME",
            help="only these points (experiment names; * and ? match any)",
        )

    run = commands.add_parser("run", help="launch the runs not done yet")
    common(run)
    run.add_argument(
        "--data", nargs="+", default=[], metavar="TASK=FOLDER", help="each task's data folder (--data_folder)"
    )
    run.add_argument("--launcher", choices=("local", "slurm"), default="local")
    run.add_argument("--dry-run", action="store_true", help="print the runs' states and commands only")
    run.add_argument("--no-report", action="store_true", help="local: do not write the report at the end")
    local = run.add_argument_group("local launcher")
    local.add_argument("--jobs", type=int, default=None, help="runs at once (default: one per GPU, else 1)")
    local.add_argument(
        "--gpus", type=int, nargs="+", help="GPU indices; each run gets one (several runs may share one)"
    )
    slurm = run.add_argument_group("SLURM launcher (default: the study file's slurm: section)")
    slurm.add_argument("--partition")
    slurm.add_argument("--time-min", type=int, help="time limit of each run's job, in minutes")
    slurm.add_argument("--gpus-per-job", type=int)
    slurm.add_argument("--cpus-per-job", type=int)
    slurm.add_argument("--mem-gb", type=float)
    slurm.add_argument("--array-parallelism", type=int, help="at most this many runs at once")
    slurm.add_argument("--account")
    slurm.add_argument("--qos")
    slurm.add_argument(
        "--sbatch",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="other sbatch options, e.g. exclude=node1",
    )
    slurm.add_argument(
        "--cluster",
        choices=("slurm", "local", "debug"),
        default="slurm",
        help="local/debug: run the same submitit jobs on this machine (to try the SLURM path)",
    )
    slurm.add_argument("--wait", action="store_true", help="wait for the jobs to end, then write the report")

    status = commands.add_parser("status", help="the progress view")
    common(status)
    status.add_argument(
        "--watch", type=float, metavar="SECONDS", help="refresh every SECONDS until all are done"
    )
    status.add_argument("--tail", type=int, default=15, help="lines of each failed run's log")

    report = commands.add_parser("report", help="write the table(s) and figure of what has finished")
    common(report)
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    extra = []
    if "--" in argv:
        split = argv.index("--")
        argv, extra = argv[:split], argv[split + 1 :]
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        study = load_study(args.study, args.recipes)
        output = os.path.abspath(args.output or os.path.join("results", "studies", study.name))
        runs = study.runs(output, args.seeds)
        if args.tasks:
            unknown = set(args.tasks) - {task.name for task in study.tasks}
            if unknown:
                parser.error(
                    f"--tasks {sorted(unknown)}: the study's tasks are {[t.name for t in study.tasks]}"
                )
            runs = [run for run in runs if run.task.name in args.tasks]
        if args.points:
            names = [p.experiment for p in study.points]
            unmatched = [pattern for pattern in args.points if not fnmatch.filter(names, pattern)]
            if unmatched:
                parser.error(f"--points {unmatched} match no point; the points are {names}")
            runs = [r for r in runs if any(fnmatch.fnmatchcase(r.point.experiment, p) for p in args.points)]
        if args.action == "status":
            return _status(study, runs, args, output)
        if args.action == "report":
            return _report(study, runs, output)
        return _run(study, runs, output, args, extra, parser)
    except (StudyError, rp.ReportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _status(study, runs, args, output):
    prepares = study.prepare_runs(runs, output)
    while True:
        text = st.format_progress(study, runs, tail=args.tail, prepares=prepares)
        if args.watch:
            print("\033[2J\033[H" + time.strftime("%H:%M:%S ") + text, flush=True)
        else:
            print(text)
        states = [st.run_state(run)[0] for run in runs]
        if not args.watch or all(s in ("done", "failed") for s in states):
            return 0 if all(s == "done" for s in states) else 1
        time.sleep(args.watch)


def _report(study, runs, output):
    written = rp.write_report(study, runs, os.path.join(output, "report"))
    print("\n".join(f"wrote {path}" for path in written))
    return 0


def _data_folders(study, args, extra, parser):
    """``{task: folder}`` from --data, the tasks' data_folder, or a --data_folder after ``--``."""
    given = {}
    for item in args.data:
        task, sep, folder = item.partition("=")
        if not sep or task not in {t.name for t in study.tasks}:
            parser.error(
                f"--data {item}: expected TASK=FOLDER with TASK one of {[t.name for t in study.tasks]}"
            )
        given[task] = os.path.abspath(folder)
    common = any(arg.startswith("--data_folder=") for arg in extra)
    missing = [t.name for t in study.tasks if t.name not in given and not t.data_folder and not common]
    return given, missing


def _run(study, runs, output, args, extra, parser):
    data, missing = _data_folders(study, args, extra, parser)
    tasks_used = {run.task.name for run in runs}
    missing = [name for name in missing if name in tasks_used]
    if missing and not args.dry_run:
        parser.error(
            "no data folder for task(s) " + ", ".join(missing) + "; pass --data "
            + " ".join(f"{name}=/path/to/its/data" for name in missing)
        )  # fmt: skip
    prepares = study.prepare_runs(runs, output)

    def command(run):
        folder = data.get(run.task.name) or (f"<{run.task.name} data>" if run.task.name in missing else None)
        return run.command(folder, extra)

    jobs = [(run, command(run)) for run in runs]
    prep_jobs = [(run, command(run)) for run in prepares]
    if args.dry_run:
        # What the launchers add to each command when the run gets a GPU.
        gpu = args.gpus if args.launcher == "local" else _slurm_settings(study, args).get("gpus_per_job", 1)
        device = ["--device=cuda:0"] if gpu else []
        jobs = [(run, command + device) for run, command in jobs]
        prep_jobs = [(run, command + device) for run, command in prep_jobs]
        return _dry_run(study, jobs, prep_jobs, output, args)
    if args.launcher == "slurm":
        return _run_slurm(study, runs, jobs, prep_jobs, output, args)
    from speechbrain_mambadapter.study.local import LocalLauncher

    jobs_at_once = args.jobs or (len(args.gpus) if args.gpus else 1)
    print(f"Study {study.name}: {len(runs)} runs in {output}")
    launcher = LocalLauncher(jobs=jobs_at_once, gpus=args.gpus)
    try:
        counts = launcher.run(jobs, prep_jobs)
    except KeyboardInterrupt:
        print(
            "Interrupted; run the same command again to continue (finished runs are kept).", file=sys.stderr
        )
        return 130
    print(st.format_progress(study, runs))
    if not args.no_report:
        _report(study, runs, output)
    return 0 if counts["done"] == len(runs) else 1


def _dry_run(study, jobs, prep_jobs, output, args):
    states = [st.run_state(run)[0] for run, _ in jobs]
    print(f"Study {study.name}: {len(jobs)} runs in {output} ({st.progress_line(st.count(states))})")
    to_run = [(run, command) for (run, command), state in zip(jobs, states) if state != "done"]
    groups = {run.group for run, _ in to_run}
    preps = [
        (run, command) for run, command in prep_jobs if run.group in groups and st.run_state(run)[0] != "done"
    ]
    if preps:
        print(f"# data preparation first, one per task and fold ({len(preps)}):")
        for _, command in preps:
            print(shell_line(command))
    print(f"# runs ({len(to_run)} to run):")
    for (run, command), state in zip(jobs, states):
        print(f"# {run.name}: {state}")
        if state != "done":
            print(shell_line(command))
    if args.launcher == "slurm":
        from speechbrain_mambadapter.study import slurm

        params = slurm.executor_parameters(study.name, _slurm_settings(study, args))
        print(f"# SLURM array of the runs ({len(to_run)} jobs):")
        print(slurm.sbatch_preview(params, len(to_run), os.path.join(output, ".submitit")))
    return 0


def _slurm_settings(study, args):
    settings = dict(study.slurm)
    for key in (
        "partition",
        "time_min",
        "gpus_per_job",
        "cpus_per_job",
        "mem_gb",
        "array_parallelism",
        "account",
        "qos",
    ):
        value = getattr(args, key)
        if value is not None:
            settings[key] = value
    if args.sbatch:
        additional = dict(settings.get("additional") or {})
        for item in args.sbatch:
            key, sep, value = item.partition("=")
            if not sep:
                raise StudyError(f"--sbatch {item}: expected KEY=VALUE, e.g. exclude=node1")
            additional[key] = value
        settings["additional"] = additional
    return settings


def _run_slurm(study, runs, jobs, prep_jobs, output, args):
    from speechbrain_mambadapter.study import slurm

    settings = _slurm_settings(study, args)
    params = slurm.executor_parameters(study.name, settings)
    if args.cluster != "slurm":
        # submitit's local and debug executors know no sbatch options; on CPUs unless --gpus-per-job.
        params = {k: v for k, v in params.items() if not k.startswith("slurm_") and k != "mem_gb"}
        params["gpus_per_node"] = args.gpus_per_job or 0
    todo = [(run, command) for run, command in jobs if st.run_state(run)[0] in ("left", "failed")]
    groups = {run.group for run, _ in todo}
    preps = [
        (run, command) for run, command in prep_jobs if run.group in groups and st.run_state(run)[0] != "done"
    ]
    print(f"Study {study.name}: {len(runs)} runs in {output}; submitting {len(todo)}")
    submitted = slurm.submit(
        preps,
        todo,
        os.path.join(output, ".submitit"),
        params,
        cluster=args.cluster,
        gpu=params.get("gpus_per_node", 0) > 0,
        wait=args.wait,
    )
    if args.wait or not submitted:
        print(st.format_progress(study, runs))
        if not args.no_report:
            _report(study, runs, output)
        return 0 if all(st.run_state(run)[0] == "done" for run in runs) else 1
    print(
        f"Follow it: python -m speechbrain_mambadapter.study status {study.path} --output {output} --watch 60"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
