"""The ``README.md`` model card of an exported adapter: its use, the run's metrics, data and command.

Everything in the card is read from the run's output folder: the test line of ``train_log.txt``,
``wer_test.txt`` (Common Voice) or ``metrics.json`` (classification), the chosen checkpoint's
meta, the prepared CSVs (sizes of the splits), and the command, rebuilt from the resolved
``hyperparams.yaml`` against the hparams file it was generated from (every top-level value that
differs is a command-line override).

Authors
 * speechbrain-mambadapter contributors 2026
"""

import csv
import json
import re
import shlex
from pathlib import Path

from hyperpyyaml import resolve_references
from ruamel.yaml import YAML

from speechbrain_mambadapter.export.run import BEST, ExportError, plain, tag_of
from speechbrain_mambadapter.inference import INTERFACES

TEST_LINE = re.compile(r"test (\w+): ([^,\s]+)")
TASK_TITLES = {"classification": "audio classification", "asr": "speech recognition"}
SPLIT_FILES = {"classification": ("train", "valid", "test"), "asr": ("train", "dev", "test")}


def _scalars(mapping):
    """The top-level scalars of a YAML mapping loaded by ruamel's round-trip loader, as plain Python."""
    found = {}
    for key, value in mapping.items():
        if isinstance(value, (dict, list)) or tag_of(value) is not None:
            continue
        try:
            found[key] = plain(value)
        except ExportError:
            continue
    return found


def flag(key, value):
    """A SpeechBrain command-line override.

    Example
    -------
    >>> flag("language", "eo"), flag("use_mamba", False), flag("step_log", None), flag("x", "a b")
    ('--language=eo', '--use_mamba=False', '--step_log=null', "'--x=a b'")
    """
    text = "null" if value is None else str(value)
    return shlex.quote(f"--{key}={text}")


def run_overrides(run):
    """The run's command-line overrides: top-level values that differ from its hparams file's.

    Returns
    -------
    dict or None
        ``{key: value}``; None when the hparams file the run was generated from is gone.
    """
    if not run.hparams_file or not Path(run.hparams_file).is_file():
        return None
    text = Path(run.hparams_file).read_text(encoding="utf-8")
    original = YAML(typ="rt").load(text)
    used, defaults = _scalars(run.hparams), _scalars(original)
    overrides = {
        key: used[key]
        for key, node in original.items()
        if key in used
        and (tag_of(node) == "!PLACEHOLDER" or (key in defaults and defaults[key] != used[key]))
    }
    # Keys defined with !ref (experiment: !ref mambadapter_r<rank>) differ when what they refer to was
    # overridden, or when they were overridden themselves: resolve the file with the overrides found
    # so far and add the first key (in the file's order) that still differs, until none does; a
    # key's references come before it, so the keys derived from an override then agree.
    for _ in range(len(used)):
        resolved = _scalars(YAML(typ="rt").load(resolve_references(text, overrides).getvalue()))
        differing = [key for key in resolved if key in used and resolved[key] != used[key]]
        if not differing:
            break
        overrides[differing[0]] = used[differing[0]]
    return {key: overrides[key] for key in original if key in overrides}


def _display(path):
    """A recipe path from its ``recipes/`` folder on (the repository's layout), else as it is."""
    parts = Path(path).parts
    return str(Path(*parts[parts.index("recipes") :])) if "recipes" in parts else str(path)


def training_command(run):
    """The command that trained ``run`` (``python <recipe>/train.py <hparams file> <overrides>``)."""
    if run.hparams_file is None:
        return None
    overrides = run_overrides(run)
    train = Path(run.hparams_file).parent.parent / "train.py"
    command = f"python {_display(train)} {_display(run.hparams_file)}"
    if overrides is None:
        return command + "  # overrides unknown: the hparams file is gone"
    return " ".join([command, *(flag(key, value) for key, value in overrides.items())])


def test_stats(run):
    """``{"test <metric>": value}`` from the last test line of the run's ``train_log.txt``."""
    log = run.folder / "train_log.txt"
    if not log.is_file():
        return {}
    lines = [line for line in log.read_text(encoding="utf-8").splitlines() if "test " in line]
    return {f"test {name}": value for name, value in TEST_LINE.findall(lines[-1])} if lines else {}


def split_sizes(run):
    """``[(split, items, hours)]`` from the prepared CSVs, where they still are."""
    folder = Path(run.value("prepared_folder") or "<no prepared_folder>")
    sizes = []
    for split in SPLIT_FILES[run.task]:
        path = folder / f"{split}.csv"
        if path.is_file():
            with open(path, encoding="utf-8", newline="") as f:
                rows = list(csv.DictReader(f))
            hours = sum(float(row.get("duration") or 0.0) for row in rows) / 3600
            sizes.append((split, len(rows), hours))
    return sizes


def _training_settings(run):
    """ "seed 1, 2 epochs, ..." from the run's hparams (the keys it has)."""
    names = {"seed": "seed", "number_of_epochs": "epochs", "batch_size": "batch size", "lr": "learning rate"}
    found = [f"{label} {run.value(key)}" for key, label in names.items() if run.value(key) is not None]
    found += [f"{stage} precision {run.precision(stage)}" for stage in ("training", "evaluation")]
    return ", ".join(found).capitalize()


