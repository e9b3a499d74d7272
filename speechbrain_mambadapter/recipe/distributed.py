"""Helpers for recipes run under DistributedDataParallel (``torchrun``), no-ops in one process.

SpeechBrain's ``Brain`` shards the training set over the processes (ranks) but runs validation
and test on the full sets in every rank. The recipes of this package shard those too, and then
merge what each rank measured, so that the logged metrics are those of the whole set:

* :func:`eval_loader_kwargs` adds a non-shuffling ``DistributedSampler`` to a valid/test loader.
* :func:`gather_records` collects per-example records (prediction, target, loss, or a WER
  alignment) from every rank and drops the examples that ``DistributedSampler`` repeats to give
  every rank the same number.
* :func:`mean_over_ranks` averages a scalar (e.g. the training loss) over the ranks.
* :class:`StepLossLog` writes one JSON line per training batch (loss averaged over the ranks,
  examples summed over them, time), so that runs with different numbers of GPUs can be compared
  step by step and their throughput read.

Every function works with the gloo (CPU) and the NCCL (GPU) backends.

Authors
 * speechbrain-mambadapter contributors 2026
"""

import gc
import json
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler


def is_distributed():
    """True inside an initialised process group of more than one process.

    Example
    -------
    >>> is_distributed()
    False
    """
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size():
    """Number of processes (1 without a process group).

    Example
    -------
    >>> world_size()
    1
    """
    return dist.get_world_size() if is_distributed() else 1


def _reduction_device(device):
    """NCCL reduces CUDA tensors only; gloo reduces CPU ones."""
    if dist.get_backend() == "nccl":
        return torch.device(device) if torch.device(device).type == "cuda" else torch.device("cuda")
    return torch.device("cpu")


def mean_over_ranks(value, device="cpu"):
    """The mean of a scalar over the ranks (the value itself in one process).

    Every rank must call it (it is a collective operation).

    Arguments
    ---------
    value : float or torch.Tensor
        This rank's scalar.
    device : str or torch.device
        The rank's device (used by the NCCL backend).

    Returns
    -------
    float

    Example
    -------
    >>> mean_over_ranks(torch.tensor(2.5))
    2.5
    """
    # SUM then divide: ReduceOp.AVG is not implemented by gloo.
    return sum_over_ranks(value, device) / world_size()


def sum_over_ranks(value, device="cpu"):
    """The sum of a number over the ranks (the value itself in one process); a collective.

    Arguments
    ---------
    value : int, float or torch.Tensor
        This rank's number (a one-element tensor is read, detached).
    device : str or torch.device
        The rank's device (used by the NCCL backend).

    Returns
    -------
    float

    Example
    -------
    >>> sum_over_ranks(3)
    3.0
    """
    value = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
    if not is_distributed():
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=_reduction_device(device))
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.item()


SORTING_MODES = ("random", "none")


def check_sorting(sorting):
    """Checks the ``sorting`` hparam of a recipe: ``random`` (shuffled every epoch) or ``none``.

    SpeechBrain's DDP sampler reads ``hparams.sorting`` and shuffles only for ``random``; the
    recipes derive the one-process loader's ``shuffle`` from the same key, so both agree.

    Arguments
    ---------
    sorting : str
        The value to check.

    Example
    -------
    >>> check_sorting("none")
    >>> check_sorting("ascending")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
      ...
    ValueError: sorting='ascending' is not supported: use random (reshuffled every epoch) or ...
    """
    if sorting not in SORTING_MODES:
        raise ValueError(
            f"sorting={sorting!r} is not supported: use random (reshuffled every epoch) or none "
            "(the manifest's order)."
        )


def eval_loader_kwargs(dataset, loader_kwargs):
    """Loader arguments that shard a validation or test set over the ranks, in dataset order.

    Rank ``r`` of ``n`` gets examples ``r, r + n, r + 2n, ...``; the sampler repeats a few
    examples so that every rank gets as many batches (:func:`gather_records` removes them).
    Returned unchanged in one process or when the caller chose a sampler itself.

    Arguments
    ---------
    dataset : torch.utils.data.Dataset
        The validation or test set (not an iterable dataset).
    loader_kwargs : dict
        Arguments of ``speechbrain.dataio.dataloader.make_dataloader``.

    Returns
    -------
    dict

    Example
    -------
    >>> eval_loader_kwargs(list(range(10)), {"batch_size": 4})
    {'batch_size': 4}
    """
    if not is_distributed() or "sampler" in loader_kwargs or "batch_sampler" in loader_kwargs:
        return loader_kwargs
    if isinstance(dataset, torch.utils.data.IterableDataset):
        return loader_kwargs
    kwargs = dict(loader_kwargs)
    kwargs["shuffle"] = False
    kwargs["sampler"] = DistributedSampler(dataset, shuffle=False, drop_last=False)
    return kwargs


