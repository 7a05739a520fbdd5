"""Registries of methods, datasets, backbones and metrics.

Every entry, built-in or third-party, arrives through an entry-point group
(``fairbench.methods`` ...): the entry point's *name* is the registered name and its
*value* is the module that registers it with a decorator. Modules are imported lazily,
on the first lookup of their name (or when a listing needs every entry), the way pytest
loads ``pytest11`` plugins. A duplicate name is an error naming both origins; a plugin
that fails to import is recorded with its distribution and does not break the others.
"""

from __future__ import annotations

import fnmatch
import importlib
import importlib.metadata as importlib_metadata
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


class RegistryError(LookupError):
    """A name that is unknown, duplicated, or whose plugin failed to import."""


@dataclass
class PluginFailure:
    name: str
    module: str
    distribution: str
    error: str


@dataclass
class _Entry:
    name: str
    module: str  # module path that registers this name
    distribution: str  # distribution that declared the entry point ("<local>" if none)
    obj: Any = None
    loaded: bool = False


def _origin(entry: _Entry) -> str:
    return f"{entry.module} (distribution {entry.distribution})"


@dataclass
class Registry(Generic[T]):
    kind: str  # "method", "dataset", ...
    group: str  # entry-point group
    #: the package of built-in entries, scanned for modules the installed entry points do not name
    #: yet (a built-in added since the last ``pip install -e .`` is found without reinstalling)
    builtin_package: str | None = None
    #: an entry point may name a module that registers several entries (metrics): listing loads them all
    module_entries: bool = False
    _entries: dict[str, _Entry] = field(default_factory=dict)
    _failures: dict[str, PluginFailure] = field(default_factory=dict)
    _discovered: bool = False
    _scanned: bool = False

    # -- discovery -----------------------------------------------------------------
    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        for ep in importlib_metadata.entry_points(group=self.group):
            dist = ep.dist.name if getattr(ep, "dist", None) is not None else "<unknown>"
            module = ep.value.split(":")[0]
            existing = self._entries.get(ep.name)
            if existing is not None:
                if existing.module == module:
                    continue  # the same distribution seen twice on sys.path
                raise RegistryError(
                    f"duplicate {self.kind} name {ep.name!r}: declared by "
                    f"{_origin(existing)} and by {module} (distribution {dist}). "
                    "Uninstall one of the two packages or rename the entry point."
                )
            self._entries[ep.name] = _Entry(ep.name, module, dist)

    def _scan_builtins(self) -> None:
        """Import the built-in package's modules that no entry point names (once, on a miss or a
        listing, so that the common lookup stays lazy); they register themselves on import."""
        if self._scanned or self.builtin_package is None:
            return
        self._scanned = True
        known = {entry.module for entry in self._entries.values()}
        package = importlib.import_module(self.builtin_package)  # a plain module registers on import
        for info in pkgutil.iter_modules(getattr(package, "__path__", [])):
            module = f"{self.builtin_package}.{info.name}"
            if info.name.startswith("_") or info.name == "base" or module in known:
                continue
            try:
                importlib.import_module(module)
            except Exception as exc:  # a broken built-in is reported like a broken plugin
                self._failures[info.name] = PluginFailure(info.name, module, "fairbench (source tree)",
                                                          f"{type(exc).__name__}: {exc}")

    def _load(self, entry: _Entry) -> None:
        if entry.loaded:
            return
        try:
            importlib.import_module(entry.module)
        except Exception as exc:  # a broken plugin must not break the rest
            self._failures[entry.name] = PluginFailure(
                entry.name, entry.module, entry.distribution, f"{type(exc).__name__}: {exc}"
            )
            del self._entries[entry.name]
            raise RegistryError(
                f"{self.kind} {entry.name!r} from distribution {entry.distribution!r} "
                f"failed to import ({entry.module}): {type(exc).__name__}: {exc}"
            ) from exc
        if not entry.loaded:
            del self._entries[entry.name]
            if any(e.module == entry.module and e.loaded for e in self._entries.values()):
                return  # an entry point naming a module that registers several objects under their own names
            raise RegistryError(
                f"{self.kind} entry point {entry.name!r} of distribution {entry.distribution!r} "
                f"imports {entry.module}, which registers no {self.kind} of that name"
            )

    # -- registration ----------------------------------------------------------------
    def register(self, name: str, obj: T, module: str) -> T:
        self._discover()
        entry = self._entries.get(name)
        if entry is None:
            # Registered by a module an entry point names under another name, or by direct import (tests, scripts).
            dist = next((e.distribution for e in self._entries.values() if e.module == module), "<local>")
            self._entries[name] = _Entry(name, module, dist, obj, True)
            return obj
        if entry.loaded and entry.obj is not obj:
            if getattr(entry.obj, "__qualname__", None) == getattr(obj, "__qualname__", 0) and entry.module == module:
                entry.obj = obj  # module re-imported (importlib.reload): keep the newest
                return obj
            raise RegistryError(
                f"duplicate {self.kind} name {name!r}: registered by {_origin(entry)} "
                f"and again by {module}"
            )
        # The entry point's module (or a module it imports) registers the name.
        entry.obj, entry.loaded = obj, True
        return obj

    def decorator(self, name: str, **attributes: Any) -> Callable[[T], T]:
        def wrap(obj: T) -> T:
            for key, value in attributes.items():
                setattr(obj, key, value)
            if not getattr(obj, "registered_name", None) or getattr(obj, "registered_name") != name:
                try:
                    setattr(obj, "registered_name", name)
                except (AttributeError, TypeError):
                    pass
            return self.register(name, obj, obj.__module__)

        return wrap

    # -- lookup ----------------------------------------------------------------------
    def get(self, name: str) -> T:
        self._discover()
        entry = self._entries.get(name)
        if entry is None:
            self._scan_builtins()
            entry = self._entries.get(name)
        if entry is None and self.module_entries:
            self.load_all()  # an entry point named after its module may register it
            entry = self._entries.get(name)
        if entry is None:
            failure = self._failures.get(name)
            if failure is not None:
                raise RegistryError(
                    f"{self.kind} {name!r} from distribution {failure.distribution!r} failed "
                    f"to import ({failure.module}): {failure.error}"
                )
            close = fnmatch.filter(self.names(load=False), f"*{name[:3]}*") if name else []
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise RegistryError(
                f"unknown {self.kind} {name!r}. Known: {', '.join(self.names(load=False)) or '(none)'}."
                f"{hint} See `fairbench list {self.kind}s`."
            )
        self._load(entry)
        return entry.obj

    def names(self, pattern: str = "*", load: bool = False) -> list[str]:
        self._discover()
        self._scan_builtins()
        if load or self.module_entries:
            self.load_all()
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def load_all(self) -> list[PluginFailure]:
        """Import every entry; failures are recorded and returned, never raised."""
        self._discover()
        self._scan_builtins()
        for entry in list(self._entries.values()):
            try:
                self._load(entry)
            except RegistryError:
                pass
        return list(self._failures.values())

    def items(self) -> list[tuple[str, T]]:
        self.load_all()
        return [(n, self._entries[n].obj) for n in sorted(self._entries)]

    def origin(self, name: str) -> str:
        self._discover()
        return _origin(self._entries[name])

    def failures(self) -> list[PluginFailure]:
        return list(self._failures.values())


