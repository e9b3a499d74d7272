"""What loading an exported adapter folder needs beyond SpeechBrain: the base-model check, the
``inject`` call of the folder's ``hyperparams.yaml``, safetensors heads, ``from_hparams`` for a folder.

An adapter folder (written by ``speechbrain_mambadapter.export``) holds::

    adapter_config.json        method, placement, settings, base model and its weights' hash, task
    adapter_model.safetensors  the PETL weights (``save_petl``'s format; new language-token rows included)
    classifier.safetensors     the head (classification)
    label_encoder.txt          the labels (classification; SpeechBrain's CategoricalEncoder format)
    hyperparams.yaml           the inference hparams: base model, inject call, head, decoder, pretrainer
    README.md                  the model card

``hyperparams.yaml`` builds the base model, then :func:`attach_adapter` checks that its weights
hash to the ``base_model_sha256`` the adapter was trained on and calls ``inject``; SpeechBrain's
``Pretrainer`` then loads the adapter (``PETLCheckpoint``, which checks the ``inject`` call and
every key) and the head (:func:`load_safetensors_module`). Nothing is unpickled.

Authors
 * speechbrain-mambadapter contributors 2026
"""

import hashlib
import json
import logging
import os

import torch
from safetensors.torch import load_file
from speechbrain.dataio.batch import PaddedBatch

from speechbrain_mambadapter.injection import inject
from speechbrain_mambadapter.recipe.dataprep import load_mono
from speechbrain_mambadapter.tuners import merge_lora

logger = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
HEAD_WEIGHTS = "classifier.safetensors"
LABELS_FILE = "label_encoder.txt"
HPARAMS_FILE = "hyperparams.yaml"
MODEL_CARD = "README.md"
FORMAT_VERSION = 1
TASKS = ("classification", "asr")

# Methods whose trained weights fold into the base model's own for inference (``merge=True``).
MERGERS = {"lora": merge_lora}


class BaseModelMismatchError(ValueError):
    """The base model's weights are not those the adapter was trained on."""


def weights_sha256(module):
    """SHA-256 of a module's ``state_dict``: every tensor's name, dtype, shape and bytes, by name.

    The same weights give the same hash whatever file format or device they came from; any
    changed value, shape, dtype or name changes it.

    Arguments
    ---------
    module : torch.nn.Module
        The model (before ``inject``, for a base model).

    Returns
    -------
    str
        64 hexadecimal digits.

    Example
    -------
    >>> import copy
    >>> layer = torch.nn.Linear(2, 2)
    >>> digest = weights_sha256(layer)
    >>> weights_sha256(copy.deepcopy(layer)) == digest
    True
    >>> with torch.no_grad():
    ...     layer.bias[0] += 1e-6
    >>> weights_sha256(layer) == digest
    False
    """
    digest = hashlib.sha256()
    state = module.state_dict()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        # Raw bytes through a uint8 view: no copy, and dtypes without a numpy twin (bf16) work too.
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def attach_adapter(model, base_model_sha256, method, placement=None, train_norms=True, **settings):
    """Check that ``model`` is the adapter's base model, then ``inject`` the method into it.

    What an adapter folder's ``hyperparams.yaml`` calls (``!apply:``) on the freshly built base
    model, before the ``Pretrainer`` loads the adapter weights into it.

    Arguments
    ---------
    model : torch.nn.Module
        The base model, as built (nothing injected yet).
    base_model_sha256 : str or None
        :func:`weights_sha256` of the base model the adapter was trained on; None skips the check.
    method, placement, train_norms, **settings
        ``inject``'s arguments, as recorded in the adapter.

    Returns
    -------
    torch.nn.Module
        ``model`` with the method injected (its weights still those of a fresh ``inject``).

    Raises
    ------
    BaseModelMismatchError
        When the weights hash differently.

    Example
    -------
    >>> from speechbrain.lobes.models.transformer.Transformer import TransformerEncoder
    >>> base = TransformerEncoder(num_layers=1, nhead=2, d_ffn=16, d_model=8)
    >>> model = attach_adapter(base, weights_sha256(base), "bottleneck", rank=2)
    >>> model.petl_config["method"]
    'bottleneck'
    >>> attach_adapter(TransformerEncoder(num_layers=1, nhead=2, d_ffn=16, d_model=8), "0" * 64, "lora")
    Traceback (most recent call last):
      ...
    speechbrain_mambadapter.inference.adapter.BaseModelMismatchError: The base model ... is not ...
    """
    if base_model_sha256 is not None:
        found = weights_sha256(model)
        if found != base_model_sha256:
            raise BaseModelMismatchError(
                f"The base model ({type(model).__name__}, weights sha256 {found[:16]}...) is not the one "
                f"this adapter was trained on (sha256 {base_model_sha256[:16]}...). Point base_model_source "
                "(command line: --base_model) at the model the adapter's adapter_config.json names. If "
                "these are the same weights saved differently (e.g. renamed by another transformers "
                "version), set base_model_sha256 to null (command line: --skip_base_check) at your own risk."
            )
    return inject(model, method=method, placement=placement, train_norms=train_norms, **settings)


