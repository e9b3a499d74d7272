#!/usr/bin/env python3
"""The Fig. 2 study on one GPU, end to end, and the throughput of k runs sharing the GPU.

Runs ``studies/fig2_scaling.yaml`` through the study launcher (``python -m
speechbrain_mambadapter.study run``) on synthetic Speech Commands v2 (``tools/synthetic_data.py``)
with a **randomly initialised** AST-base built from its configuration (``tools/tiny_models.py``: no
AST weights can be downloaded here, so accuracies mean nothing; the timings are those of the real
model size). A few of the study's points run at reduced epochs, once with k = 1, 2 and 4 runs at a
time on GPU 0, each k with its own seed, so that the three launches are three seeds of one study:
its report (table and Fig. 2 with error bars over the seeds) comes last. Throughput is measured
from the runs' own start and end times (``study_status.json``), so the data preparation, run once
before the first launch, is not counted; GPU utilisation and memory are sampled with nvidia-smi.

    python benchmarks/study_throughput.py --work /tmp/study_bench --out results/study_bench

Writes ``study_throughput.json`` (after each launch), ``logs.tar.gz`` (the launchers' output and
every run's logs) and the study's report (``fig2_scaling.md``, ``.csv``, ``.png``) to ``--out``;
prints a markdown table.

Authors
 * speechbrain-mambadapter contributors 2026
"""

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from speechbrain_mambadapter.study import status as st  # noqa: E402
from speechbrain_mambadapter.study.spec import load_study  # noqa: E402

STUDY = ROOT / "studies" / "fig2_scaling.yaml"
# Two methods at two ranks each: with k = 4, one launch is exactly one wave of runs.
POINTS = ["bottleneck_r8", "bottleneck_r64", "mambadapter_r16", "mambadapter_r96"]
AST_BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)


