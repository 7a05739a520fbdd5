"""One code revision per table: which commit each run was trained at (``environment.json``,
``git_revision``: the commit, ``+dirty`` when the working tree had uncommitted changes), and the
check that a suite's tables hold runs of one clean revision.

A table that mixes revisions compares methods trained by different code (a fixed bug, a changed
default), and a run from a dirty tree cannot be traced to any code at all. ``suite run`` and
``compare --suite`` refuse both unless told (``--allow-mixed-revisions``); the table then says
which revisions it holds and how many runs each. Runs that recorded no revision (records older
than ``environment.json``) count as one revision, "not recorded".
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Iterable

from fairbench.config import ConfigError
from fairbench.runs.record import RunRecord

NOT_RECORDED = "not recorded"
DIRTY = "+dirty"
ALLOW_FLAG = "--allow-mixed-revisions"


class MixedRevisions(ConfigError):
    """Runs of several code revisions, or of a dirty tree, where one clean revision is needed."""


def run_revision(run_dir: Path) -> str | None:
    """The code revision a run recorded; None when it recorded none (or its record is unreadable)."""
    try:
        return RunRecord(Path(run_dir)).environment().get("git_revision")
    except (OSError, ValueError, AttributeError):
        return None


def short(revision: str | None) -> str:
    if revision is None:
        return NOT_RECORDED
    commit, dirty, _ = revision.partition(DIRTY)
    return commit[:10] + (DIRTY if dirty else "")


def revision_counts(run_dirs: Iterable[Path]) -> Counter:
    """``{revision or None: runs}``."""
    return Counter(run_revision(path) for path in run_dirs)


def describe(counts: Counter) -> str:
    """``abc1234567 (3 runs), def8901234+dirty (1 run)``, the most common first."""
    return ", ".join(f"{short(rev)} ({n} run{'s' if n != 1 else ''})" for rev, n in counts.most_common())


def is_one_clean_revision(counts: Counter) -> bool:
    return len(counts) <= 1 and not any(rev is not None and rev.endswith(DIRTY) for rev in counts)


def table_note(counts: Counter) -> str | None:
    """The note of a table allowed to mix revisions; None when its runs share one clean revision."""
    if is_one_clean_revision(counts):
        return None
    return f"runs of {len(counts)} code revision(s), allowed by {ALLOW_FLAG}: {describe(counts)}"


def check_table(counts: Counter, what: str) -> None:
    """Refuse the runs of a table (``what``: e.g. "suite quickstart") unless they share one clean revision."""
    if is_one_clean_revision(counts):
        return
    why = ("were trained at several code revisions" if len(counts) > 1
           else "were trained in a working tree with uncommitted changes")
    raise MixedRevisions(f"the runs of {what} {why} ({describe(counts)}), so its tables would not say which code "
                         f"produced them; train them again at one committed revision (a fresh --runs-dir), "
                         f"or pass {ALLOW_FLAG} to make the tables anyway with a note listing the revisions")


def check_before_training(current: str | None, finished: Counter, what: str) -> None:
    """``suite run``: refuse to train at a dirty revision, or beside finished runs of another
    revision (they would not be retrained: same configuration), unless allowed."""
    if current is not None and current.endswith(DIRTY):
        raise MixedRevisions(f"{what}: the working tree has uncommitted changes ({short(current)}), so the runs "
                             f"trained now could not be traced to any code; commit (or stash) them first, or pass "
                             f"{ALLOW_FLAG} to train and report anyway with a note")
    other = Counter({rev: n for rev, n in finished.items() if rev != current})
    if other:
        raise MixedRevisions(f"{what}: {sum(other.values())} finished run(s) were trained at another code revision "
                             f"({describe(other)}) than this one ({short(current)}) and would be kept, not retrained; "
                             f"train the suite again in a fresh --runs-dir (or move those run folders away), "
                             f"or pass {ALLOW_FLAG} to keep them and mix revisions in its tables")
