"""Suites: many runs declared in one TOML file, launched, searched and reported together.

suite.py      the suite file's model, its jobs and how they resolve to run configs
search.py     random-search trials, drawn from the spaces in fairbench/search_spaces.py
halving.py    successive halving: a search strategy that trains trials rung by rung
launchers/    where and how the jobs train (local processes, Slurm, a plugin's own)

Schema and workflow: docs/fair-comparison.md and docs/clusters.md.
"""
