"""``fairbench report``: one self-contained HTML page of a suite's results, checked as text and in
a real headless browser (Debian's chromium driven by Playwright; skipped where either is missing)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from fairbench.cli import main
from fairbench.results.layouts.protocol import TITLES
from fairbench.results.report_html import sort_key
from tests.results.report_runs import MIXED, report_suite

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
#: where the browser test keeps its screenshot (gitignored; CI can keep it as an artifact)
ARTIFACTS = ROOT / "test-artifacts" / "report_html"
RULES = ("accuracy", "worst_group_accuracy", "test_oracle")


@pytest.fixture(scope="module")
def suite_runs(tmp_path_factory):
    return report_suite(tmp_path_factory)


@pytest.fixture(scope="module")
def page(suite_runs) -> Path:
    """The page ``suite run`` wrote beside table.md."""
    _, runs = suite_runs
    path = runs / "suite-report-test" / "report.html"
    assert (path.parent / "table.md").is_file() and path.is_file()
    return path


def test_the_page_loads_nothing_from_outside(page):
    text = page.read_text()
    links = re.findall(r"""\b(?:src|href)\s*=\s*["']?([^"'\s>]*)""", text)
    assert links and all(link.startswith(("data:", "#")) for link in links), [x[:40] for x in links if
                                                                             not x.startswith(("data:", "#"))]
    assert "http://" not in text and "https://" not in text and "@import" not in text and "url(" not in text
    images = re.findall(r'<img src="data:image/png;base64,', text)
    assert len(images) >= 2 * len(RULES) + 2  # per rule a Pareto plot and group bars; curves of erm and constant


def test_the_page_has_every_part_the_issue_lists(page, suite_runs):
    text = page.read_text()
    for rule in RULES:
        assert f'<table class="sortable" id="protocol-{rule}">' in text
    for heading in ("Layout: summary", "Training cost per method", "Training curves", "Where the runs ran",
                    "What these results do not show", "Pareto plot", "Per-group test accuracy"):
        assert heading in text, heading
    for title in ("DoB floor", "Train FLOPs", "Steps"):  # the noise floor and the cost columns of the protocol
        assert f">{title}</th>" in text
    envs = [json.loads(p.read_text()) for p in suite_runs[1].glob("*/environment.json")]
    assert {e["git_revision"] for e in envs} and all(f"<td>{e['git_revision']}</td>" in text for e in envs)
    assert "<td>cpu</td>" in text and "<td>fp32</td>" in text and "torch threads" in text
    assert "nothing here is measured on real faces" in text and "an upper bound" in text


def test_report_cli_on_a_suite_and_on_a_plain_runs_folder(suite_runs, tmp_path, capsys):
    suite, runs = suite_runs
    out = tmp_path / "suite.html"
    assert main(["report", str(suite), "--runs-dir", str(runs), "--output", str(out), MIXED]) == 0
    assert "<h1>Suite report-test</h1>" in out.read_text()
    out = tmp_path / "plain.html"
    assert main(["report", str(runs), "--output", str(out)]) == 0  # the suite's runs folder as a plain one
    text = out.read_text()
    assert f"<h1>Runs in {runs}</h1>" in text and 'id="protocol-accuracy"' in text
    capsys.readouterr()


def test_an_output_that_is_not_html_fails_with_one_line_and_writes_nothing(suite_runs, tmp_path, capsys):
    _, runs = suite_runs
    assert main(["report", str(runs), "--output", str(tmp_path / "report.txt")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "report.txt" in err and "name it FILE.html" in err
    assert not list(tmp_path.iterdir())


def test_a_missing_source_and_an_empty_folder(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nowhere"), "--output", str(tmp_path / "r.html")]) == 2
    assert "no such suite file or runs folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty"), "--output", str(tmp_path / "r.html")]) == 1
    assert "no finished runs" in capsys.readouterr().err and not (tmp_path / "r.html").exists()


def test_sort_keys_read_numbers_intervals_and_flops():
    assert sort_key("84.80 [82.00, 87.60]") == 84.8
    assert sort_key("+12.04 pp [+5.33, +18.75] (paired, n=5)") == 12.04
    assert sort_key("-2.32 pp [-3.75, -0.89]") == -2.32
    assert sort_key("950 GFLOP") < sort_key("2.29 TFLOP") < sort_key("11.4 TFLOP")
    assert sort_key("0 FLOP") == 0.0 and sort_key(3) == 3.0 and sort_key(1.5) == 1.5
    assert sort_key("(baseline)") is None and sort_key("n/a") is None and sort_key("erm (budget 2.3 TFLOP)") is None
    assert sort_key(True) is None and sort_key(float("nan")) is None and sort_key(None) is None


# -- in a real browser ------------------------------------------------------------------------------

def _browser():
    if not CHROMIUM.is_file():
        pytest.skip(f"no {CHROMIUM}: install Debian's chromium (apt-get install chromium; .ci/run does) to test the "
                    "page in a browser")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    return sync_api


def _table(page, table_id: str) -> list[list[dict]]:
    return page.eval_on_selector(f"#{table_id}", """t => Array.from(t.tBodies[0].rows, r =>
        Array.from(r.cells, c => ({text: c.textContent, sort: c.dataset.sort === undefined ? null : Number(c.dataset.sort)})))""")


def test_the_page_in_a_headless_browser(suite_runs, page, tmp_path, capsys):
    sync_api = _browser()
    suite, runs = suite_runs
    assert main(["compare", "--suite", str(suite), "--runs-dir", str(runs), "--layout", "protocol", "--format", "json",
                 MIXED]) == 0
    protocol = json.loads(capsys.readouterr().out)
    assert main(["compare", "--suite", str(suite), "--runs-dir", str(runs), "--layout", "summary", "--format", "json",
                 MIXED]) == 0
    summary = json.loads(capsys.readouterr().out)
    problems: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        try:
            tab = browser.new_page(viewport={"width": 1400, "height": 1000})
            tab.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
            tab.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            tab.on("request", lambda r: None if r.url.startswith(("file:", "data:")) else problems.append(f"request {r.url}"))
            tab.goto(page.as_uri(), wait_until="load")
            assert tab.title() == "Suite report-test"
            assert tab.eval_on_selector_all("img", "imgs => imgs.every(i => i.complete && i.naturalWidth > 0)")

            # the tables hold what `compare --format json` prints for the same runs
            for table in protocol:
                cells = _table(tab, f"protocol-{table['rule']}")
                assert [[c["text"] for c in row] for row in cells] == \
                    [[str(row[k]) for k in TITLES] for row in table["rows"]]
            shown = _table(tab, "layout-summary-0")
            headers = tab.eval_on_selector("#layout-summary-0", "t => Array.from(t.tHead.rows[0].cells, c => c.textContent)")
            acc = headers.index("Acc")
            assert len(shown) == len(summary)
            assert [row[acc]["sort"] for row in shown] == pytest.approx([r["accuracy"] for r in summary])

            # sorting: numbers numerically (intervals by their point estimate), twice = descending
            accuracy_col = list(TITLES).index("accuracy")
            th = tab.locator("#protocol-accuracy thead th").nth(accuracy_col)
            th.click()
            up = [row[accuracy_col]["sort"] for row in _table(tab, "protocol-accuracy")]
            assert up == sorted(up) and th.get_attribute("aria-sort") == "ascending"
            th.click()
            down = [row[accuracy_col]["sort"] for row in _table(tab, "protocol-accuracy")]
            assert down == sorted(up, reverse=True)
            method_col = list(TITLES).index("method")
            tab.locator("#protocol-accuracy thead th").nth(method_col).click()
            methods = [row[method_col]["text"] for row in _table(tab, "protocol-accuracy")]
            assert methods == sorted(methods)

            shot = tmp_path / "report.png"
            tab.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert not problems, problems
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, ARTIFACTS / "report.png")
    shutil.copy(page, ARTIFACTS / "report.html")
    print(f"screenshot of the report page: {ARTIFACTS / 'report.png'}")
