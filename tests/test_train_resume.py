"""The real command line (`python -m qwen_audio_mt.train ...`) in subprocesses: a SIGKILLed run
resumes where its last checkpoint left off, SIGTERM saves and exits 0, DDP on 2 CPU processes.

Each run keeps Hydra's own files (`hydra.run.dir`) in its run folder, so nothing lands in outputs/.
Runs use one loader worker and OMP_NUM_THREADS=1: on 2 cores, torch's 2 spinning intra-op threads
beside a loader worker make a step ~4x slower (40 steps: 75 s instead of 17 s).
"""
from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_train import QUIET, SHRINK

from qwen_audio_mt.paths import REPO_ROOT

BATCHES = ["data.loader.limits.max_batch_size=8", "data.loader.limits.pool=32"]
EVERY_5 = ["callbacks.model_checkpoint.every_n_train_steps=5", "data.loader.num_workers=1"]


def command(run: Path, shards: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "qwen_audio_mt.train", f"paths.shards={shards}", f"run_dir={run}",
            f"hydra.run.dir={run}", "evaluate=false", *SHRINK, *BATCHES, *QUIET, *overrides]


def launch(cmd: list[str], log: Path) -> subprocess.Popen:
    """A training in its own process group (so a SIGKILL takes its loader workers too)."""
    return subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"})


def group_pids(pgid: int) -> list[int]:
    """Every live process of a process group (the run, its DDP ranks, their loader workers)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # after "pid (comm)": state, ppid, pgrp
            pids.append(int(stat.parent.name))
    return sorted(pids)


_FRAMEWORK = ("/hydra/", "<frozen runpy>", "/multiprocessing/", "/threading.py")  # frames a hang is rarely in


def stacks_then_kill(proc: subprocess.Popen, log: Path) -> str:
    """Every process of a stuck run prints its threads' stacks (SIGUSR2, errors.run_main), one
    process at a time so they do not interleave, then the run is killed: each process's stacks,
    headed by its pid and command line, for the failure message."""
    parts = []
    for pid in group_pids(proc.pid):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
            start = log.stat().st_size
            os.kill(pid, signal.SIGUSR2)
        except (ProcessLookupError, FileNotFoundError):
            continue
        time.sleep(1.5)
        with log.open("rb") as f:
            f.seek(start)
            stacks = f.read().decode(errors="replace")
        main = stacks[stacks.find("Current thread"):] if "Current thread" in stacks else stacks
        lines = main.splitlines()  # the innermost frames unfiltered: a hang can sit in multiprocessing itself
        frames = lines[:4] + [line for line in lines[4:] if not any(x in line for x in _FRAMEWORK)]
        parts.append(f"--- pid {pid}: {cmd}\n" + "\n".join(frames[:40]))
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    return log.read_text()[-3000:] + "\n" + "\n".join(parts)


def finish(proc: subprocess.Popen, log: Path, timeout: float) -> str:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"no exit within {timeout} s:\n{stacks_then_kill(proc, log)}")
    return log.read_text()


def run_to_end(cmd: list[str], log: Path, timeout: float = 300) -> str:
    proc = launch(cmd, log)
    out = finish(proc, log, timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


def wait_for(predicate, proc: subprocess.Popen, log: Path, timeout: float = 180):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if (value := predicate()):
            return value
        if proc.poll() is not None:
            pytest.fail(f"training exited ({proc.returncode}) before the condition:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    pytest.fail(f"condition not met within {timeout} s:\n{stacks_then_kill(proc, log)}")


def step_checkpoints(run: Path) -> dict[int, Path]:
    """ModelCheckpoint's periodic files (step000010.ckpt ...) by step."""
    found = {}
    for p in (run / "checkpoints").glob("step*.ckpt"):
        if m := re.fullmatch(r"step(\d+)\.ckpt", p.name):
            found[int(m.group(1))] = p
    return found


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def logged_train_steps(run: Path) -> list[int]:
    with open(run / "logs" / "metrics.csv", newline="") as f:
        return [int(r["step"]) for r in csv.DictReader(f) if r.get("train/loss")]


