"""Train -> export -> use: the exported adapter folder gives the recipe's own test predictions.

A classification recipe (ESC-50 samples, tiny random AST) and the Common Voice recipe (eo samples,
tiny random Whisper with the real multilingual tokenizer, so a new language token is trained) run
in ``--debug`` in this process; their test stage's per-clip results are kept. Each run is
exported (``python -m speechbrain_mambadapter export``), then the command line classifies or
transcribes the test clips **in a fresh process**, and its output must be the recipe's: the same
label and the same probability of the true class (``exp(-loss)`` of the recipe's test record), the
same hypothesis words. Then: a wrong base model, tampered adapter keys or shapes, and another
``inject`` call are refused with messages that say so; LoRA merges without changing the output;
the model card's command rebuilds the run's overrides.
"""

import csv
import json
import math
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from speechbrain_mambadapter.__main__ import main
from speechbrain_mambadapter.export import ExportError, export_adapter
from speechbrain_mambadapter.inference import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    HEAD_WEIGHTS,
    HPARAMS_FILE,
    MODEL_CARD,
    AdaptedEncoderClassifier,
    AdaptedWhisperASR,
    BaseModelMismatchError,
    load_adapter,
    pad_waveforms,
)
from speechbrain_mambadapter.tuners.lora import LoRAParametrization

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "tests" / "samples"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: intra-op threads cost more than they give on 2 cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def no_environment_report(monkeypatch):
    """``create_experiment_directory`` shells out to ``pip freeze`` (about 1 s a run) for env.log."""
    import speechbrain.utils.logger

    monkeypatch.setattr(
        speechbrain.utils.logger, "get_environment_description", lambda: "not collected in tests\n"
    )


def run_recipe(recipe, hparams, *flags):
    """``python recipes/<recipe>/train.py recipes/<recipe>/hparams/<hparams> <flags>`` in this
    process; returns the script's globals (its Brain holds the test stage's results)."""
    train = ROOT / "recipes" / recipe / "train.py"
    saved_argv, saved_path = sys.argv, list(sys.path)
    sys.argv = [str(train), str(ROOT / "recipes" / recipe / "hparams" / hparams), *flags]
    sys.path.insert(0, str(train.parent))
    try:
        return runpy.run_path(str(train), run_name="__main__")
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path


