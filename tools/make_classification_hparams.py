#!/usr/bin/env python3
"""Write the hparams files of the four AST classification recipes from one template.

Each recipe (ESC50, UrbanSound8k, GSC, FSC) has one plain HyperPyYAML file per PETL method and
placement under ``recipes/<recipe>/hparams/``; they differ only in the dataset block and the
``inject`` block, so they are generated here to keep the 64 files consistent. Users open and
edit the YAML files directly; to change the whole family, edit this script and run::

    python tools/make_classification_hparams.py           # rewrite the files
    python tools/make_classification_hparams.py --check   # exit 1 if a file differs

``tests/integration/test_classification_recipes.py`` fails when the files and this script
disagree.

Naming: ``<method>.yaml`` is the method with the Pfeiffer placement (adapter beside the
feed-forward sub-layers, the paper's default), ``<method>_houlsby.yaml`` adds one beside
self-attention; the MambAdapter ablations and the bidirectional variant use the Pfeiffer placement.

Authors
 * speechbrain-mambadapter contributors 2026
"""

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Paper defaults per dataset (PETL_AST hparams/train.yaml and the MambAdapter paper).
DATASETS = {
    "ESC50": {
        "title": "ESC-50 environmental sound classification (50 classes, 5-fold rotation)",
        "data": "/path/to/ESC-50-master",
        "data_comment": "the unpacked ESC-50-master folder (meta/esc50.csv, audio/)",
        "fold": "1  # test fold, 1 to 5: validate on fold k-1, train on the other three",
        "output": "results/ESC50/<experiment>/fold<fold>/seed<seed>",
        "prepared": "results/ESC50/prepared/fold<fold>",
        "n_classes": 50,
        "epochs": 50,
        "batch_size": 32,
        "max_length": 500,
        "spec_augment": True,
        "extra": "",
    },
    "UrbanSound8k": {
        "title": "UrbanSound8K urban sound classification (10 classes, 10-fold)",
        "data": "/path/to/UrbanSound8K",
        "data_comment": "the unpacked UrbanSound8K folder (metadata/UrbanSound8K.csv, audio/fold1..10)",
        "fold": "1  # test fold, 1 to 10; the other nine train (minus the validation split below)",
        "output": "results/UrbanSound8k/<experiment>/fold<fold>/seed<seed>",
        "prepared": "results/UrbanSound8k/prepared/fold<fold>",
        "n_classes": 10,
        "epochs": 30,
        "batch_size": 32,
        "max_length": 400,
        "spec_augment": True,
        "extra": (
            "# Checkpoint selection uses a validation split of the nine training folds (whole recordings,\n"
            "# per class), never the test fold; see urbansound8k_prepare.py.\n"
            "valid_fraction: 0.1\n"
            "split_seed: 0\n"
        ),
    },
    "GSC": {
        "title": "Speech Commands v2 keyword spotting (35 words, official split)",
        "data": "/path/to/speech_commands_v0.02",
        "data_comment": "the unpacked Speech Commands v0.02 folder (word folders, *_list.txt)",
        "fold": "null  # official train/validation/test split, no folds",
        "output": "results/GSC/<experiment>/seed<seed>",
        "prepared": "results/GSC/prepared",
        "n_classes": 35,
        "epochs": 75,
        "batch_size": 128,
        "max_length": 100,
        "spec_augment": False,
        "extra": "",
    },
    "FSC": {
        "title": "Fluent Speech Commands intent classification (31 intents, official split)",
        "data": "/path/to/fluent_speech_commands_dataset",
        "data_comment": "the unpacked fluent_speech_commands_dataset folder (data/, wavs/)",
        "fold": "null  # official train/valid/test split, no folds",
        "output": "results/FSC/<experiment>/seed<seed>",
        "prepared": "results/FSC/prepared",
        "n_classes": 31,
        "epochs": 75,
        "batch_size": 32,
        "max_length": 400,
        "spec_augment": False,
        "extra": "",
    },
}

MAMBADAPTER = [
    ("rank", "16", "bottleneck r: W_down is 768 x r, the Mamba works on r features"),
    ("direction", "causal", "causal | inner | ext (bidirectional variants)"),
    ("d_state", "16", None),
    ("d_conv", "4", None),
    ("expand", "2", None),
    ("dropout", "!ref <adapter_dropout>", "top-level key, so that --adapter_dropout=0 works"),
    ("share_projections", "true", "one W_down/W_up for all adapters of the model"),
    ("use_mamba", "true", None),
    ("use_alpha", "true", "learnable output scale alpha"),
    ("alpha_init", "0.1", None),
]


def _mambadapter(placement="pfeiffer", **changes):
    settings = [(k, changes.pop(k, v), c) for k, v, c in MAMBADAPTER]
    if changes:
        raise ValueError(f"Unknown MambAdapter settings {sorted(changes)}")
    return {"method": "mambadapter", "placement": placement, "settings": settings}