def _number(value):
    """Metrics as the logs print them, floats to 4 significant digits.

    Example
    -------
    >>> _number(0.3333333432674408), _number(49), _number("3.33e-01")
    ('0.3333', '49', '3.33e-01')
    """
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _settings(config):
    settings = ", ".join(f"{key}={value}" for key, value in config["settings"].items())
    placement = f", placement={config['placement']}" if config["placement"] else ""
    return f"method={config['method']}{placement}, train_norms={config['train_norms']}, {settings}".rstrip(
        ", "
    )


def model_card(run, config, checkpoint, folder):
    """The card's Markdown text.

    Arguments
    ---------
    run : speechbrain_mambadapter.export.Run
        The exported run.
    config : dict
        The export's ``adapter_config.json`` content.
    checkpoint : speechbrain.utils.checkpoints.Checkpoint
        The exported checkpoint.
    folder : pathlib.Path
        The export folder (its files are listed with their sizes).

    Returns
    -------
    str
    """
    task, method = run.task, config["method"]
    interface = INTERFACES[task].__name__
    verb = "classify" if task == "classification" else "transcribe"
    call = "classify_file" if task == "classification" else "transcribe_file"
    base = config["base_model_name_or_path"]
    lines = [
        f"# {method} adapter for {Path(str(base)).name}: {TASK_TITLES[task]}",
        "",
        f"A {method} adapter ({_settings(config)}) for the frozen `{base}` "
        f"(`{config['base_model_class']}`), trained by the speechbrain-mambadapter recipe "
        f"`{_display(run.hparams_file) if run.hparams_file else 'unknown'}`. This folder holds the adapter "
        "only (safetensors); the base model is loaded from its source and checked against the SHA-256 of "
        f"its weights, `{config['base_model_sha256']}`.",
        "",
        "## Use",
        "",
        "    pip install -e <speechbrain-mambadapter checkout>",
        f"    python -m speechbrain_mambadapter {verb} --adapter <this folder> FILES...",
        "",
        "or in Python:",
        "",
        f"    from speechbrain_mambadapter.inference import {interface}",
        f'    model = {interface}.from_hparams(source="<this folder>")',
        f'    model.{call}("audio.wav")',
        "",
        "If the base model is elsewhere, pass `--base_model=<folder or hub id>` (Python: "
        '`overrides={"base_model_source": ...}`).',
        "",
        "## Results of the run",
        "",
        "| | |",
        "|---|---|",
    ]
    key, _ = BEST[task]
    if key in checkpoint.meta:
        split = "validation" if task == "classification" else "dev"
        lines.append(f"| {split} {key} of the exported checkpoint | {_number(checkpoint.meta[key])} |")
    for name, value in test_stats(run).items():
        lines.append(f"| {name} (the recipe's test stage) | {value} |")
    wer_file = run.folder / "wer_test.txt"
    if task == "asr" and wer_file.is_file():
        summary = wer_file.read_text(encoding="utf-8").splitlines()[0].strip()
        lines.append(f"| wer_test.txt | `{summary}` |")
    metrics_file = run.folder / "metrics.json"
    if task == "classification" and metrics_file.is_file():
        metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
        for name in (
            "test_accuracy",
            "test_clips",
            "valid_accuracy",
            "checkpoint_epoch",
            "trainable_parameters",
        ):
            if metrics.get(name) is not None:
                lines.append(f"| {name} (metrics.json) | {_number(metrics[name])} |")
    lines += ["", "## Data", ""]
    if task == "classification":
        lines.append(
            f"Dataset {run.value('dataset')}, fold {run.value('fold', '-')}, "
            f"{len(config['labels'])} classes: {', '.join(config['labels'])}."
        )
    else:
        token = config["language_token"] or "none (an English-only Whisper)"
        lines.append(f"Common Voice language `{run.value('language')}`; new language token: {token}.")
    lines.append(f"Data folder of the run: `{run.value('data_folder')}`.")
    sizes = split_sizes(run)
    if sizes:
        lines += ["", "| split | items | hours |", "|---|---|---|"]
        lines += [f"| {split} | {items} | {hours:.3f} |" for split, items, hours in sizes]
    command = training_command(run)
    lines += [
        "",
        "## Training",
        "",
        "Command (rebuilt from the run's hyperparams.yaml):",
        "",
        f"    {command or 'unknown: the run hyperparams.yaml names no hparams file'}",
        "",
        f"{_training_settings(run)}; exported checkpoint `{checkpoint.path.name}`.",
        f"Run folder: `{run.folder}`.",
        "",
        "## Files",
        "",
        "| file | bytes |",
        "|---|---|",
    ]
    files = sorted(path for path in Path(folder).iterdir() if path.is_file())
    lines += [f"| {path.name} | {path.stat().st_size} |" for path in files]
    return "\n".join(lines) + "\n"
