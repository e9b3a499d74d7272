"""Read the test results of recipe runs and aggregate classification runs into a Table-1-style table.

Every run of the AST classification recipes writes ``metrics.json`` in its output folder, every run
of the Common Voice recipe ``wer_test.txt``; :func:`read_result` reads either into one record (the
studies of ``speechbrain_mambadapter.study`` build their tables and figures on it). For
classification runs, this module also finds the metrics files under the folders given,
groups them by configuration (the hparams file's name, e.g. ``mambadapter_houlsby``) and
dataset, and prints test accuracy as mean ± standard deviation over all runs of a cell (every
fold and seed), with the number of runs and the trainable parameters of each configuration::

    python -m speechbrain_mambadapter.results results/ESC50 results/UrbanSound8k results/GSC results/FSC
    python -m speechbrain_mambadapter.results results --json     # one JSON object per cell

The standard deviation is the sample one (``ddof=1``) over the runs of a cell; a cell with one
run shows no ±. "Params (M)" is the trainable backbone parameters (PETL method plus the norms it
trains, the classification head excluded) in millions; the head adds ``hidden x classes + classes``.

Authors
 * speechbrain-mambadapter contributors 2026
"""

import argparse
import json
import math
import os
import re
import sys

METRICS_FILE = "metrics.json"
WER_FILE = "wer_test.txt"
# The files a finished run leaves, one per kind of recipe (classification, ASR).
RESULT_FILES = (METRICS_FILE, WER_FILE)
# The first line of SpeechBrain's ErrorRateStats.write_stats (Kaldi's compute-wer format).
WER_LINE = re.compile(r"^%WER ([0-9.]+) \[ (\d+) / (\d+),")
# The Common Voice recipe's log line with the trainable parameters (speechbrain_mambadapter.recipe.asr).
ASR_PARAMETERS_LINE = re.compile(r": ([0-9.]+)M trainable parameters of ")
REQUIRED_KEYS = ("dataset", "experiment", "fold", "seed", "test_accuracy", "trainable_parameters")
# Column order and headers of the paper's Table 1; other datasets follow, alphabetically.
DATASET_HEADERS = {"ESC50": "ESC-50", "UrbanSound8k": "US8K", "GSC": "GSC", "FSC": "FSC"}
# Row order: the recipes' hparams files; other configurations follow, alphabetically.
EXPERIMENT_ORDER = (
    "full",
    "linear",
    "bitfit",
    "prompt",
    "prefix",
    "lora",
    "bottleneck",
    "bottleneck_houlsby",
    "conformer",
    "conformer_houlsby",
    "mambadapter",
    "mambadapter_houlsby",
    "mambadapter_bidirectional",
    "mambadapter_no_mamba",
    "mambadapter_no_alpha",
    "mambadapter_unshared",
)


def find_metrics(paths):
    """Every ``metrics.json`` under ``paths`` (files or folders), sorted, each once.

    Raises
    ------
    FileNotFoundError
        When a path does not exist or holds no metrics file.
    """
    found = set()
    for path in paths:
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"{path} does not exist; pass the recipes' results folders, e.g. results/ESC50."
            )
        if os.path.isfile(path):
            found.add(os.path.realpath(path))
            continue
        here = {
            os.path.realpath(os.path.join(folder, METRICS_FILE))
            for folder, _, files in os.walk(path)
            if METRICS_FILE in files
        }
        found |= here
        if not here:
            raise FileNotFoundError(
                f"No {METRICS_FILE} under {path}: runs write it after their test stage, so no run there "
                "has finished. Point at the output folders of finished runs (results/<recipe>/...)."
            )
    return sorted(found)


