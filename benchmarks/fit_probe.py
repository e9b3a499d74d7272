#!/usr/bin/env python3
"""Overfitting probe: how fast each PETL variant fits a fixed handful of real clips (CPU, seeded).

Why does MambAdapter fit the Common Voice training data so much worse than Bottleneck, Conformer
or LoRA adapters of the same size? This probe takes a fixed small set of real clips (Czech from
``.czech/b/cs``, or the quick start's Esperanto), computes Whisper's log-mel features as the
recipe's lobe does (``speechbrain_mambadapter.lobes.whisper_asr.Whisper``: 30 s, each clip
clamped at its own maximum), injects one PETL variant with the package's own ``inject`` and
trains it, and only it (with the LayerNorms the recipe trains), with teacher-forced cross-entropy
through the frozen decoder and the recipe's optimiser (``recipe.optim.AdamW``, weight decay 0.01,
gradients clipped at 1.0). It logs the training loss of every step and, every ``--eval_every``
steps, the loss of the whole probe set with dropout off, then prints a table (steps x variants)
and writes JSON::

    python benchmarks/fit_probe.py --variants bottleneck,mambadapter,mambadapter_alpha1 \\
        --steps 150 --out fit_probe.json
    python benchmarks/fit_probe.py --list                        # the variants
    python benchmarks/fit_probe.py --variants mambadapter --steps 30 --instrument 0,1,10,30

``--instrument`` records, at the given steps of every variant run: the gradient norm of each
parameter group, the update/weight ratio of the optimiser step, the share of each group's
elements whose Adam second moment is below ``eps`` (where Adam stops normalising the gradient),
each adapter's ``alpha``, and the RMS of each adapter's output and of its bottleneck code
relative to the feed-forward output it is added to.

To keep a run to minutes on one CPU core, the encoder sees only the first ``--frames`` of its
1500 frames (``--frames 1500``: all of them, as the recipe). Cropping runs Whisper's own
encoder (convolutions, positions, layers with their adapter hooks, final LayerNorm) on the first
frames of the padded 30 s features, so a clip of up to ``2 * frames / 100`` seconds is whole.
The recipe trains in bf16 on the GPU; the probe runs in fp32. Only one thread is used.

Variants (``VARIANTS``) are overrides of the recipe's ``hparams/<method>.yaml`` settings, the
MambAdapter ones with the paper's gain-0.02 initialisation of the Mamba (``mamba_init="paper"``,
the recipes' default when the probe was written); ``mambadapter_mamba_default_init`` keeps the
Mamba block's own initialisation (as mamba-ssm; the recipes' default now), and ``norms_only``
trains the LayerNorms alone (the MambAdapter injected, its parameters frozen): the floor a
MambAdapter whose adapters do not move would sit on.

Authors
 * speechbrain-mambadapter contributors 2026
"""

import argparse
import csv
import functools
import json
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CZECH = ROOT / ".czech" / "b" / "cs"
QUICKSTART_EO = ROOT / "recipes" / "CommonVoice" / "quickstart_data" / "eo"

HPARAMS = ROOT / "recipes" / "CommonVoice" / "hparams"
RANK = 64  # benchmarks/czech_whisper.py's: about 0.2 M trainable parameters in tiny.en's encoder
# The files' required keys, which the probe does not use
PLACEHOLDERS = {"language": "cs", "data_folder": "unused"}
# inject's arguments and the hparams keys they come from, per method
METHOD_KEYS = {
    "mambadapter": {
        "placement": "placement", "direction": "direction", "d_state": "d_state", "d_conv": "d_conv",
        "expand": "expand", "dropout": "adapter_dropout", "share_projections": "share_projections",
        "use_mamba": "use_mamba", "use_alpha": "use_alpha", "alpha_init": "alpha_init",
        "mamba_init": "mamba_init", "train_norms": "train_norms",
    },
    "bottleneck": {"placement": "placement", "train_norms": "train_norms"},
}  # fmt: skip


