"""Export's reading of a run folder, the inference hparams it writes, the card's command, the CLI's batching.

Run folders here are hand-written (a resolved ``hyperparams.yaml`` as SpeechBrain writes it, a
checkpoint's ``CKPT.yaml``); nothing is trained or built. ``tests/integration/test_export.py``
exports real runs end to end.
"""

import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hyperpyyaml import load_hyperpyyaml

from speechbrain_mambadapter.__main__ import audio_files, batches_by_duration
from speechbrain_mambadapter.export.card import run_overrides, training_command
from speechbrain_mambadapter.export.hparams import inference_hparams
from speechbrain_mambadapter.export.run import ExportError, Run

PETL_CONFIG = {"method": "lora", "placement": None, "train_norms": True, "kwargs": {"alpha": 1.0, "rank": 4}}

HPARAMS_FILE = """\
seed: 1
language: !PLACEHOLDER
whisper_source: openai/whisper-small
rank: 104
experiment: !ref mambadapter_r<rank>
output_root: results
output_folder: !ref <output_root>/<experiment>/<language>
save_folder: !ref <output_folder>/save
test_beam_size: 5
"""


WHISPER = """\
whisper: &id001 !apply:speechbrain_mambadapter.inject
  model: !new:speechbrain.integrations.huggingface.whisper.Whisper
    source: /models/whisper-tiny
modules:
  whisper: *id001
"""


def write_run(folder, hparams_file, resolved):
    """A run folder whose hyperparams.yaml has SpeechBrain's header naming ``hparams_file``."""
    folder.mkdir(parents=True, exist_ok=True)
    header = f"# Generated 2026-11-29 from:\n# {hparams_file}\n# yamllint disable\n"
    (folder / "hyperparams.yaml").write_text(header + textwrap.dedent(resolved))
    return folder


def asr_hparams(language_token_id="", search_module="[*id001]"):
    return f"""\
        seed: 1
        language: eo
        sample_rate: 16000
        test_dataloader_opts:
          batch_size: 4
        whisper: &id001 !apply:speechbrain_mambadapter.inject
          model: !new:speechbrain.integrations.huggingface.whisper.Whisper
            source: /models/whisper-tiny
            save_path: results/whisper_checkpoint
            sampling_rate: 16000
          method: lora
          rank: 4
        language_token_id: {language_token_id}
        modules:
          whisper: *id001
        test_search: !new:speechbrain.decoders.seq2seq.S2SWhisperBeamSearcher
          module: {search_module}
          beam_size: 5
        """


def test_speech_recognition_run_gives_whisper_hparams_with_the_recipe_searcher(tmp_path):
    run = Run(write_run(tmp_path / "run", "x.yaml", asr_hparams()))
    assert (run.task, run.precision()) == ("asr", "fp32")
    text = inference_hparams(run, PETL_CONFIG, "ab" * 32)
    assert "whisper: !apply:speechbrain_mambadapter.inference.attach_adapter" in text
    assert "        source: !ref <base_model_source>" in text
    assert 'base_model_source: "/models/whisper-tiny"' in text and "batch_size: 4" in text
    assert "    module: [!ref <whisper>]\n    beam_size: 5" in text
    assert "language_token_id: null" in text and "placement" not in text
    assert "    rank: 4" in text and "    alpha: 1.0" in text
    assert "petl: !ref <adapter_folder>/adapter_model.safetensors" in text
    # Valid HyperPyYAML whose references resolve (objects are not built: the YAML's tags are).
    from hyperpyyaml import resolve_references

    resolved = resolve_references(text, {"adapter_folder": "/adapters/x"}).getvalue()
    assert "/adapters/x/adapter_model.safetensors" in resolved


def test_a_new_language_token_is_rebuilt_and_an_unknown_one_refused(tmp_path):
    tag = "!apply:speechbrain_mambadapter.lobes.whisper_tokens.add_language_token"
    new = Run(write_run(tmp_path / "new", "x.yaml", asr_hparams(f"{tag} {{language: eo}}")))
    assert f"language_token_id: {tag}\n    tokenizer: !ref <whisper.tokenizer>" in inference_hparams(
        new, PETL_CONFIG, None
    )
    odd = Run(write_run(tmp_path / "odd", "x.yaml", asr_hparams("50300")))
    with pytest.raises(ExportError, match="neither null nor"):
        inference_hparams(odd, PETL_CONFIG, None)
    nested = Run(write_run(tmp_path / "nested", "x.yaml", asr_hparams(search_module="[{a: 1}]")))
    with pytest.raises(ExportError, match="argument 'module' is a nested object"):
        inference_hparams(nested, PETL_CONFIG, None)