def classification_run(tmp_path, tiny_ast_dir, hparams):
    """An ESC-50 debug run; returns (output folder, test records, test manifest rows, classes)."""
    output = tmp_path / "run"
    flags = [
        f"--data_folder={SAMPLES / 'ESC50'}",
        f"--prepared_folder={tmp_path / 'prepared'}",
        f"--output_folder={output}",
        f"--pretrained_source={tiny_ast_dir}",
        "--n_classes=3",
        "--num_workers=0",
        "--max_length=100",
        "--debug",
        "--debug_persistently",
    ]
    brain = run_recipe("ESC50", hparams, *flags)["brain"]
    with open(tmp_path / "prepared" / "test.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    return output, list(brain.records), rows, brain.hparams.classes


@pytest.fixture(scope="module")
def mamba_run(tmp_path_factory, tiny_ast_dir):
    return classification_run(tmp_path_factory.mktemp("esc50_mambadapter"), tiny_ast_dir, "mambadapter.yaml")


@pytest.fixture(scope="module")
def mamba_export(mamba_run, tmp_path_factory):
    return export_adapter(mamba_run[0], tmp_path_factory.mktemp("exports") / "esc50_mambadapter")


def cli(*args):
    """``python -m speechbrain_mambadapter <args>`` in a fresh interpreter: (status, stdout, stderr)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-m", "speechbrain_mambadapter", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )
    return done.returncode, done.stdout, done.stderr


def test_classification_export_matches_the_recipe_in_a_fresh_process(mamba_run, mamba_export):
    output, records, rows, classes = mamba_run
    assert sorted(p.name for p in mamba_export.iterdir()) == sorted(
        [ADAPTER_CONFIG, ADAPTER_WEIGHTS, HEAD_WEIGHTS, HPARAMS_FILE, MODEL_CARD, "label_encoder.txt"]
    )
    config = json.loads((mamba_export / ADAPTER_CONFIG).read_text())
    assert (config["task"], config["method"], config["placement"]) == (
        "classification",
        "mambadapter",
        "pfeiffer",
    )
    assert config["settings"]["rank"] == 16 and config["labels"] == classes
    assert len(config["base_model_sha256"]) == 64
    best = max(
        (p for p in (output / "save").glob("CKPT+*")),
        key=lambda p: float(
            next(line for line in open(p / "CKPT.yaml") if line.startswith("accuracy")).split()[1]
        ),
    )
    assert config["run"]["checkpoint"] == best.name
    assert (mamba_export / ADAPTER_WEIGHTS).read_bytes() == (best / "petl.ckpt").read_bytes()

    wav_of = {row["ID"]: row["wav"] for row in rows}
    status, stdout, stderr = cli("classify", "--adapter", mamba_export, "--top_k=3", *wav_of.values())
    assert status == 0, stderr
    printed = {}
    for line in stdout.splitlines():
        path, *pairs = line.split("\t")
        printed[path] = {pairs[i]: float(pairs[i + 1]) for i in range(0, len(pairs), 2)}
    assert list(printed) == list(wav_of.values())  # in the order given
    assert "100%" in stderr  # the progress bar
    assert len(records) == len(rows)
    for clip, predicted, target, loss in records:
        probabilities = printed[wav_of[clip]]
        assert max(probabilities, key=probabilities.get) == classes[predicted]
        assert probabilities[classes[target]] == pytest.approx(math.exp(-loss), abs=1e-4)


def test_python_interface_gives_the_recipe_log_posteriors(mamba_run, mamba_export):
    _, records, rows, classes = mamba_run
    model = AdaptedEncoderClassifier.from_hparams(mamba_export, run_opts={"device": "cpu"})
    wav_of = {row["ID"]: row["wav"] for row in rows}
    wavs, lens = pad_waveforms([model.load_audio(wav_of[clip]) for clip, *_ in records])
    log_probs, score, index, labels = model.classify_batch(wavs, lens)
    for i, (clip, predicted, target, loss) in enumerate(records):
        assert log_probs[i, target].item() == pytest.approx(-loss, abs=1e-5)
        assert index[i].item() == predicted and labels[i] == classes[predicted]
        one = model.classify_file(wav_of[clip])
        assert torch.allclose(one[0][0], log_probs[i], atol=1e-5)
    assert model.merged == 0  # nothing to merge for MambAdapter


def test_the_model_card_reports_the_run(mamba_run, mamba_export, tiny_ast_dir):
    output = mamba_run[0]
    card = (mamba_export / MODEL_CARD).read_text()
    metrics = json.loads((output / "metrics.json").read_text())
    assert f"| test_accuracy (metrics.json) | {metrics['test_accuracy']:.4g} |" in card
    assert "church_bells" in card and "| test | 3 |" in card
    command = next(line.strip() for line in card.splitlines() if line.strip().startswith("python recipes/"))
    assert command.startswith("python recipes/ESC50/train.py recipes/ESC50/hparams/mambadapter.yaml ")
    # What the run overrode; the keys derived from --output_folder (save_folder, train_log...) are
    # not overrides, nor are SpeechBrain's run options (--debug).
    assert set(command.split()[3:]) == {
        f"--data_folder={SAMPLES / 'ESC50'}",
        f"--output_folder={output}",
        f"--prepared_folder={output.parent / 'prepared'}",
        "--n_classes=3",
        "--num_workers=0",
        f"--pretrained_source={tiny_ast_dir}",
        "--max_length=100",
    }


def test_wrong_base_model_is_refused_unless_the_check_is_skipped(mamba_export, tmp_path):
    from tools.tiny_models import save_random_ast

    other = save_random_ast(tmp_path / "other_ast", seed=1, max_length=100)
    with pytest.raises(BaseModelMismatchError, match="is not the one this adapter was trained on"):
        AdaptedEncoderClassifier.from_hparams(mamba_export, overrides={"base_model_source": other})
    status = main(["classify", "--adapter", str(mamba_export), "--base_model", other, "x.wav"])
    assert status == 2
    unchecked = AdaptedEncoderClassifier.from_hparams(
        mamba_export, overrides={"base_model_source": other, "base_model_sha256": None}
    )
    assert unchecked.mods.backbone.petl_config["method"] == "mambadapter"


def tampered(export, tmp_path, name, change):
    """A copy of ``export`` whose file ``name`` (safetensors) went through ``change(tensors)``."""
    copy = tmp_path / "tampered"
    copy.mkdir()
    for path in export.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    with safe_open(str(copy / name), framework="pt") as f:
        metadata = f.metadata()
    save_file(change(load_file(str(copy / name))), str(copy / name), metadata=metadata)
    return copy


def test_tampered_adapter_keys_are_refused(mamba_export, tmp_path):
    def rename_one(tensors):
        name = sorted(tensors)[0]
        tensors["renamed." + name] = tensors.pop(name)
        return tensors

    copy = tampered(mamba_export, tmp_path, ADAPTER_WEIGHTS, rename_one)
    with pytest.raises(ValueError, match=r"do not fit this model.*Missing: \[.*unexpected: \['renamed\."):
        AdaptedEncoderClassifier.from_hparams(copy)


def test_tampered_head_is_refused(mamba_export, tmp_path):
    copy = tampered(mamba_export, tmp_path, HEAD_WEIGHTS, lambda t: {**t, "weight": t["weight"][:2]})
    with pytest.raises(ValueError, match=r"classifier.safetensors does not fit Linear.*shape mismatches"):
        AdaptedEncoderClassifier.from_hparams(copy)


def test_another_inject_call_is_refused(mamba_export, tmp_path):
    changed = tmp_path / "changed"
    changed.mkdir()
    for path in mamba_export.iterdir():
        (changed / path.name).write_bytes(path.read_bytes())
    hparams = (mamba_export / HPARAMS_FILE).read_text()
    assert "    alpha_init: 0.1\n" in hparams
    # The same keys and shapes, but not the inject call the weights were trained with.
    (changed / HPARAMS_FILE).write_text(hparams.replace("    alpha_init: 0.1\n", "    alpha_init: 0.5\n"))
    with pytest.raises(ValueError, match="holds PETL weights for inject"):
        AdaptedEncoderClassifier.from_hparams(changed)


def test_export_errors_say_what_to_do(mamba_run, mamba_export, tmp_path):
    with pytest.raises(ExportError, match="has no hyperparams.yaml"):
        export_adapter(tmp_path, tmp_path / "out")
    with pytest.raises(ExportError, match="exists; pick a new folder or pass --overwrite"):
        export_adapter(mamba_run[0], mamba_export)
    with pytest.raises(ExportError, match="has no checkpoint 'CKPT\\+nope'"):
        export_adapter(mamba_run[0], tmp_path / "out", checkpoint="CKPT+nope")
    assert main(["transcribe", "--adapter", str(tmp_path / "missing"), "x.wav"]) == 2
    with pytest.raises(SystemExit, match="is a classification adapter; use `classify`"):
        main(["transcribe", "--adapter", str(mamba_export), "x.wav"])


def test_lora_merges_into_the_base_weights_with_the_same_output(tmp_path, tiny_ast_dir):
    output, records, rows, _ = classification_run(tmp_path, tiny_ast_dir, "lora.yaml")
    export = export_adapter(output, tmp_path / "export")
    plain = load_adapter(export)
    merged = load_adapter(export, merge=True)
    assert merged.merged == 4  # query and value of the 2 layers
    assert not any(isinstance(m, LoRAParametrization) for m in merged.mods.backbone.modules())
    wavs, lens = pad_waveforms([plain.load_audio(row["wav"]) for row in rows])
    expected, got = plain.classify_batch(wavs, lens)[0], merged.classify_batch(wavs, lens)[0]
    assert torch.allclose(got, expected, atol=1e-5)
    for i, (_, _, target, loss) in enumerate(records):
        assert got[i, target].item() == pytest.approx(-loss, abs=1e-5)


def test_speech_recognition_export_matches_the_recipe_in_a_fresh_process(tmp_path, tiny_whisper_dir):
    """MambAdapter and the new <|eo|> row, decoded with the recipe's test beam search."""
    sys.path.insert(0, str(ROOT / "recipes" / "CommonVoice"))
    try:
        from common_voice_prepare import normalize_text
    finally:
        sys.path.remove(str(ROOT / "recipes" / "CommonVoice"))
    root = tmp_path / "results"
    flags = [
        "--language=eo",
        f"--data_folder={SAMPLES / 'CommonVoice' / 'eo'}",
        f"--whisper_source={tiny_whisper_dir}",
        f"--output_root={root}",
        "--debug",
        "--debug_batches=1",
        "--debug_persistently",
        "--precision=fp32",
        "--eval_precision=fp32",
        "--num_workers=0",
        "--batch_size=8",  # the whole test set in the one (debug) test batch
        "--max_decode_ratio=0.005",
        "--test_beam_size=2",
        "--rank=8",
    ]
    brain = run_recipe("CommonVoice", "mambadapter.yaml", *flags)["asr_brain"]
    hypotheses = {score["key"]: score["hyp_tokens"] for score in brain.wer_metric.scores}
    (output,) = root.glob("*/eo/seed*")
    export = export_adapter(output, tmp_path / "export")
    config = json.loads((export / ADAPTER_CONFIG).read_text())
    assert (config["task"], config["language"], config["language_token"]) == ("asr", "eo", "<|eo|>")
    with safe_open(str(export / ADAPTER_WEIGHTS), framework="pt") as f:
        assert "model.decoder.embed_tokens.new_rows" in f.keys()
    assert "S2SWhisperBeamSearcher" in (export / HPARAMS_FILE).read_text()

    with open(root / "prepared" / "eo" / "test.csv", encoding="utf-8", newline="") as f:
        wav_of = {row["ID"]: row["wav"] for row in csv.DictReader(f)}
    assert sorted(hypotheses) == sorted(wav_of)
    status, stdout, stderr = cli("transcribe", "--adapter", export, *wav_of.values())
    assert status == 0, stderr
    transcripts = dict(line.split("\t", 1) for line in stdout.splitlines())
    assert list(transcripts) == list(wav_of.values())
    for clip, words in hypotheses.items():
        assert normalize_text(transcripts[wav_of[clip]], "eo").split() == words, clip

    model = AdaptedWhisperASR.from_hparams(export)
    clip = next(iter(wav_of))
    assert isinstance(model.transcribe_file(wav_of[clip]), str)
    with pytest.raises(ValueError, match="Whisper reads at most 30 s"):
        model.transcribe_batch(torch.zeros(1, 31 * 16000))
