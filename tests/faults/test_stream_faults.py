"""Bad shards while training: every skipped sample is counted by reason and shard, shown, and
summed up; nothing bad reaches the model; too many skips stop the run with one line.

Shards are built from synthetic clips (test_shard_faults.synthetic_manifest: asr, 2 train shards
of 60 and 50 samples, a valid shard) and then damaged by hand, bypassing ingest.
"""
from __future__ import annotations

import io
import json
import multiprocessing as mp
import os
import pickle
import pickletools
import re
import shutil
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from qwen_audio_mt.data.build import build
from qwen_audio_mt.data.collate import BatchLimits
from qwen_audio_mt.data.convert import manifest
from qwen_audio_mt.data.datamodule import AudioDataModule, DataConfig
from qwen_audio_mt.data.loader import LoaderConfig
from qwen_audio_mt.data.mixture import MixtureConfig, SourceConfig
from qwen_audio_mt.data.reader import read_split
from qwen_audio_mt.data.shards import ShardConfig, iter_shard
from qwen_audio_mt.errors import DataError
from test_shard_faults import synthetic_manifest

BAD = "train-asr-00000.tar"     # the shard every test damages (60 samples); train-asr-00001.tar stays good
GOOD = "train-asr-00001.tar"


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stream")
    plan = manifest.plan(synthetic_manifest(root / "clips", 132))
    build(plan.streams, root / "shards", ShardConfig(workers=1, max_samples=60), plan.source, progress=False)
    return root / "shards"


def damaged(base: Path, to: Path) -> Path:
    """A copy of the shard folder at to/embedded (where `paths.shards=to` points training)."""
    shutil.copytree(base, to / "embedded")
    return to / "embedded"


def members(path: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]


def write_tar(path: Path, items: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in items:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))


def loader_module(folder: Path, batches: int = 12, workers: int = 0) -> AudioDataModule:
    return AudioDataModule(DataConfig(MixtureConfig((SourceConfig(str(folder)),)), LoaderConfig(
        num_workers=workers, batches_per_epoch=batches, limits=BatchLimits(max_batch_size=8, pool=32))))


def drain(dm: AudioDataModule) -> list[dict]:
    out = []
    for batch in dm.train_dataloader():
        dm.observe(batch)
        out.append(batch)
    return out


def keys(batches) -> set[str]:
    return {k for b in batches for k in b["keys"]}


def wav_bytes(audio: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio.astype("float32"), 16000, format="WAV", subtype="FLOAT")
    return buf.getvalue()


# --------------------------------------------------------------------------- tar-level damage
def _random_4k_in_a_member(data: bytearray) -> bytearray:
    mid = len(data) // 2
    data[mid:mid + 4096] = np.random.default_rng(0).bytes(4096)
    return data


