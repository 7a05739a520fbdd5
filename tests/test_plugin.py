"""The example third-party package: installed, discovered through its entry point, run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "examples" / "fairbench-example-plugin"


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(target), str(PLUGIN)],
        check=True, capture_output=True, text=True,
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(target), env.get("PYTHONPATH", "")])
    return env


def fairbench(env, *args, cwd=None):
    return subprocess.run([sys.executable, "-m", "fairbench", *args], env=env, cwd=cwd, capture_output=True, text=True)


def test_plugin_method_is_listed_with_its_needs(plugin_env):
    out = fairbench(plugin_env, "list", "methods")
    assert out.returncode == 0, out.stderr
    line = next(l for l in out.stdout.splitlines() if l.startswith("focal"))
    assert " T " in line and "focal loss" in line


def test_plugin_method_runs(plugin_env, tmp_path):
    out = fairbench(plugin_env, "run", "focal", "--image-size", "32", "--max-train-samples", "128",
                    "--max-eval-samples", "64", "--epochs", "1", "--batch-size", "32", "--device", "cpu", "--quiet",
                    "--set", "hparams.gamma=1.5", "--runs-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    (run_dir,) = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]  # not .leases/
    assert run_dir.name.startswith("focal-synthface-")
    assert (run_dir / "predictions_test.csv").is_file()


def test_a_broken_plugin_does_not_break_the_cli(tmp_path):
    """A distribution whose module fails to import is reported by name; the rest works."""
    site = tmp_path / "site"
    dist = site / "broken_plugin-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[fairbench.methods]\nbroken = broken_plugin_module\n")
    (site / "broken_plugin_module.py").write_text("import a_dependency_that_is_not_installed\n")
    env = dict(os.environ, PYTHONPATH=str(site))
    out = fairbench(env, "list", "methods")
    assert out.returncode == 0
    assert "erm" in out.stdout
    assert "broken-plugin" in out.stderr and "a_dependency_that_is_not_installed" in out.stderr
    out = fairbench(env, "run", "broken", "--runs-dir", str(tmp_path / "runs"))
    assert out.returncode == 2 and "broken-plugin" in out.stderr
