"""Launchers: where and how a suite's jobs are trained (``fairbench suite run --launcher``).

base.py   the contract, one job's training (``train_job``), queue records
local.py  processes on this machine (one at a time, a GPU-pinned pool, CPU workers)
slurm.py  a Slurm job array through submitit, requeued on preemption
"""
