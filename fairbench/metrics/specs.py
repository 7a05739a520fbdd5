"""A metric is one declaration: how it is computed, what it is called, its unit, which way is
better, how it aggregates over seeds and which prediction columns it needs.

Every table, plot and report reads these specs from the ``fairbench.metrics`` registry (the
entry-point group of the same name), so a metric declared by a plugin is computed by
:func:`fairbench.metrics.evaluate_predictions` and shown like a built-in::

    from fairbench.metrics.specs import metric

    @metric("fnr_gap", title="FNR gap", unit="pp", better="lower")
    def fnr_gap(y_true, y_pred, groups):
        ...  # a float (NaN when undefined)

declared in the plugin's ``pyproject.toml`` under ``[project.entry-points."fairbench.metrics"]``
as ``fnr_gap = "mypackage.metrics"``. The name is the key of its value in ``metrics.json``.

The built-in metrics are computed together by ``evaluate_predictions`` (they share the group
tables); their specs say so with ``reported=True`` and, where a stand-alone function exists,
carry it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from fairbench import registry

UNITS = ("%", "pp", "ratio")
#: prediction columns a metric may need: true labels, predicted labels, group labels, class scores
COLUMNS = ("y_true", "y_pred", "groups", "scores")


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

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.compute is None:
            raise TypeError(f"metric {self.name!r} is computed only inside evaluate_predictions' report")
        return self.compute(*args, **kwargs)

    @property
    def axis_label(self) -> str:
        arrow = "higher is better →" if self.better == "higher" else "← lower is better"
        return f"{self.title} ({self.unit}), {arrow}"

    def value(self, y_true: Any, y_pred: Any, groups: Any, scores: Any = None) -> Any:
        """The metric on one set of predictions (``scores`` only if it needs them; NaN without)."""
        kwargs = {"scores": scores} if "scores" in self.needs else {}
        if "scores" in self.needs and scores is None:
            return float("nan")
        return self.compute(y_true, y_pred, groups, **kwargs)


def metric(name: str, *, title: str, unit: str, better: str, digits: int = 2, needs: tuple[str, ...] | None = None,
           reported: bool = False, per_group: bool = False, summary: str | None = None) -> Callable:
    """Declare and register a metric computed by the decorated function ``(y_true, y_pred, groups[, scores=])``."""

    def wrap(fn: Callable) -> Callable:
        text = summary or ((fn.__doc__ or "").strip().splitlines() or [""])[0]
        spec = MetricSpec(name, title, unit, better, digits, tuple(needs or ("y_true", "y_pred", "groups")), fn,
                          reported, per_group, text)
        registry.metrics.register(name, spec, fn.__module__)
        return fn

    return wrap


def declare(name: str, module: str, *, title: str, unit: str, better: str, digits: int = 2,
            needs: tuple[str, ...] = ("y_true", "y_pred", "groups"), summary: str = "") -> MetricSpec:
    """Register a built-in key of evaluate_predictions' report that has no stand-alone function."""
    spec = MetricSpec(name, title, unit, better, digits, needs, None, True, False, summary or title)
    registry.metrics.register(name, spec, module)
    return spec


def metric_specs() -> dict[str, MetricSpec]:
    """Every registered metric that is one number per report, by name."""
    return {name: spec for name, spec in registry.metrics.items() if isinstance(spec, MetricSpec) and not spec.per_group}


def get_spec(name: str) -> MetricSpec:
    """One metric's spec; a clear error for an unknown name."""
    specs = metric_specs()
    if name not in specs:
        raise KeyError(f"unknown metric {name!r}; valid: {', '.join(specs)}")
    return specs[name]
