"""Run ownership with real processes: a second process refuses or skips a run another live
process trains; a dead owner's run is taken over; a frozen owner that wakes after a takeover
writes nothing more; two concurrent `suite run`s train every run exactly once."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fairbench.runs.lease import RunBusy, hold, lease_file, read_owner
from fairbench.runs.record import RunRecord
from fairbench.runs.store import RunWriter
from fairbench.suites.suite import Suite
from tests.suites.test_suite import write_suite

ROOT = Path(__file__).resolve().parents[2]
FAIRBENCH = [sys.executable, "-m", "fairbench"]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **extra}


def _holder(run_dir: Path, ready: Path, then: str = "time.sleep(600)", env: dict | None = None) -> subprocess.Popen:
    """A process that takes ``run_dir``'s lease, creates ``ready`` and runs ``then``."""
    code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from fairbench.runs.lease import hold, LeaseLost
        from fairbench.runs.store import RunWriter
        with hold(Path({str(run_dir)!r})):
            Path({str(ready)!r}).write_text("ok")
    """) + textwrap.indent(textwrap.dedent(then).strip(), "    ") + "\n"
    return subprocess.Popen([sys.executable, "-c", code], env=env or _env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the helper process ended early: {proc.communicate()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} never appeared")
        time.sleep(0.05)


def test_a_live_owner_is_refused_at_once_and_its_marker_goes_with_its_lease(tmp_path):
    run = tmp_path / "runs" / "r1"
    with hold(run):
        owner = read_owner(run)
        assert (owner.pid, owner.host) == (os.getpid(), socket.gethostname()) and not owner.looks_stale
        with hold(run):  # nested in the owner (a launcher around the runner): free
            pass
    assert not lease_file(run).exists() and read_owner(run) is None
    ready = tmp_path / "ready"
    other = _holder(run, ready)
    try:
        _wait_for(ready, other)
        t0 = time.monotonic()
        with pytest.raises(RunBusy, match=f"pid {other.pid} on {socket.gethostname()}"):
            with hold(run):
                pass
        assert time.monotonic() - t0 < 30  # refused, not waited for
    finally:
        other.kill()
        other.wait()


def test_fairbench_run_refuses_a_run_another_process_trains(tmp_path):
    """`fairbench run` of a configuration whose run another live process owns: exit 2, naming it."""
    runs = tmp_path / "runs"
    args = ["run", "erm", "--runs-dir", str(runs), "--device", "cpu", "--image-size", "32", "--epochs", "1",
            "--max-train-samples", "64", "--max-eval-samples", "32", "--quiet"]
    from fairbench.cli import _overrides, build_parser
    from fairbench.config import build_config, resolve, run_id
    from fairbench.data.run_fingerprint import with_fingerprint

    ns = build_parser().parse_args(args)
    rid = run_id(with_fingerprint(resolve(build_config(ns.config, _overrides(ns, ns.method), ns.sets))))
    ready = tmp_path / "ready"
    owner = _holder(runs / rid, ready)
    try:
        _wait_for(ready, owner)
        out = subprocess.run(FAIRBENCH + args, env=_env(), capture_output=True, text=True, timeout=300)
    finally:
        owner.kill()
        owner.wait()
    assert out.returncode == 2, out.stderr
    assert f"being trained by pid {owner.pid} on {socket.gethostname()}" in out.stderr
    assert not (runs / rid / "status.json").exists()  # the refused process wrote nothing


def test_a_dead_owners_run_is_taken_over_at_once_on_its_host(tmp_path):
    run = tmp_path / "runs" / "r2"
    ready = tmp_path / "ready"
    owner = _holder(run, ready)
    _wait_for(ready, owner)
    owner.send_signal(signal.SIGKILL)  # no chance to remove its marker
    owner.wait()
    assert lease_file(run).exists() and read_owner(run).dead
    t0 = time.monotonic()
    with hold(run):  # (the default lease is 180 s: this must not wait for it)
        assert read_owner(run).pid == os.getpid()
    assert time.monotonic() - t0 < 60


def test_a_frozen_owner_is_superseded_after_the_lease_and_then_writes_nothing(tmp_path):
    """An owner that stops heart-beating (SIGSTOP: as a suspended job, or a host cut off) loses the
    run after the lease; when it wakes, its next write to the run raises LeaseLost."""
    run = tmp_path / "runs" / "r3"
    ready, go = tmp_path / "ready", tmp_path / "go"
    then = f"""
        while not Path({str(go)!r}).exists():
            time.sleep(0.05)
        try:
            RunWriter(Path({str(run)!r})).write_json("status.json", {{"state": "running"}})
            print("WROTE")
        except LeaseLost as exc:
            print("LOST", exc)
    """
    env = _env(FAIRBENCH_LEASE_SECONDS="3")
    owner = _holder(run, ready, then, env=env)
    try:
        _wait_for(ready, owner)
        owner.send_signal(signal.SIGSTOP)
        taker = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
            import time
            from pathlib import Path
            from fairbench.runs.lease import hold, read_owner
            t0 = time.monotonic()
            with hold(Path({str(run)!r}), wait=60):  # waits: the owner looks alive when this starts
                import os
                print("TOOK", round(time.monotonic() - t0, 1), read_owner(Path({str(run)!r})).pid, os.getpid())
                Path({str(go)!r}).write_text("go")
                import signal
                os.kill({owner.pid}, signal.SIGCONT)
                time.sleep(1.0)
        """)], env=env, capture_output=True, text=True, timeout=120)
        assert taker.returncode == 0, taker.stderr
        took = re.search(r"TOOK ([0-9.]+) (\d+) (\d+)", taker.stdout)
        assert took and took.group(2) == took.group(3), taker.stdout  # the taker owned the run
        assert float(took.group(1)) >= 3.0  # not before a whole lease had passed without a heartbeat
        out, err = owner.communicate(timeout=120)
    finally:
        if owner.poll() is None:
            owner.send_signal(signal.SIGCONT)
            owner.kill()
    assert "LOST" in out and "WROTE" not in out, (out, err)
    assert not (run / "status.json").exists()


