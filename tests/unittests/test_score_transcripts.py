"""``tools/score_transcripts.py``: transcribe output scored as the Common Voice recipe scores."""

import pytest

from tools.score_transcripts import main, score

MANIFEST = "ID,duration,wav,spk_id,wrd\nu1,1.0,/a.mp3,s,la knabo trovas pomon\nu2,1.2,/b.mp3,s,saluton\n"


def test_transcripts_are_normalised_and_scored_per_word_and_character(tmp_path, capsys):
    manifest = tmp_path / "test.csv"
    manifest.write_text(MANIFEST)
    # Case and punctuation go (the recipe's normalisation); one substituted word, one deleted word.
    transcripts = {"/a.mp3": "La knabo, trovas POMOJN!", "/b.mp3": ""}
    wer, cer = score(transcripts, manifest, "eo")
    assert wer.summarize()["num_edits"] == 2 and wer.summarize()["num_scored_tokens"] == 5
    assert cer.summarize()["num_edits"] == 1 + len("saluton")  # pomon -> pomojn: one inserted letter
    (tmp_path / "out.tsv").write_text("/a.mp3\tLa knabo, trovas POMOJN!\n/b.mp3\t\n")
    main([str(tmp_path / "out.tsv"), str(manifest), "--language=eo", f"--details={tmp_path / 'wer.txt'}"])
    assert capsys.readouterr().out.startswith("WER 40.00 % [ 2 / 5 ], CER ")
    assert "u1, %WER 25.00" in (tmp_path / "wer.txt").read_text()
    with pytest.raises(ValueError, match="1 clips of .* have no transcript, e.g. /b.mp3"):
        score({"/a.mp3": "x"}, manifest, "eo")
