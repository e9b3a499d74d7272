"""Study files: a grid of hparams overrides x tasks x folds x seeds, expanded into recipe runs.

A study file is a small YAML mapping (``studies/*.yaml``)::

    name: fig2_scaling
    seeds: [10, 11, 12, 13, 14]
    tasks:                          # where the runs run: a recipe (+ its own overrides and folds)
      GSC: {recipe: GSC}
    overrides: {}                   # to every run
    points:                         # what runs: an hparams file of the recipe, with overrides
      - hparams: bottleneck
        grid: {rank: [8, 16, 32]}   # one point per value (several keys: their product)
        experiment: bottleneck_r{rank}
    report: {kind: scaling}         # the table or figure it draws (speechbrain_mambadapter.study.report)
    slurm: {time_min: 600}          # defaults of the SLURM launcher

Every point x task x fold x seed is one :class:`Run`: the task's recipe ``train.py`` with the
point's hparams file and ``--key=value`` overrides (study, then task, then point), and its own
``--experiment``, ``--seed``, ``--fold`` and ``--output_folder``
(``<output>/<task>/<experiment>/[fold<f>/]seed<s>``, the classification recipes' own layout).
Each override key must be a top-level key of the hparams file it goes to, checked when the study
is loaded, so that a typo stops the study before it starts hundreds of runs.

Authors
 * speechbrain-mambadapter contributors 2026
"""

import ast
import itertools
import json
import os
import re
import shlex
import sys
from dataclasses import dataclass, field

import yaml

STUDY_KEYS = ("name", "description", "seeds", "tasks", "overrides", "points", "report", "slurm")
TASK_KEYS = ("recipe", "overrides", "folds", "data_folder")
POINT_KEYS = ("hparams", "experiment", "overrides", "grid", "tasks", "label")
# The keys the study sets on every run itself (from the task, point, fold and seed).
RESERVED_KEYS = ("experiment", "seed", "fold", "output_folder", "output_root", "data_folder")
PREPARE_EXPERIMENT = "_prepare"
TOP_LEVEL_KEY = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*:", re.M)


class StudyError(ValueError):
    """A study file that cannot be expanded; the message says what to change."""


@dataclass(frozen=True)
class Task:
    """Where runs run: a recipe folder, the overrides it needs, its folds (None: official split)."""

    name: str
    recipe: str
    overrides: dict = field(default_factory=dict, hash=False, compare=False)
    folds: tuple = None
    data_folder: str = None


@dataclass(frozen=True)
class Point:
    """What runs: an hparams file (its stem), overrides, the grid values that made it, a label."""

    experiment: str
    hparams: str
    overrides: dict = field(default_factory=dict, hash=False, compare=False)
    values: dict = field(default_factory=dict, hash=False, compare=False)
    label: str = ""
    tasks: tuple = None


@dataclass(frozen=True)
class Run:
    """One recipe run of a study (or the data-preparation run of a task and fold).

    Attributes
    ----------
    task, point : Task, Point
        Where and what.
    fold, seed : int or None, int
        The fold (None for an official split) and the training seed.
    train_script, hparams_file : str
        Absolute paths of the recipe's ``train.py`` and the point's hparams file.
    overrides : dict
        Every ``--key=value`` of the run, in order (the data folder is added by :meth:`command`).
    output_folder : str
        Where the run writes (and where the study finds its result and status).
    prepare : bool
        True for the short ``--debug`` run that prepares a task's data before its runs start.
    """

    task: Task
    point: Point
    fold: int
    seed: int
    train_script: str
    hparams_file: str
    overrides: dict = field(hash=False, compare=False)
    output_folder: str = ""
    prepare: bool = False

    @property
    def name(self):
        """``<task>/<experiment>/[fold<f>/]seed<s>`` (``<task>/_prepare[/fold<f>]`` for a preparation)."""
        parts = [self.task.name, PREPARE_EXPERIMENT if self.prepare else self.point.experiment]
        if self.fold is not None:
            parts.append(f"fold{self.fold}")
        if not self.prepare:
            parts.append(f"seed{self.seed}")
        return "/".join(parts)

    @property
    def group(self):
        """The runs of one group share their prepared data: ``(task, fold)``."""
        return (self.task.name, self.fold)

    @property
    def identity(self):
        """What makes a run this run (not where its data is or which device it uses)."""
        return {
            "recipe": self.task.recipe,
            "hparams": self.point.hparams,
            "overrides": {
                k: v for k, v in self.overrides.items() if k not in ("output_root", "output_folder")
            },
        }

    def command(self, data_folder=None, extra=(), python=None):
        """The command line of the run, as a list.

        Arguments
        ---------
        data_folder : str, optional
            ``--data_folder`` (else the task's, else none: the recipe then asks for it).
        extra : sequence of str
            Arguments for every run; a ``--key=value`` replaces the run's own ``--key``.
        python : str, optional
            The interpreter (default: this one).

        Example
        -------
        >>> task = Task("GSC", "GSC")
        >>> run = Run(task, Point("lora", "lora"), None, 10, "train.py", "lora.yaml",
        ...           {"seed": 10, "use_alpha": False}, "out")
        >>> run.command(python="python", extra=["--device=cuda:0", "--seed=3"])
        ['python', 'train.py', 'lora.yaml', '--use_alpha=False', '--device=cuda:0', '--seed=3']
        """
        values = dict(self.overrides)
        data_folder = data_folder or self.task.data_folder
        if data_folder:
            values["data_folder"] = data_folder
        flags = []
        for arg in extra:
            key, sep, value = arg[2:].partition("=")
            if arg.startswith("--") and sep:
                values.pop(key, None)
                values[key] = value
            else:
                flags.append(arg)
        if self.prepare:
            flags.append("--debug")
        command = [python or sys.executable, self.train_script, self.hparams_file]
        command += [f"--{key}={format_value(value)}" for key, value in values.items()]
        return command + flags


