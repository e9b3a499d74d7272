"""The Common Voice recipe end to end: every hparams file in ``--debug`` on the ``eo`` and ``ab``
samples with the tiny Whisper, what it writes, and resuming an interrupted run.

Each run executes ``recipes/CommonVoice/train.py`` as ``__main__`` with a command line, in this
process (an interpreter per run would spend more time importing than training). Settings that
only change the cost are lowered (one batch of two, a few decoding steps, MambAdapter rank 8 on
the 64-wide tiny model); the data preparation, the YAML and the training script are the real ones.
"""

import csv
import math
import re
import runpy
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "CommonVoice"
SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "CommonVoice"
# One file per method; quickstart_*.yaml (English-only tiny.en, bundled data) has its own test,
# tests/integration/test_quickstart.py.
HPARAMS = sorted(
    path.name for path in (RECIPE / "hparams").glob("*.yaml") if not path.name.startswith("quickstart_")
)
LANGUAGES = ("eo", "ab")
# The recipe's rows in SpeechBrain's recipe-test format: their debug flags lower only the cost (one
# batch of two, a few decoding steps, MambAdapter rank 8: its pure-PyTorch scan over Whisper's 1500
# frames would dominate a CPU run at rank 104); the tiny Whisper stands for tests/tmp/tiny_whisper.
ROWS = {
    Path(row["Hparam_file"]).name: row
    for row in csv.DictReader(
        (RECIPE.parents[1] / "tests" / "recipes" / "CommonVoice.csv").open(encoding="utf-8")
    )
}


def debug_flags(hparams, language):
    """The row's flags for another language of the samples (the rows use eo)."""
    flags = ROWS[hparams]["test_debug_flags"].replace("tests/samples/CommonVoice/eo", str(SAMPLES / language))
    flags = [flag for flag in flags.split() if not flag.startswith(("--language=", "--whisper_source="))]
    return [*flags, f"--language={language}", "--device=cpu", "--debug_persistently"]


def test_every_method_has_an_hparams_file_and_a_recipe_test_row():
    assert sorted(ROWS) == HPARAMS
    assert HPARAMS == [
        "bottleneck.yaml",
        "conformer.yaml",
        "full_finetuning.yaml",
        "lora.yaml",
        "mambadapter.yaml",
    ]


def run_recipe(hparams, language, output_root, whisper_dir, *extra, monkeypatch):
    """Runs train.py with a command line; returns its output folder."""
    argv = [
        str(RECIPE / "train.py"),
        str(RECIPE / "hparams" / hparams),
        *debug_flags(hparams, language),
        f"--whisper_source={whisper_dir}",
        f"--output_root={output_root}",
        *extra,
    ]
    with monkeypatch.context() as patch:
        patch.setattr(sys, "argv", argv)
        patch.syspath_prepend(str(RECIPE))
        runpy.run_path(str(RECIPE / "train.py"), run_name="__main__")
    outputs = [path for path in Path(output_root).glob(f"*/{language}/seed*") if path.is_dir()]
    assert len(outputs) == 1, outputs
    return outputs[0]


@pytest.fixture(scope="module")
def recipe_runs(tmp_path_factory, tiny_whisper_dir):
    """Each (hparams, language) run once, one epoch, on demand."""
    runs = {}
    patch = pytest.MonkeyPatch()

    def get(hparams, language):
        if (hparams, language) not in runs:
            root = tmp_path_factory.mktemp(f"{hparams[:-5]}_{language}")
            runs[hparams, language] = run_recipe(
                hparams, language, root, tiny_whisper_dir, "--debug_epochs=1", monkeypatch=patch
            )
        return runs[hparams, language]

    yield get
    patch.undo()


def pretrained_names(whisper_dir):
    with safe_open(str(Path(whisper_dir) / "model.safetensors"), framework="pt") as f:
        return set(f.keys())


def last_checkpoint(output):
    checkpoints = sorted((output / "save").glob("CKPT+*"))
    assert checkpoints, f"no checkpoint in {output / 'save'}"
    return checkpoints[-1]