def load_safetensors_module(module, path):
    """Load a module's whole ``state_dict`` from a safetensors file (a ``Pretrainer`` hook).

    Arguments
    ---------
    module : torch.nn.Module
        The module (e.g. the classification head).
    path : str or os.PathLike
        A file written by ``safetensors.torch.save_file(module.state_dict(), path)``.

    Raises
    ------
    ValueError
        When the file's names or shapes differ from the module's; the message lists them.

    Example
    -------
    >>> import os, tempfile
    >>> from safetensors.torch import save_file
    >>> path = os.path.join(tempfile.mkdtemp(), "head.safetensors")
    >>> save_file({"weight": torch.ones(3, 2), "bias": torch.zeros(3)}, path)
    >>> head = torch.nn.Linear(2, 3)
    >>> load_safetensors_module(head, path)
    >>> head.weight.sum().item()
    6.0
    >>> load_safetensors_module(torch.nn.Linear(2, 4), path)
    Traceback (most recent call last):
      ...
    ValueError: ...head.safetensors does not fit Linear: ... ['bias: file (3,) vs module (4,)', ...
    """
    saved = load_file(str(path))
    expected = module.state_dict()
    missing = sorted(set(expected) - set(saved))
    unexpected = sorted(set(saved) - set(expected))
    shapes = [
        f"{name}: file {tuple(saved[name].shape)} vs module {tuple(expected[name].shape)}"
        for name in sorted(set(saved) & set(expected))
        if saved[name].shape != expected[name].shape
    ]
    if missing or unexpected or shapes:
        raise ValueError(
            f"{path} does not fit {type(module).__name__}: missing {missing}, unexpected {unexpected}, "
            f"shape mismatches: {shapes}. Was the file tampered with, or exported from another run?"
        )
    module.load_state_dict(saved)


def merge_adapter(model):
    """Fold the trained weights of ``model``'s PETL method into the base weights, where exact.

    LoRA folds into the query and value projections (``merge_lora``); the other methods keep
    their modules (there is nothing they can fold without changing the model's output).

    Arguments
    ---------
    model : torch.nn.Module
        A model returned by ``inject``, its adapter loaded.

    Returns
    -------
    int
        How many weights were merged.
    """
    method = model.petl_config["method"]
    merger = MERGERS.get(method)
    if merger is None:
        logger.info("Nothing to merge for %s (only %s merge into the base weights)", method, sorted(MERGERS))
        return 0
    merged = merger(model)
    logger.info("Merged %d %s weights into the base model", merged, method)
    return merged


