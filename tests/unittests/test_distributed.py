"""End of a DDP run: ``shutdown_process_group`` frees the Brain's DDP wrappers, then leaves the group.

A ``DistributedDataParallel`` wrapper freed during the interpreter's own shutdown sometimes aborts a
gloo process (``terminate called without an active exception``); freeing it first avoids that.
The race itself cannot be caught in a test; what is checked is that the wrapper is gone.
"""

import gc
import weakref

import pytest
import torch
import torch.distributed as dist

from speechbrain_mambadapter.recipe.distributed import shutdown_process_group


@pytest.fixture
def one_process_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


class Brain:
    def __init__(self, modules):
        self.modules = torch.nn.ModuleDict(modules)


@pytest.mark.parametrize("wrapped_last", [False, True])
def test_shutdown_frees_the_ddp_wrappers_and_leaves_the_group(one_process_group, wrapped_last):
    model, frozen = torch.nn.Linear(3, 2), torch.nn.Linear(2, 2)
    wrapper = torch.nn.parallel.DistributedDataParallel(model)
    wrapper(torch.randn(4, 3)).sum().backward()
    modules = [("model", wrapper), ("frozen", frozen)]
    brain = Brain(modules[::-1] if wrapped_last else modules)
    freed = weakref.ref(wrapper)
    del wrapper, modules
    gc.collect()
    assert freed() is not None  # the Brain holds it

    shutdown_process_group(brain)

    assert freed() is None
    assert brain.modules["model"] is model and brain.modules["frozen"] is frozen
    assert not dist.is_initialized()


def test_shutdown_without_a_group_or_a_brain_does_nothing():
    assert not dist.is_initialized()
    shutdown_process_group()
    brain = Brain({"model": torch.nn.Linear(2, 2)})
    shutdown_process_group(brain)
    assert isinstance(brain.modules["model"], torch.nn.Linear)