methods: Registry = Registry("method", "fairbench.methods", "fairbench.methods")
datasets: Registry = Registry("dataset", "fairbench.datasets", "fairbench.data")
backbones: Registry = Registry("backbone", "fairbench.backbones", "fairbench.backbones")
metrics: Registry = Registry("metric", "fairbench.metrics", "fairbench.metrics", module_entries=True)
#: how a suite's jobs are trained: local processes, Slurm, a lab's own (fairbench.suites.launchers.base)
launchers: Registry = Registry("launcher", "fairbench.launchers", "fairbench.suites.launchers")
#: checkpoint and trial selection rules (fairbench.selection_rules)
selection_rules: Registry = Registry("selection rule", "fairbench.selection_rules", "fairbench.selection_rules")
#: table layouts of compare and suite reports (fairbench.results.layouts.base)
layouts: Registry = Registry("layout", "fairbench.layouts", "fairbench.results.layouts")

REGISTRIES = {"methods": methods, "datasets": datasets, "backbones": backbones, "metrics": metrics,
              "selection": selection_rules, "launchers": launchers, "layouts": layouts}


def register_method(name: str) -> Callable[[T], T]:
    return methods.decorator(name)


def register_dataset(name: str) -> Callable[[T], T]:
    return datasets.decorator(name)


def register_backbone(name: str, summary: str | None = None) -> Callable[[T], T]:
    return backbones.decorator(name, **({"summary": summary} if summary else {}))


def register_launcher(name: str) -> Callable[[T], T]:
    return launchers.decorator(name)


def register_layout(name: str) -> Callable[[T], T]:
    return layouts.decorator(name)


def register_metric(name: str, summary: str | None = None) -> Callable[[T], T]:
    return metrics.decorator(name, **({"summary": summary} if summary else {}))


def register_selection_rule(name: str) -> Callable[[T], T]:
    return selection_rules.decorator(name)


def summary_of(obj: Any) -> str:
    """One-line summary: an explicit ``summary`` attribute, else the docstring's first line."""
    text = getattr(obj, "summary", None)
    if not isinstance(text, str) or not text:
        text = (getattr(obj, "__doc__", None) or "").strip()
    return text.splitlines()[0].strip() if text else ""