def pad_waveforms(wavs):
    """Right-pad ``[T_i]`` waveforms as the recipes' loaders do: ``([B, T], relative lengths [B])``.

    Example
    -------
    >>> pad_waveforms([torch.ones(2), torch.ones(4)])
    PaddedData(data=tensor([[1., 1., 0., 0.],
            [1., 1., 1., 1.]]), lengths=tensor([0.5000, 1.0000]))
    """
    return PaddedBatch([{"sig": wav.cpu()} for wav in wavs]).sig


def _looks_local(source):
    source = str(source)
    return os.path.isabs(source) or source.startswith((".", "~")) or os.path.exists(source)


def read_adapter_config(source, savedir=None):
    """The ``adapter_config.json`` of an adapter folder or Hugging Face hub repository.

    Arguments
    ---------
    source : str or os.PathLike
        The folder, or a hub id.
    savedir : str, optional
        Where to keep files fetched from the hub.

    Returns
    -------
    dict

    Raises
    ------
    FileNotFoundError
        When a local folder does not exist or has no adapter_config.json.
    ValueError
        When the file is not an adapter config this version reads.
    """
    from speechbrain.utils.fetching import fetch

    if _looks_local(source):
        path = os.path.join(os.path.expanduser(str(source)), ADAPTER_CONFIG)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{source} has no {ADAPTER_CONFIG}, so it is not an exported adapter folder. Export a "
                "finished run with: python -m speechbrain_mambadapter export <run output folder> <new folder>"
            )
    else:
        path = fetch(ADAPTER_CONFIG, source=str(source), savedir=savedir)
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    if config.get("format_version") != FORMAT_VERSION or config.get("task") not in TASKS:
        raise ValueError(
            f"{path} is not an adapter config of format version {FORMAT_VERSION} with a task in {TASKS} "
            f"(format_version={config.get('format_version')!r}, task={config.get('task')!r}); export the "
            "run again with this version of speechbrain_mambadapter."
        )
    return config


class AdapterFolderMixin:
    """``from_hparams`` for an adapter folder, audio read as the recipes read it, optional merge.

    Put it first among the bases of a ``speechbrain.inference`` interface; the interface names
    the module that holds the adapter in ``ADAPTED_MODULE``. Extra constructor (and
    ``from_hparams``) argument: ``merge`` (fold LoRA into the base weights, :func:`merge_adapter`).
    """

    ADAPTED_MODULE = None

    def __init__(self, *args, merge=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.merged = merge_adapter(self.mods[self.ADAPTED_MODULE]) if merge else 0

    @classmethod
    def from_hparams(cls, source, hparams_file=HPARAMS_FILE, overrides=None, **kwargs):
        """Load an exported adapter folder (or hub repository) as SpeechBrain's ``from_hparams`` does.

        Arguments
        ---------
        source : str or os.PathLike
            The folder written by ``speechbrain_mambadapter.export``, or a hub id holding one.
        hparams_file : str
            The inference hparams inside it.
        overrides : dict, optional
            Top-level keys to override, e.g. ``{"base_model_source": "<local copy of the base>"}``.
        **kwargs
            As ``speechbrain.inference.interfaces.Pretrained.from_hparams`` (``savedir``,
            ``run_opts={"device": "cuda:0"}``...), plus ``merge``.

        Returns
        -------
        An instance of this class.
        """
        if _looks_local(source):
            read_adapter_config(source)  # a clear error for a folder that is not an export
            source = os.path.abspath(os.path.expanduser(str(source)))
        overrides = {"adapter_folder": str(source), **(overrides or {})}
        return super().from_hparams(source, hparams_file=hparams_file, overrides=overrides, **kwargs)

    def load_audio(self, path, savedir=None):
        """Read ``path`` as the recipes do (mono, resampled to ``sample_rate``): ``[T]`` on the device.

        Arguments
        ---------
        path : str or os.PathLike
            Any file libsndfile decodes (wav, flac, ogg, mp3).
        savedir : None
            Unused (local files only).

        Returns
        -------
        torch.Tensor
        """
        return load_mono(str(path), self.hparams.sample_rate).to(self.device)
