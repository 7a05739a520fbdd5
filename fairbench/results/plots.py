"""Accuracy-fairness Pareto plots (``fairbench plot pareto``), drawn with matplotlib's Agg backend.

One point per method (per setting) and evaluated dataset: the mean over seeds with 95%
t-interval error bars on both axes. When a context pools several target attributes (the
CelebA attribute runs), each seed's value is first the mean over the attributes, as in the
paper's tables 6-7. The Pareto front of our points is drawn and labelled, using each metric's
direction (accuracy: higher is better; DoB, DEO, DEOdds, Max/Min: lower is better). The
paper's published points of the same setting can be added as hollow markers.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fairbench.metrics.specs import MetricSpec, get_spec
from fairbench.results.grouping import Context, attribute_means, contexts, seed_reports
from fairbench.results.notes import common_num_classes
from fairbench.results.published import PaperTable, paper_tables_for, show_paper
from fairbench.runs.record import RunRecord, selected_epoch
from fairbench.runs.store import atomic_write_bytes


class PlotError(ValueError):
    """Nothing to plot (no runs with both metrics, unknown metric, bad output name)."""


@dataclass
class Point:
    label: str
    method: str | None
    x: float
    y: float
    x_ci: float = math.nan
    y_ci: float = math.nan
    seeds: int = 0
    paper: bool = False


@dataclass
class Panel:
    title: str
    points: list[Point]  # ours
    paper_points: list[Point]
    num_classes: int | None = None  # of the evaluated task, when every run agrees (the random-guess line)


def _spec(metric: str) -> MetricSpec:
    try:
        return get_spec(metric)
    except KeyError as exc:
        raise PlotError(exc.args[0]) from None


FIGURE_SUFFIXES = (".png", ".svg", ".pdf")


def _figure_path(output: Path) -> Path:
    output = Path(output)
    if output.suffix.lower() not in FIGURE_SUFFIXES:
        raise PlotError(f"output must end in .png, .svg or .pdf, got {output.name}")
    return output


def _save(fig, output: Path, dpi: int) -> None:
    """Write the figure whole or not at all (two suite reports may draw the same file at once)."""
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format=output.suffix.lower()[1:], dpi=dpi)
    plt.close(fig)
    atomic_write_bytes(output, buffer.getvalue())


def _better(metric: str) -> str:
    return _spec(metric).better


def pareto_front(points: list[Point], x: str, y: str) -> list[Point]:
    """The points no other point dominates (at least as good on both axes, better on one),
    ordered along the x axis."""
    sx = 1.0 if _better(x) == "higher" else -1.0
    sy = 1.0 if _better(y) == "higher" else -1.0

    def dominates(a: Point, b: Point) -> bool:
        ax, ay, bx, by = sx * a.x, sy * a.y, sx * b.x, sy * b.y
        return ax >= bx and ay >= by and (ax > bx or ay > by)

    front = [p for p in points if not any(dominates(q, p) for q in points if q is not p)]
    return sorted(front, key=lambda p: (p.x, p.y))


def _paper_points(ctx: Context, x: str, y: str, by: str | None, paper: bool | None) -> list[Point]:
    layouts = ["attributes"] if ctx.target is None else (["methods"] if by else ["groups"])
    out = []
    for layout in layouts:
        papers: list[PaperTable] = paper_tables_for(layout, ctx, by)
        if not show_paper(ctx, papers, paper):
            continue
        for t in papers:
            cols = {c.get("metric"): i for i, c in enumerate(t.columns) if "metric" in c}
            if x not in cols or y not in cols:
                continue
            for row in t.rows:
                if row.get("evaluated_on") not in (None, ctx.evaluated_on):
                    continue
                vx, vy = row["values"][cols[x]], row["values"][cols[y]]
                if vx is None or vy is None:
                    continue
                label = f"{row['model']} (paper, table {t.id})"
                if any(p.label.split(" (paper")[0] == row["model"] and p.x == float(vx) and p.y == float(vy) for p in out):
                    continue
                out.append(Point(label, row.get("method"), float(vx), float(vy), paper=True))
    return out


def panels(records: list[RunRecord], x: str, y: str, *, dataset: str | None = None, by: str | None = None,
           paper: bool | None = None) -> list[Panel]:
    """One panel per (training task, evaluated dataset) with at least one point."""
    from fairbench.metrics import mean_t_interval

    _better(x), _better(y)
    out = []
    for ctx in contexts(records, per_target=False, dataset=dataset):
        # several targets pooled: attribute means per seed; a single target: its own report
        multi = len({t for s in ctx.settings for t in s.targets}) > 1
        if not multi:
            ctx = Context(ctx.trained_on, ctx.settings[0].targets[0], ctx.protected, ctx.evaluated_on, ctx.split,
                          ctx.settings)
        points, all_reports = [], []
        for s in ctx.settings:
            reports = attribute_means(s)[0] if multi else seed_reports(s, by)
            all_reports += reports.values()
            xs = [_metric(r, x) for r in reports.values()]
            ys = [_metric(r, y) for r in reports.values()]
            mx, hx, nx = mean_t_interval(xs)
            my, hy, ny = mean_t_interval(ys)
            if nx and ny:
                points.append(Point(s.label, s.method, mx, my, hx, hy, min(nx, ny)))
        if not points:
            continue
        title = ctx.describe() + (f", groups = {by}" if by else "")
        out.append(Panel(title, points, _paper_points(ctx, x, y, by, paper), common_num_classes(all_reports)))
    if not out:
        raise PlotError(f"no finished run has both {x} and {y}" + (f" on {dataset}" if dataset else ""))
    return out


def _metric(report: dict[str, Any], key: str) -> float:
    v = report.get(key)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan


#: marker of a method's first, second, ... row in a panel (FineFACE at two budgets: two shapes, one colour)
ROW_MARKERS = ("o", "s", "^", "v", "P", "X")

#: longest label drawn: settings told apart by many keys (every search trial) would squeeze the axes to nothing
MAX_LABEL = 70


def _clip(text: str, limit: int = MAX_LABEL) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def plot_pareto(records: list[RunRecord], x: str, y: str, output: Path, *, dataset: str | None = None,
                facet: bool | None = None, by: str | None = None, paper: bool | None = None,
                subtitle: str | None = None) -> list[Panel]:
    """Write the plot to ``output`` (.png, .svg or .pdf). Several evaluated datasets are drawn as
    facets (one panel each) unless ``dataset`` picks one; ``facet=False`` keeps the first only.
    ``subtitle`` goes under the title (e.g. the selection rule that chose the trials)."""
    output = _figure_path(output)
    found = panels(records, x, y, dataset=dataset, by=by, paper=paper)
    if facet is False:
        found = found[:1]
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    n = len(found)
    cols = min(n, 2)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(9.4 * cols, 5.6 * rows), squeeze=False, layout="constrained")
    methods = sorted({p.method or p.label for panel in found for p in panel.points + panel.paper_points})
    cmap = plt.get_cmap("tab10" if len(methods) <= 10 else "tab20")
    colors = {m: cmap(i % cmap.N) for i, m in enumerate(methods)}
    for ax, panel in zip(axes.flat, found):
        _draw_panel(ax, panel, x, y, colors)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.suptitle(f"{_spec(y).title} vs {_spec(x).title}: mean ± 95% t-interval over seeds"
                 + (f"\n{subtitle}" if subtitle else ""), fontsize=12)
    _save(fig, output, dpi=130)
    return found


def _draw_panel(ax, panel: Panel, x: str, y: str, colors: dict[str, Any]) -> None:
    front = pareto_front(panel.points, x, y)
    on_front = {id(p) for p in front}
    labels: list[tuple[float, float, str, dict[str, Any]]] = []  # placed once the axis limits are final
    if len(front) > 1:
        fx, fy = _staircase(front, x, y)
        ax.plot(fx, fy, linestyle="--", color="0.35", linewidth=1.2, zorder=1,
                label=_clip(f"Pareto front ({', '.join(p.label for p in front)})"))
    rows_of: dict[str, int] = {}  # a method's rows share its colour (its paper point's too); shapes tell them apart
    for p in panel.points:
        color = colors[p.method or p.label]
        marker = ROW_MARKERS[rows_of.get(p.method or p.label, 0) % len(ROW_MARKERS)]
        rows_of[p.method or p.label] = rows_of.get(p.method or p.label, 0) + 1
        ax.errorbar(p.x, p.y, xerr=None if math.isnan(p.x_ci) else p.x_ci, yerr=None if math.isnan(p.y_ci) else p.y_ci,
                    fmt=marker, markersize=8, color=color, ecolor=color, elinewidth=1.2, capsize=3, zorder=3,
                    label=_clip(f"{p.label} (n={p.seeds})"))
        if id(p) in on_front:
            ax.plot(p.x, p.y, marker="o", markersize=15, markerfacecolor="none", markeredgecolor="black",
                    markeredgewidth=1.4, linestyle="none", zorder=4)
        labels.append((p.x, p.y, _clip(p.label) + (" ★ front" if id(p) in on_front and len(front) == 1 else ""),
                       {"fontsize": 8.5}))
    if len(front) == 1:
        ax.plot([], [], marker="o", markersize=11, markerfacecolor="none", markeredgecolor="black", linestyle="none",
                label=_clip(f"Pareto front: {front[0].label} (dominates all)"))
    elif front:
        ax.plot([], [], marker="o", markersize=11, markerfacecolor="none", markeredgecolor="black", linestyle="none",
                label="on the Pareto front")
    if panel.num_classes:
        # A uniform random guess scores 100/K % in expectation on any class balance, in every group:
        # a point near this line is "fair" only because it learned nothing.
        guess = 100.0 / panel.num_classes
        for metric, line in ((y, ax.axhline), (x, ax.axvline)):
            if metric.endswith("accuracy"):
                line(guess, linestyle=":", color="0.45", linewidth=1.2, zorder=0,
                     label=f"random guess ({guess:.0f}%): no skill, trivially fair")
    for p in panel.paper_points:
        color = colors[p.method or p.label]
        ax.plot(p.x, p.y, marker="D", markersize=8, markerfacecolor="none", markeredgecolor=color, markeredgewidth=1.6,
                linestyle="none", zorder=2, label=p.label)
        labels.append((p.x, p.y, p.label.split(" (paper")[0] + " (paper)",
                       {"fontsize": 8, "color": "0.3", "style": "italic"}))
    ax.set_xlabel(_spec(x).axis_label)
    ax.set_ylabel(_spec(y).axis_label)
    ax.set_title(panel.title, fontsize=9.5)
    ax.grid(True, alpha=0.3)
    ax.margins(0.18)
    _clip_to_domain(ax.get_xlim, ax.set_xlim, x)
    _clip_to_domain(ax.get_ylim, ax.set_ylim, y)
    # which way is better: a short arrow from the worst corner (where few points sit; the better
    # corner is where the best methods crowd) pointing towards the better one; labels keep out of it
    sx = 1 if _spec(x).better == "higher" else -1
    sy = 1 if _spec(y).better == "higher" else -1
    tail = (0.5 - 0.44 * sx, 0.5 - 0.42 * sy)  # text at the worst corner
    head = (tail[0] + 0.09 * sx, tail[1] + 0.11 * sy)
    (ax0, ay0), (ax1, ay1) = ax.transAxes.transform([(min(tail[0], head[0]) - 0.05, min(tail[1], head[1]) - 0.03),
                                                     (max(tail[0], head[0]) + 0.05, max(tail[1], head[1]) + 0.03)])
    _place_labels(ax, labels, reserved=[(ax0, ay0, ax1, ay1)])
    ax.annotate("better", xy=head, xycoords="axes fraction", xytext=tail, textcoords="axes fraction",
                ha="center", va="center", fontsize=8.5, color="tab:green", fontweight="bold",
                arrowprops={"arrowstyle": "->", "color": "tab:green", "lw": 1.5})
    # outside the axes: with a dozen methods, a legend inside covers points
    ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, framealpha=0.85)


# Candidate label offsets (points) from the marker, tried in order: beside it first, then further
# up and down; a label moved off its first place gets a thin leader line back to its point.
_LABEL_OFFSETS = [(8, 5), (8, -13)] + [(8, 5 + 11 * k * sign) for k in range(1, 7) for sign in (1, -1)]


def _place_labels(ax, labels: list[tuple[float, float, str, dict[str, Any]]],
                  reserved: list[tuple[float, float, float, float]] = ()) -> None:
    """Annotate points so that no two labels overlap, nor a ``reserved`` box (display space)
    (greedy, in display space; clustered points, e.g. several methods at chance level, otherwise
    print their names on top of each other)."""
    scale = ax.figure.dpi / 72.0  # points -> pixels
    placed: list[tuple[float, float, float, float]] = list(reserved)

    def overlaps(box):
        return any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed)

    for x, y, text, style in sorted(labels, key=lambda item: -item[1]):
        px, py = ax.transData.transform((x, y))
        size = style.get("fontsize", 8.5)
        width, height = 0.58 * size * len(text) * scale, 1.25 * size * scale

        def box_at(offset):
            left, bottom = px + offset[0] * scale, py + offset[1] * scale
            return left, bottom, left + width, bottom + height

        dx, dy = next((o for o in _LABEL_OFFSETS if not overlaps(box_at(o))), _LABEL_OFFSETS[0])
        placed.append(box_at((dx, dy)))
        leader = {"arrowprops": {"arrowstyle": "-", "color": "0.6", "lw": 0.6, "shrinkA": 0, "shrinkB": 4}} \
            if (dx, dy) not in _LABEL_OFFSETS[:2] else {}
        ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy), **style, **leader)


_DOMAIN = {"%": (-0.5, 100.5), "pp": (-0.2, None), "ratio": (0.995, None)}


def _clip_to_domain(get, set_, metric: str) -> None:
    """Keep the axis inside the values a metric can take (wide intervals of few seeds spill over)."""
    low, high = get()
    lo, hi = _DOMAIN.get(_spec(metric).unit, (None, None))
    set_(max(low, lo) if lo is not None else low, min(high, hi) if hi is not None else high)


def _staircase(front: list[Point], x: str, y: str) -> tuple[list[float], list[float]]:
    """The front as a step line: between two neighbours it passes through the corner that both
    just attain (the worse x and the worse y of the two), the edge of the region they dominate."""
    worse_x = min if _spec(x).better == "higher" else max
    worse_y = min if _spec(y).better == "higher" else max
    xs, ys = [front[0].x], [front[0].y]
    for a, b in zip(front, front[1:]):
        xs += [worse_x(a.x, b.x), b.x]
        ys += [worse_y(a.y, b.y), b.y]
    return xs, ys


#: per-epoch series of ``history.json`` that ``plot_curves`` draws: (section, key, axis title)
CURVES = (("train", "loss", "training loss (mean over the epoch's batches)"),
          ("val", "accuracy", "validation accuracy (%)"),
          ("val", "worst_group_accuracy", "validation worst-group accuracy (%)"))


def _curve_label(run_dir: Path, config: dict[str, Any]) -> str:
    opts = config.get("data", {}).get("options") or {}
    dial = ", ".join(f"{k}={v}" for k, v in opts.items() if k not in ("n_train", "n_val", "n_test", "seed")
                     and not isinstance(v, (list, dict)))
    train = config.get("train", {})
    label = f"{config.get('method', run_dir.name)} seed {train.get('seed', '?')}"
    if train.get("epochs"):
        label += f", {train['epochs']} ep"
    return f"{label} ({dial})" if dial and len(dial) < 40 else label


#: keys a curve label already shows, or that do not change what is trained
_NOT_VARIED = {"seed", "epochs", "device", "threads", "workers", "eval_batch_size", "budget_flops", "budget_steps"}


def _varied_settings(configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per run, the training settings and hyperparameters (``lr``, ``eta`` ...) whose values differ
    between the runs; empty dicts when the runs differ only in seed."""
    flat = [{**{k: v for k, v in (c.get("train") or {}).items() if k not in _NOT_VARIED},
             **(c.get("hparams") or {})} for c in configs]
    keys = sorted({k for f in flat for k in f})
    varied = [k for k in keys if len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flat}) > 1]
    if "lr" in varied and all(f.get("backbone_lr") == f.get("lr") for f in flat):  # the search draws one rate
        varied = [k for k in varied if k != "backbone_lr"]
    return [{k: f.get(k) for k in varied} for f in flat]


