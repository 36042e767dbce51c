"""The embedded corpus end to end: every registry task, three splits, through ingest into shards."""
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from qwen_audio_mt.cli import main
from qwen_audio_mt.data.corpus.build import CorpusConfig, available_tasks
from qwen_audio_mt.data.shards import iter_shard
from qwen_audio_mt.render import Renderer
from qwen_audio_mt.tasks import load_tasks

SCALE = "0.05"  # as the small_corpus fixture: 8 train, 1 valid, 2 test items per task


@pytest.fixture(scope="module")
def corpus(small_corpus):
    out = small_corpus / "embedded"
    return out, json.loads((out / "index.json").read_text())


def test_every_available_task_in_every_split(corpus):
    out, index = corpus
    tasks, skipped = available_tasks(CorpusConfig())
    assert set(tasks) | set(skipped) == set(load_tasks().names)
    assert len(tasks) >= 35, skipped
    assert set(index["tasks"]) == set(tasks)
    small = CorpusConfig(scale=float(SCALE))
    for task in tasks:
        assert index["tasks"][task]["splits"] == {s: small.count(s, task) for s in ("train", "valid", "test")}, task
    assert index["tasks"]["asr"]["splits"] == {"train": 8, "valid": 1, "test": 2}   # the default 160/20/40
    assert index["tasks"]["music_pitch"]["splits"] == {"train": 80, "valid": 1, "test": 2}  # counts.yaml: 1600
    assert index["tasks"]["gender"]["splits"]["train"] == 32                               # counts.yaml: 640
    assert index["quarantine"]["total"] == 0, index["quarantine"]
    assert index["source"]["skipped"] == skipped
    per_domain = Counter(load_tasks().get(t).domain for t in tasks)
    assert min(per_domain.values()) >= 8


def test_samples_render_and_labels_are_raw(corpus):
    out, _ = corpus
    renderer = Renderer()
    seen = set()
    for shard in sorted(out.glob("*.tar")):
        for key, flac, meta in iter_shard(shard):
            assert key == meta["key"] and meta["split"] in shard.name
            assert 0.1 <= meta["duration"] <= 30
            ids, mask = renderer.render(meta)
            assert sum(mask) >= 2
            seen.add(meta["task"])
    assert len(seen) >= 35


def test_inspect_json(corpus, capsys):
    out, _ = corpus
    assert main(["shards", "inspect", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert len(info["tasks"]) >= 35
    assert all(t["splits"].get("train") and t["splits"].get("test") for t in info["tasks"].values())
    assert info["quarantine"]["total"] == 0


def test_sigkill_halfway_then_rerun_gives_the_same_index(corpus, tmp_path):
    clean, _ = corpus
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "qwen_audio_mt", "corpus", "build", "--out", str(out), "--scale", SCALE]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "_parts").glob("*.json"))) < 40:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "index.json").exists(), "the build finished before it could be killed"
    subprocess.run(cmd, check=True, capture_output=True)
    assert (out / "index.json").read_text() == (clean / "index.json").read_text()


@pytest.mark.parametrize("default, entry, message", [
    ("{train: 1, valid: 1, test: 1}", "  digit_recogniton: {train: 10}\n", r"unknown task\(s\) \['digit_recogniton'\]"),
    ("{train: 1, valid: 1, test: 1}", "  asr: {training: 10}\n", r"task asr: unknown split\(s\) \['training'\]"),
    ("{train: 1, test: 1}", "", r"default must give exactly the splits"),
])
def test_counts_file_typos_are_refused(tmp_path, monkeypatch, default, entry, message):
    import shutil

    from qwen_audio_mt.paths import TAGS_ENV, tags_dir
    tags = tmp_path / "tags"
    shutil.copytree(tags_dir(), tags)
    (tags / "corpus" / "counts.yaml").write_text(f"default: {default}\ntasks:\n{entry}")
    monkeypatch.setenv(TAGS_ENV, str(tags))
    with pytest.raises(ValueError, match=message):
        CorpusConfig().count("train", "asr")
