"""Checkpoint faults: a truncated, empty or half-written checkpoint, all of them broken, a full disk,
a SIGKILL in the middle of a write; and the retention that bounds a run folder.

One 30-step in-process run (saves every 5 steps, one in-loop validation at step 30) is shared;
each fault test breaks its own copy. Runs use the shrunken model of test_train (a checkpoint is
~43 MB), so a run of 30 steps takes a few seconds; the real command line is used where its
one-line output is the point (resume notice, exit 2) and for the SIGKILL.
"""
from __future__ import annotations

import builtins
import errno
import os
import re
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch
from test_train import QUIET, SHRINK, SMALL_BATCHES, TRAINERS, compose_train
from test_train_resume import command, launch, load, logged_train_steps, run_to_end, step_checkpoints

from qwen_audio_mt import checkpoints
from qwen_audio_mt import train as train_mod
from qwen_audio_mt.checkpoints import AtomicCheckpointIO, folder_bytes, resolve_resume
from qwen_audio_mt.errors import DiskFullError, UserError, exit_on_user_error

EVERY_5 = ["callbacks.model_checkpoint.every_n_train_steps=5", "trainer.log_every_n_steps=1"]
VALIDATE_AT_30 = ["trainer.val_check_interval=30", "trainer.limit_val_batches=1",
                  "callbacks.validation_metrics.per_task=1", "callbacks.validation_metrics.max_new_tokens=8"]
PROG = "qwen_audio_mt.train"


def in_process(run: Path, shards: Path, *overrides: str) -> dict:
    cfg = compose_train(run, f"paths.shards={shards}", "evaluate=false", "export=false", *EVERY_5,
                        *SHRINK, *SMALL_BATCHES, *QUIET, *overrides)
    return train_mod.train(cfg)


@pytest.fixture(scope="module")
def run30(tmp_path_factory, small_corpus) -> tuple[Path, dict]:
    run = tmp_path_factory.mktemp("run30") / "run"
    # epochs of 10 batches: saves that fall on an epoch's last batch (10, 20, 30) are kept too
    summary = in_process(run, small_corpus, "trainer.max_steps=30", "data.loader.batches_per_epoch=10", *VALIDATE_AT_30)
    return run, summary


@pytest.fixture
def broken(run30, tmp_path) -> Path:
    """A copy of the 30-step run for one test to break (symlinks stay symlinks)."""
    return Path(shutil.copytree(run30[0], tmp_path / "run", symlinks=True))


