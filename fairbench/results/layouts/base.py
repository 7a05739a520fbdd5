"""The layout contract: a registered object that turns finished run records into text.

``Layout`` is the whole contract (``text``); ``TableLayout`` is a layout declared as data, whose
tables :func:`fairbench.results.row_tables.build_tables` builds: its metric columns (more come
from the metric specs that ask to be shown in it), whether it has a column per group, whether a
table pools target attributes, and small hooks for its title, per-seed reports and notes. A plugin
layout registered under the ``fairbench.layouts`` entry point works like a built-in; a checklist
is in docs/contributing.md, "A table layout".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from fairbench import registry
from fairbench.metrics.specs import view_metrics
from fairbench.records import Record
from fairbench.results.grouping import Context, Setting, seed_reports
from fairbench.results.render import render
from fairbench.results.row_tables import build_tables, row_table
from fairbench.results.table import Column, Table


@dataclass(frozen=True)
class LayoutOptions:
    """What ``fairbench compare`` passes to every layout (a layout ignores what it has no use for)."""

    paper: bool | None = None  # the paper's published rows beside ours: None = when the recipe matches
    needs: bool | None = None  # the column of what each method needs in training (None: the layout's default)
    by: str | None = None  # groups = the values of this protected column
    dataset: str | None = None  # only the reports evaluated on this dataset


class Layout:
    """One way to table finished runs."""

    summary: ClassVar[str] = ""

    def text(self, done: list[Record], skipped: list[tuple[str, str]], fmt: str, options: LayoutOptions) -> str:
        """The layout's text in ``fmt`` (one of ``fairbench.results.render.FORMATS``); ``skipped``: (run, reason)
        of the runs left out."""
        raise NotImplementedError


class TableLayout(Layout):
    """A layout of method rows and metric columns, declared as data (see the module docstring)."""

    #: its own metric columns, in order (report keys of registered metrics)
    metrics: ClassVar[tuple[str, ...]] = ()
    #: an accuracy column per group of the evaluated data before the metrics
    group_columns: ClassVar[bool] = False
    #: a table per target attribute (False: a setting's target attributes pooled in one table)
    per_target: ClassVar[bool] = True
    #: the column of what each method needs in training, unless --needs / --no-needs says
    shows_needs: ClassVar[bool] = False
    #: the title before the context it tables
    heading: ClassVar[str] = "Comparison"

    def columns(self) -> list[str]:
        """Its metric columns: its own, then every metric whose spec asks to be shown in it."""
        return view_metrics(self.registered_name, self.metrics)

    def title(self, ctx: Context, by: str | None) -> str:
        return self.heading

    def default_by(self, ctx: Context) -> str | None:
        """The protected column whose values are the groups when --by is not given (None: the run's groups)."""
        return None

    def reports(self, setting: Setting, by: str | None) -> tuple[dict[int, dict[str, Any]], list[str]]:
        """A setting's report per seed, and notes on seeds left out."""
        return seed_reports(setting), []

    def source(self, setting: Setting) -> str:
        """What a row's source label adds after its seeds."""
        return ""

    def notes(self, reports: list[dict[str, Any]]) -> list[str]:
        """Notes on units and definitions under each table."""
        return []

    def row_notes(self, setting: Setting, reports: dict[int, dict[str, Any]], columns: list[Column]) -> list[str]:
        return []

    def diff_block(self, setting: Setting, paper_targets: set[str]) -> str | None:
        """Why a row is not compared with the paper's row, if it is not (None: compared)."""
        return None

    def table(self, ctx: Context, paper: bool | None, show_needs: bool, by: str | None) -> Table:
        return row_table(self, ctx, paper, show_needs, by)

    def text(self, done: list[Record], skipped: list[tuple[str, str]], fmt: str, options: LayoutOptions) -> str:
        tables = build_tables(done, self, paper=options.paper, needs=options.needs, by=options.by,
                              dataset=options.dataset)
        return render(tables, fmt, skipped=skipped)


def get_layout(name: str) -> Layout:
    return registry.layouts.get(name)()


def layout_names() -> list[str]:
    return registry.layouts.names()