def epoch_lines(output):
    return re.findall(r"^epoch: (\d+), lr: ([0-9.e+-]+)", (output / "train_log.txt").read_text(), re.M)


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("hparams", HPARAMS)
def test_recipe_trains_decodes_and_scores(recipe_runs, hparams, language):
    output = recipe_runs(hparams, language)
    wer_file = (output / "wer_test.txt").read_text(encoding="utf-8")
    match = re.search(r"%WER ([0-9.]+) \[ (\d+) / (\d+),", wer_file)
    assert match and math.isfinite(float(match.group(1))) and int(match.group(3)) > 0
    assert "ALIGNMENTS" in wer_file
    test_ids = {
        line.split(",")[0] for line in (output.parents[2] / "prepared" / language / "test.csv").open()
    }
    aligned = re.findall(r"^(common_voice_\w+), %WER", wer_file, re.M)
    assert aligned and set(aligned) <= test_ids
    assert all(f"common_voice_{language}_" in utt for utt in aligned)
    log = (output / "train_log.txt").read_text()
    assert re.search(r"test WER: [0-9.e+]+", log) and "nan" not in log
    assert [epoch for epoch, _ in epoch_lines(output)] == ["1"]
    # The language row is counted among the trainable parameters, and logged before training.
    assert "of which 64 in the new language token row(s)" in (output / "log.txt").read_text()


@pytest.mark.parametrize("hparams", HPARAMS)
def test_checkpoint_holds_the_trained_weights_only(recipe_runs, tiny_whisper_dir, hparams):
    output = recipe_runs(hparams, "ab")
    with safe_open(str(last_checkpoint(output) / "petl.ckpt"), framework="pt") as f:
        shapes = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    language_rows = [name for name in shapes if name.endswith("embed_tokens.new_rows")]
    assert language_rows == ["model.decoder.embed_tokens.new_rows"]
    assert shapes[language_rows[0]] == (1, 64)
    pretrained = pretrained_names(tiny_whisper_dir)
    assert not any("embed_tokens" in name and name not in language_rows for name in shapes)
    assert "model.encoder.embed_positions.weight" not in shapes
    if hparams == "full_finetuning.yaml":
        assert "model.encoder.layers.1.fc2.weight" in shapes
        assert "model.decoder.layers.1.encoder_attn.q_proj.weight" in shapes
        return
    whisper_weights = [name for name in shapes if name in pretrained]
    assert all("layer_norm" in name for name in whisper_weights), whisper_weights
    added = [name for name in shapes if name not in pretrained and name not in language_rows]
    assert added and all(name.startswith("model.encoder.") for name in added)


def test_killed_run_resumes_where_it_stopped(recipe_runs, tmp_path, tiny_whisper_dir, monkeypatch):
    one_epoch = recipe_runs("mambadapter.yaml", "eo")
    root = tmp_path / "resumed"
    shutil.copytree(one_epoch.parents[2], root)
    output = run_recipe(
        "mambadapter.yaml", "eo", root, tiny_whisper_dir, "--debug_epochs=2", monkeypatch=monkeypatch
    )
    epochs = epoch_lines(output)
    # Epoch 1 is not trained again, and the schedule goes on from its position (one step per
    # epoch here), which a fresh schedule would not: it would set lr_at(0) = 1e-3 again.
    assert [epoch for epoch, _ in epochs] == ["1", "2"]
    assert float(epochs[0][1]) == pytest.approx(1e-3)
    assert float(epochs[1][1]) < 1e-3
    log = (output / "log.txt").read_text()
    assert log.count("Going into epoch 1") == 1 and log.count("Going into epoch 2") == 1
    with open(last_checkpoint(output) / "CKPT.yaml") as f:
        assert "end-of-epoch: true" in f.read()
    assert (output / "wer_test.txt").is_file()


class Killed(Exception):
    """Stands for the process being killed."""


