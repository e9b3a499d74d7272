"""speechbrain-mambadapter: parameter-efficient transfer learning of speech and audio models.

The public entry points: ``inject`` (put a PETL method into a backbone; the methods are the
modules of ``speechbrain_mambadapter.tuners``), the adapter-only checkpoints, and the method
modules' classes.
"""

from speechbrain_mambadapter.checkpoint import PETLCheckpoint, load_petl, petl_state_dict, save_petl
from speechbrain_mambadapter.injection import inject, trainable_parameter_count
from speechbrain_mambadapter.tuners import (
    METHODS,
    PLACEMENTS,
    Bottleneck,
    ConformerAdapter,
    DeepPromptTuning,
    LoRA,
    MambAdapter,
    PrefixTuning,
    SharedProjections,
    merge_lora,
    set_adapter_overlap,
)

__all__ = [
    "Bottleneck",
    "ConformerAdapter",
    "DeepPromptTuning",
    "LoRA",
    "METHODS",
    "MambAdapter",
    "PETLCheckpoint",
    "PLACEMENTS",
    "PrefixTuning",
    "SharedProjections",
    "inject",
    "load_petl",
    "merge_lora",
    "petl_state_dict",
    "save_petl",
    "set_adapter_overlap",
    "trainable_parameter_count",
]
