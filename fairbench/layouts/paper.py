"""The paper's layouts, built by :mod:`fairbench.tables` and rendered by its one renderer per format:

``groups``      tables 2-4: accuracy per group, Max/Min, Overall, DoB; per training task and evaluated dataset
``methods``     table 5: what each method needs, accuracy per race (``--by``), Overall, DoB, Max/Min
``attributes``  tables 6-7: per seed the mean over target attributes, then mean and interval over seeds
``min-group``   table 8: minimum group accuracy per target attribute (rows) and method (columns)
"""

from __future__ import annotations

from fairbench.layouts.base import Layout, LayoutOptions
from fairbench.registry import register_layout
from fairbench.runs.record import RunRecord
from fairbench.tables import build_tables, render


class PaperLayout(Layout):
    """One of the paper's layouts: the name it is registered under is the layout tables build."""

    def text(self, done: list[RunRecord], skipped: list[tuple[str, str]], fmt: str, options: LayoutOptions) -> str:
        tables = build_tables(done, self.registered_name, paper=options.paper, needs=options.needs, by=options.by,
                              dataset=options.dataset)
        return render(tables, fmt, skipped=skipped)


@register_layout("groups")
class Groups(PaperLayout):
    summary = "the paper's tables 2-4: accuracy per group, Max/Min, Overall, DoB"


@register_layout("methods")
class Methods(PaperLayout):
    summary = "the paper's table 5: what each method needs, accuracy per race (--by), Overall, DoB, Max/Min"


@register_layout("attributes")
class Attributes(PaperLayout):
    summary = "the paper's tables 6-7: means over target attributes (accuracy, TPR, DEO, DEOdds)"


@register_layout("min-group")
class MinGroup(PaperLayout):
    summary = "the paper's table 8: minimum group accuracy per target attribute and method"
