"""Pareto plots on the golden run records: the front, the directions, the image itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from fairbench.cli import main
from fairbench.results.plots import PlotError, Point, panels, pareto_front, plot_pareto
from fairbench.runs.catalog import finished, load_records

GOLDEN_RUNS = Path(__file__).resolve().parents[1] / "golden" / "golden_runs"


@pytest.fixture(scope="module")
def done():
    records, _ = load_records(GOLDEN_RUNS)
    return finished(records)[0]


def test_front_on_fairface_is_fineface_and_adversarial(done):
    """Hand-checked from the golden means (DoB over the 14 race x gender groups, pp; accuracy, %):
    erm 4.91 / 93.62, adversarial 2.14 / 92.00, consistency 2.65 / 93.43, fineface 2.35 / 95.43,
    multitask 3.11 / 94.14. fineface dominates erm, consistency and multitask (lower DoB and higher
    accuracy); adversarial has the lowest DoB, so nothing dominates it; fineface has the highest
    accuracy."""
    (panel,) = panels(done, "dob", "accuracy", dataset="fairface")
    means = {p.label: (round(p.x, 2), round(p.y, 2)) for p in panel.points}
    assert means == {"erm": (4.91, 93.62), "adversarial": (2.14, 92.0), "consistency": (2.65, 93.43),
                     "fineface": (2.35, 95.43), "multitask": (3.11, 94.14)}
    assert [p.label for p in pareto_front(panel.points, "dob", "accuracy")] == ["adversarial", "fineface"]
    # the paper's points of table 2 (same DoB definition: over the 14 groups), hollow in the plot
    assert {(p.label, p.x, p.y) for p in panel.paper_points} == {("Baseline (paper, table 2)", 4.2, 93.2),
                                                                 ("FineFACE (paper, table 2)", 0.6, 96.4)}


def test_front_follows_each_metrics_direction():
    pts = [Point("a", "a", 1.0, 90.0), Point("b", "b", 2.0, 95.0), Point("c", "c", 3.0, 94.0)]
    # DoB lower is better, accuracy higher: c is dominated by b
    assert [p.label for p in pareto_front(pts, "dob", "accuracy")] == ["a", "b"]
    # both higher is better (accuracy vs worst-group accuracy): only c and b, a is dominated by b
    assert [p.label for p in pareto_front(pts, "accuracy", "worst_group_accuracy")] == ["b", "c"]
    # both lower is better: a dominates everything
    assert [p.label for p in pareto_front(pts, "dob", "deo")] == ["a"]
    with pytest.raises(PlotError, match="unknown metric 'nope'"):
        pareto_front(pts, "nope", "accuracy")


def test_race_level_points_use_table_5(done):
    (panel,) = panels(done, "dob", "accuracy", dataset="fairface", by="race")
    assert {p.label for p in panel.paper_points} == {
        "A: Multi-task (Das et al.) (paper, table 5)", "B: Adversarial debiasing (Zhang et al.) (paper, table 5)",
        "C: Consistency regularization (Krishnan & Rattani) (paper, table 5)",
        "D: Deep generative views (Ramachandran & Rattani) (paper, table 5)", "FineFACE (paper, table 5)"}
    assert not panels(done, "dob", "accuracy", dataset="fairface", by="race", paper=False)[0].paper_points


def test_attribute_runs_are_averaged_per_seed(done):
    (panel,) = panels(done, "deodds", "accuracy", dataset="celeba")
    assert panel.title.startswith("trained on celeba")
    assert {p.label: p.seeds for p in panel.points} == {"erm": 2, "fineface": 2}


def _ink(path: Path) -> tuple[float, int]:
    import matplotlib.image as mpimg

    img = mpimg.imread(path)[..., :3]
    non_white = (img < 0.97).any(axis=-1)
    colourful = (img.max(axis=-1) - img.min(axis=-1)) > 0.25  # markers, bars: not grey text or grid
    return float(non_white.mean()), int(colourful.sum())


def test_plot_is_drawn(done, tmp_path):
    out = tmp_path / "pareto.png"
    drawn = plot_pareto(done, "dob", "accuracy", out, dataset="fairface")
    assert len(drawn) == 1 and out.stat().st_size > 20_000
    ink, colour = _ink(out)
    assert 0.02 < ink < 0.5 and colour > 500


def test_cli_facets_every_evaluated_dataset(tmp_path, capsys):
    out = tmp_path / "all.png"
    assert main(["plot", "pareto", "--runs-dir", str(GOLDEN_RUNS), "--x", "dob", "--y", "accuracy",
                 "--output", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6  # celeba attributes, fairface on 4 test sets, synthface
    assert "evaluated on fairface test: Pareto front = adversarial, fineface" in "\n".join(lines)
    ink, colour = _ink(out)
    assert ink > 0.02 and colour > 2000
    for suffix in (".svg", ".pdf"):
        path = tmp_path / f"p{suffix}"
        assert main(["plot", "pareto", "--runs-dir", str(GOLDEN_RUNS), "--x", "deo", "--y", "accuracy",
                     "--dataset", "celeba", "--output", str(path)]) == 0
        assert path.stat().st_size > 5_000


def test_plot_errors(done, tmp_path, capsys):
    with pytest.raises(PlotError, match=r"\.png, \.svg or \.pdf"):
        plot_pareto(done, "dob", "accuracy", tmp_path / "x.jpg")
    assert main(["plot", "pareto", "--runs-dir", str(GOLDEN_RUNS), "--x", "dob", "--y", "accuracy",
                 "--dataset", "nowhere", "--output", str(tmp_path / "x.png")]) == 2
    assert "no finished run has both dob and accuracy on nowhere" in capsys.readouterr().err


def test_random_guess_line_on_accuracy_axes(done):
    """A point at 100/K % accuracy is 'fair' only because it learned nothing: accuracy axes show
    the random-guess level (binary targets here, so 50 %); DoB / DEO axes do not."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from fairbench.results.plots import _draw_panel

    (panel,) = panels(done, "dob", "accuracy", dataset="fairface")
    (attributes,) = panels(done, "deodds", "accuracy", dataset="celeba")
    assert panel.num_classes == 2 and attributes.num_classes == 2
    colors = {p.method or p.label: "C0" for p in panel.points + panel.paper_points}
    for x, y, lines in (("dob", "accuracy", 1), ("accuracy", "worst_group_accuracy", 2), ("dob", "deo", 0)):
        fig, ax = plt.subplots()
        _draw_panel(ax, panel, x, y, colors)
        labels = [lab for lab in ax.get_legend_handles_labels()[1] if lab.startswith("random guess (50%)")]
        assert len(labels) == lines, (x, y)
        plt.close(fig)
