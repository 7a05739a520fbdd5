"""Finding a dataset's files: the data root, its accepted layouts, and the one "not found" message.

A loader names the files it needs (glob patterns relative to a layout folder; a trailing ``/``
means a folder) and the layouts it accepts (e.g. CelebA's ``root/`` and ``root/celeba/``).
:func:`locate` returns the first layout that has every file of one alternative, or raises
one :class:`DatasetError` that says where it looked, what it expected, where to download
the data and how to point fairbench at it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Sequence

from fairbench.data.base import DatasetError


@dataclass(frozen=True)
class Source:
    """What a dataset needs on disk and where a user gets it."""

    dataset: str
    env: str
    #: alternative sets of required entries, each a glob pattern (``dir/`` = a folder)
    required: Sequence[Sequence[str]]
    get_from: str
    layouts: Sequence[str] = ("",)  # sub-folders of the root to try, "" = the root itself


def _present(folder: Path, pattern: str) -> bool:
    if pattern.endswith("/"):
        return (folder / pattern.rstrip("/")).is_dir()
    if any(ch in pattern for ch in "*?["):
        return next(iter(folder.glob(pattern)), None) is not None
    return (folder / pattern).is_file()


def _how_to_point(source: Source) -> str:
    return (f"point fairbench at them with --data-root /path/to/{source.dataset} "
            f"(or data.root in a config file), or export {source.env}=/path/to/{source.dataset}")


def _not_found(source: Source, looked: str, problems: list[str]) -> DatasetError:
    expected = " or ".join("[" + ", ".join(alt) + "]" for alt in source.required)
    lines = [
        f"{source.dataset}: dataset files not found.",
        f"  looked in: {looked}",
        *[f"    {p}" for p in problems],
        f"  expected: {expected}",
        f"  get them from: {source.get_from}",
        f"  then {_how_to_point(source)}.",
    ]
    return DatasetError("\n".join(lines))


def data_root(source: Source, root: Path | str | None) -> tuple[Path, str]:
    """The root folder (given, else from the environment variable) and a phrase saying where it came from."""
    if root is not None:
        where = f"--data-root {root}"
    elif os.environ.get(source.env):
        root = os.environ[source.env]
        where = f"${source.env}={root}"
    else:
        raise _not_found(source, f"nowhere: no --data-root given and ${source.env} is not set", [])
    path = Path(root).expanduser()
    if not path.exists():
        raise _not_found(source, where, [f"{path} does not exist"])
    return path, where


def locate(source: Source, root: Path | str | None) -> tuple[Path, int]:
    """(folder holding the files, index of the alternative found) for the first matching layout."""
    base, where = data_root(source, root)
    problems = []
    for layout in source.layouts:
        folder = base / layout if layout else base
        if not folder.is_dir():
            problems.append(f"{folder}: not a folder")
            continue
        for i, alternative in enumerate(source.required):
            if all(_present(folder, p) for p in alternative):
                return folder, i
        missing = sorted({p for alt in source.required for p in alt if not _present(folder, p)})
        problems.append(f"{folder}: missing {', '.join(missing)}")
    raise _not_found(source, where, problems)


def safe_relative(name: str, root: Path, where: str) -> str:
    """``name`` as a POSIX path relative to ``root``; rejects ``..`` and absolute paths outside it."""
    text = str(name).strip()
    if not text:
        raise DatasetError(f"{where}: empty path")
    # Backslash names (Windows-made manifests, LFWA+) are folder separators, not characters.
    pure = PureWindowsPath(text) if "\\" in text else PurePosixPath(text)
    if pure.is_absolute() or pure.drive:
        absolute = os.path.normpath(str(pure))
        base = os.path.normpath(str(Path(root).absolute()))
        if os.path.commonpath([absolute, base]) != base:
            raise DatasetError(f"{where}: path {text!r} points outside the data root {root}; "
                               "paths must be relative to the root (or absolute inside it)")
        return Path(os.path.relpath(absolute, base)).as_posix()
    parts = [p for p in pure.parts if p not in ("", ".")]
    if ".." in parts:
        raise DatasetError(f"{where}: path {text!r} contains '..'; paths must stay inside the data root {root}")
    if not parts:
        raise DatasetError(f"{where}: path {text!r} names no file")
    return "/".join(parts)