@pytest.mark.parametrize(
    "resolved, message",
    [
        ("modules:\n  encoder: 1\n", "has neither modules.whisper"),
        ("modules:\n  backbone: 1\n", "has neither modules.whisper"),
        ("modules:\n  whisper: !new:torch.nn.Linear\n    in_features: 2\n", "there is no PETL adapter"),
        (
            "modules:\n  whisper: !apply:speechbrain_mambadapter.inject\n"
            "    model: !new:torch.nn.Linear\n      in_features: 2\n",
            "not a `!new:` object with a `source`",
        ),
    ],
)
def test_runs_that_cannot_be_exported_say_why(tmp_path, resolved, message):
    with pytest.raises(ExportError, match=message):
        Run(write_run(tmp_path / "run", "x.yaml", resolved))


def test_the_best_checkpoint_is_the_one_the_test_stage_used(tmp_path):
    run = Run(write_run(tmp_path / "run", "x.yaml", asr_hparams()))
    with pytest.raises(ExportError, match="has no save/ folder"):
        run.checkpoint()
    (tmp_path / "run" / "save").mkdir()
    with pytest.raises(ExportError, match="has no checkpoint with a validation WER"):
        run.checkpoint()
    for name, wer in (("CKPT+a", 40.0), ("CKPT+b", 30.0), ("CKPT+c", 35.0)):
        folder = tmp_path / "run" / "save" / name
        folder.mkdir(parents=True)
        (folder / "CKPT.yaml").write_text(f"WER: {wer}\nend-of-epoch: true\nunixtime: 1\n")
    assert run.checkpoint().path.name == "CKPT+b"
    assert run.checkpoint("CKPT+c").meta["WER"] == 35.0


def test_the_run_precision_is_the_one_the_brain_logged(tmp_path):
    run = Run(write_run(tmp_path / "run", "x.yaml", asr_hparams() + "eval_precision: bf16\n"))
    assert run.precision() == "bf16"  # no log: the hparams
    (tmp_path / "run" / "log.txt").write_text(
        "... - Using training precision: `--precision=bf16`\n"
        "... - Using evaluation precision: `--eval_precision=fp32`\n"
    )
    assert (run.precision(), run.precision("training")) == ("fp32", "bf16")


def test_the_command_is_the_file_and_the_overrides_that_matter(tmp_path):
    hparams_file = tmp_path / "recipes" / "CommonVoice" / "hparams" / "mambadapter.yaml"
    hparams_file.parent.mkdir(parents=True)
    hparams_file.write_text(HPARAMS_FILE)
    # python train.py hparams/mambadapter.yaml --language=eo --rank=8 --output_root=/out
    resolved = load_hyperpyyaml(HPARAMS_FILE, {"language": "eo", "rank": 8, "output_root": "/out"})
    lines = "\n".join(f"{key}: {value}" for key, value in resolved.items())
    run = Run(write_run(tmp_path / "run", hparams_file, lines + "\n" + WHISPER))
    assert run_overrides(run) == {"language": "eo", "rank": 8, "output_root": "/out"}
    assert training_command(run) == (
        "python recipes/CommonVoice/train.py recipes/CommonVoice/hparams/mambadapter.yaml "
        "--language=eo --rank=8 --output_root=/out"
    )
    # An override of a !ref key itself is kept; what is derived from it is not.
    resolved = load_hyperpyyaml(HPARAMS_FILE, {"language": "eo", "experiment": "frozen"})
    lines = "\n".join(f"{key}: {value}" for key, value in resolved.items())
    run = Run(write_run(tmp_path / "run2", hparams_file, lines + "\n" + WHISPER))
    assert run_overrides(run) == {"language": "eo", "experiment": "frozen"}
    hparams_file.unlink()
    assert run_overrides(run) is None
    assert training_command(run).endswith("# overrides unknown: the hparams file is gone")


def test_files_are_batched_by_duration_and_bad_ones_reported(tmp_path):
    for name, seconds in (("a", 0.3), ("b", 0.1), ("c", 0.2), ("d", 0.1), ("long", 2.0)):
        sf.write(tmp_path / f"{name}.wav", np.zeros(int(16000 * seconds), dtype=np.float32), 16000)
    (tmp_path / "broken.wav").write_bytes(b"not audio")
    files = audio_files([tmp_path])
    assert [p.name for p in files] == ["a.wav", "b.wav", "broken.wav", "c.wav", "d.wav", "long.wav"]
    batches, errors = batches_by_duration(files, batch_size=2, max_seconds=1.0)
    # By duration, ties in the given order (b before d), as the recipes' sorted test loaders.
    assert [[files[i].name for i in batch] for batch in batches] == [["b.wav", "d.wav"], ["c.wav", "a.wav"]]
    assert sorted(files[i].name for i in errors) == ["broken.wav", "long.wav"]
    assert "cannot be read as audio" in errors[2] and "2.0 s long" in errors[5]
    assert Path(files[0]).suffix == ".wav"
