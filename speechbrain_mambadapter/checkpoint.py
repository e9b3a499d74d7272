"""Adapter-only checkpoints: just the PETL weights, as safetensors, and through SpeechBrain's Checkpointer.

The PETL state of a model after ``inject`` is every trainable parameter plus the buffers of
the modules that hold them and of the PETL modules (e.g. the Conformer adapter's BatchNorm
running statistics). ``save_petl`` writes it with the ``inject`` call in the file's metadata;
``load_petl`` loads it into a freshly built backbone on which the same ``inject`` call was
made, and says what differs when it does not fit. ``PETLCheckpoint`` makes the same state a
recoverable of ``speechbrain.utils.checkpoints.Checkpointer``, so a recipe saves megabytes of
adapter weights instead of the frozen backbone, and resumes from them. ``AtomicCheckpointer`` is
that Checkpointer with checkpoints that appear only once completely written, so a run killed
while saving resumes from the previous checkpoint.

Authors
 * speechbrain-mambadapter contributors 2026
"""

import json
import logging
import os
import pathlib
import shutil

import torch
from safetensors.torch import load_file, save_file
from speechbrain.utils.checkpoints import (
    CKPT_PREFIX,
    METAFNAME,
    Checkpointer,
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
)
from speechbrain.utils.distributed import MainProcessContext, ddp_barrier, if_main_process

_CONFIG_KEY = "petl_config"


def _config(model):
    config = getattr(model, "petl_config", None)
    if config is None:
        raise ValueError(
            f"{type(model).__name__} has no PETL method: "
            "call speechbrain_mambadapter.inject(model, ...) first."
        )
    return config


def petl_state_dict(model):
    """The PETL weights of an injected model: ``{name: tensor}``, detached.

    Arguments
    ---------
    model : torch.nn.Module
        A model returned by ``inject``.

    Returns
    -------
    dict

    Example
    -------
    >>> from speechbrain.lobes.models.transformer.Transformer import TransformerEncoder
    >>> from speechbrain_mambadapter import inject
    >>> encoder = inject(TransformerEncoder(1, 2, 16, d_model=8), method="conformer", rank=2, kernel_size=3)
    >>> sorted(k for k in petl_state_dict(encoder) if "running_mean" in k)
    ['layers.0.petl_ffn_adapter.batch_norm.running_mean']
    """
    from speechbrain_mambadapter.tuners import PETL_MODULES

    _config(model)
    state = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    for prefix, module in model.named_modules():
        owns_trainable = any(p.requires_grad for p in module.parameters(recurse=False))
        if isinstance(module, PETL_MODULES) or owns_trainable:
            recurse = isinstance(module, PETL_MODULES)
            for name, buf in module.named_buffers(prefix=prefix, recurse=recurse):
                leaf = name.rsplit(".", 1)[-1]
                owner = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
                if leaf not in owner._non_persistent_buffers_set:
                    state[name] = buf.detach()
    return state


def save_petl(model, path):
    """Write the PETL weights of ``model`` to a safetensors file.

    Arguments
    ---------
    model : torch.nn.Module
        A model returned by ``inject``.
    path : str or os.PathLike
        Output file.

    Example
    -------
    >>> import tempfile, os
    >>> from speechbrain.lobes.models.transformer.Transformer import TransformerEncoder
    >>> from speechbrain_mambadapter import inject
    >>> def build():
    ...     return inject(TransformerEncoder(1, 2, 16, d_model=8), method="lora", rank=2)
    >>> path = os.path.join(tempfile.mkdtemp(), "petl.safetensors")
    >>> save_petl(build(), path)
    >>> sorted(load_petl(build(), path))[:1]
    ['layers.0.self_att.att.parametrizations.in_proj_weight.0.loras.0.down']
    """
    state = {name: t.contiguous().clone() for name, t in petl_state_dict(model).items()}
    save_file(state, str(path), metadata={_CONFIG_KEY: json.dumps(_config(model), sort_keys=True)})


def load_petl(model, path, strict_config=True):
    """Load PETL weights written by ``save_petl`` (or ``PETLCheckpoint``) into an injected model.

    Arguments
    ---------
    model : torch.nn.Module
        A freshly built backbone on which the same ``inject`` call was made.
    path : str or os.PathLike
        A safetensors file from ``save_petl``.
    strict_config : bool
        Refuse a file written for a different ``inject`` call (method, placement, arguments).

    Returns
    -------
    list of str
        The names that were loaded.

    Raises
    ------
    ValueError
        When the file and the model do not match; the message lists what differs.
    """
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    saved_config = json.loads(metadata[_CONFIG_KEY]) if _CONFIG_KEY in metadata else None
    config = json.loads(json.dumps(_config(model), sort_keys=True))
    if strict_config and saved_config != config:
        raise ValueError(
            f"{path} holds PETL weights for inject({saved_config}) but the model was injected with "
            f"inject({config}); call inject() with the same method, placement and arguments. In a recipe, "
            "this is a run resumed with other method settings: give the new settings their own output "
            "folder with --experiment=<name>."
        )
    return _load_state(model, load_file(str(path)), str(path))


