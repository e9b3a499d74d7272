"""Command line: use a trained adapter, or export a finished run as a shareable adapter folder.

::

    python -m speechbrain_mambadapter export RUN_FOLDER OUT_FOLDER
    python -m speechbrain_mambadapter classify --adapter OUT_FOLDER dog.wav rain.wav ...
    python -m speechbrain_mambadapter transcribe --adapter OUT_FOLDER clips/ ...

``classify`` prints ``file<TAB>label<TAB>probability`` (``--top_k`` more pairs), ``transcribe``
prints ``file<TAB>transcript``, one line per file in the order given (folders expand to their
audio files, sorted by name). Files are read as the recipes read them (mono, resampled), sorted
by duration and run in batches of ``--batch_size`` (default: the recipe's test batch size, so
that the batches are the recipe's own when the files are its test set); a progress bar goes to
stderr. A file that cannot be read is reported on stderr and skipped, and the command then
exits with status 1.

Authors
 * speechbrain-mambadapter contributors 2026
"""

import argparse
import logging
import sys
from pathlib import Path

import soundfile as sf
from tqdm import tqdm

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".opus")


def audio_files(paths):
    """Files as given; folders expand to their audio files (``AUDIO_SUFFIXES``), sorted by name.

    Example
    -------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> for name in ("b.wav", "a.mp3", "notes.txt"):
    ...     _ = (folder / name).write_bytes(b"")
    >>> [p.name for p in audio_files([str(folder), "x.flac"])]
    ['a.mp3', 'b.wav', 'x.flac']
    """
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
        else:
            files.append(path)
    return files


def batches_by_duration(files, batch_size, max_seconds=None):
    """Group readable files into batches of similar duration; report the others.

    Arguments
    ---------
    files : list of pathlib.Path
        The audio files.
    batch_size : int
        Files per batch.
    max_seconds : float, optional
        Longer files are refused.

    Returns
    -------
    batches : list of list of int
        Indices into ``files``, by increasing duration (ties keep the given order).
    errors : dict
        ``{index: reason}`` of the files left out.
    """
    durations, errors = {}, {}
    for index, path in enumerate(files):
        try:
            durations[index] = sf.info(str(path)).duration
        except (sf.LibsndfileError, RuntimeError, OSError) as error:
            errors[index] = f"cannot be read as audio ({error})"
            continue
        if max_seconds is not None and durations[index] > max_seconds:
            errors[index] = (
                f"is {durations[index]:.1f} s long, more than the {max_seconds:.0f} s the model reads"
            )
            del durations[index]
    order = sorted(durations, key=durations.get)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)], errors


def run_batches(model, files, batch_size, predict, max_seconds=None):
    """``predict(wavs, lens)`` over ``files`` in duration-sorted batches, with a progress bar.

    Returns
    -------
    results : dict
        ``{index: prediction}``.
    errors : dict
        ``{index: reason}``.
    """
    from speechbrain_mambadapter.inference import pad_waveforms
    from speechbrain_mambadapter.recipe.dataprep import AudioFileError

    batches, errors = batches_by_duration(files, batch_size, max_seconds)
    results = {}
    with tqdm(total=len(files), unit="file", file=sys.stderr) as bar:
        bar.update(len(errors))
        for batch in batches:
            loaded = {}
            for index in batch:
                try:
                    loaded[index] = model.load_audio(files[index])
                except AudioFileError as error:
                    errors[index] = str(error)
            if loaded:
                wavs, lens = pad_waveforms(list(loaded.values()))
                results.update(zip(loaded, predict(wavs, lens)))
            bar.update(len(batch))
    return results, errors


def load_model(args):
    """The adapter of ``--adapter`` with the command line's options."""
    from speechbrain_mambadapter.inference import load_adapter

    overrides = {}
    if args.base_model is not None:
        overrides["base_model_source"] = args.base_model
    if args.skip_base_check:
        overrides["base_model_sha256"] = None
    run_opts = {
        key: value for key, value in (("device", args.device), ("precision", args.precision)) if value
    }
    return load_adapter(args.adapter, overrides=overrides, run_opts=run_opts, merge=args.merge)


