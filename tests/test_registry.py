"""Registries: lazy entry-point loading, duplicates, broken plugins."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass

import pytest

from fairbench import registry
from fairbench.registry import Registry, RegistryError


@dataclass
class FakeDist:
    name: str


class FakeEntryPoint:
    def __init__(self, name, value, dist):
        self.name, self.value, self.dist = name, value, FakeDist(dist)


def _fake_registry(monkeypatch, entries):
    monkeypatch.setattr(registry.importlib_metadata, "entry_points", lambda group: entries)
    return Registry("method", "fairbench.methods")


def _module(monkeypatch, name, body):
    mod = types.ModuleType(name)
    monkeypatch.setitem(sys.modules, name, mod)
    return mod


def test_lookup_is_lazy_and_imports_only_the_named_module(monkeypatch):
    imported = []
    reg = _fake_registry(monkeypatch, [FakeEntryPoint("a", "pkg_a", "dist-a"), FakeEntryPoint("b", "pkg_b", "dist-b")])

    def fake_import(name):
        imported.append(name)
        obj = type(name.upper(), (), {"__module__": name})
        reg.decorator(name[-1])(obj)
        return types.ModuleType(name)

    monkeypatch.setattr(registry.importlib, "import_module", fake_import)
    assert reg.names() == ["a", "b"]
    assert imported == []  # listing names imports nothing
    assert reg.get("a").__name__ == "PKG_A"
    assert imported == ["pkg_a"]


def test_duplicate_entry_point_names_both_origins(monkeypatch):
    reg = _fake_registry(monkeypatch, [FakeEntryPoint("erm", "pkg_one", "dist-one"), FakeEntryPoint("erm", "pkg_two", "dist-two")])
    with pytest.raises(RegistryError) as err:
        reg.names()
    assert "pkg_one" in str(err.value) and "dist-one" in str(err.value)
    assert "pkg_two" in str(err.value) and "dist-two" in str(err.value)


def test_duplicate_registration_is_an_error():
    reg = Registry("metric", "fairbench.no-such-group")

    def f():
        """first"""

    def g():
        """second"""

    reg.decorator("x")(f)
    with pytest.raises(RegistryError, match="duplicate metric name 'x'"):
        reg.decorator("x")(g)


def test_broken_plugin_is_reported_with_its_distribution_and_others_still_work(monkeypatch):
    reg = _fake_registry(monkeypatch, [FakeEntryPoint("good", "pkg_good", "dist-good"), FakeEntryPoint("bad", "pkg_bad", "dist-bad")])

    def fake_import(name):
        if name == "pkg_bad":
            raise ImportError("No module named 'missing_dependency'")
        reg.decorator("good")(type("Good", (), {"__module__": name}))

    monkeypatch.setattr(registry.importlib, "import_module", fake_import)
    failures = reg.load_all()
    assert [f.distribution for f in failures] == ["dist-bad"]
    assert "missing_dependency" in failures[0].error
    assert reg.names() == ["good"]
    with pytest.raises(RegistryError, match="dist-bad"):
        reg.get("bad")


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(RegistryError) as err:
        registry.methods.get("no_such_method")
    assert "erm" in str(err.value)


def test_builtins_come_through_entry_points():
    from importlib.metadata import entry_points

    declared = {ep.name for ep in entry_points(group="fairbench.methods")}
    assert "erm" in declared
    assert registry.methods.origin("erm").startswith("fairbench.methods.erm (distribution fairbench)")


def test_builtin_modules_without_an_entry_point_are_found_without_reinstalling(tmp_path, monkeypatch):
    """A built-in added to the source tree after `pip install -e .` registers on a miss / listing."""
    pkg = tmp_path / "newbuiltins"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "base.py").write_text("raise RuntimeError('base modules are never scanned')\n")
    (pkg / "listed.py").write_text(
        "from tests.test_registry import SCANNED\nSCANNED.decorator('listed')(type('Listed', (), {}))\n")
    (pkg / "fresh.py").write_text(
        "from tests.test_registry import SCANNED\nSCANNED.decorator('fresh')(type('Fresh', (), {}))\n")
    (pkg / "broken.py").write_text("import no_such_module_anywhere\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry.importlib_metadata, "entry_points",
                        lambda group: [FakeEntryPoint("listed", "newbuiltins.listed", "fairbench")])
    reg = Registry("method", "test.group", builtin_package="newbuiltins")
    monkeypatch.setitem(globals(), "SCANNED", reg)
    assert reg.get("listed").__name__ == "Listed"  # entry point: no scan needed
    assert not reg._scanned
    assert reg.get("fresh").__name__ == "Fresh"  # a miss scans the package once
    assert reg.names() == ["fresh", "listed"]
    [failure] = reg.failures()
    assert failure.module == "newbuiltins.broken" and "no_such_module_anywhere" in failure.error


SCANNED: Registry | None = None
