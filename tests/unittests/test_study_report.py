"""Study reports from result files written by hand: Table 1/3-style tables (with deltas), the Fig. 2
curve, the Fig. 3 panels, partial studies with their missing runs; ``read_result`` for ASR runs."""

import csv
import json
import os

import pytest

from speechbrain_mambadapter import results
from speechbrain_mambadapter.study.report import ReportError, heatmap, write_report
from speechbrain_mambadapter.study.spec import load_study
from tests.unittests.fake_recipes import make_fake_recipes, write_study

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def recipes(tmp_path):
    return make_fake_recipes(tmp_path / "recipes")


def write_accuracy(run, accuracy, trainable=1000):
    os.makedirs(run.output_folder, exist_ok=True)
    metrics = {"test_accuracy": accuracy, "trainable_parameters": trainable}
    with open(os.path.join(run.output_folder, results.METRICS_FILE), "w") as f:
        json.dump(metrics, f)


def write_wer(run, wer, words=200):
    os.makedirs(run.output_folder, exist_ok=True)
    with open(os.path.join(run.output_folder, results.WER_FILE), "w") as f:
        errors = round(wer * words / 100)
        f.write(f"%WER {wer:.2f} [ {errors} / {words}, 1 ins, 2 del, 3 sub ]\n%SER 50.00 [ 1 / 2 ]\n")


def load(tmp_path, recipes, **spec):
    study = load_study(write_study(tmp_path / "s.yaml", name="s", **spec), recipes)
    return study, study.runs(tmp_path / "out")


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_ablation_table_with_deltas_and_missing_runs(recipes, tmp_path):
    points = [
        {"hparams": "adapter", "experiment": "mambadapter"},
        {"hparams": "adapter", "experiment": "no_mamba", "overrides": {"use_mamba": False}},
    ]
    tasks = {"F": {"recipe": "Folds"}, "S": {"recipe": "Split"}}
    study, runs = load(tmp_path, recipes, seeds=[1, 2], tasks=tasks, points=points,
                       report={"kind": "ablation", "reference": "mambadapter"})  # fmt: skip
    accuracy = {
        ("F", "mambadapter"): [0.90, 0.92, 0.94, 0.96],  # 2 folds x 2 seeds
        ("F", "no_mamba"): [0.80, 0.84, 0.82, 0.86],
        ("S", "mambadapter"): [0.70, 0.72],
        ("S", "no_mamba"): [0.60],  # seed 2 missing
    }
    members = {}
    for run in runs:
        members.setdefault((run.task.name, run.point.experiment), []).append(run)
    for key, values in accuracy.items():
        for run, value in zip(members[key], values):
            write_accuracy(run, value, trainable=66_000 if key[1] == "mambadapter" else 45_000)
    md, csv_path = write_report(study, runs, tmp_path / "report")
    text = open(md).read()
    assert "11 of 12 runs have a result." in text
    assert "| Method | Params (M) | F | S |" in text
    assert "| mambadapter | 0.066 | 93.00 ± 2.58 (4/4) | 71.00 ± 1.41 (2/2) |" in text
    assert "| no_mamba | 0.045 | 83.00 ± 2.58 (4/4) Δ -10.00 | 60.00 (1/2) Δ -11.00 |" in text
    assert "## Missing runs (1)\n\n- S/no_mamba: seed2" in text
    rows = read_csv(csv_path)
    assert [(r["experiment"], r["task"], r["runs"], r["expected"]) for r in rows][-1] == (
        "no_mamba",
        "S",
        "1",
        "2",
    )
    assert [r["delta_to_reference"] for r in rows[:2]] == ["", ""]  # the reference's own cells
    assert [float(r["delta_to_reference"]) for r in rows[2:]] == pytest.approx([-10.0, -11.0])


def test_scaling_curve_and_table(recipes, tmp_path):
    points = [
        {"hparams": "adapter", "grid": {"rank": [2, 8]}, "experiment": "adapter_r{rank}"},
        {"hparams": "other", "grid": {"rank": [4]}, "experiment": "other_r{rank}", "label": "Bottleneck"},
    ]
    study, runs = load(tmp_path, recipes, seeds=[1, 2], tasks={"S": {"recipe": "Split"}}, points=points,
                       report={"kind": "scaling"})  # fmt: skip
    for run in runs:
        if run.name != "S/other_r4/seed2":
            write_accuracy(
                run,
                0.5 + run.point.values["rank"] / 100 + run.seed / 100,
                trainable=run.point.values["rank"] * 1000,
            )
    md, csv_path, png = write_report(study, runs, tmp_path / "report")
    text = open(md).read()
    assert "| S | adapter | 2 | 2,000 | 53.50 ± 0.71 | 2/2 |" in text
    assert "| S | Bottleneck | 4 | 4,000 | 55.00 | 1/2 |" in text
    assert "![s](s.png)" in text and "- S/other_r4: seed2" in text
    assert open(png, "rb").read(8) == PNG
    assert [r["series"] for r in read_csv(csv_path)] == ["adapter", "adapter", "Bottleneck"]


def test_heatmaps_average_over_the_other_grid_keys(recipes, tmp_path):
    grid = {"rank": [2, 4], "sleep": [0, 1], "prepare_sleep": [0, 1]}
    tasks = {"a": {"recipe": "Split"}, "b": {"recipe": "Split"}}
    report = {"kind": "heatmaps", "panels": [["rank", "sleep"], ["rank", "prepare_sleep"]]}
    points = [{"hparams": "adapter", "grid": grid}]
    study, runs = load(tmp_path, recipes, seeds=[1], tasks=tasks, points=points, report=report)
    for run in runs:
        v = run.point.values
        if run.task.name == "a" and not (v["rank"] == 4 and v["sleep"] == 1):
            write_wer(run, 10 * v["rank"] + v["sleep"] + 0.5 * v["prepare_sleep"])
    collected = [(run, results.read_result(run.output_folder)) for run in runs]
    rows, cols, table = heatmap(collected, "a", "rank", "sleep")
    assert rows == [2, 4] and cols == [0, 1]
    assert table[(2, 1)] == (21.25, 2, 2)  # mean over prepare_sleep 0 and 1
    assert table[(4, 1)] == (None, 0, 2)
    md, csv_path, png = write_report(study, runs, tmp_path / "report")
    text = open(md).read()
    assert "**a: test WER (%) by rank (rows) and sleep (columns)**" in text
    assert "| 2 | 20.25 | 21.25 |" in text and "| 4 | 40.25 | – |" in text
    assert "| 4 | 40.00 (1/2) | 40.50 (1/2) |" in text  # rank x prepare_sleep: sleep=1 is missing
    assert "6 of 16 runs have a result." in text and "- b/adapter_rank2_sleep0_prepare_sleep0: seed1" in text
    assert open(png, "rb").read(8) == PNG
    assert len(read_csv(csv_path)) == 2 * 2 * 4  # tasks x panels x cells


@pytest.mark.parametrize(
    "report,message",
    [
        ({"kind": "pie"}, "report kind 'pie' is not one of"),
        ({"kind": "ablation", "reference": "full"}, "report reference 'full' is not one of the points"),
        ({"kind": "heatmaps", "panels": [["rank", "d_state"]]}, r"column key\], ...\] over the grid keys"),
    ],
)  # fmt: skip
def test_bad_report_settings(recipes, tmp_path, report, message):
    study, runs = load(tmp_path, recipes, tasks={"S": {"recipe": "Split"}},
                       points=[{"hparams": "adapter", "grid": {"rank": [2]}}], report=report)  # fmt: skip
    with pytest.raises(ReportError, match=message):
        write_report(study, runs, tmp_path / "report")


def test_an_empty_study_reports_every_run_missing(recipes, tmp_path):
    points = [{"hparams": "adapter", "grid": {"rank": [2, 4]}}]
    study, runs = load(
        tmp_path, recipes, tasks={"S": {"recipe": "Split"}}, points=points, report={"kind": "scaling"}
    )
    md, _, png = write_report(study, runs, tmp_path / "report")
    assert "0 of 2 runs have a result." in open(md).read() and open(png, "rb").read(8) == PNG


def test_read_result_of_an_asr_run(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "wer_test.txt").write_text("%WER 49.02 [ 70 / 143, 5 ins, 20 del, 45 sub ]\n")
    (folder / "log.txt").write_text(
        "asr - INFO - Whisper with mambadapter: 1.133M trainable parameters of 242.8M (0.47 %), ...\n"
    )
    result = results.read_result(folder)
    assert (result["metric"], result["value"], result["higher_is_better"]) == ("WER", 49.02, False)
    assert result["trainable_parameters"] == 1_133_000
    (folder / "wer_test.txt").write_text("%WER 49.0")  # cut short by a kill
    with pytest.raises(ValueError, match="probably killed while testing"):
        results.read_result(folder)
