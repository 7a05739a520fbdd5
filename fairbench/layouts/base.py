"""The layout contract: a registered object that turns finished run records into text.

A layout is one module::

    from fairbench.layouts.base import Layout
    from fairbench.registry import register_layout

    @register_layout("per-cost")
    class PerCost(Layout):
        summary = "accuracy and DoB per training FLOP"
        def text(self, done, skipped, fmt, options):
            ...  # build fairbench.tables.Table objects and return fairbench.tables.render(tables, fmt, skipped)

declared under ``[project.entry-points."fairbench.layouts"]`` (a built-in module in this
package is found without that). ``fairbench compare --layout``, a suite's ``[report] layouts``
and ``fairbench list layouts`` see it at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from fairbench import registry
from fairbench.runs.record import RunRecord


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

    def text(self, done: list[RunRecord], skipped: list[tuple[str, str]], fmt: str, options: LayoutOptions) -> str:
        """The layout's text in ``fmt`` (one of ``fairbench.tables.FORMATS``); ``skipped``: (run, reason)
        of the runs left out."""
        raise NotImplementedError


def get_layout(name: str) -> Layout:
    return registry.layouts.get(name)()


def layout_names() -> list[str]:
    return registry.layouts.names()