def halve(path: Path) -> None:
    """Truncate a file to half its size, as a copy or write cut short leaves it."""
    os.truncate(path, path.stat().st_size // 2)


def one_line(text: str, start: str) -> str:
    (line,) = [x for x in text.splitlines() if x.startswith(start)]
    return line


# ---------------------------------------------------------------------------- retention
def test_retention_keeps_last_the_newest_three_and_best(run30):
    run, summary = run30
    ckpts = run / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == \
        ["best.ckpt", "last.ckpt", "step000020.ckpt", "step000025.ckpt", "step000030.ckpt"]
    assert (ckpts / "last.ckpt").is_symlink() and os.readlink(ckpts / "last.ckpt") == "step000030.ckpt"
    for step in (20, 25, 30):
        full = load(ckpts / f"step{step:06d}.ckpt")
        assert full["global_step"] == step and full["optimizer_states"]
    best = load(ckpts / "best.ckpt")  # weights only: a third of the size, for evaluation and export
    assert best["global_step"] == 30 and "optimizer_states" not in best and best["model_config"]
    sizes = {p.name: p.lstat().st_size for p in ckpts.iterdir() if not p.is_symlink()}
    assert sizes["best.ckpt"] < sizes["step000030.ckpt"] / 2.5
    assert summary["checkpoints_bytes"] == sum(sizes.values()) == folder_bytes(ckpts)
    assert summary["run_folder_bytes"] >= summary["checkpoints_bytes"]


def test_weights_only_periodic_saves_keep_a_full_last(tmp_path, small_corpus):
    run = tmp_path / "run"
    opt = "callbacks.model_checkpoint.save_weights_only=true"
    in_process(run, small_corpus, "trainer.max_steps=12", opt)
    ckpts = run / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["last.ckpt", "step000005.ckpt", "step000010.ckpt",
                                                       "step000012.ckpt"]
    assert not (ckpts / "last.ckpt").is_symlink() and load(ckpts / "last.ckpt")["optimizer_states"]
    assert all("optimizer_states" not in load(p) for p in ckpts.glob("step*.ckpt"))
    assert in_process(run, small_corpus, "trainer.max_steps=15", opt,
                      "ckpt_path=last")["step"] == 15


@pytest.mark.parametrize("name", TRAINERS)
def test_every_trainer_config_writes_checkpoints_atomically(name, tmp_path):
    """build() passes checkpoint_plugins(cfg.trainer) to the Trainer; DeepSpeed saves through its
    engine and gets none. CUDA-only strategies are checked on their strategy object."""
    from hydra.utils import instantiate
    cfg = compose_train(tmp_path, f"trainer={name}")
    kwargs = checkpoints.checkpoint_plugins(cfg.trainer)
    if name == "deepspeed":
        assert kwargs == {}
        return
    (io,) = [p for p in kwargs["plugins"] if isinstance(p, AtomicCheckpointIO)]
    if name == "fsdp":  # needs CUDA to build a Trainer: the Trainer would set the strategy's plugin so
        strategy = instantiate(cfg.trainer.strategy)
        strategy.checkpoint_io = io
        assert strategy.checkpoint_io is io
        return
    trainer = instantiate(cfg.trainer, accelerator="cpu", devices=1, precision="32-true", logger=False, **kwargs)
    assert trainer.strategy.checkpoint_io is io


# ---------------------------------------------------------------------------- broken checkpoints
@pytest.mark.fault(fault="the newest checkpoint truncated (last.ckpt and the step-30 file it links to)",
                   outcome="ckpt_path=last resumes from the previous checkpoint (step 25), one line naming it "
                           "and why the newer ones were skipped",
                   lost="the 5 steps since the previous checkpoint (retrained)")
def test_truncated_newest_checkpoint_resumes_from_the_previous(broken, small_corpus, tmp_path):
    halve(broken / "checkpoints" / "last.ckpt")  # through the link: step000030.ckpt itself
    out = run_to_end(command(broken, small_corpus, *EVERY_5, "data.loader.num_workers=1", "trainer.max_steps=40",
                             "ckpt_path=last"), tmp_path / "resumed.log")
    line = one_line(out, "resuming from")
    assert line.startswith("resuming from checkpoints/step000025.ckpt (step 25); skipped ")
    assert "last.ckpt -> step000030.ckpt (truncated: PytorchStreamReader failed reading zip archive" in line
    assert "Traceback" not in out
    assert load(broken / "checkpoints" / "last.ckpt")["global_step"] == 40
    assert logged_train_steps(broken) == list(range(25, 40))  # steps 25-29 trained again, from step 25
    assert sorted(step_checkpoints(broken)) == [30, 35, 40]  # the truncated file was rewritten, 25 retired


@pytest.mark.fault(fault="a zero-byte last.ckpt (a non-atomic write on a full disk leaves one)",
                   outcome="ckpt_path=last resumes from the newest periodic checkpoint, one line naming it "
                           "and the empty file; last.ckpt is replaced at the next save",
                   lost="nothing (the periodic file holds the same step)")
def test_zero_byte_last_resumes_from_the_newest_periodic(broken, small_corpus, capsys):
    last = broken / "checkpoints" / "last.ckpt"
    last.unlink()
    last.touch()
    summary = in_process(broken, small_corpus, "trainer.max_steps=35", "ckpt_path=last")
    line = one_line(capsys.readouterr().err, "resuming from")
    assert line == "resuming from checkpoints/step000030.ckpt (step 30); skipped last.ckpt (empty (0 bytes))"
    assert summary["step"] == 35 and os.readlink(last) == "step000035.ckpt"
    assert load(last)["global_step"] == 35


@pytest.mark.fault(fault="every checkpoint of the run broken (truncated, zero bytes)",
                   outcome="ckpt_path=last exits 2 with one line listing each file and why it cannot resume; "
                           "no traceback, nothing overwritten",
                   lost="everything trained so far (no checkpoint loads); the files are left as they were")
def test_all_checkpoints_broken_exit_2_in_one_line(broken, small_corpus, tmp_path):
    ckpts = broken / "checkpoints"
    for name in ("step000020.ckpt", "step000025.ckpt", "step000030.ckpt"):
        halve(ckpts / name)
    (ckpts / "best.ckpt").write_bytes(b"")
    before = {p.name: p.lstat().st_size for p in ckpts.iterdir()}
    proc = launch(command(broken, small_corpus, "ckpt_path=last"), tmp_path / "out.log")
    proc.wait(timeout=120)
    out = (tmp_path / "out.log").read_text()
    assert proc.returncode == 2, out[-3000:]
    assert "Traceback" not in out
    (line,) = out.splitlines()  # before the trainer exists: the error is all that is printed
    assert line.startswith(f"{PROG}: error: ckpt_path=last: no checkpoint in {ckpts} can resume training (")
    for name in ("best.ckpt: empty (0 bytes)", "last.ckpt -> step000030.ckpt: truncated",
                 "step000025.ckpt: truncated", "step000020.ckpt: truncated"):
        assert name in line
    assert {p.name: p.lstat().st_size for p in ckpts.iterdir()} == before


def test_explicit_path_and_auto(tmp_path, run30):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match=r"^ckpt_path=.*bad.ckpt cannot resume training: not a checkpoint \(no zip"):
        resolve_resume(tmp_path, str(bad))
    with pytest.raises(UserError, match=r"best.ckpt cannot resume training: weights only \(no optimizer state\)$"):
        resolve_resume(tmp_path, str(run30[0] / "checkpoints" / "best.ckpt"))
    with pytest.raises(UserError, match=r"ckpt_path=last: no checkpoint in .*checkpoints \(start without"):
        resolve_resume(tmp_path / "fresh", "last")
    assert resolve_resume(tmp_path / "fresh", "auto") is None
    assert resolve_resume(run30[0], "auto", announce=False) == str(run30[0] / "checkpoints" / "last.ckpt")


