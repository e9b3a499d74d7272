"""Study files: expansion into runs and commands, the checks that stop a bad study before it
starts, and the paper's study files (``studies/*.yaml``) against the real recipes."""

import os
from pathlib import Path

import pytest

from speechbrain_mambadapter.study.spec import StudyError, load_study, study_of_hparams
from tests.unittests.fake_recipes import make_fake_recipes, write_study

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def recipes(tmp_path):
    return make_fake_recipes(tmp_path / "recipes")


def test_grid_x_tasks_x_folds_x_seeds_seed_major(recipes, tmp_path):
    path = write_study(
        tmp_path / "s.yaml",
        name="s",
        seeds=[1, 2],
        tasks={"F": {"recipe": "Folds"}, "S": {"recipe": "Split", "overrides": {"sleep": 0.5}}},
        overrides={"use_mamba": False},
        points=[
            {"hparams": "adapter", "grid": {"rank": [2, 8]}, "experiment": "a_r{rank}"},
            {"hparams": "other", "overrides": {"use_mamba": True, "rank": 3}, "tasks": ["S"]},
        ],
    )
    study = load_study(path, recipes)
    runs = study.runs(tmp_path / "out")
    # Seed-major: all of seed 1 (F: 2 folds x 2 points; S: 3 points) before seed 2.
    assert [run.name for run in runs[:7]] == [
        "F/a_r2/fold1/seed1",
        "F/a_r8/fold1/seed1",
        "F/a_r2/fold2/seed1",
        "F/a_r8/fold2/seed1",
        "S/a_r2/seed1",
        "S/a_r8/seed1",
        "S/other/seed1",
    ]
    assert len(runs) == 14 and {r.seed for r in runs[7:]} == {2}
    other = runs[6]
    assert other.point.values == {} and other.point.label == "other"
    # Study, then task, then point overrides; then what the study sets itself.
    assert other.overrides == {
        "use_mamba": True,
        "sleep": 0.5,
        "rank": 3,
        "seed": 1,
        "experiment": "other",
        "output_root": str(tmp_path / "out" / "S"),
        "output_folder": str(tmp_path / "out" / "S" / "other" / "seed1"),
    }
    command = runs[2].command("/data", ["--device=cuda:0", "--rank=5"], python="py")
    assert command[:3] == ["py", os.path.join(recipes, "Folds", "train.py"), runs[2].hparams_file]
    assert command[3:] == [
        "--use_mamba=False",
        "--seed=1",
        "--experiment=a_r2",
        "--fold=2",
        f"--output_root={tmp_path / 'out' / 'F'}",
        f"--output_folder={tmp_path / 'out' / 'F' / 'a_r2' / 'fold2' / 'seed1'}",
        "--data_folder=/data",
        "--device=cuda:0",
        "--rank=5",  # a --key=value after `--` replaces the run's own --rank=2
    ]
    assert runs[2].group == ("F", 2) and runs[4].group == ("S", None)


def test_one_preparation_run_per_task_and_fold(recipes, tmp_path):
    path = write_study(
        tmp_path / "s.yaml",
        seeds=[1, 2],
        tasks={"F": {"recipe": "Folds", "folds": [2]}, "S": {"recipe": "Split"}},
        points=[{"hparams": "adapter", "grid": {"rank": [2, 8]}}],
    )
    study = load_study(path, recipes)
    assert study.name == "s" and study.seeds == (1, 2)
    runs = study.runs(tmp_path / "out")
    prepares = study.prepare_runs(runs, tmp_path / "out")
    assert [p.name for p in prepares] == ["F/_prepare/fold2", "S/_prepare"]
    command = prepares[0].command("/data")
    assert command[-1] == "--debug" and "--experiment=_prepare" in command
    assert f"--output_folder={tmp_path / 'out' / 'F' / '_prepare' / 'fold2'}" in command
    # The preparation shares the output root (hence the prepared folder) of its group's runs.
    assert f"--output_root={tmp_path / 'out' / 'F'}" in command
    assert runs[0].point.experiment == "adapter_rank2"  # the default name lists the grid


FOLDS = {"F": {"recipe": "Folds"}}
ADAPTER = [{"hparams": "adapter"}]


