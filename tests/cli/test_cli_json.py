"""``--json`` on ``list``, ``show method`` and ``suite status``: the same facts as the text, for scripts."""

from __future__ import annotations

import json

import pytest

from fairbench import registry
from fairbench.cli import main
from fairbench.methods.base import needs_label
from tests.results.report_runs import SUITE


@pytest.mark.parametrize("kind", ["methods", "datasets", "metrics", "layouts"])
def test_list_json_names_every_registered_entry(kind, capsys):
    assert main(["list", kind, "--json"]) == 0
    items = json.loads(capsys.readouterr().out)
    assert [i["name"] for i in items] == list(registry.REGISTRIES[kind].names())
    assert all(isinstance(i["summary"], str) for i in items)
    if kind == "methods":
        assert {i["name"]: i["needs"] for i in items}["groupdro"] == needs_label(registry.methods.get("groupdro"))


def test_show_method_json_holds_the_hyperparameters_of_the_text(capsys):
    assert main(["show", "method", "groupdro"]) == 0
    text = capsys.readouterr().out
    assert main(["show", "method", "groupdro", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["name"] == "groupdro" and shown["needs"] == "T+A" and shown["default_selection"]
    keys = [h["key"] for h in shown["hyperparameters"]]
    assert "hparams.eta" in keys and all(k in text for k in keys)
    assert main(["show", "method", "no-such-method", "--json"]) == 2


def test_suite_status_json_lists_every_job_and_its_state(tmp_path, capsys):
    path = tmp_path / "suite.toml"
    path.write_text(SUITE)
    assert main(["suite", "status", str(path), "--runs-dir", str(tmp_path / "runs"), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["suite"] == "report-test" and status["counts"] == {"pending": 6}
    jobs = status["jobs"]
    assert [j["index"] for j in jobs] == [1, 2, 3, 4, 5, 6] and all(j["run_id"] and j["state"] == "pending" for j in jobs)
    assert [(j["method"], j["seed"], j["trial"]) for j in jobs] == [("erm", 0, 0), ("erm", 0, 1), ("constant", 0, 0),
                                                                     ("erm", 1, 0), ("erm", 1, 1), ("constant", 1, 0)]
    assert jobs[1]["spec"]["train.lr"] > 0  # what the search drew for trial 1
