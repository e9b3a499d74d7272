"""Run a study's recipe runs on this machine, N at a time, on CPUs or spread over GPUs.

Each run is its recipe's ``train.py`` in its own process (its own process group), its output in
``study_log.txt`` and its state in ``study_status.json`` of its output folder
(``speechbrain_mambadapter.study.status``). Before the first run of a task and fold, that group's
data-preparation run (a short ``--debug`` run) must succeed, so that parallel runs never prepare
the same data at once; groups prepare in parallel. Finished runs are skipped, interrupted ones
start again and resume from their last checkpoint (the recipes' own resume), and runs that another
live process is running (a launcher killed without its children, another launcher) are waited for,
not started twice. Ctrl-C or SIGTERM stops the runs and marks them interrupted.

With GPUs, each run sees one GPU (``CUDA_VISIBLE_DEVICES``) and gets ``--device=cuda:0``; the runs
go to the GPU with the fewest runs, so ``--jobs 8`` on 4 GPUs puts two runs on each. On CPUs each
run gets ``cores / jobs`` threads (``OMP_NUM_THREADS``) unless the environment sets it.

Authors
 * speechbrain-mambadapter contributors 2026
"""

import os
import signal
import socket
import subprocess
import time

from speechbrain_mambadapter.study import status as st


class Interrupted(Exception):
    """The launcher received SIGINT or SIGTERM."""


def _raise_interrupted(signum, frame):
    raise Interrupted(signal.Signals(signum).name)