@dataclass
class Study:
    """A study file, loaded and checked; :meth:`runs` expands it."""

    name: str
    path: str
    description: str
    seeds: tuple
    tasks: tuple
    points: tuple
    report: dict
    slurm: dict
    recipes_dir: str
    overrides: dict = field(default_factory=dict)

    def runs(self, output, seeds=None):
        """Every run of the study under ``output``, seed-major, so that a partial study covers the grid.

        Arguments
        ---------
        output : str
            The study's output folder.
        seeds : sequence of int, optional
            Run these seeds instead of the file's.
        """
        output = os.path.abspath(output)
        runs = []
        for seed in seeds or self.seeds:
            for task in self.tasks:
                for fold in task.folds or (None,):
                    for point in self.points:
                        if point.tasks is None or task.name in point.tasks:
                            runs.append(self._run(output, task, point, fold, seed))
        return runs

    def prepare_runs(self, runs, output):
        """One data-preparation run per group ``(task, fold)`` of ``runs``: the group's first run in
        SpeechBrain's ``--debug`` mode (a few batches), writing to ``<task>/_prepare[/fold<f>]``.

        The recipes prepare their data in the run that needs it; runs started at the same time on
        data not yet prepared would write the same files at once, so a launcher runs this first.
        """
        output = os.path.abspath(output)
        first = {}
        for run in runs:
            first.setdefault(run.group, run)
        prepares = []
        for (task_name, fold), run in first.items():
            folder = os.path.join(output, task_name, PREPARE_EXPERIMENT)
            if fold is not None:
                folder = os.path.join(folder, f"fold{fold}")
            overrides = dict(run.overrides)
            overrides.update(experiment=PREPARE_EXPERIMENT, output_folder=folder)
            prepares.append(
                Run(
                    run.task, run.point, fold, run.seed, run.train_script, run.hparams_file,
                    overrides, folder, prepare=True,
                )
            )  # fmt: skip
        return prepares

    def _run(self, output, task, point, fold, seed):
        recipe_dir = os.path.join(self.recipes_dir, task.recipe)
        parts = [output, task.name, point.experiment] + ([f"fold{fold}"] if fold is not None else [])
        folder = os.path.join(*parts, f"seed{seed}")
        overrides = {**self.overrides, **task.overrides, **point.overrides}
        overrides.update(seed=seed, experiment=point.experiment)
        if fold is not None:
            overrides["fold"] = fold
        overrides.update(output_root=os.path.join(output, task.name), output_folder=folder)
        return Run(
            task,
            point,
            fold,
            seed,
            os.path.join(recipe_dir, "train.py"),
            os.path.join(recipe_dir, "hparams", f"{point.hparams}.yaml"),
            overrides,
            folder,
        )


def format_value(value):
    """A value as SpeechBrain reads it back from ``--key=value`` (YAML).

    Example
    -------
    >>> [format_value(v) for v in (False, None, 8, 0.5, "ckb", [1, 2])]
    ['False', 'null', '8', '0.5', 'ckb', '[1, 2]']
    """
    if isinstance(value, bool):
        return str(value)
    if value is None:
        return "null"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return str(value)


def shell_line(command):
    """A command list as one line a shell reads back the same."""
    return shlex.join(command)