# ---------------------------------------------------------------------------- a kill mid-write
def partial_step_write(folder: Path) -> str | None:
    """The name of a periodic checkpoint being written (its temporary), past step 2."""
    try:
        names = [e.name for e in os.scandir(folder)]
    except FileNotFoundError:
        return None
    found = [n for n in names if (m := re.fullmatch(r"step(\d+)\.ckpt\.tmp-\d+", n)) and int(m.group(1)) > 2]
    return found[0] if found else None


@pytest.mark.fault(fault="SIGKILL while a checkpoint is being written (saves every step)",
                   outcome="the checkpoint being written never replaces the previous one; the next start removes "
                           "the partial temporary and ckpt_path=last resumes from the previous checkpoint",
                   lost="the steps since the previous checkpoint (here 1)")
def test_sigkill_during_a_checkpoint_write(tmp_path, small_corpus):
    run, ckpts, log = tmp_path / "run", tmp_path / "run" / "checkpoints", tmp_path / "killed.log"
    every_step = ["callbacks.model_checkpoint.every_n_train_steps=1", "data.loader.num_workers=1",
                  "trainer.log_every_n_steps=1"]
    proc = launch(command(run, small_corpus, *every_step, "trainer.max_steps=1000"), log)
    try:
        deadline, partial = time.monotonic() + 180, None
        while partial is None and time.monotonic() < deadline and proc.poll() is None:
            partial = partial_step_write(ckpts) or time.sleep(0.002)  # a write takes ~100 ms
        os.killpg(proc.pid, signal.SIGKILL)  # within microseconds of seeing the temporary
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert partial, f"no checkpoint write seen:\n{log.read_text()[-3000:]}"
    left = [p.name for p in ckpts.glob("*.tmp-*")]
    assert left, "the write finished before the kill: nothing was cut short"
    writing = int(re.match(r"step(\d+)", partial).group(1))
    previous = load(ckpts / "last.ckpt")["global_step"]
    assert previous == writing - 1 and max(step_checkpoints(run)) == previous

    out = run_to_end(command(run, small_corpus, *every_step, "ckpt_path=last", f"trainer.max_steps={writing + 2}"),
                     tmp_path / "resumed.log")
    line = one_line(out, "resuming from")
    assert line.startswith(f"resuming from checkpoints/last.ckpt -> step{previous:06d}.ckpt (step {previous})")
    assert f"removed {len(left)} partial write(s) of a killed save ({', '.join(sorted(left))})" in line
    assert not list(ckpts.glob("*.tmp-*"))
    assert load(ckpts / "last.ckpt")["global_step"] == writing + 2
    assert logged_train_steps(run) == list(range(previous, writing + 2))