@pytest.mark.parametrize(
    "spec,message",
    [
        ({"tasks": FOLDS, "points": ADAPTER, "seed": [1]}, r"unknown key\(s\) \['seed'\]"),
        ({"tasks": {"F": {"recipe": "Nope"}}, "points": ADAPTER}, "Nope has no train.py"),
        ({"tasks": FOLDS, "points": [{"hparams": "missing"}]}, r"needs .*missing.yaml, which does not exist"),
        (
            {"tasks": FOLDS, "points": [{"hparams": "adapter", "overrides": {"d_conv": 8}}]},
            r"overrides \['d_conv'\], which .*adapter.yaml does not have",
        ),
        (
            {"tasks": FOLDS, "points": [{"hparams": "adapter", "grid": {"rank": [2, 4]}, "experiment": "a"}]},
            "names none of the grid keys",
        ),
        ({"tasks": FOLDS, "points": ADAPTER * 2}, "two points are both named 'adapter'"),
        ({"tasks": {"S": {"recipe": "Split", "folds": [1]}}, "points": ADAPTER}, "has no folds"),
        ({"tasks": {"F": {"recipe": "Folds", "folds": [3]}}, "points": ADAPTER}, r"folds \[3\] do not exist"),
        (
            {"tasks": FOLDS, "points": [{"hparams": "adapter", "overrides": {"seed": 3}}]},
            r"sets \['seed'\], which the study sets itself",
        ),
        ({"tasks": FOLDS, "points": []}, "has no points"),
    ],
)
def test_bad_studies_stop_with_a_sentence(recipes, tmp_path, spec, message):
    with pytest.raises(StudyError, match=message):
        load_study(write_study(tmp_path / "bad.yaml", **spec), recipes)


def test_study_of_one_hparams_file(tmp_path):
    study = study_of_hparams(ROOT / "recipes" / "ESC50" / "hparams" / "lora.yaml", seeds=[3])
    runs = study.runs(tmp_path)
    assert [r.name for r in runs] == [f"ESC50/lora/fold{f}/seed3" for f in range(1, 6)]
    assert runs[0].output_folder == str(tmp_path / "ESC50" / "lora" / "fold1" / "seed3")
    with pytest.raises(StudyError, match="official split and has no folds"):
        study_of_hparams(ROOT / "recipes" / "GSC" / "hparams" / "lora.yaml", folds=[1])
    with pytest.raises(StudyError, match="not in a recipe's hparams/ folder"):
        study_of_hparams(tmp_path / "lora.yaml")


# The paper's studies: runs per study, and what each point of each must be.
PAPER_STUDIES = {
    "fig2_scaling": 70,  # (5 + 4 + 5 ranks) x 5 seeds on GSC
    "fig3_mamba_hparams": 150,  # 5 x 5 x 3 Mamba settings x 2 languages x 1 seed
    "table1": 1105,  # 13 hparams x (5 + 10 + 1 + 1) folds x 5 seeds
    "table2": 125,  # 5 methods x 5 languages x 5 seeds
    "table3_ablations": 140,  # 4 points x (5 + 1 + 1) folds x 5 seeds
}


@pytest.mark.parametrize("name", sorted(PAPER_STUDIES))
def test_paper_studies_expand_against_the_real_recipes(name, tmp_path):
    study = load_study(ROOT / "studies" / f"{name}.yaml")  # checks every hparams file and override key
    assert study.recipes_dir == str(ROOT / "recipes")
    runs = study.runs(tmp_path)
    assert len(runs) == PAPER_STUDIES[name]
    assert len({run.output_folder for run in runs}) == len(runs)
    assert all(os.path.isfile(run.train_script) and os.path.isfile(run.hparams_file) for run in runs)


def test_paper_study_contents():
    fig2 = load_study(ROOT / "studies" / "fig2_scaling.yaml")
    ranks = {}
    for point in fig2.points:
        ranks.setdefault(point.hparams, []).append(point.values["rank"])
    assert ranks == {
        "bottleneck": [4, 8, 16, 32, 64],
        "conformer": [4, 8, 16, 32],
        "mambadapter": [8, 16, 32, 64, 96],
    }
    table3 = load_study(ROOT / "studies" / "table3_ablations.yaml")
    assert {p.experiment: p.overrides for p in table3.points} == {
        "mambadapter": {},
        "mambadapter_no_mamba": {"use_mamba": False},
        "mambadapter_no_alpha": {"use_alpha": False},
        "mambadapter_unshared": {"share_projections": False},
    }
    assert table3.report == {"kind": "ablation", "reference": "mambadapter"}
    fig3 = load_study(ROOT / "studies" / "fig3_mamba_hparams.yaml")
    assert len(fig3.points) == 75 and {t.name: t.overrides for t in fig3.tasks} == {
        "ckb": {"language": "ckb"},
        "eo": {"language": "eo"},
    }
    assert fig3.points[0].experiment == "mambadapter_k2_n4_e1"
