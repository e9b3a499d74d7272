"""The study launchers on stand-in recipes (``fake_recipes.py``: no model, fractions of a second):
N runs at a time after the data preparation, GPUs shared, failures reported and retried, a failed
preparation blocking only its group, SIGTERM, a run another process still runs, the SLURM path
through submitit's debug executor, and the sbatch options of a SLURM submission."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from speechbrain_mambadapter.study import status as st
from speechbrain_mambadapter.study.__main__ import main
from speechbrain_mambadapter.study.spec import load_study
from tests.unittests.fake_recipes import make_fake_recipes, trace, write_study


@pytest.fixture
def recipes(tmp_path):
    return make_fake_recipes(tmp_path / "recipes")


def study_file(tmp_path, **overrides):
    spec = dict(
        name="s",
        seeds=[1],
        tasks={"F": {"recipe": "Folds"}, "S": {"recipe": "Split"}},
        points=[{"hparams": "adapter", "grid": {"rank": [2, 4]}, "experiment": "a_r{rank}"}],
        overrides={"sleep": 0.4},
        report={"kind": "scaling"},
    )
    spec.update(overrides)
    return write_study(tmp_path / "s.yaml", **spec)


def cli(path, recipes, tmp_path, *args, extra=()):
    argv = ["run", path, "--recipes", recipes, "--output", str(tmp_path / "out"), *args]
    with open(path) as f:
        argv += ["--data"] + [f"{task}=/data/{task}" for task in json.load(f)["tasks"]]
    return main(argv + (["--", *extra] if extra else []))


def runs_of(path, recipes, tmp_path):
    return load_study(path, recipes).runs(tmp_path / "out")


def most_at_once(intervals):
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


def test_local_runs_n_at_a_time_after_their_data_is_prepared(recipes, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    path = study_file(tmp_path)
    assert cli(path, recipes, tmp_path, "--jobs", "2") == 0
    runs = runs_of(path, recipes, tmp_path)
    assert len(runs) == 6  # F: 2 folds x 2 ranks, S: 2 ranks
    traces = [trace(run) for run in runs]
    # The stand-in recipe exits 1 when its data is not prepared: all 6 ran after their preparation.
    assert all(st.run_state(run)[0] == "done" for run in runs)
    assert most_at_once([(t["started"], t["ended"]) for t in traces]) == 2
    assert {t["threads"] for t in traces} == {str(max(1, (os.cpu_count() or 1) // 2))}
    assert all(t["cuda"] is None and "--device=cuda:0" not in t["argv"] for t in traces)
    # A preparation run keeps only its status and log; its status says it is done.
    prepared = tmp_path / "out" / "F" / "_prepare" / "fold1"
    assert sorted(os.listdir(prepared)) == [st.LOG_FILE, st.STATUS_FILE]
    assert st.read_status(prepared)["state"] == "done"
    status = st.read_status(runs[0].output_folder)
    assert status["state"] == "done" and status["returncode"] == 0 and status["launcher"] == "local"
    assert status["identity"]["overrides"]["rank"] == 2
    report = (tmp_path / "out" / "report" / "s.md").read_text()
    assert "6 of 6 runs have a result." in report and (tmp_path / "out" / "report" / "s.png").is_file()
    capsys.readouterr()
    # Started again: nothing runs again.
    assert cli(path, recipes, tmp_path, "--jobs", "2", "--no-report") == 0
    assert "6/6 done, 0 running, 0 failed, 0 left; 0 to run" in capsys.readouterr().out
    assert [trace(run)["started"] for run in runs] == [t["started"] for t in traces]


def test_runs_share_the_gpus(recipes, tmp_path):
    path = study_file(tmp_path, tasks={"S": {"recipe": "Split"}}, seeds=[1, 2])
    assert cli(path, recipes, tmp_path, "--jobs", "4", "--gpus", "0", "1", "--no-report") == 0
    traces = [trace(run) for run in runs_of(path, recipes, tmp_path)]
    assert sorted(t["cuda"] for t in traces) == ["0", "0", "1", "1"]
    assert all(t["argv"][-1] == "--device=cuda:0" for t in traces)
    assert most_at_once([(t["started"], t["ended"]) for t in traces]) == 4


def test_a_failed_run_is_reported_with_its_log_and_run_again(recipes, tmp_path, capsys):
    points = [
        {"hparams": "adapter", "experiment": "good"},
        {"hparams": "other", "experiment": "bad", "overrides": {"fail": True}},
    ]
    path = study_file(
        tmp_path, tasks={"S": {"recipe": "Split"}}, points=points, overrides={}, report={"kind": "table"}
    )
    assert cli(path, recipes, tmp_path, "--jobs", "2") == 1
    good, bad = runs_of(path, recipes, tmp_path)
    assert st.run_state(good)[0] == "done"
    state, status = st.run_state(bad)
    assert state == "failed" and status["reason"] == "exit code 3" and status["returncode"] == 3
    capsys.readouterr()
    assert main(["status", path, "--recipes", recipes, "--output", str(tmp_path / "out")]) == 1
    view = capsys.readouterr().out
    assert "Study s: 1/2 done, 0 running, 1 failed, 0 left" in view
    assert "S/good  #  1/1" in view and "S/bad   X  0/1" in view
    assert "Failed: S/bad/seed1: exit code 3" in view and "=== " in view  # with the log's tail
    report = (tmp_path / "out" / "report" / "s.md").read_text()
    assert "## Missing runs (1)" in report and "- S/bad: seed1" in report
    # Fixed (a --key=value after `--` goes to every run): only the failed run runs again.
    started = trace(good)["started"]
    assert cli(path, recipes, tmp_path, extra=["--fail=False"]) == 0
    assert st.run_state(bad)[0] == "done" and trace(good)["started"] == started


def test_a_failed_preparation_blocks_only_its_group(recipes, tmp_path, capsys):
    tasks = {
        "F": {"recipe": "Folds", "folds": [1], "overrides": {"prepare_sleep": "x"}},
        "S": {"recipe": "Split"},
    }
    path = study_file(tmp_path, tasks=tasks)
    assert cli(path, recipes, tmp_path, "--jobs", "2", "--no-report") == 1
    capsys.readouterr()
    assert main(["status", path, "--recipes", recipes, "--output", str(tmp_path / "out")]) == 1
    view = capsys.readouterr().out
    assert "Failed: F/_prepare/fold1: exit code 1" in view and "could not convert string to float" in view
    for run in runs_of(path, recipes, tmp_path):
        state, status = st.run_state(run)
        if run.task.name == "S":
            assert state == "done"
        else:
            assert state == "failed" and status["reason"].startswith("its data preparation failed; see ")
            assert status["reason"].endswith(os.path.join("F", "_prepare", "fold1", st.LOG_FILE))
            assert not os.path.exists(os.path.join(run.output_folder, "trace.json"))  # never started


def test_sigterm_stops_the_runs_which_resume_next_time(recipes, tmp_path):
    path = study_file(tmp_path, tasks={"S": {"recipe": "Split"}}, overrides={"sleep": 60})
    command = [sys.executable, "-m", "speechbrain_mambadapter.study", "run", path, "--recipes", recipes]
    command += ["--output", str(tmp_path / "out"), "--jobs", "2", "--data", "S=/data/s"]
    launcher = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    runs = runs_of(path, recipes, tmp_path)
    deadline = time.monotonic() + 120
    while not all(os.path.exists(os.path.join(r.output_folder, "trace.json")) for r in runs):
        assert time.monotonic() < deadline and launcher.poll() is None, launcher.stdout.read()
        time.sleep(0.1)
    pids = [trace(run)["pid"] for run in runs]
    launcher.send_signal(signal.SIGTERM)
    output = launcher.communicate(timeout=60)[0]
    assert launcher.returncode == 130, output
    assert "SIGTERM: stopping 2 run(s)" in output and "run the same command again" in output
    assert not any(st.pid_alive(pid) for pid in pids)
    for run in runs:
        assert st.read_status(run.output_folder)["state"] == "interrupted"
        assert st.run_state(run)[0] == "left"
    assert cli(path, recipes, tmp_path, "--jobs", "2", "--no-report", extra=["--sleep=0"]) == 0
    assert all(st.run_state(run)[0] == "done" for run in runs)


def test_a_run_another_process_still_runs_is_waited_for(recipes, tmp_path):
    path = study_file(
        tmp_path, tasks={"S": {"recipe": "Split"}}, points=[{"hparams": "adapter"}], overrides={}
    )
    (run,) = runs_of(path, recipes, tmp_path)
    # As a launcher killed without its runs leaves them: status "running", process alive.
    other = subprocess.Popen(["sleep", "2"])
    st.write_status(run.output_folder, state="running", pid=other.pid, host=socket.gethostname())
    assert st.run_state(run)[0] == "running"
    assert cli(path, recipes, tmp_path, "--no-report") == 0
    other.wait()
    ended = time.time()
    assert st.run_state(run)[0] == "done"
    assert ended - trace(run)["started"] < 2.5  # it started only once the other process had ended


def test_the_slurm_path_through_submitits_debug_executor(recipes, tmp_path):
    path = study_file(tmp_path, overrides={})
    assert cli(path, recipes, tmp_path, "--launcher", "slurm", "--cluster", "debug", "--wait") == 0
    runs = runs_of(path, recipes, tmp_path)
    for run in runs:
        status = st.read_status(run.output_folder)
        assert status["state"] == "done" and status["launcher"] == "slurm" and status["job_id"]
        assert "--device=cuda:0" not in trace(run)["argv"]  # the debug executor has no GPU
    assert st.read_status(tmp_path / "out" / "S" / "_prepare")["state"] == "done"
    assert "6 of 6 runs have a result." in (tmp_path / "out" / "report" / "s.md").read_text()


def test_slurm_dry_run_prints_the_sbatch_options(recipes, tmp_path, capsys):
    path = study_file(
        tmp_path, slurm={"time_min": 90, "partition": "cpu", "mem_gb": 16, "array_parallelism": 3}
    )
    code = cli(path, recipes, tmp_path, "--dry-run", "--launcher", "slurm", "--partition", "gpu")
    code2 = cli(
        path, recipes, tmp_path, "--dry-run", "--launcher", "slurm", "--sbatch", "exclude=node1", "qos=low"
    )
    assert code == code2 == 0
    first, second = capsys.readouterr().out.split("Study s: ")[1:]
    assert "#SBATCH --partition=gpu" in first and "#SBATCH --partition=cpu" in second  # the flag wins
    for line in (
        "#SBATCH --array=0-5%3",
        "#SBATCH --time=90",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --mem=16384MB",
    ):
        assert line in first
    assert "#SBATCH --exclude=node1" in second and "#SBATCH --qos=low" in second
    commands = [line for line in first.splitlines() if "train.py" in line]
    assert len(commands) == 6 + 3 and all(line.endswith("--device=cuda:0") for line in commands)


def test_missing_data_folder_is_named(recipes, tmp_path, capsys):
    path = study_file(tmp_path)
    with pytest.raises(SystemExit):
        main(["run", path, "--recipes", recipes, "--output", str(tmp_path / "out"), "--data", "F=/x"])
    assert "no data folder for task(s) S; pass --data S=/path/to/its/data" in capsys.readouterr().err
    # A dry run shows where it goes instead.
    assert main(["run", path, "--recipes", recipes, "--output", str(tmp_path / "out"), "--dry-run"]) == 0
    assert "--data_folder=<S data>" in capsys.readouterr().out


def test_status_of_a_run_that_died_without_saying_so():
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    assert not st.is_active({"state": "running", "pid": dead.pid, "host": host})
    assert st.is_active({"state": "running", "pid": os.getpid(), "host": host})
    # On another machine only the heartbeat tells.
    now = time.time()
    assert st.is_active({"state": "running", "pid": 1, "host": "node7", "heartbeat": now - 60}, now)
    assert not st.is_active({"state": "running", "pid": 1, "host": "node7", "heartbeat": now - 600}, now)
    assert json.loads(json.dumps(st.count(["done", "failed"]))) == {
        "done": 1,
        "running": 0,
        "failed": 1,
        "left": 0,
    }


def test_points_and_tasks_filters(recipes, tmp_path, capsys):
    path = study_file(
        tmp_path, points=[{"hparams": "adapter", "grid": {"rank": [2, 4, 8]}, "experiment": "a_r{rank}"}]
    )
    assert cli(path, recipes, tmp_path, "--dry-run", "--tasks", "S", "--points", "a_r[28]") == 0
    names = [
        line.split(": ")[0][2:] for line in capsys.readouterr().out.splitlines() if line.startswith("# S/")
    ]
    assert names == ["S/a_r2/seed1", "S/a_r8/seed1"]
    with pytest.raises(SystemExit):
        cli(path, recipes, tmp_path, "--dry-run", "--points", "b_*")
    assert (
        "--points ['b_*'] match no point; the points are ['a_r2', 'a_r4', 'a_r8']" in capsys.readouterr().err
    )