# ---------------------------------------------------------------------------- a full disk
class FillsUp:
    """A file that takes `room` bytes, then fails as a full disk does (OSError ENOSPC)."""

    def __init__(self, f, room: int):
        self.f, self.room = f, room

    def write(self, data) -> int:
        if len(data) > self.room:
            self.f.write(bytes(data[:self.room]))
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def full_disk_at(monkeypatch, nth: int, room: int = 1 << 20) -> list[Path]:
    """The nth file AtomicCheckpointIO opens fills up after `room` bytes (a partial temporary
    is on disk when the error comes)."""
    opened: list[Path] = []

    def fake_open(path, mode="r", *args, **kwargs):
        f = builtins.open(path, mode, *args, **kwargs)
        opened.append(Path(path))
        return FillsUp(f, room) if len(opened) == nth else f

    monkeypatch.setattr(checkpoints, "open", fake_open, raising=False)
    return opened


def test_atomic_io_on_a_real_full_device(tmp_path, monkeypatch):
    """/dev/full fails every write with ENOSPC: torch.save passes the OSError on, so the kernel's
    own error (not a test double) becomes DiskFullError; a symlink target is never written."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    io, target, link = AtomicCheckpointIO(), tmp_path / "step1.ckpt", tmp_path / "last.ckpt"
    io.save_checkpoint({"x": torch.ones(3)}, target)
    link.symlink_to(target.name)
    io.save_checkpoint({"x": torch.zeros(3)}, link)  # replaces the link, not the file it points to
    assert not link.is_symlink() and torch.equal(io.load_checkpoint(target)["x"], torch.ones(3))
    monkeypatch.setattr(checkpoints, "open", lambda path, mode: builtins.open("/dev/full", mode), raising=False)
    with pytest.raises(DiskFullError, match=rf"no space left writing checkpoint last.ckpt in {tmp_path} \("):
        io.save_checkpoint({"x": torch.zeros(1000)}, link)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", "step1.ckpt"]


@pytest.mark.fault(fault="disk full (ENOSPC) during a periodic checkpoint save",
                   outcome="exit 2 with one line naming the folder and its free space; the partial file is removed, "
                           "the earlier checkpoints stay intact and ckpt_path=last resumes from them",
                   lost="the steps since the previous checkpoint (here 5)")
def test_disk_full_during_a_save(tmp_path, small_corpus, monkeypatch, capsys):
    run, ckpts = tmp_path / "run", tmp_path / "run" / "checkpoints"
    with monkeypatch.context() as m:
        opened = full_disk_at(m, nth=3)  # step 5, step 10, then step 15 fills the disk
        cfg = compose_train(run, f"paths.shards={small_corpus}", "evaluate=false", "export=false", *EVERY_5,
                            "trainer.max_steps=20", *SHRINK, *SMALL_BATCHES, *QUIET)
        with pytest.raises(SystemExit) as stop:
            exit_on_user_error(PROG, train_mod.train, cfg)
    assert stop.value.code == 2 and opened[-1].name.startswith("step000015.ckpt.tmp-")
    line = one_line(capsys.readouterr().err, f"{PROG}: error: ")
    assert re.fullmatch(rf"{PROG}: error: no space left writing checkpoint step000015.ckpt in {re.escape(str(ckpts))} "
                        r"\([\d,.]+ MiB free\); the partial file was removed and the earlier checkpoints there are "
                        r"intact: free some space, then resume with ckpt_path=last", line), line
    assert sorted(p.name for p in ckpts.iterdir()) == ["last.ckpt", "step000005.ckpt", "step000010.ckpt"]
    assert load(ckpts / "last.ckpt")["global_step"] == 10 and load(ckpts / "step000005.ckpt")["optimizer_states"]

    summary = in_process(run, small_corpus, "trainer.max_steps=20", "ckpt_path=last")
    assert one_line(capsys.readouterr().err, "resuming from") == \
        "resuming from checkpoints/last.ckpt -> step000010.ckpt (step 10)"
    assert summary["step"] == 20 and load(ckpts / "last.ckpt")["global_step"] == 20
