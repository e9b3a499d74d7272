"""Use a trained adapter: SpeechBrain inference interfaces for the folders ``export`` writes.

``AdaptedEncoderClassifier`` (the AST classification recipes) and ``AdaptedWhisperASR`` (the
Common Voice recipe) load with ``from_hparams(source=<folder or hub id>)``, as SpeechBrain's
``EncoderClassifier`` and ``WhisperASR`` do; :func:`load_adapter` picks the class from the
folder's ``adapter_config.json``. Loading rebuilds the base model, checks its weights' hash,
injects the method, loads the adapter and head from safetensors (checking every key) and, with
``merge=True``, folds LoRA into the base weights.

Example (``folder`` written by ``python -m speechbrain_mambadapter export <run> <folder>``)::

    from speechbrain_mambadapter.inference import load_adapter
    model = load_adapter(folder)   # an AdaptedWhisperASR or an AdaptedEncoderClassifier
    model.transcribe_file("clip.mp3")

Authors
 * speechbrain-mambadapter contributors 2026
"""

from speechbrain_mambadapter.inference.adapter import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    HEAD_WEIGHTS,
    HPARAMS_FILE,
    LABELS_FILE,
    MODEL_CARD,
    BaseModelMismatchError,
    attach_adapter,
    load_safetensors_module,
    merge_adapter,
    pad_waveforms,
    read_adapter_config,
    weights_sha256,
)
from speechbrain_mambadapter.inference.asr import AdaptedWhisperASR
from speechbrain_mambadapter.inference.classifier import AdaptedEncoderClassifier

INTERFACES = {"classification": AdaptedEncoderClassifier, "asr": AdaptedWhisperASR}


def load_adapter(source, savedir=None, **kwargs):
    """Load an exported adapter with the interface its task needs.

    Arguments
    ---------
    source : str or os.PathLike
        An adapter folder (``python -m speechbrain_mambadapter export``) or a hub id holding one.
    savedir : str, optional
        Where to keep files fetched from the hub.
    **kwargs
        As ``from_hparams``: ``overrides``, ``run_opts``, ``merge``...

    Returns
    -------
    AdaptedEncoderClassifier or AdaptedWhisperASR
    """
    config = read_adapter_config(source, savedir)
    return INTERFACES[config["task"]].from_hparams(source, savedir=savedir, **kwargs)


__all__ = [
    "ADAPTER_CONFIG",
    "ADAPTER_WEIGHTS",
    "HEAD_WEIGHTS",
    "HPARAMS_FILE",
    "INTERFACES",
    "LABELS_FILE",
    "MODEL_CARD",
    "AdaptedEncoderClassifier",
    "AdaptedWhisperASR",
    "BaseModelMismatchError",
    "attach_adapter",
    "load_adapter",
    "load_safetensors_module",
    "merge_adapter",
    "pad_waveforms",
    "read_adapter_config",
    "weights_sha256",
]