class GpuSampler:
    """nvidia-smi's utilisation and memory of GPU 0, every ``period`` seconds, in a thread."""

    def __init__(self, period=0.5):
        self.period, self.samples, self.stop = period, [], threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        query = [
            "nvidia-smi",
            "-i",
            "0",
            "--query-gpu=utilization.gpu,memory.used",
            "--format=csv,noheader,nounits",
        ]
        while not self.stop.wait(self.period):
            try:
                util, memory = subprocess.check_output(query, text=True).strip().split(", ")
                self.samples.append((time.time(), float(util), float(memory)))
            except (subprocess.CalledProcessError, ValueError, FileNotFoundError):
                pass

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()

    def between(self, start, end):
        inside = [(u, m) for t, u, m in self.samples if start <= t <= end]
        if not inside:
            return None, None
        return sum(u for u, _ in inside) / len(inside), max(m for _, m in inside)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="/tmp/study_bench", help="data, model and the study's runs")
    parser.add_argument("--out", default="results/study_bench", help="JSON, logs and the report")
    parser.add_argument(
        "--jobs", type=int, nargs="+", default=[1, 2, 4], help="runs at once, one launch each"
    )
    parser.add_argument("--train", type=int, default=2000, help="synthetic training clips")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--points", nargs="+", default=POINTS)
    parser.add_argument(
        "--cpu-check", action="store_true", help="a tiny AST on the CPU: checks this script, measures nothing"
    )
    args = parser.parse_args(argv)

    work, out = Path(args.work), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data, ast, study_out = work / "gsc", work / "ast_base", work / "fig2"
    t0 = time.time()
    subprocess.run(
        [sys.executable, str(ROOT / "tools" / "synthetic_data.py"), "gsc", "--out", str(data),
         "--train", str(args.train), "--valid", "200", "--test", "200"],
        check=True,
    )  # fmt: skip
    if not (ast / "config.json").exists():
        from tools.tiny_models import save_random_ast

        save_random_ast(ast, max_length=100, **({} if args.cpu_check else AST_BASE))
    setup_s = time.time() - t0
    extra = [f"--pretrained_source={ast}", f"--number_of_epochs={args.epochs}", "--num_workers=4"]
    study = load_study(STUDY)
    launches = []
    with GpuSampler() as gpu:
        for seed, jobs in enumerate(args.jobs, start=1):
            command = [sys.executable, "-m", "speechbrain_mambadapter.study", "run", str(STUDY),
                       "--output", str(study_out), "--data", f"GSC={data}", "--seeds", str(seed),
                       "--points", *args.points, "--jobs", str(jobs), "--no-report"]  # fmt: skip
            command += ["--", *extra] if args.cpu_check else ["--gpus", "0", "--", *extra]
            log = study_out / f"launch_k{jobs}.txt"
            study_out.mkdir(parents=True, exist_ok=True)
            start = time.time()
            with open(log, "w") as f:
                code = subprocess.call(command, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
            wall = time.time() - start
            runs = [r for r in study.runs(study_out, [seed]) if r.point.experiment in args.points]
            statuses = [st.read_status(r.output_folder) or {} for r in runs]
            done = [s for r, s in zip(runs, statuses) if st.run_state(r)[0] == "done"]
            first = min(s["started"] for s in done) if done else start
            last = max(s["ended"] for s in done) if done else start
            util, memory = gpu.between(first, last)
            launch = {
                "jobs": jobs,
                "seed": seed,
                "exit_code": code,
                "runs": len(runs),
                "done": len(done),
                "launcher_wall_s": wall,
                "runs_span_s": last - first,
                "runs_per_hour": 3600 * len(done) / (last - first) if done else 0.0,
                "mean_run_s": sum(s["seconds"] for s in done) / len(done) if done else None,
                "per_run_s": {r.point.experiment: s.get("seconds") for r, s in zip(runs, statuses)},
                "gpu_util_mean_pct": util,
                "gpu_memory_peak_mib": memory,
            }
            launches.append(launch)
            print(json.dumps(launch), flush=True)
            (out / "study_throughput.json").write_text(json.dumps({"launches": launches}, indent=1))
    seeds = [str(seed) for seed in range(1, len(args.jobs) + 1)]
    command = [sys.executable, "-m", "speechbrain_mambadapter.study", "report", str(STUDY)]
    command += ["--output", str(study_out), "--seeds", *seeds, "--points", *args.points]
    report = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    for name in ("fig2_scaling.md", "fig2_scaling.csv", "fig2_scaling.png"):
        if (study_out / "report" / name).exists():
            shutil.copy(study_out / "report" / name, out / name)
    # The launchers' output and every run's logs, in one file (a device run brings back few files).
    with tarfile.open(out / "logs.tar.gz", "w:gz") as tar:
        for path in sorted(study_out.glob("launch_k*.txt")) + sorted(study_out.glob("GSC/**/*.txt")):
            if path.name in (
                "launch_k1.txt",
                "launch_k2.txt",
                "launch_k4.txt",
                st.LOG_FILE,
                "log.txt",
                "train_log.txt",
            ):
                tar.add(path, arcname=str(path.relative_to(study_out)))
    try:
        query = ["nvidia-smi", "-i", "0", "--query-gpu=name,driver_version", "--format=csv,noheader"]
        device = subprocess.run(query, capture_output=True, text=True).stdout.strip()
    except FileNotFoundError:
        device = "CPU (no nvidia-smi)"
    import torch

    summary = {
        "device": device,
        "torch": torch.__version__,
        "setup_s": setup_s,
        "train_clips": args.train,
        "epochs": args.epochs,
        "points": args.points,
        "launches": launches,
        "report_exit_code": report.returncode,
    }
    (out / "study_throughput.json").write_text(json.dumps(summary, indent=1))
    base = next((x["runs_per_hour"] for x in launches if x["jobs"] == 1 and x["done"]), None)
    print(f"\n{device}, torch {torch.__version__}; {args.train} training clips, {args.epochs} epoch(s)")
    print(
        "| runs at once | done | span (s) | runs/hour | x k=1 | mean run (s) | GPU util (%) | GPU mem (GiB) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for x in launches:
        speedup = f"{x['runs_per_hour'] / base:.2f}" if base else "–"
        util = f"{x['gpu_util_mean_pct']:.0f}" if x["gpu_util_mean_pct"] is not None else "–"
        memory = f"{x['gpu_memory_peak_mib'] / 1024:.1f}" if x["gpu_memory_peak_mib"] is not None else "–"
        mean = f"{x['mean_run_s']:.1f}" if x["mean_run_s"] else "–"
        cells = [
            x["jobs"],
            f"{x['done']}/{x['runs']}",
            f"{x['runs_span_s']:.1f}",
            f"{x['runs_per_hour']:.0f}",
        ]
        print("| " + " | ".join(map(str, cells + [speedup, mean, util, memory])) + " |")
    print(report.stdout[-2000:] + report.stderr[-2000:])
    return 0 if all(x["done"] == x["runs"] for x in launches) else 1


if __name__ == "__main__":
    sys.exit(main())
