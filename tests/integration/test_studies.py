"""A tiny study end to end on the GSC samples with a tiny random AST: a 2 x 2 grid (Bottleneck and
MambAdapter, rank 2 and 4) x 2 seeds through the local launcher, 2 runs at a time; the launcher and
its runs are killed (SIGKILL, as a crashed machine) halfway, and the restarted launcher runs only
what is left, resuming a killed run from its checkpoint, and ends with the study's table and Fig. 2
plot. Then the SLURM path, through submitit's local executor (separate processes, as on a cluster
node): two runs of the same recipe.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from speechbrain_mambadapter.study import status as st
from speechbrain_mambadapter.study.__main__ import main
from speechbrain_mambadapter.study.spec import load_study

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "tests" / "samples" / "GSC"
# Every run trains 12 tiny epochs: long enough for a checkpoint to exist before its test stage.
TASK = {
    "recipe": "GSC",
    "overrides": {"n_classes": 35, "num_workers": 0, "max_length": 100, "number_of_epochs": 12},
}


def write_study(path, points, seeds):
    spec = {
        "name": path.stem,
        "seeds": seeds,
        "tasks": {"GSC": TASK},
        "points": points,
        "report": {"kind": "scaling"},
    }
    path.write_text(json.dumps(spec))
    return str(path)


def args(study, output, tiny_ast_dir, *more):
    return [
        study,
        "--output",
        str(output),
        "--data",
        f"GSC={SAMPLES}",
        *more,
        "--",
        f"--pretrained_source={tiny_ast_dir}",
    ]


def test_tiny_study_killed_halfway_and_restarted(tiny_ast_dir, tmp_path):
    points = [
        {"hparams": "bottleneck", "grid": {"rank": [2, 4]}, "experiment": "bottleneck_r{rank}"},
        {"hparams": "mambadapter", "grid": {"rank": [2, 4]}, "experiment": "mambadapter_r{rank}"},
    ]
    study_path = write_study(tmp_path / "tiny.yaml", points, seeds=[1, 2])
    output = tmp_path / "out"
    runs = load_study(study_path).runs(output)
    assert len(runs) == 8
    command = [sys.executable, "-m", "speechbrain_mambadapter.study", "run"]
    command += args(study_path, output, tiny_ast_dir, "--jobs", "2")
    launcher = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def metrics(run):
        return os.path.join(run.output_folder, "metrics.json")

    def checkpointed_not_finished(run):
        save = os.path.join(run.output_folder, "save")
        return (
            not os.path.exists(metrics(run))
            and os.path.isdir(save)
            and any(os.path.exists(os.path.join(save, c, "CKPT.yaml")) for c in os.listdir(save))
        )

    # Halfway: at least 3 runs finished and a running one has a checkpoint but no result yet.
    deadline = time.monotonic() + 300
    while not (
        sum(os.path.exists(metrics(r)) for r in runs) >= 3 and any(map(checkpointed_not_finished, runs))
    ):
        assert launcher.poll() is None and time.monotonic() < deadline, (
            "the study ended before it could be killed"
        )
        time.sleep(0.01)
    victims = [st.read_status(r.output_folder)["pid"] for r in runs if st.run_state(r)[0] == "running"]
    launcher.kill()  # the launcher, then its runs (each in its own process group)
    for pid in victims:
        os.killpg(pid, signal.SIGKILL)
    launcher.wait()
    while any(map(st.pid_alive, victims)):  # SIGKILL takes a moment to land
        assert time.monotonic() < deadline
        time.sleep(0.01)
    interrupted = [r for r in runs if checkpointed_not_finished(r)]
    finished = {r.name: os.path.getmtime(metrics(r)) for r in runs if os.path.exists(metrics(r))}
    assert interrupted and 3 <= len(finished) < 8
    # The killed runs say "running", but their processes are gone: they are left to do.
    assert all(st.run_state(r)[0] == "left" for r in interrupted)

    assert main(["run", *args(study_path, output, tiny_ast_dir, "--jobs", "2")]) == 0
    assert all(st.run_state(r)[0] == "done" for r in runs)
    # Finished runs did not run again; a killed one resumed from its checkpoint, not from epoch 1.
    assert {name: os.path.getmtime(metrics(r)) for r in runs if (name := r.name) in finished} == finished
    for run in runs:
        starts = (Path(run.output_folder) / st.LOG_FILE).read_text().count("\n=== ")
        assert starts == (1 if run.name in finished else 2 if run in interrupted else starts)
    for run in interrupted:
        assert "Loading a checkpoint from" in (Path(run.output_folder) / "log.txt").read_text()
        epochs = [line for line in (Path(run.output_folder) / "train_log.txt").read_text().splitlines()
                  if line.startswith("epoch: 1,")]  # fmt: skip
        assert len(epochs) == 1, f"{run.name} trained epoch 1 twice"

    report = tmp_path / "out" / "report"
    text = (report / "tiny.md").read_text()
    assert "8 of 8 runs have a result." in text and "Missing" not in text
    for series, rank in [("bottleneck", 2), ("bottleneck", 4), ("mambadapter", 2), ("mambadapter", 4)]:
        assert f"| GSC | {series} | {rank} | " in text and text.count(" | 2/2 |") == 4
    assert (report / "tiny.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (report / "tiny.csv").read_text().count("\n") == 5


def test_slurm_path_through_submitits_local_executor(tiny_ast_dir, tmp_path):
    points = [{"hparams": "mambadapter", "overrides": {"rank": 2}, "experiment": "mambadapter_r2"}]
    study_path = write_study(tmp_path / "on_slurm.yaml", points, seeds=[1, 2])
    output = tmp_path / "out"
    more = ("--launcher", "slurm", "--cluster", "local", "--time-min", "10", "--wait")
    assert main(["run", *args(study_path, output, tiny_ast_dir, *more)]) == 0
    for run in load_study(study_path).runs(output):
        status = st.read_status(run.output_folder)
        assert status["state"] == "done" and status["launcher"] == "slurm" and status["job_id"]
        metrics = json.loads((Path(run.output_folder) / "metrics.json").read_text())
        assert metrics["experiment"] == "mambadapter_r2" and metrics["petl_config"]["kwargs"]["rank"] == 2
    # submitit's own logs of the jobs (the preparation and the two runs).
    assert len(list((output / ".submitit").glob("*/*_result.pkl"))) == 3
    assert "2 of 2 runs have a result." in (output / "report" / "on_slurm.md").read_text()