def load_runs(paths):
    """The metrics of every finished run under ``paths``, each with its ``path``.

    Raises
    ------
    ValueError
        On a metrics file without the expected keys, or two files for the same dataset,
        configuration, fold and seed (e.g. a copied results folder).
    """
    runs, seen = [], {}
    for path in find_metrics(paths):
        with open(path, encoding="utf-8") as f:
            try:
                metrics = json.load(f)
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"{path} is not valid JSON ({error}); delete it and rerun that run's test."
                ) from error
        missing = [key for key in REQUIRED_KEYS if key not in metrics]
        if missing:
            raise ValueError(
                f"{path} lacks {missing}: it was not written by speechbrain_mambadapter.classification. "
                "Remove it from the folders passed."
            )
        key = (metrics["dataset"], metrics["experiment"], metrics["fold"], metrics["seed"])
        if key in seen:
            raise ValueError(
                f"{seen[key]} and {path} are both dataset={key[0]} experiment={key[1]} fold={key[2]} "
                f"seed={key[3]}; pass folders that hold each run once."
            )
        seen[key] = path
        runs.append({**metrics, "path": path})
    return runs


def read_wer(path):
    """Word error rate of a ``wer_test.txt`` written by SpeechBrain's ``ErrorRateStats``.

    Returns
    -------
    dict
        ``wer`` (percent), ``errors`` (edits) and ``words`` (reference words).

    Raises
    ------
    ValueError
        When the first line is not a ``%WER`` summary (a file cut short by a killed run).

    Example
    -------
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "wer_test.txt")
    >>> _ = open(path, "w").write("%WER 12.50 [ 5 / 40, 1 ins, 2 del, 2 sub ]\\n%SER 50.00 [ 2 / 4 ]\\n")
    >>> read_wer(path)
    {'wer': 12.5, 'errors': 5, 'words': 40}
    """
    with open(path, encoding="utf-8") as f:
        first = f.readline()
    match = WER_LINE.match(first)
    if match is None:
        raise ValueError(
            f"{path} does not start with a '%WER ...' line (found {first.strip()[:80]!r}): the run that "
            "wrote it was probably killed while testing. Delete the file and run that run again."
        )
    return {"wer": float(match.group(1)), "errors": int(match.group(2)), "words": int(match.group(3))}


def _asr_trainable_parameters(folder):
    """The trainable parameters the Common Voice recipe logged (to 1,000), or None."""
    try:
        with open(os.path.join(folder, "log.txt"), encoding="utf-8") as f:
            for line in f:
                match = ASR_PARAMETERS_LINE.search(line)
                if match:
                    return round(float(match.group(1)) * 1e6)
    except FileNotFoundError:
        pass
    return None


def read_result(folder):
    """The test result of the run whose output folder is ``folder``, or None if it has none yet.

    Classification runs (``metrics.json``) give their test accuracy, ASR runs (``wer_test.txt``)
    their word error rate, both in percent.

    Returns
    -------
    dict or None
        ``metric`` (``"accuracy"`` or ``"WER"``), ``value`` (percent), ``higher_is_better``,
        ``trainable_parameters`` (exact for classification; for ASR to 1,000, read from ``log.txt``,
        or None) and ``file``.

    Raises
    ------
    ValueError
        When the result file exists but cannot be read.

    Example
    -------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> read_result(folder) is None
    True
    >>> _ = open(os.path.join(folder, METRICS_FILE), "w").write(
    ...     '{"test_accuracy": 0.925, "trainable_parameters": 66000}')
    >>> result = read_result(folder)
    >>> result["metric"], result["value"], result["trainable_parameters"]
    ('accuracy', 92.5, 66000)
    """
    path = os.path.join(folder, METRICS_FILE)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            try:
                metrics = json.load(f)
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"{path} is not valid JSON ({error}); delete it and rerun that run's test."
                ) from error
        if "test_accuracy" not in metrics:
            raise ValueError(f"{path} has no test_accuracy: it was not written by a classification recipe.")
        return {
            "metric": "accuracy",
            "value": 100.0 * metrics["test_accuracy"],
            "higher_is_better": True,
            "trainable_parameters": metrics.get("trainable_parameters"),
            "file": path,
        }
    path = os.path.join(folder, WER_FILE)
    if os.path.isfile(path):
        return {
            "metric": "WER",
            "value": read_wer(path)["wer"],
            "higher_is_better": False,
            "trainable_parameters": _asr_trainable_parameters(folder),
            "file": path,
        }
    return None


