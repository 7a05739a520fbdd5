"""``fairbench plot curves``: training loss and validation accuracy per epoch, from history.json."""

from __future__ import annotations

import json

import pytest

from fairbench.cli import main
from fairbench.results.plots import PlotError, plot_curves


def fake_run(folder, method="erm", seed=0, epochs=3, selected=1):
    folder.mkdir(parents=True)
    history = [{"epoch": e, "train": {"loss": 0.7 / (e + 1)}, "selectable": True,
                "val": {"accuracy": 60.0 + 10 * e, "worst_group_accuracy": 50.0 + 5 * e}} for e in range(epochs)]
    (folder / "history.json").write_text(json.dumps(history))
    (folder / "config.json").write_text(json.dumps({"method": method, "train": {"seed": seed, "epochs": epochs},
                                                     "data": {"options": {"agreement": 0.95, "n_train": 10}}}))
    (folder / "metrics.json").write_text(json.dumps({"selection": {"epoch": selected}}))
    return folder


def test_one_line_per_run_labelled_by_method_seed_and_dial(tmp_path):
    runs = [fake_run(tmp_path / "a"), fake_run(tmp_path / "b", method="subg", seed=3)]
    labels = plot_curves(runs, tmp_path / "curves.png")
    assert labels == ["erm seed 0, 3 ep (agreement=0.95)", "subg seed 3, 3 ep (agreement=0.95)"]
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_search_trials_are_told_apart_by_what_they_drew(tmp_path):
    runs = []
    for name, lr, eta in (("t0", 0.02, 0.01), ("t1", 0.09663, 0.02004)):
        run = fake_run(tmp_path / name, method="groupdro")
        config = json.loads((run / "config.json").read_text())
        config["train"].update(lr=lr, backbone_lr=lr, batch_size=64, device="cpu")
        config["hparams"] = {"eta": eta, "generalization_adjustment": 0}
        (run / "config.json").write_text(json.dumps(config))
        runs.append(run)
    assert plot_curves(runs, tmp_path / "curves.png") == [
        "groupdro seed 0, 3 ep (agreement=0.95), eta=0.01, lr=0.02",
        "groupdro seed 0, 3 ep (agreement=0.95), eta=0.02004, lr=0.09663"]


def test_a_run_on_the_real_runner_plots(run_tiny, tmp_path):
    run = run_tiny("erm", epochs=2)
    assert plot_curves([run], tmp_path / "c.svg") == ["erm seed 0, 2 ep"]


def test_bad_input_is_a_clear_error_with_exit_status_2(tmp_path, capsys):
    with pytest.raises(PlotError, match="no history.json"):
        plot_curves([tmp_path], tmp_path / "c.png")
    with pytest.raises(PlotError, match=".png, .svg or .pdf"):
        plot_curves([fake_run(tmp_path / "r")], tmp_path / "c.txt")
    assert main(["plot", "curves", str(tmp_path / "missing"), "--output", str(tmp_path / "c.png")]) == 2
    assert "no history.json" in capsys.readouterr().err
    assert main(["plot", "curves", str(tmp_path / "r"), "--output", str(tmp_path / "ok.png")]) == 0


@pytest.mark.parametrize("trials, seeds, extra", [
    (3, 5, 0),  # a method's 3 trials x 5 seeds, each label ~110 characters long: 2 columns
    (5, 5, 40),  # the quickstart's FineFACE: 5 trials x 5 seeds, labels ~150 characters: one column of 25
])
def test_a_search_s_long_labels_keep_the_legend_inside_the_figure_and_below_the_plots(tmp_path, monkeypatch,
                                                                                       trials, seeds, extra):
    import warnings

    from fairbench.results import plots

    runs = []
    for i in range(trials * seeds):
        run = fake_run(tmp_path / f"t{i}", method="jtt", seed=i % seeds)
        config = json.loads((run / "config.json").read_text())
        config["train"].update(lr=0.005 + i / 1000, weight_decay=0.1 + i / 100, batch_size=64 * (1 + i % 3))
        config["hparams"] = {"identification_epochs": 1 + i % 2, "upweight": 5.0 * (i % 3 + 1),
                             **({"concat_loss_weight": 0.5 + i / 1000, "threshold": 0.3 + i / 100} if extra else {})}
        (run / "config.json").write_text(json.dumps(config))
        runs.append(run)
    extents, save = [], plots._save

    def measure_then_save(fig, output, dpi):
        fig.canvas.draw()
        extents.append((fig.legends[0].get_window_extent(), fig.bbox, [ax.get_window_extent() for ax in fig.axes],
                        fig.dpi))
        save(fig, output, dpi)

    monkeypatch.setattr(plots, "_save", measure_then_save)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns when the layout squashes the plots to nothing
        labels = plot_curves(runs, tmp_path / "curves.png")
    assert max(map(len, labels)) > 100 + extra
    (legend, figure, axes, dpi), = extents
    assert figure.x0 <= legend.x0 and legend.x1 <= figure.x1 and figure.y0 <= legend.y0
    for ax in axes:
        assert legend.y1 <= ax.y0  # below every plot, not over them
        assert ax.height >= 2.0 * dpi  # the plots keep their height (inches), whatever the legend's
