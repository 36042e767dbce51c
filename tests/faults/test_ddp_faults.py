"""DDP on 2 CPU processes (gloo) through the real command line, then one rank killed or hung:
every remaining process exits within a bound, non-zero, with one line naming what happened, and
the run's checkpoints still load.

Lightning starts rank 1 as a child of rank 0 (the launcher), and each rank has one loader worker.
The test process makes itself a child subreaper, so processes orphaned by a killed launcher are
re-parented to it: rank 1's exit code can then be read, and nothing outlives the test unseen.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from test_train_resume import command, launch, load

PR_SET_CHILD_SUBREAPER = 36
PROGRESS = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true",
            "trainer.max_steps=100000", "trainer.log_every_n_steps=1", "data.loader.num_workers=1",
            "callbacks.model_checkpoint.every_n_train_steps=3"]
HANG_TIMEOUT = 20   # process-group timeout (s) of the hang test; conf/trainer/ddp.yaml says 600
KILL_TIMEOUT = 60   # of the kill tests: an exit well before it was not the timeout's doing
BOUND = 30          # seconds a survivor may take beyond the timeout that applies to it


@contextmanager
def subreaper():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        pytest.skip("prctl(PR_SET_CHILD_SUBREAPER) is unavailable")
    try:
        yield
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def children(pid: int) -> list[int]:
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
        return [int(c) for t in tasks for c in (t / "children").read_text().split()]
    except FileNotFoundError:  # exited meanwhile
        return []


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        kids = children(todo.pop())
        found += kids
        todo += kids
    return found


def local_rank(pid: int) -> str | None:
    """LOCAL_RANK of a process (loader workers inherit their rank's environment)."""
    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return next((v.split(b"=", 1)[1].decode() for v in env if v.startswith(b"LOCAL_RANK=")), None)


def reap(pids: set[int], deadline: float) -> dict[int, int | None]:
    """Wait (as their parent or subreaper) until every pid has exited: {pid: exit code, or None
    when its own parent reaped it}."""
    codes: dict[int, int | None] = {}
    while len(codes) < len(pids) and time.monotonic() < deadline:
        for pid in pids - codes.keys():
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # not ours (yet): alive under its parent, or reaped by it
                if not Path(f"/proc/{pid}").exists():
                    codes[pid] = None
                continue
            if done:
                codes[pid] = os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    return codes


def start(tmp_path: Path, shards: Path, timeout: int) -> tuple[subprocess.Popen, Path, Path]:
    run, log = tmp_path / "run", tmp_path / "ddp.log"
    proc = launch(command(run, shards, *PROGRESS, f"trainer.strategy.timeout.seconds={timeout}"), log)
    return proc, run, log


def wait_for_training(proc: subprocess.Popen, run: Path, log: Path, timeout: float = 120) -> dict[str, int]:
    """Once a checkpoint is written (3 steps on both ranks): {rank 0, rank 1: pid}."""
    end = time.monotonic() + timeout
    while not (run / "checkpoints" / "last.ckpt").exists():
        if proc.poll() is not None or time.monotonic() > end:
            pytest.fail(f"no checkpoint (exit {proc.returncode}):\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    ranks = [p for p in children(proc.pid) if local_rank(p) == "1"]
    assert len(ranks) == 1, "rank 1 is not a child of the launcher"
    return {"0": proc.pid, "1": ranks[0]}


def inject(tmp_path, shards, timeout: int, victim: str, sig: int) -> tuple[dict, dict, float, str, Path]:
    """Train, send `sig` to rank `victim`, reap every process of the run. Returns the ranks'
    pids, {pid: exit code} of the others, seconds from the signal to the last exit, the log."""
    with subreaper():
        proc, run, log = start(tmp_path, shards, timeout)
        everyone = {proc.pid}
        try:
            ranks = wait_for_training(proc, run, log)
            everyone |= set(descendants(proc.pid))
            others = everyone - ({ranks[victim]} if sig == signal.SIGKILL else set())
            sent = time.monotonic()
            os.kill(ranks[victim], sig)
            codes = reap(others, sent + timeout + BOUND)
            took = time.monotonic() - sent
        finally:
            try:  # whatever is left of the run: its session's process group, orphans included
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            reap(everyone, time.monotonic() + 10)  # no zombies left behind either
            proc.returncode = -1  # reaped here, not by Popen
    out = log.read_text()
    assert codes.keys() == others, f"still running {took:.0f} s after the fault: " \
                                   f"{sorted(others - codes.keys())}\n{out[-3000:]}"
    assert "Traceback" not in out, out[-3000:]
    return ranks, codes, took, out, run


def resumable(run: Path) -> int:
    """The step of last.ckpt, which must still load (Lightning writes it atomically)."""
    return load(run / "checkpoints" / "last.ckpt")["global_step"]


@pytest.mark.fault(fault="DDP, 2 ranks: rank 1 SIGKILLed during training",
                   outcome="rank 0 exits non-zero within ~5 s (Lightning's child watcher), "
                           "one line naming the dead rank",
                   lost="the steps since the last checkpoint")
def test_rank_1_killed_the_launcher_exits(tmp_path, small_corpus):
    ranks, codes, took, out, run = inject(tmp_path, small_corpus, KILL_TIMEOUT, "1", signal.SIGKILL)
    assert codes[ranks["0"]] != 0 and took < BOUND, (codes, took)
    # Lightning's watcher polls every 5 s and SIGKILLs rank 0; if gloo fails first, rank 0 says so
    assert (f"Child process with PID {ranks['1']} terminated with code -9" in out
            or "rank 0 of 2 lost its peer (rank 1)" in out), out[-3000:]
    assert resumable(run) >= 3


@pytest.mark.fault(fault="DDP, 2 ranks: rank 0 (the launcher) SIGKILLed during training",
                   outcome="rank 1 exits 1 within ~6 s: 'rank 1 of 2 lost its peer (rank 0) ... "
                           "resume with ckpt_path=last'",
                   lost="the steps since the last checkpoint")
def test_rank_0_killed_rank_1_exits(tmp_path, small_corpus):
    ranks, codes, took, out, run = inject(tmp_path, small_corpus, KILL_TIMEOUT, "0", signal.SIGKILL)
    assert codes[ranks["1"]] == 1 and took < BOUND, (codes, took)
    line = next(x for x in out.splitlines() if "lost its peer" in x)
    assert line.startswith("rank 1 of 2 lost its peer (rank 0) at step ") and "Connection" in line, line
    assert "resume with ckpt_path=last" in line
    assert resumable(run) >= 3


@pytest.mark.fault(fault="DDP, 2 ranks: rank 1 hangs (SIGSTOP) during training",
                   outcome="rank 0 exits 1 after the process-group timeout (trainer.strategy.timeout, 10 min "
                           "by default) with one line, and kills rank 1",
                   lost="the steps since the last checkpoint")
def test_rank_1_hangs_the_timeout_ends_the_run(tmp_path, small_corpus):
    ranks, codes, took, out, run = inject(tmp_path, small_corpus, HANG_TIMEOUT, "1", signal.SIGSTOP)
    assert codes[ranks["0"]] == 1, codes
    # a stopped process can only leave by SIGKILL (None: rank 0 reaped it before exiting)
    assert codes[ranks["1"]] in (-signal.SIGKILL, None), "rank 0 did not kill the hung rank"
    assert HANG_TIMEOUT - 2 < took < HANG_TIMEOUT + BOUND, took  # the timeout, not something else
    line = next(x for x in out.splitlines() if "lost its peer" in x)
    assert line.startswith("rank 0 of 2 lost its peer (rank 1) at step ") and "20-s process-group timeout" in line
    assert resumable(run) >= 3