def test_status_of_a_run_whose_owner_died_elsewhere_is_incomplete(tmp_path):
    """`running` in status.json means nothing without a live lease (the process may have died on
    another host, where its pid cannot be checked)."""
    run = tmp_path / "runs" / "r4"
    writer = RunWriter(run)
    writer.set_status("running", epoch=0)
    with hold(run):
        assert RunRecord(run).status["state"] == "running"
    status = RunRecord(run).status
    assert status["state"] == "incomplete" and "holds no lease" in status["reason"]


@pytest.mark.slow
def test_two_suite_runs_at_once_train_every_run_exactly_once(tmp_path):
    """Two `fairbench suite run` processes on the same suite and runs folder, started together:
    together they finish it, and every run is trained by exactly one of them."""
    path = write_suite(tmp_path, '[grid]\n"hparams.label_smoothing" = [0.0, 0.1]\n')
    runs = tmp_path / "runs"
    cmd = FAIRBENCH + ["suite", "run", str(path), "--runs-dir", str(runs), "--quiet"]
    procs = [subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    ids = [j.run_id for j in Suite.load(path).resolve()]
    assert len(ids) == 4
    # the runner logs "run <id>: ..." when it starts training, after taking the run's lease
    started = [{rid for rid in ids if f"run {rid}: " in err} for _, err in outs]
    assert started[0].isdisjoint(started[1]) and started[0] | started[1] == set(ids), started
    trained = [int(re.search(r"(\d+) trained now", out).group(1)) for out, _ in outs]
    assert sum(trained) == 4 and [len(s) for s in started] == trained
    for rid in ids:
        assert RunRecord(runs / rid).status["state"] == "done"
        assert (runs / rid / "metrics.json").is_file()
    assert not any((runs / ".leases").iterdir())  # every lease given back


def test_an_owner_on_another_host_is_taken_over_once_its_heartbeat_has_been_still_for_a_lease(tmp_path, monkeypatch,
                                                                                               capsys):
    """Another host's pid cannot be checked: its run is declared dead only when its marker has not
    been touched for a lease (by the file's age), and taken over after this process has itself
    watched it stay still for a lease."""
    monkeypatch.setenv("FAIRBENCH_LEASE_SECONDS", "2")
    run = tmp_path / "runs" / "r5"
    RunWriter(run).set_status("running", epoch=3)
    marker = lease_file(run)
    marker.parent.mkdir(parents=True)
    marker.write_text("filelock/2\npid=4242\nhost=node-elsewhere\nmode=lease\ntoken=0123\nduration=2.0\n")
    assert RunRecord(run).status["state"] == "running"  # a fresh heartbeat: alive as far as anyone can tell
    with pytest.raises(RunBusy, match="pid 4242 on node-elsewhere"):
        with hold(run):
            pass
    old = time.time() - 60
    os.utime(marker, (old, old))  # no heartbeat for a minute
    status = RunRecord(run).status
    assert status["state"] == "incomplete" and "presumed dead" in status["reason"]
    t0 = time.monotonic()
    with hold(run):
        assert read_owner(run).pid == os.getpid()
    assert time.monotonic() - t0 >= 2.0  # it watched the marker for a whole lease first
    assert "looks dead" in capsys.readouterr().err


def _take_over(run: Path) -> None:
    """What another process does once this one has been frozen for longer than the lease: its own
    marker (a new file) in place of this one's."""
    marker = lease_file(run)
    other = marker.with_name(marker.name + ".other")
    other.write_text(f"pid={os.getpid() + 1}\nhost=another-host\nduration=180\ntoken=theirs\n")
    os.replace(other, marker)


def test_a_forced_run_that_lost_its_lease_does_not_swap_its_folder_over_the_new_owners(tmp_path):
    """A --force run trains in a hidden folder beside the run; frozen past its lease and taken over,
    it must neither write there nor swap it in: the new owner's run stays as the new owner made it."""
    from fairbench.runs.lease import LeaseLost
    from fairbench.runs.lifecycle import swap_in

    final = tmp_path / "runs" / "r9"
    side = final.with_name(f".{final.name}.force-{os.getpid()}")
    side.mkdir(parents=True)
    (side / "status.json").write_text('{"state": "done", "by": "the frozen process"}')
    with hold(final):
        writer = RunWriter(side, lease_of=final)
        writer.write_json("history.json", [])  # owned: the side folder is written through the run's lease
        _take_over(final)
        final.mkdir()
        (final / "status.json").write_text('{"state": "running", "by": "the new owner"}')
        with pytest.raises(LeaseLost, match=f"lost its lease on {final}: now held by pid {os.getpid() + 1}"):
            writer.write_json("metrics.json", {})
        with pytest.raises(LeaseLost, match="nothing more is written to the run"):
            swap_in(side, final)
    assert (final / "status.json").read_text() == '{"state": "running", "by": "the new owner"}'
    assert sorted(p.name for p in final.iterdir()) == ["status.json"]
    assert not (side / "metrics.json").exists()
    assert read_owner(final).host == "another-host"  # this process's release left the new owner's lease alone


def test_fairbench_run_force_that_lost_its_lease_leaves_the_run_to_its_new_owner(tmp_path, monkeypatch, capsys):
    """End to end: the lease is taken over while a forced run trains aside (as after a freeze);
    the run stops with one clear line (exit 1), and the new owner's run folder is untouched."""
    from fairbench.cli import main
    from fairbench.methods.erm import ERM

    runs = tmp_path / "runs"
    args = ["run", "erm", "--runs-dir", str(runs), "--device", "cpu", "--threads", "1", "--image-size", "32",
            "--epochs", "1", "--max-train-samples", "64", "--max-eval-samples", "32", "--quiet",
            "--set", "train.batch_size=32"]
    assert main(args) == 0
    (run,) = [p for p in runs.iterdir() if not p.name.startswith(".")]
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    original = ERM.update

    def frozen_then_superseded(self, batch):  # the first update of the forced run
        monkeypatch.setattr(ERM, "update", original)
        _take_over(run)
        return original(self, batch)

    monkeypatch.setattr(ERM, "update", frozen_then_superseded)
    capsys.readouterr()
    assert main([*args, "--force"]) == 1
    err = capsys.readouterr().err
    assert f"fairbench run: error: this process lost its lease on {run}" in err and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    assert not [p for p in runs.iterdir() if p.name.startswith(f".{run.name}")]  # its side folder is gone
