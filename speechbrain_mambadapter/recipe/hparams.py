"""Reading a recipe's hparams file: the keys it must define, and its data settings before any model.

``load_hyperpyyaml`` builds every object of a file, the pretrained model included, before a
recipe can look at its data folder; a wrong ``--data_folder`` then costs a model download (or
half a minute of retries without a network) and a missing one a long HyperPyYAML traceback.
:func:`peek_hparams` reads plain values (``data_folder``, ``language`` ...) without building
anything, so a recipe checks its inputs first; :func:`check_hparams` names every key a loaded
file lacks.

Authors
 * speechbrain-mambadapter contributors 2026
"""

import io
import re
import sys

import ruamel.yaml
from hyperpyyaml import resolve_references


class MissingHparamsError(KeyError):
    """A hparams file lacks keys its recipe reads."""

    def __str__(self):
        return str(self.args[0])


def check_hparams(hparams, required, hparams_file=None):
    """Fail with one sentence naming every key of ``required`` that ``hparams`` lacks.

    Arguments
    ---------
    hparams : dict
        The loaded hyperparameters.
    required : iterable of str
        Keys the recipe reads.
    hparams_file : str, optional
        The file they came from (named in the error).

    Raises
    ------
    MissingHparamsError
        When keys are missing.

    Example
    -------
    >>> check_hparams({"seed": 1, "lr": 0.1}, ["seed", "lr"])
    >>> check_hparams({"seed": 1}, ["seed", "lr", "sorting"], "hparams/x.yaml")
    Traceback (most recent call last):
      ...
    speechbrain_mambadapter.recipe.hparams.MissingHparamsError: hparams/x.yaml lacks ... ['lr', 'sorting'] ...
    """
    missing = sorted(set(required) - set(hparams))
    if missing:
        where = hparams_file or "The hparams file"
        raise MissingHparamsError(
            f"{where} lacks the key(s) {missing} that this recipe reads; add them (the recipe's "
            "hparams/mambadapter.yaml has every key with its default and a comment)."
        )


def peek_hparams(hparams_file, overrides, keys):
    r"""The values of top-level ``keys`` of a hparams file with ``overrides``, building nothing.

    A required key (``!PLACEHOLDER``) that the overrides do not set stops the program with a
    one-line usage message naming the flag and what the file's comment says it is.

    Arguments
    ---------
    hparams_file : str
        The recipe's hparams file.
    overrides : str or dict
        What ``speechbrain.parse_arguments`` returns as overrides (a YAML string), or a dict.
    keys : list of str
        Top-level keys holding plain values (strings, numbers, booleans, or ``!ref`` s of them).

    Returns
    -------
    dict
        ``{key: value}``, references resolved.

    Example
    -------
    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "hparams.yaml"
    >>> _ = path.write_text("root: results\ndata_folder: !PLACEHOLDER  # the unpacked ESC-50-master\n"
    ...                     "out: !ref <root>/run\nmodel: !new:torch.nn.Linear [2, 2]\n")
    >>> peek_hparams(str(path), "data_folder: /data\n", ["data_folder", "out"])
    {'data_folder': '/data', 'out': 'results/run'}
    >>> peek_hparams(str(path), "", ["out"])
    Traceback (most recent call last):
     ...
    SystemExit: .../hparams.yaml needs --data_folder=... (the unpacked ESC-50-master).
    """
    with open(hparams_file, encoding="utf-8") as f:
        text = f.read()
    yaml = ruamel.yaml.YAML(typ="rt")
    document = yaml.load(text) or {}
    given = (yaml.load(overrides) if isinstance(overrides, str) else overrides) or {}
    missing = []
    for key, value in document.items():
        if getattr(getattr(value, "tag", None), "value", None) == "!PLACEHOLDER" and key not in given:
            # The comment on the key's line says what to pass (ruamel files it under the next key).
            comment = re.search(rf"^{re.escape(key)}:\s*!PLACEHOLDER\s*#\s*(.+)$", text, re.M)
            what = comment.group(1).strip() if comment else ""
            missing.append(f"--{key}=..." + (f" ({what})" if what else ""))
    if missing:
        sys.exit(f"{hparams_file} needs {', '.join(missing)}.")
    resolved = yaml.load(resolve_references(io.StringIO(text), overrides).getvalue())
    return {key: resolved[key] for key in keys}
