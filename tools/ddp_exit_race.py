"""Counts how often a 2-process gloo DDP run aborts at exit, with and without unwrapping first.

A ``DistributedDataParallel`` wrapper still alive when Python exits is freed during the
interpreter's shutdown; a gloo process then sometimes aborts with "terminate called without an
active exception" (exit code -6). ``recipe.distributed.shutdown_process_group(brain)`` frees the
Brain's wrappers first. This script launches a tiny DDP run many times, each way, while busy
loops load the CPU (the abort is rare on an idle machine), and prints the failure counts::

    python tools/ddp_exit_race.py --runs 50 --busy 3

Measured on the 2-core development machine (torch 2.14.1, Python 3.11, ``--runs 40 --busy 3``):
8 of 40 runs aborted when the wrapper was left to the interpreter, none of 40 when it was
unwrapped first.
"""

import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKER = """
import sys, torch, torch.distributed as dist
sys.path.insert(0, {repo!r})
from speechbrain_mambadapter.recipe.distributed import shutdown_process_group

class Brain:
    pass

dist.init_process_group("gloo")
brain = Brain()
brain.modules = torch.nn.ModuleDict(
    {{"model": torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 4))}}
)
brain.modules["model"](torch.randn(2, 4)).sum().backward()
shutdown_process_group(brain if sys.argv[1] == "unwrap" else None)
"""


def busy_loop():
    while True:
        pass


def count_failures(script, mode, runs, port):
    torchrun = Path(sys.executable).parent / "torchrun"
    failures = 0
    for _ in range(runs):
        command = [str(torchrun), "--nproc_per_node=2", f"--master_port={port}", script, mode]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        failures += result.returncode != 0
    return failures


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=50, help="launches per mode")
    parser.add_argument("--busy", type=int, default=3, help="busy-loop processes loading the CPU")
    parser.add_argument("--port", type=int, default=29612)
    args = parser.parse_args()
    loads = [multiprocessing.Process(target=busy_loop, daemon=True) for _ in range(args.busy)]
    for load in loads:
        load.start()
    try:
        with tempfile.TemporaryDirectory() as folder:
            script = os.path.join(folder, "worker.py")
            Path(script).write_text(WORKER.format(repo=str(REPO)))
            for mode in ("unwrap", "leave"):
                failures = count_failures(script, mode, args.runs, args.port)
                print(f"{mode}: {failures} of {args.runs} runs failed", flush=True)
    finally:
        for load in loads:
            load.terminate()


if __name__ == "__main__":
    main()