# file stem -> title, inject call, learning rate (PETL_AST: 5e-3 adapters/LoRA/BitFit, 1e-2 prompts,
# 5e-5 full fine-tuning, 1e-3 linear probing).
CONFIGS = {
    "mambadapter": ("MambAdapter, Pfeiffer placement (FFN)", _mambadapter(), "0.005"),
    "mambadapter_houlsby": (
        "MambAdapter, Houlsby placement (attention and FFN)",
        _mambadapter("houlsby"),
        "0.005",
    ),
    "mambadapter_no_mamba": (
        "MambAdapter ablation without the Mamba block (shared projections only)",
        _mambadapter(use_mamba="false"),
        "0.005",
    ),
    "mambadapter_no_alpha": (
        "MambAdapter ablation without the learnable scale alpha",
        _mambadapter(use_alpha="false"),
        "0.005",
    ),
    "mambadapter_unshared": (
        "MambAdapter ablation with per-adapter (not shared) projections",
        _mambadapter(share_projections="false"),
        "0.005",
    ),
    "mambadapter_bidirectional": (
        "MambAdapter with a bidirectional Mamba (inner: shared in/out projections)",
        _mambadapter(direction="inner"),
        "0.005",
    ),
    "bottleneck": (
        "Bottleneck adapter, Pfeiffer placement (FFN)",
        {"method": "bottleneck", "placement": "pfeiffer", "settings": [("rank", "16", None)]},
        "0.005",
    ),
    "bottleneck_houlsby": (
        "Bottleneck adapter, Houlsby placement (attention and FFN)",
        {"method": "bottleneck", "placement": "houlsby", "settings": [("rank", "16", None)]},
        "0.005",
    ),
    "conformer": (
        "Conformer (convolution) adapter, Pfeiffer placement (FFN)",
        {
            "method": "conformer",
            "placement": "pfeiffer",
            "settings": [("rank", "12", None), ("kernel_size", "31", None)],
        },
        "0.005",
    ),
    "conformer_houlsby": (
        "Conformer (convolution) adapter, Houlsby placement (attention and FFN)",
        {
            "method": "conformer",
            "placement": "houlsby",
            "settings": [("rank", "12", None), ("kernel_size", "31", None)],
        },
        "0.005",
    ),
    "lora": (
        "LoRA on the query and value projections",
        {
            "method": "lora",
            "settings": [("rank", "12", "PETL_AST: 768 / 64"), ("alpha", "8", "scaling alpha / rank")],
        },
        "0.005",
    ),
    "bitfit": (
        "BitFit (biases of the linear and norm layers)",
        {"method": "bitfit", "settings": []},
        "0.005",
    ),
    "prompt": (
        "Deep prompt tuning (prompts at the input of every layer)",
        {"method": "prompt", "settings": [("num_tokens", "25", "PETL_AST default")]},
        "0.01",
    ),
    "prefix": (
        "Prefix tuning (learnable keys and values in every layer)",
        {"method": "prefix", "settings": [("num_tokens", "24", "PETL_AST default")]},
        "0.01",
    ),
    "linear": (
        "Linear probing (frozen AST, only the head trains)",
        {"method": "linear", "settings": []},
        "0.001",
    ),
    "full": ("Full fine-tuning (every AST parameter trains)", {"method": "full", "settings": []}, "0.00005"),
}

SPEC_AUGMENT = """\
# SpecAugment on the normalised filterbank, training only (the paper: freq 24, time 80)
spec_augment: !new:speechbrain_mambadapter.classification.SpecAugment
    freq_mask: 24
    time_mask: 80
"""

ADAPTER_DROPOUT = "adapter_dropout: 0.1  # MambAdapter: on the Mamba's output, before W_up\n"

NO_SPEC_AUGMENT = """\
# No SpecAugment for this dataset (as in the paper); PETL_AST's code masks every dataset.
# To use it, replace null by: !new:speechbrain_mambadapter.classification.SpecAugment
spec_augment: null
"""


def _inject_block(inject):
    lines = [f"    method: {inject['method']}"]
    if "placement" in inject:
        lines.append(f"    placement: {inject['placement']}")
    for key, value, comment in inject["settings"]:
        lines.append(f"    {key}: {value}" + (f"  # {comment}" if comment else ""))
    return "\n".join(lines) + "\n"