def recipe_settings(method):
    """``inject``'s arguments as ``recipes/CommonVoice/hparams/<method>.yaml`` has them, at ``RANK``."""
    from speechbrain_mambadapter.recipe.hparams import peek_hparams

    keys = METHOD_KEYS[method]
    values = peek_hparams(str(HPARAMS / f"{method}.yaml"), PLACEHOLDERS, list(keys.values()))
    return dict(method=method, rank=RANK, **{arg: values[key] for arg, key in keys.items()})


@functools.cache
def recipe_optimiser():
    """The recipe's learning rate, weight decay and gradient-norm clip (``mambadapter.yaml``)."""
    from speechbrain_mambadapter.recipe.hparams import peek_hparams

    keys = ["lr", "weight_decay", "max_grad_norm"]
    return peek_hparams(str(HPARAMS / "mambadapter.yaml"), PLACEHOLDERS, keys)


ADAM_EPS = 1e-8  # recipe.optim.AdamW's default


# The diagnosis ran with the paper's initialisation of the Mamba, the recipes' default then; the
# ``*_mamba_default_init`` variants use the block's own (the default since).
MAMBADAPTER = dict(recipe_settings("mambadapter"), mamba_init="paper")


def _mamba(**overrides):
    return dict(MAMBADAPTER, **overrides)


# name -> (inject arguments, probe options): lr (None: --lr), eps (None: Adam's 1e-8),
# freeze_adapters.
VARIANTS = {
    "bottleneck": (recipe_settings("bottleneck"), {}),
    "mambadapter": (_mamba(), {}),
    "mambadapter_alpha1": (_mamba(alpha_init=1.0), {}),
    "mambadapter_no_alpha": (_mamba(use_alpha=False), {}),
    "mambadapter_not_shared": (_mamba(share_projections=False), {}),
    "mambadapter_no_dropout": (_mamba(dropout=0.0), {}),
    "mambadapter_no_mamba": (_mamba(use_mamba=False), {}),
    "mambadapter_lr5e-3": (_mamba(), {"lr": 5e-3}),
    "mambadapter_eps1e-16": (_mamba(), {"eps": 1e-16}),
    "mambadapter_mamba_default_init": (_mamba(mamba_init="mamba"), {}),
    "mambadapter_mamba_default_init_alpha1": (_mamba(mamba_init="mamba", alpha_init=1.0), {}),
    "mambadapter_mamba_default_init_not_shared": (_mamba(mamba_init="mamba", share_projections=False), {}),
    "norms_only": (_mamba(), {"freeze_adapters": True}),
}
DEFAULT_VARIANTS = (
    "bottleneck",
    "mambadapter",
    "mambadapter_alpha1",
    "mambadapter_no_alpha",
    "mambadapter_not_shared",
    "mambadapter_no_dropout",
    "mambadapter_no_mamba",
    "mambadapter_lr5e-3",
)


