"""Parameter budgets: hand-computed counts and the paper's figures."""

import json
import math

import pytest

from speechbrain_mambadapter import params


def mambadapter_count(d_model, rank, layers, sites_per_layer, d_state=16, d_conv=4, expand=2):
    """MambAdapter's trainable parameters written out from its definition."""
    d_inner, dt_rank = expand * rank, math.ceil(rank / 16)
    shared = d_model * rank + rank + rank * d_model + d_model
    mamba = (
        rank * 2 * d_inner  # in_proj
        + d_inner * d_conv
        + d_inner  # conv1d
        + d_inner * (dt_rank + 2 * d_state)  # x_proj
        + dt_rank * d_inner
        + d_inner  # dt_proj
        + d_inner * d_state
        + d_inner  # A_log, D
        + d_inner * rank  # out_proj
    )
    return shared + layers * sites_per_layer * (mamba + 1)  # + alpha


@pytest.mark.parametrize("placement,sites", [("pfeiffer", 1), ("houlsby", 2)])
def test_mambadapter_count_matches_its_definition(placement, sites):
    tiny = dict(hidden_size=32, num_hidden_layers=2, intermediate_size=64, num_attention_heads=2)
    got = params.count("ast-base", "mambadapter", placement, {"rank": 8}, **tiny)
    assert got == mambadapter_count(32, 8, 2, sites)


def test_paper_budgets_within_ten_percent(capsys):
    rows = params.table_rows()
    compared = [r for r in rows if r["paper_millions"] is not None]
    assert len(compared) == 6
    for r in compared:
        assert abs(r["trainable"] / 1e6 - r["paper_millions"]) <= 0.1 * r["paper_millions"], r
        assert r["with_norms"] > r["trainable"]
    whisper = {r["method"]: r["trainable"] for r in rows if r["backbone"].startswith("whisper")}
    assert whisper["lora"] == 12 * 2 * 2 * 768 * 32  # rank-32 A and B on q and v of 12 layers
    # Every method is in the table, linear probing (the head only) and full fine-tuning included.
    from speechbrain_mambadapter import METHODS

    assert {r["method"] for r in rows if r["backbone"] == "ast-base"} == set(METHODS)
    ast = {r["method"]: r["trainable"] for r in rows if r["backbone"] == "ast-base"}
    assert ast["linear"] == 0 and ast["full"] > 80e6


def test_cli_prints_json_rows(capsys):
    params.main(["--json"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == len(params.PAPER_SETTINGS)
    assert set(rows[0]) == {"backbone", "method", "placement", "rank", "trainable"}
    params.main([])
    assert "| whisper-small-encoder | mambadapter | pfeiffer |" in capsys.readouterr().out


def test_unknown_backbone_is_an_error():
    with pytest.raises(ValueError, match="Unknown backbone"):
        params.build_backbone("wav2vec2")