def mean_std(values):
    """Mean and sample standard deviation (``ddof=1``; None for a single value).

    Example
    -------
    >>> [round(x, 6) for x in mean_std([0.9, 0.8, 1.0])]
    [0.9, 0.1]
    >>> mean_std([0.5])
    (0.5, None)
    """
    n = len(values)
    mean = sum(values) / n
    if n == 1:
        return mean, None
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, std


def _order(items, preferred):
    rank = {name: i for i, name in enumerate(preferred)}
    return sorted(items, key=lambda name: (rank.get(name, len(rank)), name))


def aggregate(runs):
    """One cell per (experiment, dataset): accuracy statistics, runs, folds, seeds, parameters.

    Returns
    -------
    list of dict
        Sorted by experiment then dataset (paper order), with keys ``experiment``, ``dataset``,
        ``runs``, ``folds``, ``seeds``, ``accuracy_mean``, ``accuracy_std``,
        ``trainable_parameters`` (a sorted list: one value unless runs disagree).

    Example
    -------
    >>> runs = [{"dataset": "GSC", "experiment": "lora", "fold": None, "seed": s, "test_accuracy": a,
    ...          "trainable_parameters": 100} for s, a in [(1, 0.9), (2, 0.8)]]
    >>> cell = aggregate(runs)[0]
    >>> cell["runs"], round(cell["accuracy_mean"], 3), cell["seeds"]
    (2, 0.85, [1, 2])
    """
    cells = {}
    for run in runs:
        cells.setdefault((run["experiment"], run["dataset"]), []).append(run)
    experiments = _order({e for e, _ in cells}, EXPERIMENT_ORDER)
    datasets = _order({d for _, d in cells}, tuple(DATASET_HEADERS))
    table = []
    for experiment in experiments:
        for dataset in datasets:
            members = cells.get((experiment, dataset))
            if not members:
                continue
            mean, std = mean_std([r["test_accuracy"] for r in members])
            table.append(
                {
                    "experiment": experiment,
                    "dataset": dataset,
                    "runs": len(members),
                    "folds": sorted({r["fold"] for r in members}, key=str),
                    "seeds": sorted({r["seed"] for r in members}, key=str),
                    "accuracy_mean": mean,
                    "accuracy_std": std,
                    "trainable_parameters": sorted({r["trainable_parameters"] for r in members}),
                }
            )
    return table


def _millions(counts):
    return " / ".join(f"{c / 1e6:.3f}" for c in counts)


def format_markdown(table):
    """Rows = configurations, columns = datasets; cells ``mean ± std (runs)`` in percent."""
    experiments = _order({c["experiment"] for c in table}, EXPERIMENT_ORDER)
    datasets = _order({c["dataset"] for c in table}, tuple(DATASET_HEADERS))
    by_key = {(c["experiment"], c["dataset"]): c for c in table}
    header = ["Method", "Params (M)"] + [DATASET_HEADERS.get(d, d) for d in datasets]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for experiment in experiments:
        counts = sorted(
            {
                n
                for d in datasets
                if (experiment, d) in by_key
                for n in by_key[experiment, d]["trainable_parameters"]
            }
        )
        row = [experiment, _millions(counts)]
        for dataset in datasets:
            cell = by_key.get((experiment, dataset))
            if cell is None:
                row.append("–")
                continue
            text = f"{100 * cell['accuracy_mean']:.2f}"
            if cell["accuracy_std"] is not None:
                text += f" ± {100 * cell['accuracy_std']:.2f}"
            row.append(f"{text} ({cell['runs']})")
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append(
        "Test accuracy (%), mean ± sample std over folds and seeds (number of runs in brackets); "
        "Params: trainable backbone parameters in millions, head excluded."
    )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Aggregate the metrics.json of classification runs into a markdown table."
    )
    parser.add_argument(
        "paths", nargs="+", help="results folders (searched recursively) or metrics.json files"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object per cell instead")
    args = parser.parse_args(argv)
    try:
        table = aggregate(load_runs(args.paths))
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        for cell in table:
            print(json.dumps(cell))
    else:
        print(format_markdown(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
