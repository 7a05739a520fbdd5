"""Shared fixtures: tiny end-to-end runs on the built-in benchmark, on the CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared"
FAIRFACE_SAMPLE = SHARED / "data" / "fairface-sample"

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# The test models are tiny: one thread is as fast, and robust when the cores are shared.
torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def one_clean_revision():
    """Runs record one clean code revision, whatever state the developer's working tree is in: a
    suite refuses runs of a dirty tree (fairbench.runs.revisions). Session-wide, so that module-scoped
    fixtures' suites see it too; tests of that check set their own."""
    from fairbench.runs.environment import REVISION_ENV

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(REVISION_ENV, "0123456789abcdef0123456789abcdef01234567")
        yield


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Every test starts and ends on one torch thread. ``fairbench run`` sets the thread count from
    the machine's load (fairbench.compute.default_threads); a CLI test run in this process used to leave 1 or 2
    threads behind, depending on the load at that moment, and a later test comparing this process's
    run with a fresh process's bit for bit failed now and then (1 and 2 threads give other sums)."""
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(1)


def tiny_config(method: str, *, hparams: dict[str, Any] | None = None, epochs: int = 1, sets: list[str] = (),
                **overrides: Any):
    """A resolved config that trains in a few seconds: 32 px, 256 training images, CPU."""
    from fairbench.config import build_config, resolve

    flat = {
        "method": method,
        "data.image_size": 32,
        # render only what is used (synthface draws its splits at these sizes)
        "data.options": {"n_train": 256, "n_val": 128, "n_test": 128},
        "train.epochs": epochs,
        "train.batch_size": 32,
        "train.device": "cpu",
        "train.workers": 0,
    }
    flat.update({f"hparams.{k}": v for k, v in (hparams or {}).items()})
    flat.update(overrides)
    return resolve(build_config(None, flat, list(sets)))


@pytest.fixture
def run_tiny(tmp_path) -> Callable[..., Path]:
    """``run_tiny("erm", hparams={...}, epochs=1)`` trains a tiny run and returns its folder."""
    from fairbench.training.run import execute

    def run(method: str, **kwargs: Any) -> Path:
        return execute(tiny_config(method, **kwargs), tmp_path / "runs")

    return run


def crash_then_resume(cfg, runs_dir: Path, monkeypatch, crash_epoch: int = 1) -> Path:
    """Train ``cfg`` until it crashes before epoch ``crash_epoch`` (0-based), then run the same
    configuration again, which resumes it; returns the run folder."""
    from fairbench import registry
    from fairbench.training.run import execute

    cls = registry.methods.get(cfg.method)
    original = cls.begin_epoch

    def crash(self, epoch, trainer):
        if epoch == crash_epoch:
            raise RuntimeError("simulated crash between epochs")
        return original(self, epoch, trainer)

    monkeypatch.setattr(cls, "begin_epoch", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        execute(cfg, runs_dir)
    monkeypatch.setattr(cls, "begin_epoch", original)
    return execute(cfg, runs_dir)