# --------------------------------------------------------------------------------------- data
def load_clips(data_folder, n_clips, min_seconds=2.0, max_seconds=4.0, language="cs"):
    """The first ``n_clips`` clips of ``train.tsv`` (file order) lasting ``[min_seconds, max_seconds]``.

    Returns
    -------
    list of dict
        ``id``, ``wav`` (16 kHz float32 tensor), ``text`` (normalised as the recipe does).
    """
    import soundfile as sf

    from speechbrain_mambadapter.recipe.dataprep import load_mono

    sys.path.insert(0, str(ROOT / "recipes" / "CommonVoice"))
    from common_voice_prepare import normalize_text

    folder = Path(data_folder)
    clips = []
    with open(folder / "train.tsv", encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            path = folder / "clips" / row["path"]
            if not path.is_file():
                continue
            duration = sf.info(str(path)).duration
            text = normalize_text(row["sentence"], language)
            if not (min_seconds <= duration <= max_seconds) or not text:
                continue
            clips.append({"id": row["path"], "wav": load_mono(str(path)), "text": text})
            if len(clips) == n_clips:
                break
    if not clips:
        raise ValueError(f"No clip of {min_seconds}-{max_seconds} s in {folder / 'train.tsv'}.")
    return clips


def mel_features(whisper, wavs, frames):
    """Whisper's log-mel features ``[N, 80, 2 * frames]`` as the recipe's lobe computes them."""
    import torch

    length = max(w.shape[0] for w in wavs)
    batch = torch.stack([torch.nn.functional.pad(w, (0, length - w.shape[0])) for w in wavs])
    with torch.no_grad():
        mel = whisper._get_mel(batch)  # padded to 30 s, each clip clamped at its own maximum
    return mel[..., : 2 * frames].contiguous()


def token_tensors(tokenizer, texts):
    """Teacher-forcing inputs and targets, ``prompt + " text" + <|endoftext|>`` (``recipe.asr``);
    targets padded with -100."""
    import torch

    from speechbrain_mambadapter.recipe.asr import transcript_tokens

    prompt = list(tokenizer.prefix_tokens)
    seqs = [transcript_tokens(tokenizer, prompt, text) for text in texts]
    width = max(len(s) for s in seqs) - 1
    bos = torch.full((len(seqs), width), tokenizer.eos_token_id, dtype=torch.long)
    eos = torch.full((len(seqs), width), -100, dtype=torch.long)
    for i, s in enumerate(seqs):
        bos[i, : len(s) - 1] = torch.tensor(s[:-1])
        eos[i, : len(s) - 1] = torch.tensor(s[1:])
    return bos, eos


# -------------------------------------------------------------------------------------- model
def build_model(source, settings, freeze_adapters=False, seed=0, save_path=None):
    """The recipe's Whisper lobe with one PETL method injected (``speechbrain_mambadapter.inject``).

    Returns
    -------
    (whisper, trainable parameters)
    """
    import tempfile

    import torch

    from speechbrain_mambadapter import inject
    from speechbrain_mambadapter.lobes.whisper_asr import Whisper

    save_path = save_path or tempfile.mkdtemp(prefix="fit_probe_")
    whisper = Whisper(source=str(source), save_path=str(save_path), sampling_rate=16000)
    torch.manual_seed(seed)
    whisper = inject(whisper, **settings)
    if freeze_adapters:
        petl = [m for m in whisper.modules() if type(m).__name__ in ("MambAdapter", "SharedProjections")]
        for module in petl:
            module.requires_grad_(False)
    trainable = [p for p in whisper.parameters() if p.requires_grad]
    return whisper, trainable


def encode(whisper, mel):
    """Whisper's encoder on ``mel`` ``[B, 80, 2 T]``; fewer than 3000 frames run its own modules
    on the first ``T`` positions (the adapter hooks fire as in the full forward)."""
    import torch.nn.functional as F

    encoder = whisper.model.encoder
    if mel.shape[-1] == encoder.config.max_source_positions * 2:
        return whisper.forward_encoder(mel)
    x = F.gelu(encoder.conv1(mel))
    x = F.gelu(encoder.conv2(x)).permute(0, 2, 1)
    x = x + encoder.embed_positions.weight[: x.shape[1]]
    for layer in encoder.layers:
        x = layer(x, None)
        x = x[0] if isinstance(x, tuple) else x
    return encoder.layer_norm(x)


def batch_loss(whisper, mel, bos, eos):
    """Token-averaged cross-entropy of the teacher-forced frozen decoder (the recipe's NLL)."""
    import torch.nn.functional as F

    logits, _, _ = whisper.forward_decoder(encode(whisper, mel), bos, use_cache=False)
    return F.cross_entropy(logits.transpose(1, 2), eos, ignore_index=-100)


# -------------------------------------------------------------------------------- diagnostics
def parameter_group(name):
    """A short group name for a trainable parameter of an injected Whisper."""
    if "norm" in name and "petl" not in name:
        return "layernorms"
    if "petl_shared_projections" in name or "own_projections" in name:
        return "W_down" if ".down." in name else ("W_up.bias" if name.endswith("bias") else "W_up.weight")
    if name.endswith(".alpha"):
        return "alpha"
    if ".mamba." in name:
        part = name.split(".mamba.")[1].split(".")[0]
        return f"mamba.{part}" if part not in ("A_log", "D") else "mamba.A_log/D"
    if "petl_" in name:  # bottleneck / conformer adapters
        return "adapter." + name.split("adapter.")[1].rsplit(".", 1)[0]
    return "other"


def _group_norms(named, values):
    out = {}
    for (name, _), value in zip(named, values):
        if value is None:
            continue
        group = parameter_group(name)
        out[group] = out.get(group, 0.0) + float(value.double().pow(2).sum())
    return {k: math.sqrt(v) for k, v in out.items()}


def adam_below_eps(optimizer, named, eps):
    """Per group: share of elements whose bias-corrected ``sqrt(v)`` is below Adam's ``eps`` (there
    the update is ``lr * m / eps``, not ``lr * sign``-like: a gradient that small hardly moves)."""
    counts = {}
    beta2 = optimizer.param_groups[0]["betas"][1]
    for name, p in named:
        state = optimizer.state.get(p)
        if not state:
            continue
        step = float(state["step"])
        v_hat = state["exp_avg_sq"] / (1 - beta2**step)
        below, total = counts.get(parameter_group(name), (0, 0))
        counts[parameter_group(name)] = (below + int((v_hat.sqrt() < eps).sum()), total + v_hat.numel())
    return {k: b / t for k, (b, t) in counts.items()}


def adapter_scales(whisper, mel):
    """Per encoder layer: RMS of the FFN output, of the adapter's output and of its bottleneck code,
    at the current weights, dropout off (``mel``: one batch)."""
    import torch
    import torch.nn.functional as F

    layers = whisper.model.encoder.layers
    inputs = {}
    handles = [
        layer.fc1.register_forward_pre_hook(lambda m, a, i=i: inputs.__setitem__(i, a[0].detach()))
        for i, layer in enumerate(layers)
    ]
    was_training = whisper.training
    whisper.eval()
    try:
        with torch.no_grad():
            encode(whisper, mel)
            out = []
            for i, layer in enumerate(layers):
                x = inputs[i]
                # F.linear, not fc1/fc2: those modules carry the adapter's hooks.
                hidden = layer.activation_fn(F.linear(x, layer.fc1.weight, layer.fc1.bias))
                ffn = F.linear(hidden, layer.fc2.weight, layer.fc2.bias)
                adapter = getattr(layer, "petl_ffn_adapter", None)
                row = {"layer": i, "input_rms": _rms(x), "ffn_rms": _rms(ffn)}
                if adapter is not None:
                    code = adapter.encode(x)
                    delta = adapter.decode(code)
                    row.update(code_rms=_rms(code), adapter_rms=_rms(delta))
                    row["adapter_over_ffn"] = row["adapter_rms"] / max(row["ffn_rms"], 1e-30)
                    alpha = getattr(adapter, "alpha", None)
                    if alpha is not None:
                        row["alpha"] = float(alpha)
                out.append(row)
    finally:
        for h in handles:
            h.remove()
        whisper.train(was_training)
    return out


def _rms(t):
    return float(t.double().pow(2).mean().sqrt())


# ------------------------------------------------------------------------------------ training
def train_variant(
    whisper,
    trainable,
    mel,
    bos,
    eos,
    steps,
    batch_size=4,
    lr=1e-3,
    eps=ADAM_EPS,
    seed=0,
    eval_every=25,
    instrument_steps=(),
    log=print,
):
    """Train ``trainable`` for ``steps`` AdamW steps on ``(mel, bos, eos)``; return the record.

    The recipe's optimiser (``recipe.optim.AdamW``, weight decay 0.01, no decay on Mamba's
    ``A_log``/``D``), gradients clipped at norm 1.0 as SpeechBrain's Brain does, constant ``lr``.
    Batches are drawn in a seeded random order, epoch after epoch, from the fixed set.
    """
    import torch

    from speechbrain_mambadapter.recipe.optim import AdamW

    named = [(n, p) for n, p in whisper.named_parameters() if p.requires_grad]
    recipe = recipe_optimiser()
    optimizer = AdamW(trainable, lr=lr, eps=eps, weight_decay=recipe["weight_decay"])
    generator = torch.Generator().manual_seed(seed)
    n = mel.shape[0]

    def full_loss():
        whisper.eval()
        with torch.no_grad():
            total, tokens = 0.0, 0
            for start in range(0, n, batch_size):
                idx = slice(start, start + batch_size)
                count = int((eos[idx] != -100).sum())
                total += float(batch_loss(whisper, mel[idx], bos[idx], eos[idx])) * count
                tokens += count
        whisper.train()
        return total / tokens

    record = {"train_loss": [], "eval_loss": {}, "instrument": {}, "seconds": None}
    if instrument_steps:
        record["scales_init"] = adapter_scales(whisper, mel[:batch_size])
    order = []
    whisper.train()
    record["eval_loss"][0] = full_loss()
    start = time.time()
    for step in range(1, steps + 1):
        if not order:
            order = torch.randperm(n, generator=generator).tolist()
        idx, order = order[:batch_size], order[batch_size:]
        loss = batch_loss(whisper, mel[idx], bos[idx], eos[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        instrument = (step - 1) in instrument_steps
        if instrument:
            grads = _group_norms(named, [p.grad for _, p in named])
            before = [p.detach().clone() for _, p in named]
        torch.nn.utils.clip_grad_norm_(trainable, recipe["max_grad_norm"])
        optimizer.step()
        record["train_loss"].append(loss.item())
        if instrument:
            updates = _group_norms(named, [p.detach() - b for (_, p), b in zip(named, before)])
            weights = _group_norms(named, before)
            record["instrument"][step - 1] = {
                "grad_norm": grads,
                "update_norm": updates,
                "weight_norm_before": weights,
                "update_over_weight": {
                    k: (updates[k] / weights[k] if weights.get(k, 0.0) > 0 else None) for k in updates
                },
                "adam_sqrt_v_below_eps": adam_below_eps(optimizer, named, eps),
                "scales_after_step": adapter_scales(whisper, mel[:batch_size]),
            }
        if step % eval_every == 0 or step == steps:
            record["eval_loss"][step] = full_loss()
            log(
                f"  step {step:4d}  train {loss.item():.3f}  probe-set {record['eval_loss'][step]:.3f}  "
                f"({time.time() - start:.0f} s)"
            )
    record["seconds"] = time.time() - start
    return record


def run_variant(name, source, clips_data, args, log=print):
    """Build, instrument and train one variant; return its JSON record."""
    import torch

    settings, options = VARIANTS[name]
    torch.manual_seed(args.seed)
    whisper, trainable = build_model(
        source,
        settings,
        freeze_adapters=options.get("freeze_adapters", False),
        seed=args.seed,
        save_path=args.save_path,
    )
    mel = mel_features(whisper, [c["wav"] for c in clips_data], args.frames)
    bos, eos = token_tensors(whisper.tokenizer, [c["text"] for c in clips_data])
    lr = options.get("lr") or args.lr or recipe_optimiser()["lr"]
    eps = options.get("eps") or args.eps
    count = sum(p.numel() for p in trainable)
    adapter_count = sum(p.numel() for n, p in whisper.named_parameters() if p.requires_grad and "petl" in n)
    log(f"== {name}: {count:,} trainable ({adapter_count:,} in adapters), lr {lr:g}, eps {eps:g}")
    record = train_variant(
        whisper,
        trainable,
        mel,
        bos,
        eos,
        args.steps,
        batch_size=args.batch_size,
        lr=lr,
        eps=eps,
        seed=args.seed,
        eval_every=args.eval_every,
        instrument_steps=set(args.instrument),
        log=log,
    )
    record.update(
        variant=name,
        settings=settings,
        options=options,
        lr=lr,
        eps=eps,
        trainable=count,
        adapter_trainable=adapter_count,
    )
    return record


def table(records, steps):
    """Markdown table: probe-set loss (dropout off) at ``steps`` for each variant."""
    lines = ["| variant | " + " | ".join(f"step {s}" for s in steps) + " | mean train loss, last 10 |"]
    lines.append("|---" * (len(steps) + 2) + "|")
    for r in records:
        cells = [f"{r['eval_loss'][s]:.3f}" if s in r["eval_loss"] else "" for s in steps]
        tail = r["train_loss"][-10:]
        lines.append(f"| {r['variant']} | " + " | ".join(cells) + f" | {sum(tail) / len(tail):.3f} |")
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help="comma-separated; see --list")
    parser.add_argument("--list", action="store_true", help="print the variants and exit")
    parser.add_argument("--data_folder", default=None, help=f"Common Voice layout (default {DEFAULT_CZECH})")
    parser.add_argument("--language", default=None, help="text normalisation (default: cs, or eo)")
    parser.add_argument("--whisper_source", default=None, help="HF folder (default: real tiny.en)")
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--min_seconds", type=float, default=2.0)
    parser.add_argument("--max_seconds", type=float, default=4.0)
    parser.add_argument("--frames", type=int, default=200, help="encoder frames kept (1500: the recipe's)")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=None, help="default: the recipe's")
    parser.add_argument("--eps", type=float, default=ADAM_EPS)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--eval_every", type=int, default=25)
    parser.add_argument("--instrument", default="", help="steps (0-based) to instrument, e.g. 0,1,10,50")
    parser.add_argument("--save_path", default=None)
    parser.add_argument("--out", default=None, help="JSON file to write")
    args = parser.parse_args(argv)
    args.instrument = [int(s) for s in args.instrument.split(",") if s.strip()]
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.list:
        for name, (settings, options) in VARIANTS.items():
            print(f"{name:40s} {settings} {options}")
        return None
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"Unknown variant(s) {unknown}; see --list.")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(ROOT))
    from speechbrain_mambadapter import compat

    compat.quiet_speechbrain_whisper_deprecations()
    if args.whisper_source:
        source = Path(args.whisper_source)
    else:
        from tools.ctranslate2_whisper import pretrained_whisper

        source = pretrained_whisper("tiny.en")
    data_folder = Path(args.data_folder) if args.data_folder else DEFAULT_CZECH
    if not args.data_folder and not (data_folder / "train.tsv").is_file():
        data_folder = QUICKSTART_EO
    language = args.language or ("eo" if data_folder == QUICKSTART_EO else "cs")
    clips_data = load_clips(data_folder, args.clips, args.min_seconds, args.max_seconds, language)
    seconds = sum(c["wav"].shape[0] for c in clips_data) / 16000
    print(
        f"{len(clips_data)} clips from {data_folder} ({seconds:.1f} s), "
        f"encoder frames {args.frames}, batch {args.batch_size}, {args.steps} steps, seed {args.seed}"
    )
    records = []
    for name in names:
        records.append(run_variant(name, source, clips_data, args))
        if args.out:
            _write(args, records, data_folder, clips_data, source)
    steps = sorted({s for r in records for s in r["eval_loss"]})
    print(table(records, steps))
    return records


def _write(args, records, data_folder, clips_data, source):
    out = {
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "args": {k: v for k, v in vars(args).items()},
        "data_folder": str(data_folder),
        "clips": [c["id"] for c in clips_data],
        "whisper_source": str(source),
        "torch_threads": __import__("torch").get_num_threads(),
        "records": records,
    }
    Path(args.out).write_text(json.dumps(out, indent=1, default=str) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
