"""A metric is one declaration: how it is computed, its title, unit, digits and direction, which
group variant of which quantity it is, whether it is averaged per class, where it is shown and why
it can be undefined. Every table, layout, plot, the run summary and the history read these specs
from the ``fairbench.metrics`` registry, so a plugin's metric is computed and shown like a
built-in. How to declare one: docs/contributing.md, "A metric".
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from fairbench import registry

UNITS = ("%", "pp", "ratio")
#: prediction columns a metric may need: true labels, predicted labels, group labels, class scores
COLUMNS = ("y_true", "y_pred", "groups", "scores")
#: how a metric summarises its per-group quantity (``of``): the pooled value, the groups' values,
#: their max, min, max - min, max / min or standard deviation, or a combination of other gaps
VARIANTS = ("pooled", "per_group", "max", "min", "gap", "ratio", "std", "combined")
#: ``views`` value: shown in every view that lists metrics (table layouts and the run summary)
EVERY_VIEW = "*"
#: where a metric declared with ``metric()`` is shown unless it says otherwise
PLUGIN_VIEWS = ("summary", "run")
_ORDER = itertools.count()


@dataclass(frozen=True)
class MetricSpec:
    name: str  # the registered name = its key in a report (metrics.json)
    title: str
    unit: str  # "%", "pp" (percentage points) or "ratio"
    better: str  # "higher" or "lower"
    digits: int = 2  # per-seed values become one number as mean and 95% t-interval over seeds
    needs: tuple[str, ...] = ("y_true", "y_pred", "groups")
    compute: Callable[..., Any] | None = None
    #: computed inside evaluate_predictions' own report (built-ins); else evaluate_predictions calls ``compute``
    reported: bool = False
    #: a {group: value} mapping rather than one number (shown per group, never as one column)
    per_group: bool = False
    summary: str = ""
    #: the per-group quantity it summarises ("accuracy", "tpr" ...) and how (one of VARIANTS)
    of: str = ""
    variant: str = "pooled"
    #: views that show it beyond their own columns (layout names, "run": the end-of-run table; "*": all)
    views: tuple[str, ...] = ()
    #: its title in a view that calls it something else (the paper's "Overall", a short header)
    titles: Mapping[str, str] = field(default_factory=dict)
    #: recorded per epoch on validation in history.json
    history: bool = False
    #: why it can be NaN: a short reason, or a function of the report that names it (None: unknown)
    undefined: str | Callable[[Mapping[str, Any]], str | None] | None = None
    order: int = field(default_factory=lambda: next(_ORDER), compare=False)  # declaration order

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ValueError(f"metric {self.name!r}: unit must be one of {UNITS}, got {self.unit!r}")
        if self.better not in ("higher", "lower"):
            raise ValueError(f"metric {self.name!r}: better must be 'higher' or 'lower', got {self.better!r}")
        unknown = set(self.needs) - set(COLUMNS)
        if unknown or not {"y_true", "y_pred"} <= set(self.needs):
            raise ValueError(f"metric {self.name!r}: needs {self.needs}; columns are {COLUMNS} (y_true and y_pred always)")
        if self.compute is None and not self.reported:
            raise ValueError(f"metric {self.name!r}: a function to compute it, or reported=True for a report key")
        if self.variant not in VARIANTS:
            raise ValueError(f"metric {self.name!r}: variant must be one of {VARIANTS}, got {self.variant!r}")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.compute is None:
            raise TypeError(f"metric {self.name!r} is computed only inside evaluate_predictions' report")
        return self.compute(*args, **kwargs)

    @property
    def axis_label(self) -> str:
        arrow = "higher is better →" if self.better == "higher" else "← lower is better"
        return f"{self.title} ({self.unit}), {arrow}"

    def title_in(self, view: str) -> str:
        """Its title in ``view`` (a layout name or "run")."""
        return self.titles.get(view, self.title)

    def shown_in(self, view: str) -> bool:
        """Whether ``view`` shows it although the view does not list it."""
        return EVERY_VIEW in self.views or view in self.views

    def why_undefined(self, report: Mapping[str, Any]) -> str | None:
        """The short reason it is NaN in ``report`` (None: not known)."""
        return self.undefined(report) if callable(self.undefined) else self.undefined

    def value(self, y_true: Any, y_pred: Any, groups: Any, scores: Any = None) -> Any:
        """The metric on one set of predictions (``scores`` only if it needs them; NaN without)."""
        kwargs = {"scores": scores} if "scores" in self.needs else {}
        if "scores" in self.needs and scores is None:
            return float("nan")
        return self.compute(y_true, y_pred, groups, **kwargs)


def metric(name: str, *, title: str, unit: str, better: str, digits: int = 2, needs: tuple[str, ...] | None = None,
           reported: bool = False, per_group: bool = False, summary: str | None = None,
           views: tuple[str, ...] | None = None, **declared: Any) -> Callable:
    """Declare and register a metric computed by the decorated function ``(y_true, y_pred, groups[, scores=])``;
    ``declared``: any other field of :class:`MetricSpec` (of, variant, titles, history, undefined)."""

    def wrap(fn: Callable) -> Callable:
        text = summary or ((fn.__doc__ or "").strip().splitlines() or [""])[0]
        shown = views if views is not None else (() if reported else PLUGIN_VIEWS)
        spec = MetricSpec(name, title, unit, better, digits, tuple(needs or ("y_true", "y_pred", "groups")), fn,
                          reported, per_group, text, views=tuple(shown), **declared)
        registry.metrics.register(name, spec, fn.__module__)
        return fn

    return wrap


def declare(name: str, module: str, *, title: str, unit: str, better: str,
            needs: tuple[str, ...] = ("y_true", "y_pred", "groups"), summary: str = "", **declared: Any) -> MetricSpec:
    """Register a built-in key of evaluate_predictions' report that has no stand-alone function."""
    spec = MetricSpec(name, title, unit, better, needs=needs, reported=True, summary=summary or title, **declared)
    registry.metrics.register(name, spec, module)
    return spec


def all_specs() -> list[MetricSpec]:
    """Every registered metric (per-group ones included), in declaration order."""
    return sorted((s for _, s in registry.metrics.items() if isinstance(s, MetricSpec)), key=lambda s: s.order)


def metric_specs() -> dict[str, MetricSpec]:
    """Every registered metric that is one number per report, by name."""
    return {name: spec for name, spec in registry.metrics.items() if isinstance(spec, MetricSpec) and not spec.per_group}


def get_spec(name: str) -> MetricSpec:
    """One metric's spec; a clear error for an unknown name."""
    specs = metric_specs()
    if name not in specs:
        raise KeyError(f"unknown metric {name!r}; valid: {', '.join(specs)}")
    return specs[name]


def view_metrics(view: str, own: tuple[str, ...] = ()) -> list[str]:
    """A view's metric columns: its own (in its order), then every metric that asks to be shown in it."""
    return [*own, *(name for name, spec in metric_specs().items() if name not in own and spec.shown_in(view))]


def history_keys() -> list[str]:
    """The validation metrics recorded per epoch in history.json."""
    return [s.name for s in all_specs() if s.history]

