"""Submit a study's runs to SLURM through submitit, as job arrays.

Each run is one task of a job array: a :class:`RecipeJob` that runs the recipe's ``train.py``
on the node (output to ``study_log.txt``, state and heartbeat to ``study_status.json`` in the run's
output folder, as the local launcher does), so ``python -m speechbrain_mambadapter.study status``
follows a cluster study from the login node. The data-preparation runs (one per task and fold)
go first, as their own array; the runs' array waits for it (``--dependency=afterok``). A job that
reaches its time limit or is preempted is requeued by submitit and the recipe resumes from its
last checkpoint. Submitting again skips finished runs and runs that are running.

``cluster="local"`` or ``"debug"`` runs the very same jobs through submitit on this machine
(submitit's local and debug executors), to try a study's SLURM path without a cluster.

Authors
 * speechbrain-mambadapter contributors 2026
"""

import os
import signal
import socket
import subprocess
import threading
import time

try:
    import submitit
except ImportError as error:  # the CLI says how to install it
    raise ImportError(
        "The SLURM launcher needs submitit: pip install 'speechbrain-mambadapter[slurm]' (or pip install "
        "submitit)."
    ) from error

from speechbrain_mambadapter.study import status as st

# Settings of the study file's `slurm:` section (and their command-line flags).
SLURM_KEYS = (
    "time_min",
    "partition",
    "gpus_per_job",
    "cpus_per_job",
    "mem_gb",
    "array_parallelism",
    "account",
    "qos",
    "constraint",
    "setup",
    "additional",
)
DEFAULTS = {"time_min": 24 * 60, "gpus_per_job": 1, "cpus_per_job": 8, "array_parallelism": 64}


class RecipeJob(submitit.helpers.Checkpointable):
    """One recipe run as a submitit job (requeued with the same command on timeout or preemption).

    Arguments
    ---------
    run : Run
        The study's run (its output folder holds the status and the log).
    command : list of str
        The command line (with ``--device=cuda:0`` when the job has a GPU).
    """

    def __init__(self, run, command):
        self.run = run
        self.command = list(command)
        self._process = None

    def __getstate__(self):
        return {"run": self.run, "command": self.command}

    def __setstate__(self, state):
        self.__init__(state["run"], state["command"])

    def __call__(self):
        """Run the command; raise with the log's tail when it fails."""
        folder = self.run.output_folder
        os.makedirs(folder, exist_ok=True)
        job_id = submitit.JobEnvironment().job_id
        started = time.time()
        status = dict(
            state="running",
            host=socket.gethostname(),
            started=started,
            heartbeat=started,
            launcher="slurm",
            job_id=job_id,
            command=self.command,
            identity=self.run.identity,
        )
        with open(os.path.join(folder, st.LOG_FILE), "ab") as log:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"\n=== {stamp} job {job_id}: {' '.join(self.command)}\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        status["pid"] = self._process.pid
        st.write_status(folder, **status)
        stop = threading.Event()
        beat = threading.Thread(target=_heartbeat, args=(folder, status, stop), daemon=True)
        beat.start()
        code = self._process.wait()
        stop.set()
        beat.join()
        ok = code == 0 and (self.run.prepare or st.run_state(self.run)[0] == "done")
        reason = None if ok else (f"exit code {code}" if code else "exit code 0 but no result file")
        status.update(
            state="done" if ok else "failed",
            reason=reason,
            returncode=code,
            ended=time.time(),
            time=time.time(),
        )
        st.write_status(folder, **status)
        if not ok:
            raise RuntimeError(
                f"{self.run.name} failed ({reason}); its log ends with:\n{st.log_tail(folder)}"
            )
        if self.run.prepare:
            st.clear_outputs(folder)
        return self.run.name

    def checkpoint(self, *args, **kwargs):
        """Called by submitit before a requeue: stop the recipe (it resumes from its checkpoint)."""
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGTERM)
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
        status = st.read_status(self.run.output_folder) or {}
        status.update(state="interrupted", ended=time.time(), time=time.time())
        st.write_status(self.run.output_folder, **status)
        return submitit.helpers.DelayedSubmission(RecipeJob(self.run, self.command))


def _heartbeat(folder, status, stop):
    while not stop.wait(st.HEARTBEAT_S):
        status.update(heartbeat=time.time(), time=time.time())
        st.write_status(folder, **status)


