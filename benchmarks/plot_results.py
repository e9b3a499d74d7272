#!/usr/bin/env python3
"""Figures of the GPU benchmarks: inference latency (paper Table 4) and training steps.

Reads the JSON that ``benchmarks/latency.py --json`` and ``benchmarks/train_step.py --json``
write and draws, with matplotlib:

* ``latency.png``: per dtype and mode, the time of each variant in each scenario (log scale,
  with the paper's plain-encoder H100 latency and the issue's target, half of it, marked) and its
  overhead over the plain encoder of the same run, dtype and mode (target x1.05 marked);
* ``train_step.png``: per case, the step time of each method in each mode / stream setting, and
  its ratio to the Bottleneck adapter in the same setting (target x1.15 marked).

Usage::

    python benchmarks/plot_results.py --latency latency.json --train train_step.json --out figures/

Authors
 * speechbrain-mambadapter contributors 2026
"""

import argparse
import json
from pathlib import Path

SCENARIOS = ("streaming", "mid", "batch")
# Paper (arXiv 2606.15638), Table 4, plain Whisper-small encoder on an H100, ms.
PAPER_PLAIN_MS = {"streaming": 13.03, "mid": 28.58, "batch": 100.66}
LATENCY_KEYS = ("variant", "dtype", "mode", "scenario", "ms")
TRAIN_KEYS = ("case", "placement", "method", "ms")


def _load_rows(path, keys):
    rows = json.loads(Path(path).read_text())
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"{path}: expected a non-empty JSON list of rows.")
    for row in rows:
        missing = [k for k in keys if k not in row]
        if missing:
            raise ValueError(
                f"{path}: a row lacks {missing}; is it the JSON of the right benchmark? Row: {row}"
            )
    return rows


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _unique(values):
    return list(dict.fromkeys(values))


def plot_latency(rows, path):
    """Latency and overhead per (dtype, mode), one bar per variant and scenario; returns ``path``."""
    plt = _pyplot()
    panels = _unique((r["dtype"], r["mode"]) for r in rows)
    variants = _unique(r["variant"] for r in rows)
    fig, axes = plt.subplots(2, len(panels), figsize=(4.2 * len(panels), 7.5), squeeze=False)
    width = 0.8 / len(variants)
    for col, (dtype, mode) in enumerate(panels):
        sel = {
            (r["variant"], r["scenario"]): r["ms"] for r in rows if (r["dtype"], r["mode"]) == (dtype, mode)
        }
        scenarios = [s for s in SCENARIOS if any(key[1] == s for key in sel)]
        top, bottom = axes[0][col], axes[1][col]
        for i, variant in enumerate(variants):
            xs = [j + (i - (len(variants) - 1) / 2) * width for j in range(len(scenarios))]
            ms = [sel.get((variant, s), float("nan")) for s in scenarios]
            top.bar(xs, ms, width, label=variant, color=f"C{i}")
            if variant != "plain":  # the plain encoder is the reference (1.0)
                plain = [sel.get(("plain", s), float("nan")) for s in scenarios]
                bottom.bar(xs, [m / p for m, p in zip(ms, plain)], width, label=variant, color=f"C{i}")
        for j, scenario in enumerate(scenarios):
            top.plot([j - 0.45, j + 0.45], [PAPER_PLAIN_MS[scenario]] * 2, "k--", lw=1)
            top.plot([j - 0.45, j + 0.45], [PAPER_PLAIN_MS[scenario] / 2] * 2, "r:", lw=1.2)
        top.set_yscale("log")
        top.set_title(f"{dtype}, {mode}", fontsize=10)
        top.set_ylabel("ms per forward (median)")
        bottom.axhline(1.05, color="r", ls=":", lw=1.2)
        bottom.axhline(1.0, color="k", lw=0.8)
        bottom.set_ylabel("time / plain encoder")
        for ax in (top, bottom):
            ax.set_xticks(range(len(scenarios)), scenarios)
    axes[0][0].plot([], [], "k--", lw=1, label="paper, plain (H100)")
    axes[0][0].plot([], [], "r:", lw=1.2, label="target: half of it")
    axes[0][0].legend(fontsize=7)
    axes[1][0].plot([], [], "r:", lw=1.2, label="target x1.05")
    axes[1][0].legend(fontsize=7)
    fig.suptitle("Whisper-small encoder inference (batch 1 / 8 / 32, 30 s of mel frames)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _setting(row):
    parts = [row.get("mode", "eager")]
    if row.get("overlap"):
        parts.append("overlap")
    return " + ".join(parts)


def _step_times(rows, settings, method):
    """``method``'s step time in each setting (NaN where it was not measured)."""
    return [
        next((r["ms"] for r in rows if r["method"] == method and _setting(r) == s), float("nan"))
        for s in settings
    ]


def _offsets(i, n, groups):
    """x positions of bar ``i`` of ``n`` in each of ``groups`` groups."""
    return [j + (i - (n - 1) / 2) * 0.8 / n for j in range(groups)]


def plot_train_steps(rows, path):
    """Step time and ratio to the Bottleneck adapter per case and setting; returns ``path``."""
    plt = _pyplot()
    cases = _unique((r["case"], r["placement"]) for r in rows)
    fig, axes = plt.subplots(2, len(cases), figsize=(max(6.5, 4.5 * len(cases)), 7.0), squeeze=False)
    for col, (case, placement) in enumerate(cases):
        sel = [r for r in rows if (r["case"], r["placement"]) == (case, placement)]
        settings = _unique(_setting(r) for r in sel)
        methods = _unique(r["method"] for r in sel)
        compared = [m for m in methods if m != "bottleneck"]
        top, bottom = axes[0][col], axes[1][col]

        n = len(settings)
        reference = _step_times(sel, settings, "bottleneck")
        for i, method in enumerate(methods):
            ms = _step_times(sel, settings, method)
            top.bar(_offsets(i, len(methods), n), ms, 0.8 / len(methods), label=method, color=f"C{i}")
        for i, method in enumerate(compared):
            ratios = [m / b for m, b in zip(_step_times(sel, settings, method), reference)]
            width = 0.8 / max(2, len(compared))
            color = f"C{methods.index(method)}"
            bottom.bar(_offsets(i, len(compared), n), ratios, width, label=method, color=color)
        bottom.axhline(1.15, color="r", ls=":", lw=1.2, label="target x1.15")
        bottom.axhline(1.0, color="k", lw=0.8)
        top.set_title(f"{case}, {placement}", fontsize=10)
        top.set_ylabel("ms per step (median)")
        bottom.set_ylabel("time / Bottleneck, same setting")
        for ax in (top, bottom):
            ax.set_xticks(range(len(settings)), settings, fontsize=8)
        top.legend(fontsize=7)
        bottom.legend(fontsize=7)
    fig.suptitle("Training step (forward + backward + AdamW, bf16)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latency", type=Path, help="JSON of benchmarks/latency.py --json")
    parser.add_argument("--train", type=Path, help="JSON of benchmarks/train_step.py --json")
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for the PNG files")
    args = parser.parse_args(argv)
    if args.latency is None and args.train is None:
        parser.error("give --latency and/or --train")
    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    if args.latency is not None:
        written.append(plot_latency(_load_rows(args.latency, LATENCY_KEYS), args.out / "latency.png"))
    if args.train is not None:
        written.append(plot_train_steps(_load_rows(args.train, TRAIN_KEYS), args.out / "train_step.png"))
    for path in written:
        print(f"wrote {path}")
    return written


if __name__ == "__main__":
    main()
