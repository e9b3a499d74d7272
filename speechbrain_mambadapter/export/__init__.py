"""Export a finished recipe run as a self-contained adapter folder (command line: ``export``).

A run's output folder holds the resolved ``hyperparams.yaml`` and adapter-only checkpoints in
``save/CKPT+*``. :func:`export_adapter` takes the run's best checkpoint (highest validation
accuracy for the classification recipes, lowest dev WER for the Common Voice recipe) and writes
a folder anyone can load with ``speechbrain_mambadapter.inference`` (files listed in
``speechbrain_mambadapter.inference.adapter``): the adapter weights as they were trained
(safetensors, with the ``inject`` call in their metadata), the head, the labels, an
``adapter_config.json`` (the PETL method, its placement and settings, the base model's name and the
SHA-256 of its weights), an inference ``hyperparams.yaml`` and a ``README.md`` model card with
the run's metrics, data and command.

The inference ``hyperparams.yaml`` is derived from the run's: the base model is the run's own
``!new:`` constructor (its ``source`` and ``save_path`` become the top-level keys
``base_model_source`` and ``base_model_cache``), the ``inject`` call comes from the adapter
weights' metadata, and the Common Voice recipe's test searcher is copied as it was. The export
builds the base model once to hash its weights, then loads the finished folder once, so a
folder that would not load is never written.

Authors
 * speechbrain-mambadapter contributors 2026
"""

import json
import logging
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

import torch
from hyperpyyaml import load_hyperpyyaml
from safetensors import safe_open
from safetensors.torch import save_file
from speechbrain.dataio.encoder import CategoricalEncoder

from speechbrain_mambadapter.checkpoint import _CONFIG_KEY
from speechbrain_mambadapter.export.card import model_card
from speechbrain_mambadapter.export.hparams import inference_hparams, node_arguments, yaml_object
from speechbrain_mambadapter.export.run import ExportError, Run, plain, tag_of
from speechbrain_mambadapter.inference import INTERFACES, weights_sha256
from speechbrain_mambadapter.inference.adapter import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    FORMAT_VERSION,
    HEAD_WEIGHTS,
    HPARAMS_FILE,
    LABELS_FILE,
    MODEL_CARD,
)

logger = logging.getLogger(__name__)


def base_model_sha256(run):
    """Build the run's base model (nothing injected) and hash its weights (``weights_sha256``)."""
    arguments = node_arguments(run.base, {}, "the base model")
    with tempfile.TemporaryDirectory() as cache:
        if "save_path" in arguments:
            arguments["save_path"] = os.path.join(cache, "base_model")
        model = load_hyperpyyaml(yaml_object("model", tag_of(run.base), arguments) + "\n")["model"]
        return weights_sha256(model)


def adapter_config(run, petl_config, base_sha256, checkpoint, labels=None):
    """The ``adapter_config.json`` content: what rebuilds the adapter, and where it came from."""
    config = {
        "format": "speechbrain_mambadapter adapter",
        "format_version": FORMAT_VERSION,
        "task": run.task,
        "method": petl_config["method"],
        "placement": petl_config["placement"],
        "train_norms": petl_config["train_norms"],
        "settings": petl_config["kwargs"],
        "base_model_name_or_path": plain(run.base["source"]),
        "base_model_class": tag_of(run.base)[len("!new:") :],
        "base_model_sha256": base_sha256,
        "inference_mode": True,
        "library": "speechbrain_mambadapter",
        "library_version": metadata.version("speechbrain_mambadapter"),
        "run": {
            "folder": str(run.folder),
            "hparams_file": run.hparams_file,
            "checkpoint": checkpoint.path.name,
            "checkpoint_meta": {key: value for key, value in checkpoint.meta.items() if key != "unixtime"},
        },
    }
    if run.task == "classification":
        config["labels"] = labels
    else:
        config["language"] = run.value("language")
        config["language_token"] = (
            None if run.hparams.get("language_token_id") is None else f"<|{run.value('language')}|>"
        )
    return config


def _publishable(folder):
    """Give the folder and its files the permissions mkdir and open would (temporary ones are private)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    for path in folder.iterdir():
        os.chmod(path, 0o666 & ~umask)


def export_adapter(run_folder, out_folder, checkpoint=None, overwrite=False, verify=True):
    """Write ``run_folder``'s best adapter as a self-contained folder ``out_folder``.

    Arguments
    ---------
    run_folder : str or os.PathLike
        The output folder of a finished recipe run.
    out_folder : str or os.PathLike
        The folder to write (created, with its parents).
    checkpoint : str, optional
        A checkpoint folder name (``CKPT+...``) instead of the best one.
    overwrite : bool
        Replace ``out_folder`` if it exists.
    verify : bool
        Load the finished folder once (``speechbrain_mambadapter.inference``) before publishing it.

    Returns
    -------
    pathlib.Path
        ``out_folder``.

    Raises
    ------
    ExportError
        When the run cannot be exported or the folder exists; the message says what to do.
    """
    run = Run(run_folder)
    out = Path(out_folder).resolve()
    if out.exists() and not overwrite:
        raise ExportError(f"{out} exists; pick a new folder or pass --overwrite to replace it.")
    out.parent.mkdir(parents=True, exist_ok=True)
    ckpt = run.checkpoint(checkpoint)
    petl_file = ckpt.path / "petl.ckpt"
    with safe_open(str(petl_file), framework="pt") as handle:
        petl_config = json.loads((handle.metadata() or {}).get(_CONFIG_KEY, "null"))
    if petl_config is None:
        raise ExportError(
            f"{petl_file} has no inject call in its metadata; it was not written by PETLCheckpoint."
        )
    logger.info("Exporting %s (%s) of %s", ckpt.path.name, dict(ckpt.meta), run.folder)
    base_sha256 = base_model_sha256(run)
    partial = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        shutil.copyfile(petl_file, partial / ADAPTER_WEIGHTS)
        labels = head_shape = None
        if run.task == "classification":
            # SpeechBrain saved the head with torch.save; weights_only=True reads tensors, never code.
            head = torch.load(ckpt.path / "classifier.ckpt", map_location="cpu", weights_only=True)
            if sorted(head) != ["bias", "weight"]:
                raise ExportError(
                    f"{ckpt.path / 'classifier.ckpt'} is not a linear head: keys {sorted(head)}."
                )
            save_file(
                {name: tensor.contiguous() for name, tensor in head.items()}, str(partial / HEAD_WEIGHTS)
            )
            head_shape = tuple(head["weight"].shape)
            labels = run.labels(head_shape[0])
            encoder = CategoricalEncoder()
            encoder.update_from_iterable(labels)
            encoder.save(partial / LABELS_FILE)
        config = adapter_config(run, petl_config, base_sha256, ckpt, labels)
        with open(partial / ADAPTER_CONFIG, "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2, ensure_ascii=False)
            f.write("\n")
        (partial / HPARAMS_FILE).write_text(
            inference_hparams(run, petl_config, base_sha256, head_shape), encoding="utf-8"
        )
        (partial / MODEL_CARD).write_text(model_card(run, config, ckpt, partial), encoding="utf-8")
        if verify:
            INTERFACES[run.task].from_hparams(str(partial), run_opts={"device": "cpu"})
        _publishable(partial)
        if out.exists():
            shutil.rmtree(out)
        os.replace(partial, out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    logger.info("Exported the adapter of %s to %s", run.folder, out)
    return out


__all__ = ["ExportError", "Run", "export_adapter"]