class LocalLauncher:
    """Runs jobs ``(run, command)`` on this machine, ``jobs`` at a time.

    Arguments
    ---------
    jobs : int
        Runs at once.
    gpus : list of int, optional
        GPU indices to spread the runs over (several runs may share one); None: CPU.
    poll_s : float
        How often the launcher looks at its runs.
    print_fn : callable
        Where progress lines go.
    """

    def __init__(self, jobs=1, gpus=None, poll_s=0.5, print_fn=print):
        if jobs < 1:
            raise ValueError(f"jobs must be at least 1, got {jobs}.")
        self.jobs = jobs
        self.gpus = list(gpus) if gpus else []
        self.poll_s = poll_s
        self.print = print_fn
        self.running = {}  # run name -> (run, process, gpu, started)
        self.states = {}  # run name -> state, for the progress lines
        self.groups = {}  # (task, fold) -> unprepared | elsewhere | preparing | ready | failed
        self.prepare_of = {}

    def run(self, jobs, prepares=()):
        """Run every job not done yet; return the final state count (``status.count``).

        Arguments
        ---------
        jobs : list of (Run, list of str)
            The study's runs and their command lines.
        prepares : list of (Run, list of str)
            One data-preparation run per group ``(task, fold)`` of ``jobs``.
        """
        self.prepare_of = {run.group: (run, command) for run, command in prepares}
        self.states = {run.name: st.run_state(run)[0] for run, _ in jobs}
        pending = [(run, command) for run, command in jobs if self.states[run.name] != "done"]
        # A group needs its preparation only if one of its runs must still run.
        self.groups = {}
        for run, _ in pending:
            if run.group in self.prepare_of and run.group not in self.groups:
                self.groups[run.group] = self._preparation_state(run.group)
        counts = st.count(self.states.values())
        self.print(f"{st.progress_line(counts)}; {len(pending)} to run, {self.jobs} at a time")
        previous = {sig: signal.signal(sig, _raise_interrupted) for sig in (signal.SIGINT, signal.SIGTERM)}
        last_beat = time.monotonic()
        try:
            while pending or self.running:
                self._reap()
                if time.monotonic() - last_beat > st.HEARTBEAT_S:
                    self._heartbeat()
                    last_beat = time.monotonic()
                while len(self.running) < self.jobs:
                    job = self._next(pending)
                    if job is None:
                        break
                    self._start(*job)
                if not self.running and not self._waiting(pending):
                    break  # what is left belongs to groups whose preparation failed
                time.sleep(self.poll_s)
        except Interrupted as signal_name:
            self.print(
                f"{signal_name}: stopping {len(self.running)} run(s); they resume from their checkpoints"
            )
            self._stop_all()
            raise KeyboardInterrupt from None
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        for run, _ in pending:
            if self.groups.get(run.group) == "failed":
                log = os.path.join(self.prepare_of[run.group][0].output_folder, st.LOG_FILE)
                st.write_status(
                    run.output_folder, state="failed", reason=f"its data preparation failed; see {log}"
                )
        return st.count(st.run_state(run)[0] for run, _ in jobs)

    def _preparation_state(self, group):
        state = st.run_state(self.prepare_of[group][0])[0]
        # "running": another live process prepares it; looked at again until it ends.
        return {"done": "ready", "running": "elsewhere"}.get(state, "unprepared")

    def _next(self, pending):
        """The next job to start (removed from ``pending``), or None."""
        for group, state in self.groups.items():
            if state == "elsewhere":
                self.groups[group] = state = self._preparation_state(group)
            if state == "unprepared":
                self.groups[group] = "preparing"
                return self.prepare_of[group]
        for i, (run, command) in enumerate(pending):
            if self.groups.get(run.group, "ready") != "ready":
                continue
            state = st.run_state(run)[0]
            if state == "running":
                continue  # another process runs it; looked at again when that ends
            del pending[i]
            if state == "done":  # finished by that other process
                self.states[run.name] = "done"
                return self._next(pending)
            return run, command
        return None

    def _waiting(self, pending):
        """Whether some pending run can still start: its group is (being) prepared."""
        return any(self.groups.get(run.group, "ready") != "failed" for run, _ in pending)

    def _start(self, run, command):
        gpu = None
        env = dict(os.environ)
        if self.gpus:
            load = {g: 0 for g in self.gpus}
            for _, _, used, _ in self.running.values():
                load[used] += 1
            gpu = min(self.gpus, key=lambda g: load[g])
            env["CUDA_VISIBLE_DEVICES"] = str(gpu)
            command = command + ["--device=cuda:0"]
        elif "OMP_NUM_THREADS" not in os.environ:
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // self.jobs))
        os.makedirs(run.output_folder, exist_ok=True)
        with open(os.path.join(run.output_folder, st.LOG_FILE), "ab") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n".encode())
            log.flush()
            # Its own process group: Ctrl-C reaches the launcher, which stops the runs itself.
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        started = time.time()
        st.write_status(
            run.output_folder,
            state="running",
            pid=process.pid,
            host=socket.gethostname(),
            gpu=gpu,
            started=started,
            heartbeat=started,
            launcher="local",
            command=command,
            identity=run.identity,
        )
        self.running[run.name] = (run, process, gpu, started)
        if not run.prepare:
            self.states[run.name] = "running"
        self._event("started", run, f" on GPU {gpu}" if gpu is not None else "")

    def _reap(self):
        for name, (run, process, _, started) in list(self.running.items()):
            code = process.poll()
            if code is None:
                continue
            del self.running[name]
            seconds = time.time() - started
            if run.prepare:
                ok = code == 0
                self.groups[run.group] = "ready" if ok else "failed"
                if ok:
                    st.clear_outputs(run.output_folder)
            else:
                ok = code == 0 and st.run_state(run)[0] == "done"
                self.states[name] = "done" if ok else "failed"
            reason = None
            if not ok:
                reason = (
                    f"exit code {code}"
                    if code
                    else "exit code 0 but no result file (metrics.json or wer_test.txt)"
                )
            status = st.read_status(run.output_folder) or {}
            status.update(
                state="done" if ok else "failed",
                reason=reason,
                returncode=code,
                ended=time.time(),
                seconds=seconds,
            )
            status.pop("time", None)
            st.write_status(run.output_folder, **status)
            self._event(
                "finished" if ok else "FAILED",
                run,
                f" in {seconds:.0f} s" + (f" ({reason})" if reason else ""),
            )

    def _heartbeat(self):
        now = time.time()
        for run, _, _, _ in self.running.values():
            status = st.read_status(run.output_folder) or {}
            status.update(heartbeat=now, time=now)
            st.write_status(run.output_folder, **status)

    def _event(self, what, run, detail=""):
        counts = st.count(self.states.values())
        stamp = time.strftime("%H:%M:%S")
        self.print(f"[{stamp}] {st.progress_line(counts)} | {what} {run.name}{detail}")

    def _stop_all(self, grace_s=15):
        for _, process, _, _ in self.running.values():
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for run, process, _, _ in self.running.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait()
            status = st.read_status(run.output_folder) or {}
            status.update(state="interrupted", ended=time.time(), returncode=process.returncode)
            status.pop("time", None)
            st.write_status(run.output_folder, **status)
        self.running.clear()


def _signal_group(process, sig):
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass
