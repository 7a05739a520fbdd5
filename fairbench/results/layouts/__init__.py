"""Table layouts of ``fairbench compare --layout NAME`` and of suite reports: each layout a registered
:class:`fairbench.results.layouts.base.Layout` (entry-point group ``fairbench.layouts``), so the
CLI, suites and reports list and use whatever is registered.

base.py     the contract (``Layout.text``), the options every layout receives, lookup
summary.py  ``summary``: one row per method, setting and evaluated dataset, headline metrics
paper.py    the paper's layouts ``groups``, ``methods``, ``attributes``, ``min-group``, declared as data
            (:class:`fairbench.results.table_layout.TableLayout`)
protocol.py ``protocol``: one table per selection rule over a suite's search trials, with cost and noise floor
"""
