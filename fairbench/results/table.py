"""The table model every table layout builds and every renderer reads: a table of labelled rows
and titled columns whose cells hold a mean, its interval, the paper's printed text, or the reason
the cell is empty.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

NAN = float("nan")


@dataclass
class Cell:
    value: float = NAN
    ci95: float = NAN
    n: int = 0
    digits: int = 2
    note: str | None = None  # why the cell is empty
    printed: str | None = None  # the paper's text, as printed
    signed: bool = False  # a difference
    flag: str = ""  # "†": mean over the seeds where defined

    @property
    def empty(self) -> bool:
        return self.printed is None and not finite(self.value)

    def text(self) -> str:
        if self.printed is not None:
            return self.printed
        if not finite(self.value):
            return self.note or "n/a"
        fmt = f"{{:{'+' if self.signed else ''}.{self.digits}f}}"
        out = fmt.format(self.value)
        if finite(self.ci95):
            out += f" ± {self.ci95:.{self.digits}f}"
        return out + self.flag

    def as_json(self) -> dict[str, Any]:
        return {"value": json_num(self.value if self.printed is None else float(self.printed)),
                "ci95": json_num(self.ci95), "n": self.n, "text": self.text(),
                "note": self.note if self.empty else None}


def finite(x: Any) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


def json_num(x: float) -> float | None:
    return float(x) if finite(x) else None



@dataclass
class Column:
    key: str  # "group:<label>", "metric:<key>" or, in the min-group layout, "<method label>|<kind>"
    title: str
    digits: int = 2
    source: str = ""  # min-group layout: whose numbers the column holds
    needs: str = ""


@dataclass
class Row:
    kind: str  # "ours" | "paper" | "diff" | "attribute"
    labels: dict[str, str]
    cells: dict[str, Cell]


@dataclass
class Table:
    layout: str
    title: str
    context: dict[str, Any]
    label_titles: list[str]
    columns: list[Column]
    rows: list[Row]
    notes: list[str]
    #: rows above the body that describe the columns (min-group: whose numbers, what they need)
    lead: list[list[str]] = field(default_factory=list)


