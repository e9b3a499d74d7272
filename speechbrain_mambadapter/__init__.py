"""speechbrain-mambadapter: parameter-efficient transfer learning of speech and audio models."""

from speechbrain_mambadapter.bottleneck import Bottleneck
from speechbrain_mambadapter.checkpoint import PETLCheckpoint, load_petl, petl_state_dict, save_petl
from speechbrain_mambadapter.conformer_adapter import ConformerAdapter
from speechbrain_mambadapter.injection import METHODS, PLACEMENTS, inject, trainable_parameter_count
from speechbrain_mambadapter.lora import LoRA, merge_lora
from speechbrain_mambadapter.mambadapter import MambAdapter, SharedProjections
from speechbrain_mambadapter.prefix_tuning import PrefixTuning
from speechbrain_mambadapter.prompt_tuning import DeepPromptTuning

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
    "trainable_parameter_count",
]