def test_sigkill_then_resume_continues_from_the_last_checkpoint(tmp_path, small_corpus):
    """With the adaptive mixture (updates every 3 steps): its weights come back from the
    checkpoint unchanged and go on moving from there."""
    run, last = tmp_path / "run", tmp_path / "run" / "checkpoints" / "last.ckpt"
    common = [*EVERY_5, "trainer.max_steps=40", "trainer.log_every_n_steps=1", "mixture=adaptive",
              "mixture.adaptive.every_n_steps=3"]
    proc = launch(command(run, small_corpus, *common), tmp_path / "killed.log")

    def saved_past_10():  # a step checkpoint >= 10, and last.ckpt written after it
        steps = step_checkpoints(run)
        newest = max((s for s in steps if s >= 10), default=None)
        return (newest is not None and last.exists()
                and last.stat().st_mtime_ns >= steps[newest].stat().st_mtime_ns)

    try:
        wait_for(saved_past_10, proc, tmp_path / "killed.log")
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    at_kill = load(last)
    resume_step = at_kill["global_step"]
    assert 10 <= resume_step < 40

    run_to_end(command(run, small_corpus, *common, "ckpt_path=last"), tmp_path / "resumed.log")
    final = load(last)
    assert final["global_step"] == 40
    # the resumed run starts logging at the checkpoint's step: nothing before it runs again
    assert logged_train_steps(run) == list(range(resume_step, 40))
    # Lightning keeps LightningDataModule.state_dict() under the class name
    before, after = at_kill["AudioDataModule"], final["AudioDataModule"]
    assert before["resumes"] == 0 and after["resumes"] == 1
    assert sum(after["seen"].values()) > sum(before["seen"].values())
    assert all(after["seen"].get(task, 0) >= n for task, n in before["seen"].items())
    assert sorted(p.name for p in last.parent.glob("last*")) == ["last.ckpt"]
    # the adaptive weights: moved before the kill, restored as they were, then updated on
    adaptive = before["adaptive"]["history"]
    mixture = json.loads((run / "mixture.json").read_text())
    assert [h["step"] for h in adaptive] == list(range(3, resume_step + 1, 3))
    assert adaptive[-1]["weights"] != pytest.approx(mixture["target"], abs=1e-5)  # moved off the configured mixture
    with open(run / "logs" / "metrics.csv", newline="") as f:
        first = next(r for r in csv.DictReader(f) if r.get("adaptive/asr"))  # the resumed run's first step
    assert int(first["step"]) == resume_step
    assert {t: float(first[f"adaptive/{t}"]) for t in adaptive[-1]["weights"]} == pytest.approx(adaptive[-1]["weights"], abs=1e-6)
    history = mixture["adaptive"]["history"]
    assert history[: len(adaptive)] == adaptive and [h["step"] for h in history] == list(range(3, 40, 3))


def test_sigterm_saves_last_and_exits_cleanly(tmp_path, small_corpus):
    run, last = tmp_path / "run", tmp_path / "run" / "checkpoints" / "last.ckpt"
    log = tmp_path / "terminated.log"
    proc = launch(command(run, small_corpus, *EVERY_5, "trainer.max_steps=1000"), log)
    try:
        wait_for(lambda: step_checkpoints(run), proc, log)
        os.killpg(proc.pid, signal.SIGUSR2)  # "where are you?": stacks, and the run goes on
        wait_for(lambda: "most recent call first" in log.read_text(), proc, log, timeout=30)
        time.sleep(1.0)  # a few steps past the checkpoint, most likely
        sent_at = max(step_checkpoints(run))
        proc.send_signal(signal.SIGTERM)  # the main process only, as a scheduler would
        out = finish(proc, log, timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, out[-3000:]
    stopped = int(re.search(r"stopped by SIGTERM at step (\d+)", out).group(1))
    # the step it stopped at is saved: one more periodic file (unless that step's save had just
    # been made), which last.ckpt links to
    step = load(last)["global_step"]
    assert step == stopped and sent_at <= step < 1000
    assert last.resolve() == step_checkpoints(run)[step]

    run_to_end(command(run, small_corpus, *EVERY_5, "ckpt_path=last", f"trainer.max_steps={step + 5}"),
               tmp_path / "resumed.log")
    final = load(last)
    assert final["global_step"] == step + 5 and final["AudioDataModule"]["resumes"] == 1
    assert sorted(p.name for p in last.parent.glob("last*")) == ["last.ckpt"]


def test_ddp_two_cpu_processes_through_the_entry_point(tmp_path, small_corpus):
    """Lightning relaunches the Hydra script for rank 1 (same overrides + hydra.run.dir)."""
    run = tmp_path / "run"
    run_to_end(command(run, small_corpus, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                       "trainer.precision=32-true", "trainer.max_steps=6", "trainer.log_every_n_steps=1",
                       "data.loader.num_workers=1", "mixture=adaptive", "mixture.adaptive.every_n_steps=2"),
               tmp_path / "ddp.log")
    adaptive = json.loads((run / "mixture.json").read_text())["adaptive"]
    assert [h["step"] for h in adaptive["history"]] == [2, 4, 6]
    first, second = adaptive["ranks"]   # each rank's weights when training ended: one update rule, the same numbers
    assert first == second and first != pytest.approx(list(adaptive["history"][0]["weights"].values()))
    assert load(run / "checkpoints" / "last.ckpt")["global_step"] == 6
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt"]
    assert logged_train_steps(run) == list(range(6))
    assert (run / "export" / "model.safetensors").exists()
