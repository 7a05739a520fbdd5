"""What users read about finished runs: tables, plots, reports and exports, built from run records
and the metric specs (:mod:`fairbench.metrics.specs`).

table.py           the table model (cells, columns, rows)      render.py       one renderer per format
grouping.py        runs grouped into contexts and settings     cells.py        our means, the paper's, differences
published.py       the paper's tables and the needs legend     notes.py        warnings under a table
table_layout.py    ``TableLayout`` and ``build_tables``          attribute_table.py  one metric per attribute
layouts/           the registered layouts (``fairbench compare --layout``)
reporting.py       end-of-run table, ``compare``, suite reports   plots.py     Pareto and training curves
report_html.py     the one-page report                          export.py    runs as flat tables
"""
