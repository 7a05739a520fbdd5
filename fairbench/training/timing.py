"""Where a job's wall time goes, from the start of its process to its last write: startup (Python,
imports), data, the budget probe, training, FLOP counting, validation, test and writing.
:class:`PhaseClock` is always in exactly one phase (the innermost entered), so the parts add up to
the total; the run records the split in ``metrics.json`` (``"timing"``) and ``fairbench show run
RUN_DIR`` prints it. The total starts where the entry point says (:func:`begin_job`: the process's
own start for ``fairbench run`` and a pool worker's first job, the hand-over for later jobs; a
library call, at its call). ``flop_counting`` is an estimate (``CostMeter.counting_seconds``).
A resumed run's breakdown is its last attempt's (``resumed_at_epoch`` says where that began); its
``cost.train_seconds`` counts the updates of every attempt.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any, Iterator

#: the phases in the order a run goes through them (``fairbench show run`` prints them so)
PHASES = ("startup", "data", "setup", "budget_probe", "training", "flop_counting", "validation", "test", "writing")
_IMPORTED_AT = time.time()  # the fallback process start where /proc is not there (macOS)
_job_started: float | None = None


def process_started() -> float:
    """``time.time()`` at which this process started (fork), from ``/proc/self/stat`` (to the
    kernel's clock tick, 10 ms); where that cannot be read, when this module was imported."""
    try:
        with open("/proc/self/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()  # the command name may hold spaces
        ticks = int(fields[19])  # field 22, starttime: clock ticks after boot
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
        return time.time() - age
    except (OSError, IndexError, ValueError, AttributeError):
        return _IMPORTED_AT


def begin_job(at: float | None = None) -> None:
    """Say when the next run of this process started (default: now); :func:`take_job_start` reads it once."""
    global _job_started
    _job_started = time.time() if at is None else at


def take_job_start() -> float:
    """The start :func:`begin_job` gave the run starting now, once (a later run in this process
    does not inherit it); now if none was given."""
    global _job_started
    started, _job_started = (_job_started if _job_started is not None else time.time()), None
    return started


class PhaseClock:
    """Wall time per phase since ``started`` (a ``time.time()``); see the module's docstring."""

    def __init__(self, started: float, first_phase: str = "startup"):
        self.started = started
        self.seconds: dict[str, float] = {}
        self.marks: dict[str, float] = {}
        # time.time() for the start (comparable with /proc's), perf_counter for the parts (monotonic)
        self._current = first_phase
        self._since = time.perf_counter() - max(0.0, time.time() - started)

    def _switch(self, name: str) -> str:
        now = time.perf_counter()
        previous = self._current
        self.seconds[previous] = self.seconds.get(previous, 0.0) + now - self._since
        self._current, self._since = name, now
        return previous

    def enter(self, name: str) -> None:
        """From now on time goes to ``name`` (until the next ``enter`` or ``phase``)."""
        self._switch(name)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        previous = self._switch(name)
        try:
            yield
        finally:
            self._switch(previous)

    def move(self, source: str, target: str, seconds: float) -> None:
        """Count ``seconds`` of ``source`` as ``target`` (a part measured inside another: FLOP counting
        inside the training updates). Never more than ``source`` holds."""
        self._switch(self._current)
        seconds = max(0.0, min(seconds, self.seconds.get(source, 0.0)))
        self.seconds[source] = self.seconds.get(source, 0.0) - seconds
        self.seconds[target] = self.seconds.get(target, 0.0) + seconds

    def mark(self, name: str) -> None:
        """Seconds from the start to now, under ``name``, the first time only (``first_batch``)."""
        self.marks.setdefault(name, time.time() - self.started)

    def breakdown(self) -> dict[str, Any]:
        """``{"total_s", "phases_s" (in :data:`PHASES` order), "marks_s", "started"}``, seconds rounded to ms."""
        self._switch(self._current)
        total = sum(self.seconds.values())
        ordered = [p for p in PHASES if p in self.seconds] + sorted(set(self.seconds) - set(PHASES))
        phases = {p: round(self.seconds[p], 3) for p in ordered}
        return {"total_s": round(total, 3), "phases_s": phases,
                "marks_s": {k: round(v, 3) for k, v in self.marks.items()},
                "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self.started))}


class TimedCalls:
    """A proxy whose method calls run in ``clock``'s phase ``name`` (every write of a run writer)."""

    def __init__(self, target: Any, clock: PhaseClock, name: str):
        self._target, self._clock, self._name = target, clock, name

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._target, attr)
        if not callable(value):
            return value

        def timed(*args: Any, **kwargs: Any) -> Any:
            with self._clock.phase(self._name):
                return value(*args, **kwargs)

        return timed
