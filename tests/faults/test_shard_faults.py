"""Shard builds that are killed or run out of disk: they stop clean and a rerun ends with the
index.json an uninterrupted build writes, byte for byte.

The input is a synthetic manifest (sine clips written here, two of them missing so the quarantine
is not empty): a build of it takes well under a second, so many faults fit in the suite's time.
"""
from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from qwen_audio_mt import cli
from qwen_audio_mt.data import shards

ITEMS = 600
SHARD_SAMPLES = 20
FULL = re.compile(r"^qwen-audio-mt: error: no space left on device writing (?P<folder>\S+) "
                  r"\((?P<free>[\d,.]+) MiB free\); free space and rerun to resume$")


def synthetic_manifest(root: Path, n: int = ITEMS, seed: int = 0) -> Path:
    """n short 16-kHz sine clips as an asr manifest (1 in 6 in the valid split), plus two lines
    whose audio is missing (quarantined as missing_file)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    words = "zero one two three four five six seven eight nine".split()
    lines = []
    for i in range(n):
        t = np.arange(int(16000 * rng.uniform(0.3, 0.8))) / 16000
        sf.write(root / f"c{i:04d}.wav", (0.3 * np.sin(2 * np.pi * rng.uniform(200, 800) * t)).astype("float32"),
                 16000, subtype="PCM_16")
        lines.append({"audio": f"c{i:04d}.wav", "task": "asr", "audio_lang": "en",
                      "split": "valid" if i % 6 == 0 else "train", "text": f"{words[i % 10]} {words[i * 7 % 10]}."})
    lines += [{"audio": f"missing{i}.wav", "task": "asr", "audio_lang": "en", "text": "gone."} for i in range(2)]
    (root / "m.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return root / "m.jsonl"


def build_args(src: Path, out: Path) -> list[str]:
    return ["shards", "build", "--format", "manifest", "--src", str(src), "--out", str(out),
            "--workers", "1", "--shard-samples", str(SHARD_SAMPLES)]


def command(src: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "qwen_audio_mt", *build_args(src, out)]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    return synthetic_manifest(tmp_path_factory.mktemp("clips"))


@pytest.fixture(scope="module")
def reference(manifest, tmp_path_factory) -> tuple[Path, float]:
    """An uninterrupted build through the command line, and how long it took (start to exit)."""
    out = tmp_path_factory.mktemp("reference") / "shards"
    t0 = time.perf_counter()
    subprocess.run(command(manifest, out), check=True, capture_output=True)
    return out, time.perf_counter() - t0


def assert_same_as(reference: Path, out: Path) -> None:
    assert (out / "index.json").read_bytes() == (reference / "index.json").read_bytes()
    assert (out / "quarantine.jsonl").read_bytes() == (reference / "quarantine.jsonl").read_bytes()
    index = json.loads((out / "index.json").read_text())
    assert sorted(p.name for p in out.glob("*.tar")) == sorted(s["name"] for s in index["shards"])  # no strays
    for s in index["shards"]:
        assert (out / s["name"]).read_bytes() == (reference / s["name"]).read_bytes()
    assert not temporaries(out)


def temporaries(out: Path) -> list[str]:
    return sorted(p.name for d in (out, out / "_parts") if d.is_dir() for p in d.iterdir() if p.name.endswith(".tmp"))


# ----------------------------------------------------------------------------------- SIGKILL
@pytest.mark.fault(fault="SIGKILL of a shard build at random moments (5 seeds, two kills each: while writing "
                   "a tar, renaming it, committing its part record or writing the index), then a rerun",
                   outcome="the rerun keeps the committed shards, redoes the rest and ends with the "
                   "identical index.json, quarantine.jsonl and tar bytes; no temporary file is left",
                   lost="nothing")
def test_sigkill_at_random_moments_then_rerun_gives_the_same_index(manifest, reference, tmp_path):
    ref, seconds = reference
    interrupted = 0
    for seed in range(5):
        rng = random.Random(seed)
        out = tmp_path / f"seed{seed}"
        for _ in range(2):
            interrupted += killed_midway(manifest, out, rng.uniform(0.1, 1.0) * seconds)
        done = subprocess.run(command(manifest, out), capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert_same_as(ref, out)
    assert interrupted == 10, f"only {interrupted} of 10 kills landed before the build finished"


def killed_midway(manifest: Path, out: Path, delay: float, tries: int = 6) -> bool:
    """A build on `out` SIGKILLed after `delay` s. The reference's duration is measured beside
    whatever else the machine runs, so a build can finish first: then `out` is put back as it
    was and the kill comes sooner (half the delay), up to `tries` times. True once one lands."""
    before = out.with_name(out.name + ".before")
    shutil.rmtree(before, ignore_errors=True)
    if out.exists():
        shutil.copytree(out, before)
    for _ in range(tries):
        proc = subprocess.Popen(command(manifest, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if proc.returncode == -signal.SIGKILL and not (out / "index.json").exists():
            return True
        shutil.rmtree(out, ignore_errors=True)
        if before.exists():
            shutil.copytree(before, out)
        delay /= 2
    return False


# ------------------------------------------------------------------------------------ ENOSPC
class Disk:
    """A disk of `free` bytes for every file the shard writer opens (shards.open_for_write): a
    write past it writes what fits, then fails with ENOSPC, as a real full disk does."""

    def __init__(self, free: float = float("inf")):
        self.free, self.written = free, 0

    def open(self, path):
        return _Limited(open(path, "wb"), self, path)


class _Limited:
    def __init__(self, f, disk: Disk, path):
        self.f, self.disk, self.path = f, disk, path

    def write(self, data) -> int:
        room = int(min(len(data), max(self.disk.free - self.disk.written, 0)))
        self.f.write(bytes(data[:room]))
        self.disk.written += room
        if room < len(data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
        return len(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def run_cli(args, capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = cli.main(args)
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def written_bytes(manifest, reference, tmp_path_factory) -> tuple[int, int]:
    """(bytes a whole build writes through the writer, bytes of its index.json)."""
    disk, out = Disk(), tmp_path_factory.mktemp("count") / "shards"
    mp = pytest.MonkeyPatch()
    mp.setattr(shards, "open_for_write", disk.open)
    try:
        assert cli.main(build_args(manifest, out)) == 0
    finally:
        mp.undo()
    return disk.written, (out / "index.json").stat().st_size


@pytest.mark.fault(fault="ENOSPC injected into the shard writer (no root needed) at 5%, 50% and 95% of a "
                   "build's bytes and while writing index.json",
                   outcome="exit 2 with one line naming the folder and its free space; the unfinished shard "
                   "and every temporary file removed; a rerun resumes and ends with the identical index.json",
                   lost="nothing")
@pytest.mark.parametrize("where", [0.05, 0.5, 0.95, "index"])
def test_enospc_in_the_writer_stops_clean_and_a_rerun_resumes(where, manifest, reference, written_bytes,
                                                              tmp_path, capsys, monkeypatch):
    total, index_size = written_bytes
    free = total - index_size // 2 if where == "index" else int(total * where)
    out = tmp_path / "shards"
    monkeypatch.setattr(shards, "open_for_write", Disk(free).open)
    code, err = run_cli(build_args(manifest, out), capsys)
    lines = [x for x in err.splitlines() if "error" in x.lower() or "Traceback" in x]
    assert code == 2 and len(lines) == 1 and FULL.match(lines[0]), err
    assert FULL.match(lines[0])["folder"] == str(out)
    assert not temporaries(out) and not (out / "index.json").exists()
    parts = [json.loads(p.read_text()) for p in (out / "_parts").glob("*.json")]
    assert sorted(p.name for p in out.glob("*.tar")) == sorted(p["name"] for p in parts if p["samples"])  # no strays
    monkeypatch.undo()
    code, err = run_cli(build_args(manifest, out), capsys)
    assert code == 0, err
    assert_same_as(reference[0], out)


def _mount_tmpfs(path: Path, size: int) -> str | None:
    """Mount a tmpfs of `size` bytes at `path`; the reason when that is not possible."""
    if os.geteuid() != 0:
        return "not root: a tmpfs cannot be mounted (the injected ENOSPC test covers the writer)"
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    return None if done.returncode == 0 else f"mount -t tmpfs failed: {done.stderr.strip()}"


@pytest.mark.fault(fault="a real full disk: shards built into a tmpfs with 40% of the space the build "
                   "needs (root only), then the tmpfs grown",
                   outcome="exit 2 with one line naming the folder and its free space, no traceback, no "
                   "temporary file; the rerun resumes and ends with the identical index.json",
                   lost="nothing")
def test_build_on_a_full_tmpfs_stops_clean_and_resumes_after_space_is_freed(manifest, reference, tmp_path):
    ref = reference[0]
    need = sum(p.stat().st_size for p in ref.rglob("*") if p.is_file())
    disk = tmp_path / "disk"
    why = _mount_tmpfs(disk, int(need * 0.4))
    if why:
        pytest.skip(why)
    try:
        out = disk / "shards"
        failed = subprocess.run(command(manifest, out), capture_output=True, text=True)
        errors = [x for x in failed.stderr.splitlines() if "error" in x.lower() or "Traceback" in x]
        assert failed.returncode == 2 and len(errors) == 1 and FULL.match(errors[0]), failed.stderr
        assert FULL.match(errors[0])["folder"] == str(out)
        assert not temporaries(out) and not (out / "index.json").exists()
        assert list((out / "_parts").glob("*.json")), "nothing was committed before the disk filled"
        subprocess.run(["mount", "-o", f"remount,size={need * 2}", str(disk)], check=True)
        done = subprocess.run(command(manifest, out), capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert_same_as(ref, out)
    finally:
        subprocess.run(["umount", str(disk)], check=False)
        shutil.rmtree(disk, ignore_errors=True)
