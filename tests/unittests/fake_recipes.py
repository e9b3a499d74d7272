"""A recipes folder with two stand-in recipes for the study launcher's tests (fast, no model).

``Folds`` (2 folds) and ``Split`` (official split) each have a ``train.py`` that parses
``--key=value`` like SpeechBrain, refuses to run before its data is prepared (a ``--debug`` run
prepares it, as the study's preparation runs do, and exits), records when it ran and what it saw in
``trace.json``, sleeps ``--sleep`` seconds, fails with exit code 3 when ``--fail=True``, and writes a
``metrics.json`` whose accuracy is a function of ``rank`` and ``seed``, with ``rank x 100``
trainable parameters. Each has two hparams files, ``adapter`` and ``other``, with the keys the
tests override.
"""

import json
import os
import textwrap

TRAIN = textwrap.dedent(
    '''
    """Stand-in recipe: see tests/unittests/fake_recipes.py."""
    import json, os, sys, time

    args = dict(a[2:].split("=", 1) for a in sys.argv[2:] if "=" in a)
    debug = "--debug" in sys.argv
    output, root = args["output_folder"], args["output_root"]
    marker = os.path.join(root, "prepared", "fold" + args.get("fold", "none"), "done")
    started = time.time()
    if debug:
        time.sleep(float(args.get("prepare_sleep", "0")))
        os.makedirs(os.path.dirname(marker), exist_ok=True)
        open(marker, "w").close()
        sys.exit(0)
    elif not os.path.exists(marker):
        sys.exit("data not prepared: " + marker)
    os.makedirs(output, exist_ok=True)
    with open(os.path.join(output, "trace.json"), "w") as f:
        json.dump({"argv": sys.argv, "started": started, "pid": os.getpid(),
                   "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
                   "threads": os.environ.get("OMP_NUM_THREADS")}, f)
    time.sleep(float(args.get("sleep", "0")))
    if args.get("fail") == "True":
        sys.exit(3)
    rank, seed = int(args.get("rank", "4")), int(args["seed"])
    with open(os.path.join(output, "metrics.json"), "w") as f:
        json.dump({"dataset": "Fake", "experiment": args["experiment"], "fold": args.get("fold"),
                   "seed": seed, "test_accuracy": 0.5 + rank / 100 + seed / 1000,
                   "trainable_parameters": rank * 100}, f)
    with open(os.path.join(output, "trace.json")) as f:
        trace = json.load(f)
    trace["ended"] = time.time()
    with open(os.path.join(output, "trace.json"), "w") as f:
        json.dump(trace, f)
    '''
)
HPARAMS = textwrap.dedent(
    """\
    seed: 1
    experiment: {stem}
    fold: null
    output_root: results
    output_folder: results/out
    data_folder: !PLACEHOLDER
    rank: 4
    use_mamba: true
    sleep: 0
    prepare_sleep: 0
    fail: false
    """
)


def make_fake_recipes(root):
    """Write ``root/Folds`` and ``root/Split``; return ``root`` (for ``--recipes``)."""
    for recipe, folds in (("Folds", 2), ("Split", None)):
        folder = os.path.join(root, recipe)
        os.makedirs(os.path.join(folder, "hparams"), exist_ok=True)
        with open(os.path.join(folder, "train.py"), "w") as f:
            f.write(TRAIN)
        with open(os.path.join(folder, f"{recipe.lower()}_prepare.py"), "w") as f:
            f.write(f"NUM_FOLDS = {folds}\n" if folds else '"""Official split."""\n')
        for stem in ("adapter", "other"):
            with open(os.path.join(folder, "hparams", f"{stem}.yaml"), "w") as f:
                f.write(HPARAMS.format(stem=stem))
    return str(root)


def write_study(path, **spec):
    """A study file from keyword arguments (JSON is YAML)."""
    with open(path, "w") as f:
        json.dump(spec, f)
    return str(path)


def trace(run):
    """What the stand-in recipe recorded for a run."""
    with open(os.path.join(run.output_folder, "trace.json")) as f:
        return json.load(f)