def gather_records(records, key):
    """All ranks' records, each example once, in the order of the (unsharded) dataset.

    Every rank must call it. With :func:`eval_loader_kwargs`' sampler, rank ``r`` holds examples
    ``r, r + n, ...``: interleaving the ranks' lists restores the dataset's order, and the
    examples repeated to pad the last batches are dropped by ``key``.

    Arguments
    ---------
    records : list
        This rank's records, in the order it processed them (picklable objects).
    key : callable
        Maps a record to its example's id.

    Returns
    -------
    list
        The records of every rank (the input itself in one process).

    Example
    -------
    >>> gather_records([{"id": "a", "pred": 1}], key=lambda r: r["id"])
    [{'id': 'a', 'pred': 1}]
    """
    if not is_distributed():
        return list(records)
    per_rank = [None] * dist.get_world_size()
    dist.all_gather_object(per_rank, list(records))
    merged, seen = [], set()
    longest = max(len(r) for r in per_rank)
    for position in range(longest):
        for rank_records in per_rank:
            if position < len(rank_records):
                record = rank_records[position]
                if key(record) not in seen:
                    seen.add(key(record))
                    merged.append(record)
    return merged


def unwrap(module):
    """The module inside a ``DistributedDataParallel`` or ``DataParallel`` wrapper (SpeechBrain adds
    one under torchrun); the module itself otherwise.

    Example
    -------
    >>> layer = torch.nn.Linear(2, 2)
    >>> unwrap(layer) is layer
    True
    """
    if isinstance(module, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
        return module.module
    return module


class StepLossLog:
    """Appends one JSON line per training batch to a file (written by the main process only).

    Each line holds ``epoch``, ``step`` (batches logged by this process, counted from 1),
    ``loss`` (the batch's loss averaged over the ranks), ``examples`` (summed over the ranks)
    and ``time`` (seconds since the log was created, measured after the batch's optimiser step,
    whose result SpeechBrain has already copied to the CPU, so the GPU work is done). With the
    same global batch, a run on one GPU and on two GPUs should write the same losses;
    ``examples / time`` gives the throughput.

    Every rank must call :meth:`log` (the loss is averaged with a collective operation).

    Arguments
    ---------
    path : str or pathlib.Path or None
        The JSON-lines file; None disables the log (:meth:`log` then does nothing).
    device : str or torch.device
        The rank's device (used by the NCCL backend).

    Example
    -------
    >>> path = getfixture("tmp_path") / "steps.jsonl"
    >>> log = StepLossLog(path)
    >>> log.log(epoch=1, loss=torch.tensor(0.5), examples=8)
    >>> sorted(json.loads(path.read_text())) == ["epoch", "examples", "loss", "step", "time"]
    True
    """

    def __init__(self, path, device="cpu"):
        self.path = None if path is None else Path(path)
        self.device = device
        self.step = 0
        self.start = time.perf_counter()
        if self.path is not None and _is_main():
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, epoch, loss, examples):
        """Record one training batch (call it on every rank).

        Arguments
        ---------
        epoch : int
            The current epoch.
        loss : float or torch.Tensor
            This rank's loss on the batch.
        examples : int
            This rank's number of examples in the batch.
        """
        if self.path is None:
            return
        self.step += 1
        mean_loss = mean_over_ranks(loss, self.device)
        total = sum_over_ranks(examples, self.device)
        if not _is_main():
            return
        record = {
            "epoch": epoch,
            "step": self.step,
            "loss": mean_loss,
            "examples": int(total),
            "time": round(time.perf_counter() - self.start, 6),
        }
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def _is_main():
    return not is_distributed() or dist.get_rank() == 0


def shutdown_process_group(brain=None):
    """Leaves the process group at the end of a ``torchrun`` recipe (no-op without one).

    Without it PyTorch warns at exit that ``destroy_process_group()`` was not called. With a
    ``brain``, its ``DistributedDataParallel`` wrappers are first replaced by the modules they
    wrap and freed: a wrapper still alive when Python exits is freed during the interpreter's
    shutdown, and a gloo process then sometimes aborts ("terminate called without an active
    exception", exit code -6; one run in five to eight on a loaded 2-core machine,
    ``tools/ddp_exit_race.py``).

    Arguments
    ---------
    brain : speechbrain.core.Brain, optional
        The recipe's Brain; its ``modules`` are unwrapped in place.

    Example
    -------
    >>> class Brain:
    ...     modules = torch.nn.ModuleDict({"model": torch.nn.Linear(2, 2)})
    >>> shutdown_process_group(Brain())
    """
    if brain is not None:
        for name in list(brain.modules):  # no loop variable left holding a wrapper
            brain.modules[name] = unwrap(brain.modules[name])
        gc.collect()  # the wrappers' last references may sit in reference cycles
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
