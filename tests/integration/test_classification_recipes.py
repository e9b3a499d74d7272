"""The four AST classification recipes, end to end on ``tests/samples/`` with a tiny random AST.

Every hparams file of every recipe runs its recipe's ``train.py`` in SpeechBrain's ``--debug``
mode (2 epochs of at most 2 batches; ``--debug_persistently`` keeps the checkpoints), in this
process through ``runpy`` (as ``python train.py ...`` would, without paying the imports 64
times). Each run must leave a train log with both epochs, adapter-only checkpoints, a metrics
file with finite values and a confusion-matrix PNG. To save time, every run uses
``--max_length=100`` (the AST lobe's tests cover other lengths) and skips SpeechBrain's
environment report (``pip freeze``). Then: the loss falls when one configuration trains for a
few epochs on the ESC-50 samples, a run stopped after one epoch resumes from its checkpoint, the method's
settings are command-line overrides, and a killed run (started from the recipe's folder) resumes.
"""

import csv
import importlib.util
import json
import math
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors import safe_open

from speechbrain_mambadapter.recipe.dataprep import read_classes
from speechbrain_mambadapter.results import aggregate, load_runs
from tests.recipe_runs import run_recipe

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "tests" / "samples"
RECIPES = ("ESC50", "UrbanSound8k", "GSC", "FSC")
EXPECTED_CONFIGS = {
    "mambadapter",
    "mambadapter_houlsby",
    "mambadapter_bidirectional",
    "bottleneck",
    "bottleneck_houlsby",
    "conformer",
    "conformer_houlsby",
    "lora",
    "bitfit",
    "prompt",
    "prefix",
    "linear",
    "full",
}
# ESC50 also has hparams files for the Whisper-encoder backbone (lobes.whisper_encoder), whose rows
# run with the tiny random Whisper as tests/tmp/tiny_whisper.
WHISPER_CONFIGS = {
    f"whisper_{stem}"
    for stem in (
        "mambadapter",
        "mambadapter_houlsby",
        "bottleneck",
        "bottleneck_houlsby",
        "conformer",
        "conformer_houlsby",
        "lora",
        "bitfit",
        "linear",
        "full",
    )
}
# The recipes' rows in SpeechBrain's recipe-test format (tests/recipes/<Dataset>.csv): each one runs
# here as SpeechBrain's recipe tests would run it, with the tiny AST as tests/tmp/tiny_ast.
ROWS = [
    row for recipe in RECIPES for row in csv.DictReader((ROOT / "tests" / "recipes" / f"{recipe}.csv").open())
]
EPOCH_LINE = re.compile(
    r"^epoch: (\d+), .*train loss: ([^,]+), train accuracy: ([^ ]+) - valid loss: ([^,]+),"
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tiny AST's ops are too small for intra-op threads to pay: one thread is ~2x faster on 2 cores."""
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


PREPARE = {
    "ESC50": ("esc50_prepare", "prepare_esc50"),
    "UrbanSound8k": ("urbansound8k_prepare", "prepare_urbansound8k"),
    "GSC": ("gsc_prepare", "prepare_gsc"),
    "FSC": ("fsc_prepare", "prepare_fsc"),
}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Each recipe's samples prepared once, as its train.py does (its runs then skip preparation).

    Returns ``recipe -> (prepared folder, number of classes in classes.txt)``.
    """
    folders = {}
    for recipe, (module_name, function) in PREPARE.items():
        spec = importlib.util.spec_from_file_location(
            module_name, ROOT / "recipes" / recipe / f"{module_name}.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        folder = tmp_path_factory.mktemp(f"prepared_{recipe}")
        getattr(module, function)(str(SAMPLES / recipe), str(folder))
        folders[recipe] = (folder, len(read_classes(folder)))
    return folders


def common_flags(recipe, prepared, output_folder, tiny_ast_dir):
    """Flags of every test run; the sample sets have fewer classes than the datasets (GSC: all 35)."""
    folder, n_classes = prepared[recipe]
    return [
        f"--data_folder={SAMPLES / recipe}",
        f"--prepared_folder={folder}",
        f"--output_folder={output_folder}",
        f"--pretrained_source={tiny_ast_dir}",
        f"--n_classes={n_classes}",
        "--num_workers=0",
        "--max_length=100",
    ]


def epoch_lines(train_log):
    return [EPOCH_LINE.match(line) for line in train_log.read_text().splitlines() if EPOCH_LINE.match(line)]


def test_every_recipe_has_every_configuration():
    for recipe in RECIPES:
        stems = {path.stem for path in (ROOT / "recipes" / recipe / "hparams").glob("*.yaml")}
        expected = EXPECTED_CONFIGS | (WHISPER_CONFIGS if recipe == "ESC50" else set())
        assert stems == expected, f"{recipe}: missing {expected - stems}, extra {stems - expected}"


def test_every_hparams_file_has_a_recipe_test_row():
    rows = {row["Hparam_file"] for row in ROWS}
    files = {
        str(p.relative_to(ROOT)) for r in RECIPES for p in (ROOT / "recipes" / r / "hparams").glob("*.yaml")
    }
    assert rows == files
    for row in ROWS:
        assert all((ROOT / row[key]).is_file() for key in ("Script_file", "Data_prep_file", "Readme_file")), (
            row
        )


@pytest.mark.parametrize("row", ROWS, ids=[row["Hparam_file"].split("recipes/")[1] for row in ROWS])
def test_recipe_debug_run(row, prepared, tiny_ast_dir, tmp_path, request):
    recipe, stem = row["Dataset"], Path(row["Hparam_file"]).stem
    output = tmp_path / "out"
    flags = row["test_debug_flags"].replace("tests/tmp/tiny_ast", str(tiny_ast_dir))
    fixed = 0  # backbone parameters that even full fine-tuning keeps (Whisper's position table)
    if "tests/tmp/tiny_whisper" in flags:
        whisper_dir = request.getfixturevalue("tiny_whisper_dir")
        flags = flags.replace("tests/tmp/tiny_whisper", whisper_dir)
        config = json.loads((Path(whisper_dir) / "config.json").read_text())
        fixed = config["max_source_positions"] * config["d_model"]
    flags = flags.replace("tests/samples/", f"{SAMPLES}/").split()
    # Faster than the row alone: the samples prepared once, the checkpoints kept for the checks below.
    flags += [f"--prepared_folder={prepared[recipe][0]}", f"--output_folder={output}", "--debug_persistently"]
    run_recipe(recipe, stem, *flags)
    expected = row["test_debug_checks"].split("file_exists=[")[1].split("]")[0].split(",")
    assert [name for name in expected if not (output / name).is_file()] == []

    epochs = epoch_lines(output / "train_log.txt")
    assert [int(m.group(1)) for m in epochs] == [1, 2]
    for match in epochs:
        assert all(math.isfinite(float(match.group(i))) for i in (2, 3, 4)), match.group(0)

    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["dataset"] == recipe and metrics["experiment"] == stem
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and math.isfinite(metrics["test_loss"])
    assert metrics["test_clips"] == sum(sum(row) for row in metrics["confusion_matrix"]) > 0
    assert len(metrics["classes"]) == prepared[recipe][1] == len(metrics["per_class_accuracy"])
    assert metrics["petl_config"]["method"] == stem.removeprefix("whisper_").split("_")[0]
    assert metrics["checkpoint_epoch"] in (1, 2)
    assert (output / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (cell,) = aggregate(load_runs([output]))
    assert (cell["experiment"], cell["dataset"], cell["runs"]) == (stem, recipe, 1)

    trainable, backbone = metrics["trainable_parameters"], metrics["backbone_parameters"]
    checkpoints = sorted((output / "save").glob("CKPT+*"))
    assert checkpoints, "no checkpoint saved"
    for ckpt in checkpoints:
        names = {p.name for p in ckpt.iterdir()}
        assert {
            "petl.ckpt",
            "classifier.ckpt",
            "optimizer.ckpt",
            "lr_scheduler.ckpt",
            "counter.ckpt",
        } <= names
        with safe_open(str(ckpt / "petl.ckpt"), framework="pt") as f:
            saved = sum(f.get_tensor(k).numel() for k in f.keys())
        if stem.endswith("full"):
            assert trainable == backbone - fixed and saved >= trainable
        elif stem.endswith("linear"):
            assert trainable == 0 and saved == 0
        else:
            # Adapter-only: the trainable weights (plus a BatchNorm's statistics), never the backbone.
            assert 0 < trainable <= saved < trainable + 1000 < backbone


def write_tone_dataset(folder):
    """An ESC-50-layout set of 15 one-second clips: a 300 Hz tone, a 3 kHz tone and noise, one per fold.

    The sample clips are 0.2 s long and mostly padding at AST's input, too alike for a tiny random
    AST to fit in a few steps; these classes differ over the whole filterbank.
    """
    rng = np.random.default_rng(0)
    time = np.arange(16000) / 16000
    (folder / "audio").mkdir(parents=True)
    (folder / "meta").mkdir()
    rows = ["filename,fold,target,category,esc10,src_file,take"]
    # Official ESC-50 targets and names (preparation checks them), standing for sounds of our own.
    for target, category, freq in [(3, "cow", 300.0), (41, "chainsaw", 3000.0), (10, "rain", None)]:
        for fold in range(1, 6):
            if freq is None:
                wav = rng.normal(0.0, 0.3, time.shape)
            else:
                wav = 0.5 * np.sin(2 * np.pi * freq * time + rng.uniform(0, 2 * np.pi))
            name = f"{fold}-{1000 + target}-A-{target}.wav"
            sf.write(folder / "audio" / name, wav.astype(np.float32), 16000, subtype="PCM_16")
            rows.append(f"{name},{fold},{target},{category},False,{1000 + target},A")
    (folder / "meta" / "esc50.csv").write_text("\n".join(rows) + "\n")


def test_loss_falls_when_training_longer(tiny_ast_dir, tmp_path):
    data = tmp_path / "tones"
    write_tone_dataset(data)
    output = tmp_path / "out"
    flags = [
        f"--data_folder={data}",
        f"--prepared_folder={tmp_path / 'prepared'}",
        f"--output_folder={output}",
        f"--pretrained_source={tiny_ast_dir}",
        "--n_classes=3",
        "--num_workers=0",
        "--max_length=100",
        "--number_of_epochs=10",
        "--batch_size=9",  # the 9 training clips: one step per epoch
        "--spec_augment=null",
        "--lr=0.01",
    ]
    run_recipe("ESC50", "mambadapter", *flags)
    losses = [float(m.group(2)) for m in epoch_lines(output / "train_log.txt")]
    assert len(losses) == 10
    assert losses[-1] < 0.5 * losses[0], f"training loss did not fall: {losses}"
    # The rate of epoch e's single step is the cosine schedule's rate of step e - 1.
    rates = [
        float(m)
        for m in re.findall(r"^epoch: \d+, lr: ([^ ]+) ", (output / "train_log.txt").read_text(), re.M)
    ]
    expected = [0.01 * 0.5 * (1 + math.cos(math.pi * step / 10)) for step in range(10)]
    assert rates == pytest.approx(expected, rel=0.01, abs=1e-5)


def test_resume_continues_from_checkpoint(prepared, tiny_ast_dir, tmp_path):
    output = tmp_path / "out"
    flags = common_flags("ESC50", prepared, output, tiny_ast_dir)
    run_recipe("ESC50", "mambadapter", *flags, "--number_of_epochs=1")
    first = sorted((output / "save").glob("CKPT+*"))
    assert len(first) == 1
    with safe_open(str(first[0] / "petl.ckpt"), framework="pt") as f:
        after_one_epoch = {k: f.get_tensor(k) for k in f.keys()}

    run_recipe("ESC50", "mambadapter", *flags, "--number_of_epochs=2")
    log = (output / "log.txt").read_text()
    assert f"Loading a checkpoint from {first[0]}" in log
    assert [int(m.group(1)) for m in epoch_lines(output / "train_log.txt")] == [1, 2], "epoch 1 ran twice"
    latest = max((output / "save").glob("CKPT+*"), key=lambda p: p.stat().st_mtime)
    steps_per_epoch = 1  # 9 training clips, batch size 32
    assert torch.load(latest / "lr_scheduler.ckpt")["step"] == 2 * steps_per_epoch
    with safe_open(str(latest / "petl.ckpt"), framework="pt") as f:
        changed = [k for k in f.keys() if not torch.equal(f.get_tensor(k), after_one_epoch[k])]
    assert changed, "the second epoch did not train the adapter"
    assert os.path.isfile(output / "metrics.json")


def load_driver():
    spec = importlib.util.spec_from_file_location("run_folds", ROOT / "recipes" / "run_folds.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "recipe,args,expected",
    [
        ("ESC50", [], [(f, s) for s in (10, 11, 12, 13, 14) for f in range(1, 6)]),
        ("UrbanSound8k", ["--seeds", "3"], [(f, 3) for f in range(1, 11)]),
        ("GSC", ["--seeds", "1", "2"], [(None, 1), (None, 2)]),
        ("FSC", [], [(None, s) for s in (10, 11, 12, 13, 14)]),
    ],
)
def test_driver_runs_every_fold_and_seed(recipe, args, expected, tmp_path, capsys):
    driver = load_driver()
    hparams = str(ROOT / "recipes" / recipe / "hparams" / "lora.yaml")
    flags = [*args, "--output", str(tmp_path), "--dry-run"]
    assert driver.main([hparams, *flags, "--", "--data_folder=/data"]) == 0
    out = capsys.readouterr().out
    commands = [shlex.split(line) for line in out.splitlines() if not line.startswith(("#", "Table"))]
    train = str(ROOT / "recipes" / recipe / "train.py")
    assert all(c[1:3] == [train, hparams] and c[-1] == "--data_folder=/data" for c in commands)
    runs = []
    for command in commands:
        flags = dict(arg[2:].split("=", 1) for arg in command[3:])
        fold = int(flags["fold"]) if "fold" in flags else None
        runs.append((fold, int(flags["seed"])))
        # The recipe's own layout under --output: results/<dataset>/<experiment>/[fold<f>/]seed<s>.
        folder = tmp_path / recipe / "lora" / (f"fold{fold}" if fold else "") / f"seed{flags['seed']}"
        assert flags["output_folder"] == str(folder).replace("//", "/") and flags["experiment"] == "lora"
    assert runs == expected
    assert f"Table: python -m speechbrain_mambadapter.results {tmp_path / recipe}" in out


def test_driver_names_an_ablation_and_refuses_folds_without_folds(tmp_path, capsys):
    driver = load_driver()
    hparams = str(ROOT / "recipes" / "ESC50" / "hparams" / "mambadapter.yaml")
    flags = ["--folds", "2", "--seeds", "10", "--output", str(tmp_path), "--dry-run"]
    assert driver.main([hparams, *flags, "--", "--use_mamba=False", "--experiment=no_mamba"]) == 0
    (command,) = [shlex.split(line) for line in capsys.readouterr().out.splitlines() if "train.py" in line]
    assert f"--output_folder={tmp_path / 'ESC50' / 'no_mamba' / 'fold2' / 'seed10'}" in command
    assert command[-2:] == ["--use_mamba=False", "--experiment=no_mamba"]
    with pytest.raises(SystemExit):
        driver.main([str(ROOT / "recipes" / "GSC" / "hparams" / "lora.yaml"), "--folds", "1"])
    assert "official split and has no folds" in capsys.readouterr().err


def load_recipe(recipe):
    """A recipe's ``train.py`` as a module (its folder on ``sys.path`` while it imports, as for a script)."""
    folder = ROOT / "recipes" / recipe
    sys.path.insert(0, str(folder))
    try:
        spec = importlib.util.spec_from_file_location(f"{recipe}_train", folder / "train.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(folder))
    return module


@pytest.mark.parametrize("recipe", RECIPES)
def test_dataio_prepare_items_and_errors(recipe, prepared, tmp_path):
    dataio_prepare = load_recipe(recipe).dataio_prepare

    with pytest.raises(FileNotFoundError, match="has no train.csv: data preparation did not run"):
        dataio_prepare({"prepared_folder": str(tmp_path), "n_classes": 3})
    folder, n_classes = prepared[recipe]
    with pytest.raises(ValueError, match=f"lists {n_classes} classes .* pass --n_classes={n_classes}"):
        dataio_prepare({"prepared_folder": str(folder), "n_classes": n_classes + 1})
    hparams = {"prepared_folder": str(folder), "n_classes": n_classes}
    datasets = dataio_prepare(hparams)
    assert hparams["classes"] == read_classes(folder)
    for split, dataset in datasets.items():
        for item in dataset:
            assert item["sig"].dim() == 1 and item["sig"].numel() > 0, split
            assert hparams["classes"][item["label_index"].item()] == item["label"]


def test_method_settings_are_command_line_overrides(prepared, tiny_ast_dir, tmp_path):
    """The paper's "no Mamba" ablation at rank 4 is two flags on mambadapter.yaml."""
    output = tmp_path / "out"
    flags = common_flags("ESC50", prepared, output, tiny_ast_dir)
    flags += ["--debug", "--debug_persistently", "--use_mamba=False", "--rank=4"]
    flags += ["--experiment=mambadapter_no_mamba_r4"]
    run_recipe("ESC50", "mambadapter", *flags)
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["experiment"] == "mambadapter_no_mamba_r4"
    assert metrics["petl_config"]["kwargs"]["use_mamba"] is False
    assert metrics["petl_config"]["kwargs"]["rank"] == 4
    config = json.loads((Path(tiny_ast_dir) / "config.json").read_text())
    d, layers = config["hidden_size"], config["num_hidden_layers"]
    # Shared W_down (d x 4 + 4) and W_up (4 x d + d), one alpha per layer, and the LayerNorms the
    # method trains (one in front of each FFN, the final one): no Mamba parameters at all.
    expected = (d * 4 + 4) + (4 * d + d) + layers + (layers + 1) * 2 * d
    assert metrics["trainable_parameters"] == expected
    # Resuming that output folder with other settings stops, and says to change --experiment.
    flags[-2] = "--rank=8"
    with pytest.raises(ValueError, match="--experiment=<name>"):
        run_recipe("ESC50", "mambadapter", *flags)


def test_missing_hparams_key_is_named(prepared, tiny_ast_dir, tmp_path):
    hparams = tmp_path / "no_sorting.yaml"
    text = (ROOT / "recipes" / "GSC" / "hparams" / "lora.yaml").read_text()
    hparams.write_text(text.replace("sorting: random\n", "").replace("!ref <sorting>", "random"))
    flags = common_flags("GSC", prepared, tmp_path / "out", tiny_ast_dir)
    with pytest.raises(KeyError, match=r"no_sorting.yaml lacks the key\(s\) \['sorting'\]"):
        run_recipe("GSC", hparams, *flags)


def test_missing_pretrained_source_names_the_flag(prepared, tmp_path):
    flags = common_flags("GSC", prepared, tmp_path / "out", tmp_path / "no_such_ast")
    with pytest.raises(FileNotFoundError, match="--pretrained_source=<local dir>"):
        run_recipe("GSC", "mambadapter", *flags)


def test_killed_run_resumes(prepared, tiny_ast_dir, tmp_path):
    """SIGKILL a real ``python train.py`` process while it saves its second checkpoint, then restart it."""
    output = tmp_path / "out"
    flags = common_flags("ESC50", prepared, output, tiny_ast_dir) + ["--number_of_epochs=6"]
    # From the recipe's own folder, as `cd recipes/ESC50 && python train.py hparams/...`.
    command = [sys.executable, "train.py", "hparams/bottleneck.yaml", *flags]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        command, cwd=ROOT / "recipes" / "ESC50", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120

    def wait_for(condition):
        while not condition() and process.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint after 120 s"
            time.sleep(0.005)

    # After the first complete checkpoint, kill as soon as the next one starts: often mid-save.
    wait_for(lambda: list((output / "save").glob("CKPT+*/CKPT.yaml")))
    wait_for(lambda: len(list((output / "save").glob("CKPT+*"))) > 1)
    process.kill()
    process.wait()
    done = [int(m.group(1)) for m in epoch_lines(output / "train_log.txt")]
    assert done and done[-1] < 6, f"the run finished before it could be killed: epochs {done}"

    run_recipe("ESC50", "bottleneck", *flags)
    epochs = [int(m.group(1)) for m in epoch_lines(output / "train_log.txt")]
    # Epoch 1 was checkpointed before the kill, so it never runs again; an epoch logged but killed
    # before its own checkpoint was saved may run (and be logged) twice.
    assert epochs.count(1) == 1 and sorted(set(epochs)) == [1, 2, 3, 4, 5, 6] and len(epochs) <= 7, epochs
    assert json.loads((output / "metrics.json").read_text())["test_clips"] > 0
    assert all((ckpt / "CKPT.yaml").exists() for ckpt in (output / "save").glob("CKPT+*"))
