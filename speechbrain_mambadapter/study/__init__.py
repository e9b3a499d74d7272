"""The paper's studies as sweeps of recipe runs, on one machine or a SLURM cluster.

A study file (``studies/*.yaml``, :mod:`.spec`) is a grid of hparams overrides x tasks x folds x
seeds; each point is the recipe's own ``train.py`` and hparams file with ``--key=value`` overrides.
``python -m speechbrain_mambadapter.study`` runs it (:mod:`.local`: N runs at a time on CPUs or
GPUs; :mod:`.slurm`: job arrays through submitit), shows its progress (:mod:`.status`) and writes
its table and figure (:mod:`.report`)::

    python -m speechbrain_mambadapter.study run studies/fig2_scaling.yaml \\
        --data GSC=/data/speech_commands_v0.02 --launcher local --jobs 4 --gpus 0 1
    python -m speechbrain_mambadapter.study status studies/fig2_scaling.yaml
    python -m speechbrain_mambadapter.study report studies/fig2_scaling.yaml

Authors
 * speechbrain-mambadapter contributors 2026
"""

from speechbrain_mambadapter.study.spec import Point, Run, Study, StudyError, Task, load_study

__all__ = ["Point", "Run", "Study", "StudyError", "Task", "load_study"]
