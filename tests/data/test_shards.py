"""Shard writer: atomic commits, SIGKILL + resume gives the same index, safe reading."""
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time

import pytest

from conftest import need_data
from qwen_audio_mt.data.build import build
from qwen_audio_mt.data.convert import manifest
from qwen_audio_mt.data.shards import ShardConfig, iter_shard


@pytest.fixture(scope="module")
def fsdd_manifest(tmp_path_factory):
    fsdd = need_data("fsdd")
    root = tmp_path_factory.mktemp("fsdd")
    lines = []
    for path in sorted(fsdd.glob("*.wav"))[:1200]:
        digit, speaker, idx = path.stem.split("_")
        split = "test" if int(idx) < 5 else "train"
        lines.append(json.dumps({"audio": str(path), "task": "digit_recognition", "audio_lang": "en",
                                 "text_itn": digit, "split": split}))
    (root / "fsdd.jsonl").write_text("\n".join(lines) + "\n")
    return root / "fsdd.jsonl"


def cli_build(src, out, *extra):
    return [sys.executable, "-m", "qwen_audio_mt", "shards", "build", "--format", "manifest",
            "--src", str(src), "--out", str(out), "--workers", "1", "--shard-samples", "40", *extra]


def test_sigkill_then_resume_gives_the_same_index(fsdd_manifest, tmp_path):
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    subprocess.run(cli_build(fsdd_manifest, clean), check=True, capture_output=True)
    proc = subprocess.Popen(cli_build(fsdd_manifest, killed), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline and len(list((killed / "_parts").glob("*.json"))) < 6:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "index.json").exists(), "the build finished before it could be killed"
    committed = len(list((killed / "_parts").glob("*.json")))
    assert 6 <= committed < 30
    done = subprocess.run(cli_build(fsdd_manifest, killed), check=True, capture_output=True, text=True)
    assert "built" in done.stdout
    assert (killed / "index.json").read_text() == (clean / "index.json").read_text()
    assert (killed / "quarantine.jsonl").read_text() == (clean / "quarantine.jsonl").read_text()
    assert not list(killed.glob("*.tmp"))
    index = json.loads((killed / "index.json").read_text())
    assert index["tasks"]["digit_recognition"]["splits"] == {"test": 120, "train": 1080}
    assert sum(s["samples"] for s in index["shards"]) == 1200


def test_rerun_of_a_finished_build_is_a_no_op(fsdd_manifest, tmp_path):
    out = tmp_path / "out"
    first = build(manifest.plan(fsdd_manifest).streams[:1], out, ShardConfig(workers=1, max_samples=500),
                  progress=False)
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    again = build(manifest.plan(fsdd_manifest).streams[:1], out, ShardConfig(workers=1, max_samples=500),
                  progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")} == stamps
    first.pop("_elapsed_s"), again.pop("_elapsed_s")
    assert first == again


def test_parallel_build_equals_serial(fsdd_manifest, tmp_path):
    streams = manifest.plan(fsdd_manifest).streams
    a = build(streams, tmp_path / "a", ShardConfig(workers=1, max_samples=100), progress=False)
    build(streams, tmp_path / "b", ShardConfig(workers=2, max_samples=100), progress=False)
    assert (tmp_path / "a" / "index.json").read_text() == (tmp_path / "b" / "index.json").read_text()
    assert len(a["shards"]) == 2 + 11  # 120 test + 1080 train samples
    assert all(s["samples"] <= 100 for s in a["shards"])


def test_byte_limit_splits_shards(fsdd_manifest, tmp_path):
    streams = manifest.plan(fsdd_manifest).streams
    index = build(streams, tmp_path, ShardConfig(workers=1, max_bytes=200_000), progress=False)
    assert len(index["shards"]) > 5
    assert all(s["bytes"] < 200_000 + 60_000 for s in index["shards"])  # closes at the first sample past it
    members = [m.name for m in tarfile.open(tmp_path / index["shards"][0]["name"])]
    assert all(m.endswith((".flac", ".json")) and "/" not in m for m in members)


def test_reader_skips_unsafe_members_and_never_unpickles(tmp_path):
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as tar:
        for name, data in (("../escape.json", b"{}"), ("/abs.json", b"{}"), ("x.pyd", b"\x80\x04K."),
                           ("ok.flac", b"fLaC"), ("ok.json", b'{"task": "asr"}')):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert list(iter_shard(path)) == [("ok", b"fLaC", {"task": "asr"})]
