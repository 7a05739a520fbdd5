"""The layout contract: a registered object that turns finished run records into text
(``Layout.text``); a layout of method rows and metric columns is declared as data instead
(:class:`fairbench.results.table_layout.TableLayout`). A plugin layout registered under the
``fairbench.layouts`` entry point works like a built-in (docs/contributing.md, "A table layout").
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
        """The layout's text in ``fmt`` (one of ``fairbench.results.render.FORMATS``); ``skipped``: (run, reason)
        of the runs left out."""
        raise NotImplementedError


def get_layout(name: str) -> Layout:
    return registry.layouts.get(name)()


def layout_names() -> list[str]:
    return registry.layouts.names()