def dataset_folds(recipe_dir):
    """The folds of a recipe's dataset (``NUM_FOLDS`` in its ``*_prepare.py``), or None.

    Read from the source, so that listing a study imports no recipe.
    """
    for name in sorted(os.listdir(recipe_dir)):
        if not name.endswith("_prepare.py"):
            continue
        with open(os.path.join(recipe_dir, name), encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for node in tree.body:
            if (
                isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "NUM_FOLDS" for t in node.targets)
                and isinstance(node.value, ast.Constant)
            ):
                return tuple(range(1, node.value.value + 1))
    return None


def hparams_keys(path):
    """The top-level keys of an hparams file (read as text: loading it would build the model)."""
    with open(path, encoding="utf-8") as f:
        return set(TOP_LEVEL_KEY.findall(f.read()))


def default_recipes_dir(study_path):
    """``recipes/`` beside the study file's folder (``studies/``), else ``./recipes``."""
    beside = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(study_path))), "recipes")
    return beside if os.path.isdir(beside) else os.path.abspath("recipes")


def load_study(path, recipes_dir=None):
    """Load and check a study file.

    Arguments
    ---------
    path : str
        The YAML file.
    recipes_dir : str, optional
        The folder of the recipes (default: :func:`default_recipes_dir`).

    Raises
    ------
    StudyError
        On an unknown key, a recipe or hparams file that does not exist, an override key that
        the hparams file lacks, folds for a dataset without folds, or two points with one name.
    """
    with open(path, encoding="utf-8") as f:
        try:
            spec = yaml.safe_load(f)
        except yaml.YAMLError as error:
            raise StudyError(f"{path} is not valid YAML: {error}") from error
    if not isinstance(spec, dict):
        raise StudyError(f"{path} must be a YAML mapping with the keys {list(STUDY_KEYS)}.")
    _check_keys(spec, STUDY_KEYS, path)
    for key in ("tasks", "points"):
        if not spec.get(key):
            raise StudyError(f"{path} has no {key}: a study needs at least one task and one point.")
    recipes_dir = os.path.abspath(recipes_dir or default_recipes_dir(path))
    seeds = spec.get("seeds") or [1]
    if not all(isinstance(s, int) for s in seeds):
        raise StudyError(f"{path}: seeds must be a list of integers, got {seeds!r}.")
    overrides = _overrides(spec.get("overrides"), f"{path}: overrides")
    tasks = tuple(_task(name, value, recipes_dir, path) for name, value in spec["tasks"].items())
    points = []
    for entry in spec["points"]:
        points.extend(_points(entry, path))
    study = Study(
        name=spec.get("name") or os.path.splitext(os.path.basename(path))[0],
        path=os.path.abspath(path),
        description=spec.get("description", ""),
        seeds=tuple(seeds),
        tasks=tasks,
        points=tuple(points),
        report=dict(spec.get("report") or {"kind": "table"}),
        slurm=dict(spec.get("slurm") or {}),
        recipes_dir=recipes_dir,
        overrides=overrides,
    )
    _check_points(study)
    return study


def study_of_hparams(hparams_file, folds="all", seeds=(10, 11, 12, 13, 14), experiment=None):
    """The study of one hparams file over its dataset's folds and the seeds (``recipes/run_folds.py``).

    Arguments
    ---------
    hparams_file : str
        ``recipes/<recipe>/hparams/<name>.yaml``.
    folds : "all", list of int or None
        The folds (``"all"``: every fold of the dataset, none for an official split).
    seeds : sequence of int
        The training seeds.
    experiment : str, optional
        The point's name (default: the file's stem).

    Raises
    ------
    StudyError
        When the file is not in a recipe's ``hparams/`` folder, or folds are asked of a dataset
        without folds.
    """
    hparams_dir = os.path.dirname(os.path.abspath(hparams_file))
    recipe_dir = os.path.dirname(hparams_dir)
    if os.path.basename(hparams_dir) != "hparams" or not os.path.isfile(os.path.join(recipe_dir, "train.py")):
        raise StudyError(
            f"{hparams_file} is not in a recipe's hparams/ folder next to a train.py; pass e.g. "
            "recipes/ESC50/hparams/mambadapter.yaml."
        )
    recipe = os.path.basename(recipe_dir)
    stem = os.path.splitext(os.path.basename(hparams_file))[0]
    task = _task(recipe, {"recipe": recipe, "folds": folds}, os.path.dirname(recipe_dir), hparams_file)
    return Study(
        name=f"{recipe}_{experiment or stem}",
        path=os.path.abspath(hparams_file),
        description="",
        seeds=tuple(seeds),
        tasks=(task,),
        points=(Point(experiment=experiment or stem, hparams=stem, label=stem),),
        report={"kind": "table"},
        slurm={},
        recipes_dir=os.path.dirname(recipe_dir),
    )


def _check_keys(mapping, allowed, where):
    unknown = [key for key in mapping if key not in allowed]
    if unknown:
        raise StudyError(f"{where}: unknown key(s) {unknown}; the keys are {list(allowed)}.")