def classify(args):
    """``classify``: labels and probabilities."""
    from speechbrain_mambadapter.inference import AdaptedEncoderClassifier

    model = load_model(args)
    if not isinstance(model, AdaptedEncoderClassifier):
        raise SystemExit(f"{args.adapter} is a speech recognition adapter; use `transcribe`, not `classify`.")
    top_k = max(1, min(args.top_k, len(model.hparams.label_encoder)))

    def predict(wavs, lens):
        log_probs, _, _, _ = model.classify_batch(wavs, lens)
        probs, indices = log_probs.exp().topk(top_k, dim=-1)
        return [
            "\t".join(
                f"{model.hparams.label_encoder.ind2lab[int(i)]}\t{float(p):.4f}" for p, i in zip(ps, ids)
            )
            for ps, ids in zip(probs, indices)
        ]

    return model, predict, None


def transcribe(args):
    """``transcribe``: one transcript per file."""
    from speechbrain.integrations.huggingface.whisper import CHUNK_LENGTH

    from speechbrain_mambadapter.inference import AdaptedWhisperASR

    model = load_model(args)
    if not isinstance(model, AdaptedWhisperASR):
        raise SystemExit(f"{args.adapter} is a classification adapter; use `classify`, not `transcribe`.")

    def predict(wavs, lens):
        return model.transcribe_batch(wavs, lens)[0]

    return model, predict, CHUNK_LENGTH


def export(args):
    """``export``: write the adapter folder."""
    from speechbrain_mambadapter.export import export_adapter

    out = export_adapter(
        args.run, args.out, args.checkpoint, overwrite=args.overwrite, verify=not args.no_verify
    )
    print(out)
    return 0


def parser():
    """The command line's argument parser."""
    top = argparse.ArgumentParser(
        prog="python -m speechbrain_mambadapter", description=__doc__.split("\n")[0]
    )
    commands = top.add_subparsers(dest="command", required=True)
    for name, what in (("classify", "labels with probabilities"), ("transcribe", "transcripts")):
        sub = commands.add_parser(name, help=f"print the {what} of audio files")
        sub.add_argument("files", nargs="+", help="audio files or folders of them")
        sub.add_argument("--adapter", required=True, help="an exported adapter folder (or hub id)")
        sub.add_argument("--batch_size", type=int, help="files per batch (default: the recipe's test batch)")
        sub.add_argument("--device", help="cpu, cuda:0, ... (default: a GPU if there is one)")
        sub.add_argument("--precision", choices=("fp32", "bf16", "fp16"), help="default: the run's")
        sub.add_argument("--merge", action="store_true", help="fold LoRA into the base weights")
        sub.add_argument("--base_model", help="hub id or folder of the base model, if not where it was")
        sub.add_argument(
            "--skip_base_check", action="store_true", help="load even if the base weights' hash differs"
        )
        if name == "classify":
            sub.add_argument("--top_k", type=int, default=1, help="labels printed per file")
    sub = commands.add_parser("export", help="write a finished run's adapter as a shareable folder")
    sub.add_argument("run", help="the run's output folder (hyperparams.yaml, save/)")
    sub.add_argument("out", help="the folder to write")
    sub.add_argument("--checkpoint", help="a CKPT+... folder name instead of the run's best checkpoint")
    sub.add_argument("--overwrite", action="store_true", help="replace the folder if it exists")
    sub.add_argument(
        "--no_verify", action="store_true", help="skip loading the folder once before publishing"
    )
    return top


def main(argv=None):
    """Run the command line; returns the exit status (2: the adapter or run could not be used)."""
    from speechbrain_mambadapter.export import ExportError
    from speechbrain_mambadapter.inference import BaseModelMismatchError

    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return export(args) if args.command == "export" else use(args)
    except (ExportError, BaseModelMismatchError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def use(args):
    """``classify`` or ``transcribe``: print one line per file; returns the exit status."""
    if args.batch_size is not None and args.batch_size < 1:
        raise SystemExit(f"--batch_size must be at least 1, got {args.batch_size}.")
    model, predict, max_seconds = (classify if args.command == "classify" else transcribe)(args)
    files = audio_files(args.files)
    if not files:
        raise SystemExit(f"No audio files in {args.files} (looked for {', '.join(AUDIO_SUFFIXES)}).")
    batch_size = args.batch_size or model.hparams.batch_size
    results, errors = run_batches(model, files, batch_size, predict, max_seconds)
    for index, path in enumerate(files):
        if index in results:
            print(f"{path}\t{results[index]}", flush=True)
        else:
            print(f"{path}: skipped: {errors[index]}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