def test_run_killed_mid_epoch_resumes_from_its_step(tmp_path, tiny_whisper_dir, monkeypatch):
    import speechbrain as sb

    save_intra_epoch_ckpt = sb.Brain._save_intra_epoch_ckpt

    def save_then_die(brain):
        save_intra_epoch_ckpt(brain)
        raise Killed

    # Two batches in the epoch, a checkpoint after the first, killed right after it.
    extra = ["--debug_epochs=1", "--debug_batches=2", "--ckpt_interval_minutes=0", "--ckpt_interval_steps=1"]
    with monkeypatch.context() as patch:
        patch.setattr(sb.Brain, "_save_intra_epoch_ckpt", save_then_die)
        with pytest.raises(Killed):
            run_recipe("bottleneck.yaml", "eo", tmp_path, tiny_whisper_dir, *extra, monkeypatch=monkeypatch)
    output = run_recipe("bottleneck.yaml", "eo", tmp_path, tiny_whisper_dir, *extra, monkeypatch=monkeypatch)
    # The rerun loads the mid-epoch checkpoint (and the best one for test), trains the second batch
    # only: the schedule has made 2 steps, not 1 + 2 (batches repeated) or 1 (schedule lost).
    assert (output / "log.txt").read_text().count("Loading a checkpoint from") == 2
    assert [epoch for epoch, _ in epoch_lines(output)] == ["1"]
    assert torch.load(last_checkpoint(output) / "lr_scheduler.ckpt")["step"] == 2


def test_decoding_prompts_the_recipe_language(tiny_whisper_dir, tmp_path):
    """Both searchers of the YAML decode after <|startoftranscript|> <|ab|> <|transcribe|>
    <|notimestamps|>, the prompt the model is trained with, call after call."""
    from hyperpyyaml import load_hyperpyyaml

    from speechbrain_mambadapter.lobes.whisper_tokens import whisper_prompt_ids
    from speechbrain_mambadapter.recipe.asr import transcribe

    overrides = {
        "language": "ab",
        "data_folder": str(SAMPLES / "ab"),
        "whisper_source": tiny_whisper_dir,
        "output_root": str(tmp_path),
        "max_decode_ratio": 0.003,
        "test_beam_size": 2,
    }
    with open(RECIPE / "hparams" / "lora.yaml", encoding="utf-8") as f:
        hparams = load_hyperpyyaml(f, overrides)
    whisper = hparams["whisper"]
    prompt = whisper_prompt_ids(whisper.tokenizer, "ab")
    assert prompt[1] == hparams["language_token_id"] == len(whisper.tokenizer) - 1
    prompts = []
    whisper.model.decoder.register_forward_pre_hook(
        lambda module, args, kwargs: prompts.append(kwargs["input_ids"].tolist()), with_kwargs=True
    )
    enc_states = whisper.forward_encoder(whisper._get_mel(torch.randn(2, 16000)))
    for searcher in (hparams["valid_search"], hparams["valid_search"], hparams["test_search"]):
        prompts.clear()
        hyps = transcribe(searcher, enc_states, torch.ones(2), hparams["language_token_id"])
        assert len(hyps) == 2
        # The first step sees the whole prompt (the KV cache holds it for the later steps).
        assert prompts[0] == [prompt] * len(prompts[0])


def test_training_targets_are_prompt_text_and_end(tiny_whisper_dir, tmp_path):
    from speechbrain.integrations.huggingface.whisper import Whisper

    from speechbrain_mambadapter.lobes.whisper_tokens import add_language_token, whisper_prompt_ids
    from speechbrain_mambadapter.recipe.asr import transcript_tokens

    whisper = Whisper(tiny_whisper_dir, save_path=str(tmp_path))
    tokenizer = whisper.tokenizer
    add_language_token(tokenizer, whisper.requires_grad_(False), "ab")
    prompt = whisper_prompt_ids(tokenizer, "ab")
    ids = transcript_tokens(tokenizer, prompt, "аԥсуа бызшәа", max_tokens=448)
    assert ids[:4] == prompt and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids[4:-1]) == " аԥсуа бызшәа"
    with pytest.raises(ValueError, match="lower max_duration"):
        transcript_tokens(tokenizer, prompt, "аԥсуа " * 100, max_tokens=448)