def _load_state(model, saved, source):
    expected = petl_state_dict(model)
    missing = sorted(set(expected) - set(saved))
    unexpected = sorted(set(saved) - set(expected))
    shapes = [
        f"{name}: file {tuple(saved[name].shape)} vs model {tuple(expected[name].shape)}"
        for name in sorted(set(saved) & set(expected))
        if saved[name].shape != expected[name].shape
    ]
    if missing or unexpected or shapes:
        raise ValueError(
            f"PETL weights in {source} do not fit this model (was it built with the same config and "
            f"inject() arguments?). Missing: {missing[:5]}{' ...' if len(missing) > 5 else ''}; "
            f"unexpected: {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}; "
            f"shape mismatches: {shapes[:5]}."
        )
    with torch.no_grad():
        for name, tensor in expected.items():
            tensor.copy_(saved[name].to(device=tensor.device, dtype=tensor.dtype))
    return sorted(expected)


@register_checkpoint_hooks
class PETLCheckpoint:
    """A Checkpointer recoverable holding only the PETL weights of ``model``.

    Arguments
    ---------
    model : torch.nn.Module
        A model returned by ``inject``.

    Example
    -------
    >>> import tempfile
    >>> from speechbrain.lobes.models.transformer.Transformer import TransformerEncoder
    >>> from speechbrain.utils.checkpoints import Checkpointer
    >>> from speechbrain_mambadapter import inject
    >>> encoder = inject(TransformerEncoder(1, 2, 16, d_model=8), method="bottleneck", rank=2)
    >>> folder = tempfile.mkdtemp()
    >>> _ = Checkpointer(folder, {"petl": PETLCheckpoint(encoder)}).save_checkpoint()
    >>> fresh = inject(TransformerEncoder(1, 2, 16, d_model=8), method="bottleneck", rank=2)
    >>> Checkpointer(folder, {"petl": PETLCheckpoint(fresh)}).recover_if_possible() is not None
    True
    """

    def __init__(self, model):
        _config(model)
        self.model = model

    @mark_as_saver
    def save(self, path):
        """Write the PETL weights (safetensors) to ``path``."""
        save_petl(self.model, path)

    @mark_as_loader
    def load(self, path, end_of_epoch=False):
        """Load the PETL weights from ``path``."""
        load_petl(self.model, path)


class AtomicCheckpointer(Checkpointer):
    """SpeechBrain's ``Checkpointer`` whose checkpoints become visible only once complete.

    SpeechBrain 1.1 writes a checkpoint's ``CKPT.yaml`` first and its parameter files after it,
    so a run killed while saving leaves a folder that recovery takes for a checkpoint and then
    fails to load (a missing or truncated ``.ckpt``). Here the metadata is written to
    ``CKPT.yaml.part`` and renamed to ``CKPT.yaml`` (atomically) after every file is written;
    the folder of an interrupted save has no ``CKPT.yaml``, so recovery ignores it, and the next
    save deletes it. Same arguments as ``speechbrain.utils.checkpoints.Checkpointer``.

    Example
    -------
    >>> import pathlib, tempfile
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> layer = torch.nn.Linear(2, 2)
    >>> saved = AtomicCheckpointer(folder, {"layer": layer}).save_checkpoint()
    >>> sorted(p.name for p in saved.path.iterdir())
    ['CKPT.yaml', 'layer.ckpt']
    >>> killed = folder / "CKPT+killed"  # what a save interrupted after its metadata leaves
    >>> killed.mkdir(); _ = (killed / "CKPT.yaml.part").write_text("end-of-epoch: true")
    >>> AtomicCheckpointer(folder, {"layer": layer}).recover_if_possible().path == saved.path
    True
    """

    def _save_checkpoint_metafile(self, fpath, meta_to_include={}, end_of_epoch=True):  # noqa: B006
        return super()._save_checkpoint_metafile(_partial(fpath), meta_to_include, end_of_epoch)

    def save_checkpoint(self, meta={}, end_of_epoch=True, name=None, verbosity=logging.INFO):  # noqa: B006
        """Save as ``Checkpointer.save_checkpoint``, then publish the checkpoint's ``CKPT.yaml``."""
        if if_main_process() and self.checkpoints_dir.is_dir():
            for stale in self.checkpoints_dir.glob(f"{CKPT_PREFIX}+*/{METAFNAME}.part"):
                if not (stale.parent / METAFNAME).exists():
                    shutil.rmtree(stale.parent, ignore_errors=True)
        checkpoint = super().save_checkpoint(meta, end_of_epoch, name, verbosity)
        if checkpoint is not None:  # the main process wrote the metadata
            os.replace(_partial(checkpoint.path / METAFNAME), checkpoint.path / METAFNAME)
        # Under DDP every process must see the published checkpoint before any of them lists
        # checkpoints again (``save_and_keep_only`` deletes old ones with one collective call
        # per checkpoint: processes that listed different sets would wait for each other forever).
        ddp_barrier()
        return checkpoint

    def delete_checkpoints(self, **kwargs):
        """As ``Checkpointer.delete_checkpoints``, but decided and done by the main process alone.

        SpeechBrain lists the checkpoints on every process and deletes each one with a collective
        call; processes that list the folder at different moments (seen with two processes on
        one machine) then make different numbers of calls and wait for each other forever.
        """
        ddp_barrier()
        if if_main_process():
            with MainProcessContext():  # SpeechBrain's collectives are no-ops inside
                super().delete_checkpoints(**kwargs)
        ddp_barrier()


def _partial(path):
    return pathlib.Path(f"{path}.part")