def _random_4k_over_a_header(data: bytearray) -> bytearray:
    with tarfile.open(fileobj=io.BytesIO(bytes(data))) as tar:
        infos = list(tar)
    at = infos[len(infos) // 2].offset  # tarfile ends the archive here without an error
    data[at:at + 4096] = np.random.default_rng(1).bytes(4096)
    return data


DAMAGE = {
    "4k_random_bytes_in_a_member": (_random_4k_in_a_member, "undecodable_sample"),
    "4k_random_bytes_over_a_header": (_random_4k_over_a_header, "corrupt_tar"),
    "truncated_to_half": (lambda d: d[: len(d) // 2], "corrupt_tar"),
    "not_a_tar": (lambda d: bytearray(b"\x00garbage, not a tar" * 200), "corrupt_tar"),
}


@pytest.mark.fault(fault="a train shard with 4 KB of random bytes inside a member or over a member header, "
                   "truncated to half, or not a tar at all (read by a loader worker process)",
                   outcome="training goes on from the readable samples; every skip is counted by reason and "
                   "shard in the main process (a quietly shortened tar counts its missing samples)",
                   lost="the unreadable samples of that shard, counted and named")
@pytest.mark.parametrize("kind", list(DAMAGE))
def test_damaged_tar_is_skipped_counted_and_named(kind, base, tmp_path):
    folder = damaged(base, tmp_path)
    damage, reason = DAMAGE[kind]
    (folder / BAD).write_bytes(bytes(damage(bytearray((folder / BAD).read_bytes()))))
    dm = loader_module(folder, batches=30, workers=1)
    batches = drain(dm)
    assert len(batches) == 30
    shards = dm.state.skipped_shards
    assert reason in shards, shards
    assert {s for per in shards.values() for s in per} == {str(folder / BAD)}  # only the damaged one named
    assert sum(dm.state.skipped.values()) == sum(n for per in shards.values() for n in per.values()) > 0
    assert {k for k, *_ in iter_shard(folder / GOOD)} & keys(batches)  # the good shard still feeds training
    if reason == "corrupt_tar" and kind != "not_a_tar":  # read up to the damage, then the rest counted
        assert {k for k, *_ in iter_shard(base / BAD)} & keys(batches)


@pytest.mark.fault(fault="every shard of a train stream unreadable (the stream resamples forever)",
                   outcome="the reader stops after 1,000 skips in a row with a DataError: one line naming "
                   "the shards, not a hang and not the worker's traceback",
                   lost="nothing (no training step runs on nothing)")
def test_stream_that_can_only_skip_stops_with_one_line(base, tmp_path):
    folder = damaged(base, tmp_path)
    for name in (BAD, GOOD):
        (folder / name).write_bytes(b"\x00garbage" * 300)
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_drain_to, args=(folder, queue))  # a hang fails the test instead of the suite
    child.start()
    child.join(120)
    if child.is_alive():
        os.killpg(child.pid, signal.SIGKILL)  # the child and its loader worker
        child.join()
        pytest.fail("the loader was still spinning over unreadable shards after 120 s")
    kind, message = queue.get(timeout=5)
    assert kind == "DataError" and "\n" not in message, message
    assert message.startswith("no usable sample after 1000 skips in a row (corrupt_tar ")
    assert str(folder / BAD) in message and str(folder / GOOD) in message


def _drain_to(folder: Path, queue) -> None:
    os.setsid()  # a process group the test can kill whole
    try:
        drain(loader_module(folder, batches=2, workers=1))
        queue.put(("no error", ""))
    except Exception as e:  # noqa: BLE001 - reported to the test
        queue.put((type(e).__name__, str(e)))


# ------------------------------------------------------------------------ member-level damage
class Malicious:
    """Unpickling this creates `marker`: proof that a shard's pickle ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.fault(fault="shard members that are pickles (x.pyd, x.pickle, x.pth) whose unpickling would "
                   "create a file, beside or instead of a sample's audio",
                   outcome="never unpickled (the file is not created) by the train stream, the evaluation "
                   "reader or iter_shard; their samples are skipped as unexpected_member and counted",
                   lost="the 3 samples that carried a pickle, counted and named")
def test_pickle_members_are_never_unpickled(base, tmp_path):
    folder = damaged(base, tmp_path / "data")
    marker = tmp_path / "pwned"
    payload = pickle.dumps(Malicious(marker))
    # the payload is live (read its opcodes, never run them): it calls io.open on the marker
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(payload)]
    assert ("STACK_GLOBAL", None) in ops and ("REDUCE", None) in ops
    assert {arg for _, arg in ops} >= {"io", "open", str(marker)}
    tensor_file = io.BytesIO()
    torch.save({"x": Malicious(marker)}, tensor_file)
    items = members(folder / BAD)
    evil_keys = [items[0][0].split(".")[0], items[2][0].split(".")[0], items[4][0].split(".")[0]]
    extra = {evil_keys[0]: [("pyd", payload)], evil_keys[1]: [("pickle", payload)],
             evil_keys[2]: [("pth", tensor_file.getvalue())]}
    out = []
    for name, data in items:
        key, ext = name.split(".", 1)
        if key == evil_keys[1] and ext == "flac":
            continue  # this sample's audio is the pickle
        out.append((name, data))
        if ext == "json":
            out += [(f"{key}.{e}", d) for e, d in extra.get(key, [])]
    write_tar(folder / BAD, out)

    dm = loader_module(folder, batches=20)
    batches = drain(dm)
    evaluated = list(read_split([folder], "train"))
    listed = list(iter_shard(folder / BAD))
    assert not marker.exists(), "a pickle from a shard was unpickled"
    assert not set(evil_keys) & keys(batches) and not set(evil_keys) & {s["key"] for s in evaluated}
    assert dm.state.skipped_shards["unexpected_member"] == {str(folder / BAD): dm.state.skipped["unexpected_member"]}
    assert dm.state.skipped["unexpected_member"] >= 3  # each of the 3 at least once (resampled)
    assert len(evaluated) == 110 - 3 and len(listed) == 60 - 1  # iter_shard ignores foreign members


@pytest.mark.fault(fault="NaN and Inf audio inside a shard (float WAV bytes as the .flac member, bypassing ingest)",
                   outcome="each such sample is skipped as non_finite_audio and counted with its shard; every "
                   "batch's mel is finite; nothing is replaced by zeros",
                   lost="the 4 non-finite samples, counted and named")
def test_nan_and_inf_audio_is_skipped_never_zeroed(base, tmp_path):
    folder = damaged(base, tmp_path)
    tone = np.sin(np.arange(8000) / 10).astype("float32") * 0.3
    bad = {}
    for i, (value, where) in enumerate([(np.nan, 100), (np.inf, 4000), (-np.inf, 0), (np.nan, slice(None))]):
        audio = tone.copy()
        audio[where] = value
        bad[i * 7] = wav_bytes(audio)
    items = members(folder / BAD)
    flacs = [n for n, _ in items if n.endswith(".flac")]
    swap = {flacs[i]: data for i, data in bad.items()}
    write_tar(folder / BAD, [(n, swap.get(n, d)) for n, d in items])
    assert np.isnan(sf.read(io.BytesIO(swap[flacs[0]]))[0]).any()  # the member really holds NaN

    dm = loader_module(folder, batches=20)
    batches = drain(dm)
    bad_keys = {n.split(".")[0] for n in swap}
    assert not bad_keys & keys(batches)
    assert all(torch.isfinite(b["mel"]).all() for b in batches)
    assert set(dm.state.skipped_shards) == {"non_finite_audio"}
    assert dm.state.skipped_shards["non_finite_audio"] == {str(folder / BAD): dm.state.skipped["non_finite_audio"]}
    assert not bad_keys & {s["key"] for s in read_split([folder], "train")}


@pytest.mark.fault(fault="a label JSON of 10 MB and a label that is not UTF-8 (Latin-1 bytes) in a shard",
                   outcome="skipped before parsing as label_too_large (limit 1 MiB) and as label_not_utf8, "
                   "counted with their shard; training goes on",
                   lost="the 2 samples, counted and named")
def test_huge_and_non_utf8_labels_are_skipped(base, tmp_path):
    folder = damaged(base, tmp_path)
    items = members(folder / BAD)
    labels = [n for n, _ in items if n.endswith(".json")]
    meta = json.loads(dict(items)[labels[3]])
    huge = json.dumps({**meta, "text": "word " * 2_000_000}).encode()
    latin = json.dumps({**meta, "text": "café crème"}, ensure_ascii=False).encode("latin-1")
    assert len(huge) > 10_000_000
    swap = {labels[3]: huge, labels[8]: latin}
    write_tar(folder / BAD, [(n, swap.get(n, d)) for n, d in items])

    dm = loader_module(folder, batches=20)
    batches = drain(dm)
    bad_keys = {n.split(".")[0] for n in swap}
    assert not bad_keys & keys(batches) and len(batches) == 20
    assert set(dm.state.skipped_shards) == {"label_too_large", "label_not_utf8"}
    assert {s for per in dm.state.skipped_shards.values() for s in per} == {str(folder / BAD)}
    assert not bad_keys & {s["key"] for s in read_split([folder], "train")}


# ------------------------------------------------------------------------------ training runs
def _train(root: Path, run: Path, *overrides: str):
    from test_train import QUIET, SHRINK, SMALL_BATCHES, compose_train
    from qwen_audio_mt import train as train_mod
    built = {}
    real = train_mod.build

    def spy(cfg):
        built["module"], built["dm"], built["trainer"] = real(cfg)
        return built["module"], built["dm"], built["trainer"]

    cfg = compose_train(run, f"paths.shards={root}", "evaluate=false", "export=false", *SHRINK,
                        *SMALL_BATCHES, *QUIET, *overrides)
    train_mod.build = spy
    try:
        return train_mod.train(cfg), built
    finally:
        train_mod.build = real


@pytest.mark.fault(fault="a 20-step training run over a shard with 4 KB of random bytes in its middle",
                   outcome="a warning names reason and shard at the first skip, skipped/REASON is in the "
                   "progress bar and the logs from that step on, and the run ends with a summary line of "
                   "skips by reason and shard (also in train()'s summary)",
                   lost="the unreadable samples of that shard, counted and named")
def test_20_step_run_reports_what_it_skipped(base, tmp_path, capsys, caplog):
    folder = damaged(base, tmp_path / "data")
    (folder / BAD).write_bytes(bytes(_random_4k_over_a_header(bytearray((folder / BAD).read_bytes()))))
    summary, built = _train(tmp_path / "data", tmp_path / "run", "trainer.max_steps=20",
                            "trainer.log_every_n_steps=5", "data.loader.max_skip_fraction=null")
    assert summary["step"] == 20
    skipped = summary["skipped"]
    assert skipped["by_shard"] == {"corrupt_tar": {str(folder / BAD): skipped["skipped"]}} and skipped["skipped"] > 0
    assert skipped["samples"] == skipped["skipped"] + sum(built["dm"].state.seen.values())
    line = [x for x in capsys.readouterr().err.splitlines() if x.startswith("data: skipped")]
    assert line == [f"data: skipped {skipped['skipped']:,} of {skipped['samples']:,} samples "
                    f"({skipped['fraction']:.1%}): corrupt_tar {skipped['skipped']:,} in {folder / BAD}"]
    warned = [r.getMessage() for r in caplog.records
              if r.levelname == "WARNING" and "skipped corrupt_tar" in r.getMessage()]
    assert len(warned) == 1 and str(folder / BAD) in warned[0] and "read " in warned[0]
    assert built["trainer"].progress_bar_metrics["skipped/corrupt_tar"] == skipped["skipped"]
    csv = (tmp_path / "run" / "logs" / "metrics.csv").read_text().splitlines()
    assert "skipped/corrupt_tar" in csv[0].split(",")


@pytest.mark.fault(fault="a training run whose skipped share passes data.loader.max_skip_fraction (default 5%; "
                   "here half of the train samples have undecodable audio)",
                   outcome="qwen_audio_mt.train stops once skip_limit_min_samples were read: exit 2, one line "
                   "with the share, the limit and the shards by reason; no traceback",
                   lost="nothing (the run stops; its last checkpoint is kept)")
def test_skip_rate_past_the_limit_stops_the_run_with_one_line(base, tmp_path):
    folder = damaged(base, tmp_path / "data")
    items = members(folder / BAD)
    write_tar(folder / BAD, [(n, b"not audio" if n.endswith(".flac") else d) for n, d in items])
    from test_train import QUIET, SHRINK, SMALL_BATCHES
    done = subprocess.run([sys.executable, "-m", "qwen_audio_mt.train", f"paths.shards={tmp_path / 'data'}",
                           f"hydra.run.dir={tmp_path / 'run'}", "trainer.max_steps=200", "evaluate=false",
                           "export=false", "data.loader.skip_limit_min_samples=64", *SHRINK, *SMALL_BATCHES, *QUIET],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    found = re.fullmatch(r"qwen_audio_mt\.train: error: (\d+) of (\d+) samples skipped \(([\d.]+)%\), above "
                         r"data\.loader\.max_skip_fraction=0\.05: undecodable_sample (\d+) in (\S+); fix or remove "
                         r"these shards \(or raise data\.loader\.max_skip_fraction\)", last)
    assert found, last
    skipped, total = int(found[1]), int(found[2])
    assert total >= 64 and skipped / total > 0.05 and found[5] == str(folder / BAD) and int(found[4]) == skipped
