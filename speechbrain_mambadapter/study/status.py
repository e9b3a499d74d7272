"""Where each run of a study stands, from its output folder alone, and the progress view.

A launcher writes ``study_status.json`` in a run's output folder when it starts the run and when
the run ends (the command's output goes to ``study_log.txt`` beside it); the recipe's own result
file (``metrics.json`` or ``wer_test.txt``) says that the run finished. So any process, on any
machine that sees the folders (a login node, another launcher), can tell each run's state:

* ``done``: the result file is there and readable;
* ``running``: the status says so, and its process is alive (same machine) or its heartbeat is
  recent (SLURM jobs write one every :data:`HEARTBEAT_S` seconds);
* ``failed``: its last attempt ended without a result (the status keeps the exit code and reason);
* ``left``: never started, or interrupted (the next launch resumes it from its checkpoint).

Authors
 * speechbrain-mambadapter contributors 2026
"""

import json
import os
import shutil
import socket
import time
from collections import Counter

from speechbrain_mambadapter.results import read_result

STATUS_FILE = "study_status.json"
LOG_FILE = "study_log.txt"
HEARTBEAT_S = 30
# A heartbeat older than this means the process died without saying so (node failure, SIGKILL).
STALE_S = 180
STATES = ("done", "running", "failed", "left")


def write_status(folder, **fields):
    """Replace the status of the run in ``folder`` (atomically: readers never see half a file)."""
    os.makedirs(folder, exist_ok=True)
    fields.setdefault("time", time.time())
    path = os.path.join(folder, STATUS_FILE)
    tmp = f"{path}.{os.getpid()}.part"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(fields, f, indent=1)
    os.replace(tmp, path)


def read_status(folder):
    """The status of the run in ``folder``, or None."""
    try:
        with open(os.path.join(folder, STATUS_FILE), encoding="utf-8") as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def pid_alive(pid):
    """Whether process ``pid`` exists on this machine (a zombie counts as ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return True


def is_active(status, now=None):
    """Whether a ``running`` status belongs to a process that still runs."""
    if not status or status.get("state") != "running":
        return False
    if status.get("host") == socket.gethostname() and status.get("pid"):
        return pid_alive(status["pid"])
    return (now or time.time()) - status.get("heartbeat", status.get("time", 0)) < STALE_S


def run_state(run):
    """``(state, status)`` of a run: one of :data:`STATES`, and its status file's content (or None)."""
    status = read_status(run.output_folder)
    if not run.prepare:
        try:
            if read_result(run.output_folder) is not None:
                return "done", status
        except ValueError:
            pass  # a result file cut short: the run must write it again
    elif status and status.get("state") == "done":
        return "done", status
    if is_active(status):
        return "running", status
    if status and status.get("state") == "failed":
        return "failed", status
    return "left", status


def clear_outputs(folder):
    """Remove what a finished data-preparation run wrote (a ``--debug`` run's metrics are no result),
    keeping its status and log: the prepared data itself is in the task's ``prepared`` folder."""
    for name in os.listdir(folder):
        if name in (STATUS_FILE, LOG_FILE):
            continue
        path = os.path.join(folder, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


def log_tail(folder, lines=20):
    """The last ``lines`` lines of a run's ``study_log.txt`` (progress-bar redraws dropped)."""
    try:
        with open(os.path.join(folder, LOG_FILE), encoding="utf-8", errors="replace") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read()
    except FileNotFoundError:
        return "(no log)"
    kept = [line.rsplit("\r", 1)[-1] for line in text.splitlines()]
    return "\n".join(kept[-lines:])


def count(states):
    """``{state: n}`` for every state of :data:`STATES`.

    Example
    -------
    >>> count(["done", "left", "done"])
    {'done': 2, 'running': 0, 'failed': 0, 'left': 1}
    """
    counter = Counter(states)
    return {state: counter[state] for state in STATES}


def progress_line(counts):
    """``3/8 done, 2 running, 0 failed, 3 left``.

    Example
    -------
    >>> progress_line({"done": 3, "running": 2, "failed": 0, "left": 3})
    '3/8 done, 2 running, 0 failed, 3 left'
    """
    total = sum(counts.values())
    others = ", ".join(f"{counts[state]} {state}" for state in STATES[1:])
    return f"{counts['done']}/{total} done, {others}"


def format_progress(study, runs, tail=15, show_left=10, prepares=()):
    """The progress view: counts, runs per task and experiment, the running runs, and the failed
    runs (and data preparations) with their log tails.

    Arguments
    ---------
    study : Study
        The study (for its name).
    runs : list of Run
        Its runs (``Study.runs``).
    tail : int
        Lines of each failed run's log to show.
    show_left : int
        Runs not yet started to name (the rest are counted).
    prepares : list of Run
        Its data-preparation runs (``Study.prepare_runs``): a failed one is shown too, since its
        group's runs cannot start (on SLURM they wait for it forever: cancel them, fix, submit again).
    """
    if not runs:
        return f"Study {study.name}: no runs (the --tasks and --points given leave none)."
    states = [(run, *run_state(run)) for run in runs]
    lines = [f"Study {study.name}: {progress_line(count([s for _, s, _ in states]))}"]
    per_cell = {}
    for run, state, _ in states:
        per_cell.setdefault((run.task.name, run.point.experiment), []).append(state)
    width = max(len(f"{t}/{e}") for t, e in per_cell)
    for (task, experiment), cell in per_cell.items():
        counts = count(cell)
        marks = "".join({"done": "#", "running": ">", "failed": "X", "left": "."}[s] for s in cell)
        lines.append(f"  {f'{task}/{experiment}':<{width}}  {marks}  {counts['done']}/{len(cell)}")
    running = [(run, status) for run, state, status in states if state == "running"]
    if running:
        lines.append("Running:")
        for run, status in running:
            since = time.time() - status.get("started", time.time())
            where = status.get("host", "?") + (
                f" GPU {status['gpu']}" if status.get("gpu") is not None else ""
            )
            lines.append(f"  {run.name}  ({since / 60:.1f} min, {where})")
    failed = [(run, status) for run, state, status in states if state == "failed"]
    failed = [
        (run, status) for run in prepares for state, status in [run_state(run)] if state == "failed"
    ] + failed
    for run, status in failed:
        lines.append(f"Failed: {run.name}: {status.get('reason', 'no reason recorded')}")
        lines.append("  " + log_tail(run.output_folder, tail).replace("\n", "\n  "))
    left = [run for run, state, _ in states if state == "left"]
    if left:
        named = ", ".join(run.name for run in left[:show_left])
        more = f" and {len(left) - show_left} more" if len(left) > show_left else ""
        lines.append(f"Left: {named}{more}")
    return "\n".join(lines)