def render(recipe, stem):
    """The text of ``recipes/<recipe>/hparams/<stem>.yaml``."""
    data = DATASETS[recipe]
    title, inject, lr = CONFIGS[stem]
    rule = "# " + "#" * 98
    return f"""{rule}
# {data["title"]}
# AST + {title}
#
#   python recipes/{recipe}/train.py recipes/{recipe}/hparams/{stem}.yaml \\
#       --data_folder={data["data"]}
#
# Offline: --pretrained_source=<folder with config.json and model.safetensors of the AST>.
# Written by tools/make_classification_hparams.py (one template for all recipes and methods).
{rule}

seed: 10
__set_seed: !apply:speechbrain.utils.seed.seed_everything [!ref <seed>]
dataset: {recipe}
experiment: {stem}
fold: {data["fold"]}
output_folder: !ref {data["output"]}
save_folder: !ref <output_folder>/save
train_log: !ref <output_folder>/train_log.txt
metrics_file: !ref <output_folder>/metrics.json
confusion_matrix_file: !ref <output_folder>/confusion_matrix.png

# Data: {data["data_comment"]}
data_folder: !PLACEHOLDER
# Manifests and 16 kHz audio, shared by every method and seed
prepared_folder: !ref {data["prepared"]}
skip_prep: false
sample_rate: 16000
n_classes: {data["n_classes"]}
{data["extra"]}
# Training (AdamW betas 0.9/0.98, weight decay 0.1, cosine schedule stepped per batch)
number_of_epochs: {data["epochs"]}
batch_size: {data["batch_size"]}  # per process (GPU) under torchrun
lr: {lr}
num_workers: 4
# random: the training set is reshuffled every epoch (also under torchrun, where
# SpeechBrain's DistributedSampler reads this key); none: the manifest's order, e.g.
# to compare a 1-GPU and a 2-GPU run batch by batch.
sorting: random
step_log: null  # a path: one JSON line per training batch (loss, examples, time)
# cuda_graph: validation and test replay the AST encoder as CUDA graphs, one per batch size
# (needs --device=cuda:N; fastest with --eval_precision=bf16).
inference_mode: eager  # eager | cuda_graph
# cuda_graph: training replays the AST encoder's forward and backward as CUDA graphs, captured at
# the first batch (needs --device=cuda:N; composes with --precision=bf16); batches of another
# size, such as an epoch's last, run eagerly.
train_mode: eager  # eager | cuda_graph
{ADAPTER_DROPOUT if inject["method"] == "mambadapter" else ""}
train_dataloader_opts:
    batch_size: !ref <batch_size>
    shuffle: !apply:operator.eq [!ref <sorting>, random]
    num_workers: !ref <num_workers>
valid_dataloader_opts:
    batch_size: !ref <batch_size>
    num_workers: !ref <num_workers>
test_dataloader_opts:
    batch_size: !ref <batch_size>
    num_workers: !ref <num_workers>

# AST (128 mel bins, AudioSet normalisation in the lobe); max_length in 10 ms frames
pretrained_source: MIT/ast-finetuned-audioset-10-10-0.4593
max_length: {data["max_length"]}
num_mel_bins: 128
pooling: mean  # mean of all output tokens, the paper's default

ast: !apply:speechbrain_mambadapter.inject
    model: !new:speechbrain_mambadapter.lobes.ast.AST
        source: !ref <pretrained_source>
        save_path: !ref <save_folder>/pretrained
        freeze: true
        pooling: !ref <pooling>
        max_length: !ref <max_length>
        num_mel_bins: !ref <num_mel_bins>
        sample_rate: !ref <sample_rate>
{_inject_block(inject)}
classifier: !new:torch.nn.Linear
    in_features: !ref <ast.hidden_size>
    out_features: !ref <n_classes>

{SPEC_AUGMENT if data["spec_augment"] else NO_SPEC_AUGMENT}
modules:
    ast: !ref <ast>
    classifier: !ref <classifier>

opt_class: !name:speechbrain_mambadapter.recipe.optim.AdamW
    lr: !ref <lr>
    betas: [0.9, 0.98]
    eps: 0.000001
    weight_decay: 0.1

# total_steps (epochs x optimiser steps per epoch) is filled in by the Brain
lr_scheduler: !name:speechbrain_mambadapter.recipe.optim.PerStepLR
    lr_initial: !ref <lr>
    lr_final: 0.0
    shape: cosine

epoch_counter: !new:speechbrain.utils.epoch_loop.EpochCounter
    limit: !ref <number_of_epochs>

train_logger: !new:speechbrain.utils.train_logger.FileTrainLogger
    save_file: !ref <train_log>

# Adapter-only checkpoints: PETL weights, head, epoch counter (+ optimiser and schedule, added by
# the Brain); the latest and the best on validation accuracy are kept. AtomicCheckpointer: a run
# killed while saving resumes from the previous checkpoint.
checkpointer: !new:speechbrain_mambadapter.checkpoint.AtomicCheckpointer
    checkpoints_dir: !ref <save_folder>
    recoverables:
        petl: !new:speechbrain_mambadapter.checkpoint.PETLCheckpoint [!ref <ast>]
        classifier: !ref <classifier>
        counter: !ref <epoch_counter>
"""


def all_files():
    """``{path relative to the repository: text}`` of every generated hparams file."""
    return {
        os.path.join("recipes", recipe, "hparams", f"{stem}.yaml"): render(recipe, stem)
        for recipe in DATASETS
        for stem in CONFIGS
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only report files that differ; exit 1 if any")
    args = parser.parse_args(argv)
    stale = []
    for rel, text in all_files().items():
        path = os.path.join(ROOT, rel)
        current = open(path, encoding="utf-8").read() if os.path.isfile(path) else None
        if current == text:
            continue
        stale.append(rel)
        if not args.check:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
    if args.check and stale:
        print(
            "These hparams files differ from tools/make_classification_hparams.py: "
            + ", ".join(stale)
            + ". Run `python tools/make_classification_hparams.py` (after moving your edits into it).",
            file=sys.stderr,
        )
        return 1
    print(f"{'stale' if args.check else 'written'}: {len(stale)} of {len(all_files())} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