def executor_parameters(name, settings):
    """submitit ``AutoExecutor.update_parameters`` keywords from the study's SLURM settings.

    Arguments
    ---------
    name : str
        The job name (the study's).
    settings : dict
        Keys of :data:`SLURM_KEYS` (the study file's ``slurm:`` section, then the command line).

    Example
    -------
    >>> params = executor_parameters("fig2", {"partition": "gpu", "time_min": 120})
    >>> params["slurm_partition"], params["timeout_min"], params["gpus_per_node"]
    ('gpu', 120, 1)
    """
    unknown = [key for key in settings if key not in SLURM_KEYS]
    if unknown:
        raise ValueError(f"Unknown SLURM setting(s) {unknown}; the settings are {list(SLURM_KEYS)}.")
    s = {**DEFAULTS, **{k: v for k, v in settings.items() if v is not None}}
    params = {
        "name": name,
        "timeout_min": int(s["time_min"]),
        "gpus_per_node": int(s["gpus_per_job"]),
        "cpus_per_task": int(s["cpus_per_job"]),
        "nodes": 1,
        "tasks_per_node": 1,
        "slurm_array_parallelism": int(s["array_parallelism"]),
    }
    if s.get("mem_gb") is not None:
        params["mem_gb"] = float(s["mem_gb"])
    for key in ("partition", "account", "qos", "constraint", "setup"):
        if s.get(key) is not None:
            params[f"slurm_{key}"] = s[key]
    if s.get("additional"):
        params["slurm_additional_parameters"] = dict(s["additional"])
    return params


def sbatch_preview(params, n_jobs, folder):
    """The ``#SBATCH`` header of an array of ``n_jobs`` with ``params`` (no cluster needed)."""
    from submitit.slurm.slurm import SlurmExecutor, _make_sbatch_string

    equivalence = SlurmExecutor._equivalence_dict()
    sbatch = {}
    for key, value in params.items():
        if key.startswith("slurm_"):
            sbatch[key[len("slurm_") :]] = value
        elif key in equivalence:
            sbatch[equivalence[key]] = value
    if "mem" in sbatch:
        sbatch["mem"] = f"{int(sbatch['mem'] * 1024)}MB"
    if n_jobs > 1:
        sbatch["map_count"] = n_jobs
    text = _make_sbatch_string(command="<submitit runs one RecipeJob>", folder=folder, **sbatch)
    return "\n".join(line for line in text.splitlines() if line.startswith("#SBATCH"))


def submit(prepares, jobs, folder, params, cluster="slurm", gpu=True, wait=False, print_fn=print):
    """Submit the preparation array, then the runs' array; return the submitit jobs of the runs.

    Arguments
    ---------
    prepares, jobs : list of (Run, list of str)
        The data-preparation runs and the study's runs still to run, with their commands.
    folder : str
        submitit's folder (its pickles and the jobs' own logs).
    params : dict
        :func:`executor_parameters`.
    cluster : str
        ``slurm``, or ``local`` / ``debug`` to run the same jobs on this machine.
    gpu : bool
        Whether each job has a GPU (adds ``--device=cuda:0``).
    wait : bool
        Wait for the runs to end (the preparation array is always waited for off SLURM, where
        submitit has no dependencies).
    """
    executor = submitit.AutoExecutor(folder=os.path.join(folder, "%j"), cluster=cluster)
    executor.update_parameters(**params)
    device = ["--device=cuda:0"] if gpu else []

    def submit_array(pairs, dependency=None):
        if dependency and cluster == "slurm":
            executor.update_parameters(slurm_additional_parameters={
                **params.get("slurm_additional_parameters", {}), "dependency": dependency,
            })  # fmt: skip
        with executor.batch():
            submitted = [executor.submit(RecipeJob(run, command + device)) for run, command in pairs]
        return submitted

    dependency = None
    if prepares:
        prep_jobs = submit_array(prepares)
        array_id = prep_jobs[0].job_id.split("_")[0]
        print_fn(f"Submitted {len(prep_jobs)} data-preparation job(s): {array_id}")
        if cluster == "slurm":
            dependency = f"afterok:{array_id}"
        else:
            failed = _wait(prep_jobs, prepares, print_fn)
            if failed:
                print_fn("Data preparation failed; the runs were not submitted.")
                return []
    run_jobs = submit_array(jobs, dependency) if jobs else []
    if run_jobs:
        print_fn(
            f"Submitted {len(run_jobs)} run(s): {run_jobs[0].job_id.split('_')[0]}"
            + (f" (they start after {dependency})" if dependency else "")
        )
    if wait and run_jobs:
        _wait(run_jobs, jobs, print_fn)
    return run_jobs


def _wait(jobs, pairs, print_fn):
    """Wait for submitit jobs; return the names of the failed ones."""
    failed = []
    for job, (run, _) in zip(jobs, pairs):
        try:
            job.result()
            print_fn(f"finished {run.name} (job {job.job_id})")
        except Exception as error:  # submitit re-raises the job's exception, or its own on a crash
            failed.append(run.name)
            print_fn(f"FAILED {run.name} (job {job.job_id}): {str(error).splitlines()[0]}")
    return failed
