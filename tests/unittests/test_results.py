"""``speechbrain_mambadapter.results``: finding runs, statistics, the markdown table, errors."""

import json
import statistics

import pytest

from speechbrain_mambadapter import results


def write_run(root, dataset, experiment, fold, seed, accuracy, trainable=1000, **extra):
    folder = root / dataset / experiment / f"fold{fold}" / f"seed{seed}"
    folder.mkdir(parents=True)
    metrics = {
        "dataset": dataset,
        "experiment": experiment,
        "fold": fold,
        "seed": seed,
        "test_accuracy": accuracy,
        "trainable_parameters": trainable,
        **extra,
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder / "metrics.json"


@pytest.fixture
def results_tree(tmp_path):
    """ESC50 mambadapter: 2 folds x 2 seeds; GSC mambadapter: 1 run; ESC50 lora: 3 seeds of fold 1."""
    accuracies = {(1, 10): 0.90, (1, 11): 0.92, (2, 10): 0.86, (2, 11): 0.88}
    for (fold, seed), acc in accuracies.items():
        write_run(tmp_path, "ESC50", "mambadapter", fold, seed, acc, trainable=66_000)
    write_run(tmp_path, "GSC", "mambadapter", None, 10, 0.975, trainable=66_000)
    for seed, acc in [(10, 0.80), (11, 0.84), (12, 0.85)]:
        write_run(tmp_path, "ESC50", "lora", 1, seed, acc, trainable=221_000)
    return tmp_path, accuracies


def test_aggregate_over_folds_and_seeds(results_tree):
    root, accuracies = results_tree
    table = results.aggregate(results.load_runs([root]))
    cells = {(c["experiment"], c["dataset"]): c for c in table}
    assert set(cells) == {("mambadapter", "ESC50"), ("mambadapter", "GSC"), ("lora", "ESC50")}

    esc = cells["mambadapter", "ESC50"]
    assert esc["runs"] == 4 and esc["folds"] == [1, 2] and esc["seeds"] == [10, 11]
    assert esc["accuracy_mean"] == pytest.approx(statistics.mean(accuracies.values()))
    assert esc["accuracy_std"] == pytest.approx(statistics.stdev(accuracies.values()))
    assert esc["trainable_parameters"] == [66_000]

    gsc = cells["mambadapter", "GSC"]
    assert gsc["runs"] == 1 and gsc["accuracy_std"] is None and gsc["folds"] == [None]
    # Paper order: lora before mambadapter, ESC-50 before GSC.
    assert [(c["experiment"], c["dataset"]) for c in table] == [
        ("lora", "ESC50"),
        ("mambadapter", "ESC50"),
        ("mambadapter", "GSC"),
    ]


def test_markdown_table(results_tree):
    root, _ = results_tree
    lines = results.format_markdown(results.aggregate(results.load_runs([root]))).splitlines()
    assert lines[0] == "| Method | Params (M) | ESC-50 | GSC |"
    assert lines[2] == "| lora | 0.221 | 83.00 ± 2.65 (3) | – |"
    assert lines[3] == "| mambadapter | 0.066 | 89.00 ± 2.58 (4) | 97.50 (1) |"


def test_each_folder_and_file_counted_once(results_tree):
    root, _ = results_tree
    runs = results.load_runs([root, root / "ESC50", root / "GSC" / "mambadapter" / "foldNone" / "seed10"])
    assert len(runs) == 8


def test_duplicate_run_is_an_error_naming_both_files(results_tree, tmp_path_factory):
    root, _ = results_tree
    copy = write_run(tmp_path_factory.mktemp("copy"), "ESC50", "lora", 1, 10, 0.5)
    with pytest.raises(ValueError, match=r"are both dataset=ESC50 experiment=lora fold=1 seed=10") as error:
        results.load_runs([root, copy])
    assert str(copy) in str(error.value)


def test_errors_are_actionable(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        results.load_runs([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="No metrics.json under .* no run there has finished"):
        results.load_runs([tmp_path / "empty"])
    bad = tmp_path / "bad" / "metrics.json"
    bad.parent.mkdir()
    bad.write_text(json.dumps({"dataset": "GSC", "test_accuracy": 0.5}))
    with pytest.raises(ValueError, match=r"lacks \['experiment', 'fold', 'seed', 'trainable_parameters'\]"):
        results.load_runs([bad])
    assert results.main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_main_prints_markdown_and_json(results_tree, capsys):
    root, _ = results_tree
    assert results.main([str(root)]) == 0
    assert "| mambadapter | 0.066 |" in capsys.readouterr().out
    assert results.main([str(root), "--json"]) == 0
    cells = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [c["runs"] for c in cells] == [3, 4, 1]
