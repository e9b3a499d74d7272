"""Trainable-parameter budgets of every PETL method on AST-base and the Whisper-small encoder.

Builds the full-size backbones from their configurations (random weights on PyTorch's
``meta`` device: no download, no memory), injects each method with the paper's settings,
and prints the trainable parameters (task head excluded) beside the paper's figures::

    python -m speechbrain_mambadapter.params          # markdown table
    python -m speechbrain_mambadapter.params --json   # one JSON row per line

Two counts are given: ``trainable`` is what the method adds (``train_norms=False``), the
figure the paper reports; ``with_norms`` adds the LayerNorms that the paper's code also
unfreezes (see ``speechbrain_mambadapter.inject``), which the paper's tables leave out.

All figures with a paper counterpart are within 10 % of it (``tests/unittests/test_params.py``
checks this). The largest gap, AST MambAdapter Pfeiffer r=16 at 0.066 M against the paper's
"0.06 M", is the table's rounding: 25,360 for the shared projections (768·16 + 16 + 16·768 +
768) plus 12 × 3,361 for the per-layer Mamba blocks (d_inner 32, dt_rank 1, N 16) and alphas.
AST LoRA uses rank 12 (alpha 8), prompt tuning 25 and prefix tuning 24 tokens, as the AST recipes
(the PETL_AST defaults; the paper gives no AST figure for them).

Authors
 * speechbrain-mambadapter contributors 2026
"""

import argparse
import json

import torch

from speechbrain_mambadapter.injection import inject, trainable_parameter_count

# (backbone, method, placement, settings, the paper's figure in millions or None)
PAPER_SETTINGS = [
    ("ast-base", "mambadapter", "pfeiffer", {"rank": 16}, 0.06),
    ("ast-base", "mambadapter", "houlsby", {"rank": 16}, 0.11),
    ("ast-base", "bottleneck", "pfeiffer", {"rank": 16}, None),
    ("ast-base", "bottleneck", "houlsby", {"rank": 16}, None),
    ("ast-base", "conformer", "pfeiffer", {"rank": 12}, None),
    ("ast-base", "conformer", "houlsby", {"rank": 12}, None),
    ("ast-base", "lora", None, {"rank": 12, "alpha": 8}, None),
    ("ast-base", "bitfit", None, {}, None),
    ("ast-base", "prompt", None, {"num_tokens": 25}, None),
    ("ast-base", "prefix", None, {"num_tokens": 24}, None),
    ("ast-base", "linear", None, {}, None),
    ("ast-base", "full", None, {}, None),
    ("whisper-small-encoder", "mambadapter", "pfeiffer", {"rank": 104}, 1.1),
    ("whisper-small-encoder", "bottleneck", "pfeiffer", {"rank": 64}, 1.2),
    ("whisper-small-encoder", "conformer", "pfeiffer", {"rank": 48}, 1.4),
    ("whisper-small-encoder", "lora", None, {"rank": 32}, 1.2),
    ("whisper-small-encoder", "linear", None, {}, None),
    ("whisper-small-encoder", "full", None, {}, None),
]


def build_backbone(name, device="meta", **overrides):
    """Build a full-size backbone with random weights from its configuration.

    Arguments
    ---------
    name : str
        ``"ast-base"`` (768-d, 12 layers, 128 mel bins, 1024 frames) or
        ``"whisper-small-encoder"`` (768-d, 12 layers, 12 heads, FFN 3072, 80 mel bins).
    device : str
        ``"meta"`` allocates nothing (enough to count parameters).
    **overrides
        Configuration fields to change (e.g. smaller sizes in tests).

    Returns
    -------
    torch.nn.Module

    Example
    -------
    >>> model = build_backbone("ast-base", hidden_size=32, num_hidden_layers=2, intermediate_size=64,
    ...                        num_attention_heads=2)
    >>> model.config.hidden_size
    32
    """
    if name == "ast-base":
        from transformers import ASTConfig, ASTModel

        config = ASTConfig(**overrides)
        cls = ASTModel
    elif name == "whisper-small-encoder":
        from transformers import WhisperConfig
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        settings = dict(
            d_model=768, encoder_layers=12, encoder_attention_heads=12, encoder_ffn_dim=3072, num_mel_bins=80
        )
        settings.update(overrides)
        config = WhisperConfig(**settings)
        cls = WhisperEncoder
    else:
        raise ValueError(f"Unknown backbone {name!r}; choose 'ast-base' or 'whisper-small-encoder'.")
    with torch.device(device):
        return cls(config)


def count(backbone, method, placement, settings, train_norms=False, device="meta", **overrides):
    """Trainable parameters of ``method`` injected into a freshly built ``backbone``.

    Example
    -------
    >>> count("whisper-small-encoder", "lora", None, {"rank": 32})
    1179648
    """
    model = build_backbone(backbone, device, **overrides)
    with torch.device(device):
        inject(model, method=method, placement=placement, train_norms=train_norms, **settings)
    return trainable_parameter_count(model)


def table_rows():
    """One row per (backbone, method, placement) of ``PAPER_SETTINGS``."""
    rows = []
    for backbone, method, placement, settings, paper in PAPER_SETTINGS:
        trainable = count(backbone, method, placement, settings)
        rows.append(
            {
                "backbone": backbone,
                "method": method,
                "placement": placement,
                "rank": settings.get("rank"),
                "settings": settings,
                "trainable": trainable,
                "with_norms": count(backbone, method, placement, settings, train_norms=True),
                "paper_millions": paper,
            }
        )
    return rows


def format_markdown(rows):
    """Render rows as a markdown table with the relative difference to the paper."""
    lines = [
        "| backbone | method | placement | settings | trainable (M) | with norms (M) | paper (M) | diff |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        paper = r["paper_millions"]
        diff = "" if paper is None else f"{100 * (r['trainable'] / 1e6 - paper) / paper:+.0f} %"
        settings = ", ".join(f"{k}={v}" for k, v in r["settings"].items()) or "-"
        lines.append(
            f"| {r['backbone']} | {r['method']} | {r['placement'] or '-'} | {settings} | "
            f"{r['trainable'] / 1e6:.3f} | {r['with_norms'] / 1e6:.3f} | "
            f"{'-' if paper is None else paper} | {diff} |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Trainable parameters of the PETL methods (head excluded).")
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a markdown table")
    args = parser.parse_args(argv)
    rows = table_rows()
    if args.json:
        for r in rows:
            print(json.dumps({k: r[k] for k in ("backbone", "method", "placement", "rank", "trainable")}))
    else:
        print(format_markdown(rows))


if __name__ == "__main__":
    main()