def plot_curves(run_dirs: list[Path], output: Path) -> list[str]:
    """Training loss and validation accuracy / worst-group accuracy per epoch of each run
    (from its ``history.json``), one line per run; the selected epoch is marked with a dot.
    Returns the labels drawn."""
    output = _figure_path(output)
    runs = []
    for run_dir in map(Path, run_dirs):
        history = run_dir / "history.json"
        if not history.is_file():
            raise PlotError(f"{run_dir} has no history.json (not a run folder, or no epoch finished yet)")
        try:
            entries = json.loads(history.read_text())
            config = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").is_file() else {}
            metrics = run_dir / "metrics.json"
            chosen = selected_epoch(json.loads(metrics.read_text())) if metrics.is_file() else None  # from 1
        except (json.JSONDecodeError, OSError) as exc:
            raise PlotError(f"{run_dir}: cannot read its records ({exc})") from None
        runs.append((_curve_label(run_dir, config), entries, chosen, config))
    if not runs:
        raise PlotError("no run folders given")
    # runs that differ in more than seed and budget (search trials): name what differs
    varied = _varied_settings([config for *_, config in runs])
    runs = [(label + "".join(f", {k}={v}" for k, v in varied[i].items()), entries, chosen)
            for i, (label, entries, chosen, _) in enumerate(runs)]
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    # the legend below the plots: as many columns as the longest label lets fit across the figure (a
    # search's labels are long: four columns of them ran off both edges), and the figure taller by
    # its rows (25 one-column rows squashed the plots to nothing at a fixed height)
    width_in = 5.2 * len(CURVES)
    label_pt = max(len(r[0]) for r in runs) * 8 * 0.55 + 30  # 8-pt text, ~0.55 em a character, the line sample
    ncol = max(1, min(4, len(runs), int(width_in * 72 // label_pt)))
    legend_in = (math.ceil(len(runs) / ncol) * 8 * 1.5 + 16) / 72  # a row: 8-pt text and its spacing
    fig, axes = plt.subplots(1, len(CURVES), figsize=(width_in, 4.2 + legend_in), layout="constrained")
    cmap = plt.get_cmap("tab10" if len(runs) <= 10 else "tab20")
    for i, (label, entries, chosen) in enumerate(runs):
        for ax, (section, key, _) in zip(axes, CURVES):
            points = [(e["epoch"] + 1, (e.get(section) or {}).get(key)) for e in entries]  # from 1, as the log
            points = [(x, y) for x, y in points if y is not None and math.isfinite(y)]
            if not points:
                continue
            xs, ys = zip(*points)
            ax.plot(xs, ys, color=cmap(i % cmap.N), lw=1.2, label=label if ax is axes[0] else None)
            if chosen in xs:
                ax.plot([chosen], [ys[xs.index(chosen)]], "o", color=cmap(i % cmap.N), ms=4)
    for ax, (_, _, title) in zip(axes, CURVES):
        ax.set_xlabel("epoch")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", ncol=ncol, fontsize=8)
    _save(fig, output, dpi=120)
    return [r[0] for r in runs]
