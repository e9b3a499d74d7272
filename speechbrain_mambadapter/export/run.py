"""A finished recipe run's output folder, read for export: its hparams, checkpoints and labels.

``Run`` reads the resolved ``hyperparams.yaml`` that SpeechBrain writes into every output
folder with ruamel's round-trip loader (tags kept, nothing built), finds which recipe family
wrote it (``modules.whisper``: the Common Voice recipe; ``modules.backbone`` and
``modules.classifier``: the classification recipes) and the ``inject`` call's base model, and
picks the checkpoint the recipe's test stage used.

Authors
 * speechbrain-mambadapter contributors 2026
"""

import json
import re
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.scalarbool import ScalarBoolean
from speechbrain.utils.checkpoints import Checkpointer

RUN_HPARAMS = "hyperparams.yaml"
INJECT_TAGS = ("!apply:speechbrain_mambadapter.inject", "!apply:speechbrain_mambadapter.injection.inject")
# The checkpoint a recipe's test stage uses: the key of its meta and whether higher is better.
BEST = {"classification": ("accuracy", "max"), "asr": ("WER", "min")}
# The module of the run's ``modules`` that holds the adapter, per task.
ADAPTED_KEY = {"classification": "backbone", "asr": "whisper"}


class ExportError(ValueError):
    """The run folder cannot be exported; the message says why and what to do."""


def tag_of(node):
    """The YAML tag of a node loaded by ruamel's round-trip loader, or None."""
    tag = getattr(node, "tag", None)
    return getattr(tag, "value", tag)


def plain(value):
    """A scalar loaded by ruamel's round-trip loader as plain Python (bool, int, float, str, None).

    Example
    -------
    >>> from ruamel.yaml import YAML
    >>> [type(plain(v)).__name__ for v in YAML(typ="rt").load("[1, 1.5, true, x, null]")]
    ['int', 'float', 'bool', 'str', 'NoneType']
    """
    if isinstance(value, ScalarBoolean):  # ruamel's anchored booleans subclass int
        return bool(value)
    if value is None or isinstance(value, bool):
        return value
    for kind in (int, float, str):  # ruamel's other scalar types subclass these
        if isinstance(value, kind):
            return kind(value)
    raise ExportError(f"Cannot export the hparams value {value!r} ({type(value).__name__}): not a scalar.")


class Run:
    """A recipe run's output folder, as far as exporting it needs.

    Arguments
    ---------
    folder : str or os.PathLike
        The run's ``output_folder`` (``hyperparams.yaml``, ``save/``, logs).

    Raises
    ------
    ExportError
        When the folder is not a finished run of a recipe this package has.
    """

    def __init__(self, folder):
        self.folder = Path(folder).resolve()
        path = self.folder / RUN_HPARAMS
        if not path.is_file():
            raise ExportError(
                f"{self.folder} has no {RUN_HPARAMS}: pass the output folder of a recipe run (the folder "
                "with train_log.txt and save/, e.g. results/CommonVoice/<experiment>/<language>/seed<seed>)."
            )
        text = path.read_text(encoding="utf-8")
        self.hparams = YAML(typ="rt").load(text)
        # SpeechBrain heads the file with "# Generated <date> from:" and "# <the hparams file>".
        header = text.splitlines()[:2]
        self.hparams_file = (
            header[1][2:].strip() if len(header) == 2 and header[0].endswith("from:") else None
        )
        modules = self.hparams.get("modules") or {}
        self.task = next((task for task, key in ADAPTED_KEY.items() if key in modules), None)
        if self.task is None or (self.task == "classification" and "classifier" not in modules):
            raise ExportError(
                f"{path} has neither modules.whisper (the Common Voice recipe) nor modules.backbone and "
                f"modules.classifier (the classification recipes); found modules {sorted(modules)}."
            )
        self.adapted = modules[ADAPTED_KEY[self.task]]
        if tag_of(self.adapted) not in INJECT_TAGS or "model" not in self.adapted:
            raise ExportError(
                f"modules.{ADAPTED_KEY[self.task]} of {path} is not built by `!apply:speechbrain_mambadapter."
                "inject` with a `model:` argument, so there is no PETL adapter to export."
            )
        self.base = self.adapted["model"]
        if not (tag_of(self.base) or "").startswith("!new:") or "source" not in self.base:
            raise ExportError(
                f"The base model of {path} is not a `!new:` object with a `source` (a hub id or folder); "
                "export supports backbones loaded from one, such as SpeechBrain's Whisper and the AST lobe."
            )

    def value(self, key, default=None):
        """A top-level scalar of the run's hparams, as plain Python."""
        return plain(self.hparams[key]) if key in self.hparams else default

    def precision(self, stage="evaluation"):
        """The precision the run trained (``stage="training"``) or evaluated with.

        ``--precision`` and ``--eval_precision`` are SpeechBrain run options, which the resolved
        hparams do not record; the Brain logs the ones it used in ``log.txt``. Falls back on the
        hparams' ``precision``/``eval_precision``, then fp32.
        """
        key = "eval_precision" if stage == "evaluation" else "precision"
        log = self.folder / "log.txt"
        used = (
            re.findall(rf"Using {stage} precision: `--{key}=(\w+)`", log.read_text(encoding="utf-8"))
            if log.is_file()
            else []
        )
        return used[-1] if used else self.value(key, "fp32")

    def checkpoint(self, name=None):
        """The checkpoint the recipe's test stage used (or the one called ``name``).

        Returns
        -------
        speechbrain.utils.checkpoints.Checkpoint
        """
        save = self.folder / "save"
        if not save.is_dir():
            raise ExportError(
                f"{self.folder} has no save/ folder: the run has not saved a checkpoint yet (the recipe "
                "saves one after each validation); train it for at least one epoch."
            )
        checkpointer = Checkpointer(save)
        if name is not None:
            found = [ckpt for ckpt in checkpointer.list_checkpoints() if ckpt.path.name == name]
            if not found:
                names = sorted(ckpt.path.name for ckpt in checkpointer.list_checkpoints())
                raise ExportError(f"{save} has no checkpoint {name!r}; it has {names}.")
            return found[0]
        key, better = BEST[self.task]
        best = checkpointer.find_checkpoint(**{f"{better}_key": key})
        if best is None:
            raise ExportError(
                f"{save} has no checkpoint with a validation {key} (the recipe saves one after each "
                "validation, so the run has not finished an epoch); train it further, or pass "
                "--checkpoint=<CKPT+... folder name> to export another."
            )
        return best

    def labels(self, n_classes):
        """The class labels in the head's order: ``metrics.json`` of the test stage, else ``classes.txt``."""
        from speechbrain_mambadapter.recipe.dataprep import CLASSES_FILE, read_classes

        metrics = self.folder / "metrics.json"
        if metrics.is_file():
            classes = json.loads(metrics.read_text(encoding="utf-8")).get("classes")
        else:
            prepared = Path(self.value("prepared_folder") or "<no prepared_folder>")
            if not (prepared / CLASSES_FILE).is_file():
                raise ExportError(
                    f"{self.folder} has no metrics.json (the test stage writes it, with the class list) and "
                    f"{prepared / CLASSES_FILE} does not exist; run the recipe's test stage first."
                )
            classes = read_classes(prepared)
        if not classes or len(classes) != n_classes:
            raise ExportError(
                f"The run lists {len(classes or [])} classes but its head has {n_classes} outputs; the "
                "metrics.json or classes.txt does not belong to this run."
            )
        return list(classes)