def _overrides(value, where):
    value = dict(value or {})
    reserved = [key for key in value if key in RESERVED_KEYS]
    if reserved:
        raise StudyError(
            f"{where} sets {reserved}, which the study sets itself for each run (experiment, seed, fold, "
            "output folders from the point, seed, fold and --output; data_folder from the task or --data)."
        )
    return value


def _task(name, value, recipes_dir, path):
    value = dict(value or {})
    where = f"{path}: task {name}"
    _check_keys(value, TASK_KEYS, where)
    recipe = value.get("recipe", name)
    recipe_dir = os.path.join(recipes_dir, recipe)
    if not os.path.isfile(os.path.join(recipe_dir, "train.py")):
        raise StudyError(
            f"{where}: {recipe_dir} has no train.py; recipe must name a folder of {recipes_dir} "
            "(or pass --recipes=<folder of the recipes>)."
        )
    all_folds = dataset_folds(recipe_dir)
    folds = value.get("folds", "all")
    if folds == "all":
        folds = all_folds
    elif folds is not None:
        if all_folds is None:
            raise StudyError(f"{where}: {recipe} uses its dataset's official split and has no folds.")
        bad = [f for f in folds if f not in all_folds]
        if bad:
            raise StudyError(f"{where}: folds {bad} do not exist; {recipe} has folds {list(all_folds)}.")
        folds = tuple(folds)
    return Task(
        name=name,
        recipe=recipe,
        overrides=_overrides(value.get("overrides"), where),
        folds=folds,
        data_folder=value.get("data_folder"),
    )


def _points(entry, path):
    if not isinstance(entry, dict) or "hparams" not in entry:
        raise StudyError(f"{path}: each point is a mapping with at least 'hparams', got {entry!r}.")
    where = f"{path}: point {entry['hparams']}"
    _check_keys(entry, POINT_KEYS, where)
    base = _overrides(entry.get("overrides"), where)
    grid = dict(entry.get("grid") or {})
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise StudyError(f"{where}: grid {key} must be a non-empty list, got {values!r}.")
    _overrides(grid, f"{where}: grid")
    template = entry.get("experiment")
    if template is None:
        template = "_".join([entry["hparams"]] + [f"{key}{{{key}}}" for key in grid])
    tasks = tuple(entry["tasks"]) if entry.get("tasks") else None
    points = []
    for combination in itertools.product(*grid.values()):
        values = dict(zip(grid, combination))
        try:
            experiment = template.format(**values)
        except KeyError as error:
            raise StudyError(
                f"{where}: experiment {template!r} names {error}, which is not a grid key."
            ) from None
        if len(grid) and all(f"{{{key}}}" not in template for key in grid):
            raise StudyError(
                f"{where}: experiment {template!r} names none of the grid keys {list(grid)}, so every grid "
                "value would write to one output folder; write e.g. "
                f"{entry['hparams']}_{'_'.join(f'{k}{{{k}}}' for k in grid)}."
            )
        points.append(
            Point(
                experiment=experiment,
                hparams=entry["hparams"],
                overrides={**base, **values},
                values=values,
                label=entry.get("label", entry["hparams"]),
                tasks=tasks,
            )
        )
    return points


def _check_points(study):
    task_names = {task.name for task in study.tasks}
    seen = {}
    for point in study.points:
        if point.tasks is not None:
            unknown = [t for t in point.tasks if t not in task_names]
            if unknown:
                raise StudyError(f"{study.path}: point {point.experiment} names unknown task(s) {unknown}.")
        if point.experiment in seen:
            raise StudyError(
                f"{study.path}: two points are both named {point.experiment!r} and would share output "
                "folders; give them different experiment names."
            )
        seen[point.experiment] = point
        for task in study.tasks:
            if point.tasks is not None and task.name not in point.tasks:
                continue
            hparams = os.path.join(study.recipes_dir, task.recipe, "hparams", f"{point.hparams}.yaml")
            if not os.path.isfile(hparams):
                raise StudyError(
                    f"{study.path}: point {point.experiment} of task {task.name} needs {hparams}, which does "
                    f"not exist; hparams names a file of recipes/{task.recipe}/hparams/ (without .yaml)."
                )
            keys = hparams_keys(hparams)
            overrides = {**study.overrides, **task.overrides, **point.overrides}
            missing = [key for key in overrides if key not in keys]
            if missing:
                raise StudyError(
                    f"{study.path}: point {point.experiment} of task {task.name} overrides {missing}, which "
                    f"{os.path.relpath(hparams)} does not have as top-level keys; fix the names, or restrict "
                    "the point to the tasks whose hparams have them (tasks: [...])."
                )
