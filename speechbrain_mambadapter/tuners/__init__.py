"""The PETL methods, one module each, and the registry ``inject`` dispatches through.

A tuner module states, once, everything ``inject`` needs to know about its method:

* ``NAME``: the ``method=`` string;
* ``TAKES_PLACEMENT``: whether it is a parallel adapter placed by ``placement=`` (see ``parallel``);
* ``MODULES``: the ``torch.nn.Module`` classes it adds to a model, whose parameters and buffers
  are PETL state (``checkpoint.petl_state_dict``);
* ``attach(backbone, placement, train_norms, **settings)``: puts the method on a
  ``speechbrain_mambadapter.backbones.Backbone`` and returns the parameters to train. Its
  signature is the method's settings and their defaults; ``inject`` checks the user's
  arguments against it.

``METHODS`` and ``PETL_MODULES`` are derived from ``TUNERS``: adding a method is adding its
module here and to ``TUNERS``.

Example
-------
>>> sorted(METHODS)
['bitfit', 'bottleneck', 'conformer', 'full', 'linear', 'lora', 'mambadapter', 'prefix', 'prompt']
>>> METHODS["lora"].attach
<function attach at ...>
>>> LoRA in PETL_MODULES, [tuner.NAME for tuner in TUNERS if tuner.TAKES_PLACEMENT]
(True, ['mambadapter', 'bottleneck', 'conformer'])

Authors
 * speechbrain-mambadapter contributors 2026
"""

from speechbrain_mambadapter.tuners import (
    bitfit,
    bottleneck,
    conformer,
    full,
    linear,
    lora,
    mambadapter,
    prefix,
    prompt,
)
from speechbrain_mambadapter.tuners.bottleneck import Bottleneck
from speechbrain_mambadapter.tuners.conformer import ConformerAdapter
from speechbrain_mambadapter.tuners.lora import LoRA, merge_lora
from speechbrain_mambadapter.tuners.mambadapter import (
    MambAdapter,
    SharedProjections,
    merge_mambadapter,
    unmerge_mambadapter,
)
from speechbrain_mambadapter.tuners.parallel import (
    DEFAULT_PLACEMENT,
    PLACEMENTS,
    ParallelAdapter,
    set_adapter_overlap,
)
from speechbrain_mambadapter.tuners.prefix import PrefixTuning
from speechbrain_mambadapter.tuners.prompt import DeepPromptTuning

# In the order of the paper's tables; error messages list them in this order.
TUNERS = (mambadapter, bottleneck, conformer, lora, prompt, prefix, bitfit, linear, full)


def methods(tuners):
    """``{NAME: tuner module}`` of ``tuners``, refusing two tuners with one name.

    Arguments
    ---------
    tuners : sequence of module
        Tuner modules (see the module docstring).

    Returns
    -------
    dict

    Example
    -------
    >>> list(methods([lora, bitfit]))
    ['lora', 'bitfit']
    """
    found = {}
    for tuner in tuners:
        if tuner.NAME in found:
            first, second = found[tuner.NAME].__name__, tuner.__name__
            raise ValueError(f"Tuners {first} and {second} are both named {tuner.NAME!r}; rename one.")
        found[tuner.NAME] = tuner
    return found


def petl_modules(tuners):
    """The module classes ``tuners`` add to a model, as one tuple for ``isinstance``.

    Example
    -------
    >>> [cls.__name__ for cls in petl_modules([mambadapter, bitfit])]
    ['MambAdapter', 'SharedProjections']
    """
    return tuple(cls for tuner in tuners for cls in tuner.MODULES)


METHODS = methods(TUNERS)
PETL_MODULES = petl_modules(TUNERS)

__all__ = [
    "Bottleneck",
    "ConformerAdapter",
    "DEFAULT_PLACEMENT",
    "DeepPromptTuning",
    "LoRA",
    "METHODS",
    "MambAdapter",
    "PETL_MODULES",
    "PLACEMENTS",
    "ParallelAdapter",
    "PrefixTuning",
    "SharedProjections",
    "TUNERS",
    "merge_lora",
    "merge_mambadapter",
    "set_adapter_overlap",
    "unmerge_mambadapter",
]
