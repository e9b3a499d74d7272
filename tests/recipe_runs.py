"""Running a recipe's ``train.py`` in this process, as ``python train.py <hparams> <flags>`` would.

An interpreter per run would spend more time importing than training on the samples; ``runpy``
runs the script as ``__main__`` with its folder first on ``sys.path`` (as Python does for a
script), and restores ``sys.argv`` and ``sys.path`` afterwards.
"""

import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_recipe(recipe, hparams, *flags):
    """``python recipes/<recipe>/train.py <hparams> <flags>`` in process.

    Arguments
    ---------
    recipe : str
        The recipe's folder under ``recipes/``, e.g. ``"ESC50"``.
    hparams : str or pathlib.Path
        A file stem of the recipe's ``hparams/`` (``"mambadapter"``) or a path to a YAML file.
    *flags : str
        Command-line flags.
    """
    train = ROOT / "recipes" / recipe / "train.py"
    path = Path(hparams)
    if not path.suffix:
        path = ROOT / "recipes" / recipe / "hparams" / f"{hparams}.yaml"
    saved_argv, saved_path = sys.argv, list(sys.path)
    sys.argv = [str(train), str(path), *map(str, flags)]
    sys.path.insert(0, str(train.parent))
    try:
        runpy.run_path(str(train), run_name="__main__")
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
