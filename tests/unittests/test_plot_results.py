"""benchmarks/plot_results.py: figures from the benchmarks' JSON rows, clear errors on other JSON."""

import json

import pytest

from tests.scripts import load_script

plot_results = load_script("benchmarks/plot_results.py", "plot_results_under_test")

# Shapes of the rows latency.py and train_step.py write (values from benchmarks/RESULTS.md, bf16).
LATENCY_MS = {
    ("eager", "plain"): (5.84, 12.12, 46.03),
    ("eager", "mambadapter"): (18.40, 19.14, 54.19),
    ("graph", "plain"): (2.32, 11.62, 46.03),
    ("graph", "mambadapter"): (3.30, 14.25, 53.70),
}


def latency_rows():
    return [
        dict(variant=variant, dtype="bf16", mode=mode, scenario=scenario, batch=batch, ms=ms,
             peak_activation_mib=845.0, weights_mib=336.0)
        for (mode, variant), times in LATENCY_MS.items()
        for (scenario, batch), ms in zip((("streaming", 1), ("mid", 8), ("batch", 32)), times)
    ]  # fmt: skip


def train_rows():
    return [
        dict(case="ast-base b32x500", placement="pfeiffer", mode=mode, overlap=False, method=method,
             rank=16, ms=ms, peak_mib=5000.0)
        for mode, method, ms in [("eager", "mambadapter", 70.6), ("eager", "bottleneck", 40.1),
                                 ("graphed", "mambadapter", 42.7), ("graphed", "bottleneck", 38.2)]
    ]  # fmt: skip


def test_figures_are_written(tmp_path):
    (tmp_path / "latency.json").write_text(json.dumps(latency_rows()))
    (tmp_path / "train.json").write_text(json.dumps(train_rows()))
    written = plot_results.main(
        ["--latency", str(tmp_path / "latency.json"), "--train", str(tmp_path / "train.json"),
         "--out", str(tmp_path / "figures")]
    )  # fmt: skip
    assert [p.name for p in written] == ["latency.png", "train_step.png"]
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_the_wrong_json_is_named(tmp_path):
    (tmp_path / "train.json").write_text(json.dumps(train_rows()))
    with pytest.raises(ValueError, match="lacks \\['variant', 'dtype', 'scenario'\\]"):
        plot_results.main(["--latency", str(tmp_path / "train.json"), "--out", str(tmp_path)])
    (tmp_path / "empty.json").write_text("[]")
    with pytest.raises(ValueError, match="non-empty JSON list"):
        plot_results.main(["--train", str(tmp_path / "empty.json"), "--out", str(tmp_path)])
