"""Launchers: where and how a suite's jobs are trained (``fairbench suite run --launcher``).

suite_run.py       ``fairbench suite run | status``: launch what is not done, evaluate, report, list
base.py            the contract, one job's training (``train_job``) and its outcome
suite_progress.py  the suite's progress display, and a Reporter that draws one job on it
local.py           processes on this machine (one at a time, a GPU-pinned pool, CPU workers)
slurm.py           a Slurm job array through submitit, requeued on preemption

A job's state and queue records are read from its run folder (:mod:`fairbench.runs.job_state`).
"""
