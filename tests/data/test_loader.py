"""The streaming mixture loader: mixture statistics, batches, bucketing, resume, corruption."""
import io
import tarfile

import numpy as np
import pytest
import soundfile as sf
import torch
import whisper

from qwen_audio_mt.data.augment import AugmentConfig
from qwen_audio_mt.data.collate import BatchLimits, frame_efficiency, token_counts
from qwen_audio_mt.render import IGNORE
from qwen_audio_mt.data.datamodule import AudioDataModule, DataConfig, mixture_z_scores
from qwen_audio_mt.data.loader import LoaderConfig, draw
from qwen_audio_mt.data.mixture import MixtureConfig, MixtureError, SourceConfig, components, probabilities
from qwen_audio_mt.data.shards import iter_shard


def module(shards, **loader):
    loader = {"num_workers": 0, "batches_per_epoch": 4, **loader}
    return AudioDataModule(DataConfig(MixtureConfig((SourceConfig(str(shards)),)), LoaderConfig(**loader),
                                      valid_split="test"))


def drain(dm, loader):
    out = []
    for batch in loader:
        dm.observe(batch)
        out.append(batch)
    return out


def test_temperature_probabilities(fsdd_shards):
    comps = components(MixtureConfig((SourceConfig(str(fsdd_shards)),)), "train")
    counts = {c.task: c.samples for c in comps}
    assert counts == {"digit_recognition": 540, "fsdd_speaker": 132}
    for temperature in (1.0, 2.0, 5.0):
        p = probabilities(comps, MixtureConfig(temperature=temperature))
        expected = np.array([540, 132]) ** (1 / temperature)
        assert p == pytest.approx(expected / expected.sum())
    capped = probabilities(comps, MixtureConfig(temperature=1.0, cap=132))
    assert capped == pytest.approx([0.5, 0.5])
    assert probabilities(comps, MixtureConfig(task_weights={"fsdd_speaker": 0}))[1] == 0


def test_mixed_weights_are_rejected(fsdd_shards):
    cfg = MixtureConfig((SourceConfig(str(fsdd_shards), weight=1.0), SourceConfig(str(fsdd_shards), name="b")))
    with pytest.raises(MixtureError, match="either every source has a weight or none"):
        probabilities(components(cfg, "train"), cfg)
    with pytest.raises(MixtureError, match="cannot read .*index.json"):
        components(MixtureConfig((SourceConfig("/nonexistent/shards"),)), "train")


def test_realised_mixture_within_3_sigma_over_10000_samples(fsdd_shards):
    dm = module(fsdd_shards, batches_per_epoch=10_000, limits=BatchLimits(max_batch_size=100, pool=400),
                shuffle_buffer=16)
    n = 0
    for batch in dm.train_dataloader():
        dm.observe(batch)
        n += len(batch["tasks"])
        if n >= 10_000:
            break
    target = dm.target_mixture()
    assert target["digit_recognition"] == pytest.approx(np.sqrt(540) / (np.sqrt(540) + np.sqrt(132)))
    z = mixture_z_scores(dm.state.seen, target)
    assert all(abs(v) <= 3 for v in z.values()), (dm.state.seen, target, z)


def test_batch_contents(fsdd_shards):
    dm = module(fsdd_shards, limits=BatchLimits(max_audio_seconds=20, max_tokens=2000, pool=128))
    batches = drain(dm, dm.train_dataloader())
    assert len(batches) == 4
    for b in batches:
        B, L = b["input_ids"].shape
        assert b["mel"].shape[:2] == (B, 80) and b["mel"].shape[2] == int(b["mel_lengths"].max())
        assert B * L <= 2000
        assert B * (b["mel_lengths"].max().item() * 160 / 16000) <= 20 + 0.02
        for i in range(B):
            start, n = b["audio_spans"][i].tolist()
            ids = b["input_ids"][i]
            assert ids[start - 1] != ids[start] and (ids[start:start + n] == ids[start]).all()
            assert (b["labels"][i][: start + n + 1] == IGNORE).all()  # no loss on audio or prompt
            target = b["labels"][i][b["labels"][i] != IGNORE]
            assert len(target) >= 2  # the label and the end token
        assert set(b["tasks"]) <= {"digit_recognition", "fsdd_speaker"}
    assert sum(dm.state.seen.values()) == sum(len(b["tasks"]) for b in batches)


def test_bucketing_beats_30s_padding(fsdd_shards):
    dyn = drain(*(lambda d: (d, d.train_dataloader()))(module(fsdd_shards, limits=BatchLimits(pool=512))))
    pad = drain(*(lambda d: (d, d.train_dataloader()))(module(fsdd_shards, pad_to_30s=True)))
    assert frame_efficiency(dyn) >= 0.85
    assert all(b["mel"].shape[2] == 3000 for b in pad)
    assert all((b["audio_spans"][:, 1] == 750).all() for b in pad)
    assert frame_efficiency(pad) < 0.05  # sub-second digits in 30-s windows


def test_packed_batches_mix_tasks_and_waste_almost_nothing(fsdd_shards):
    """Packed, batches come in arrival order (no length sort) within the summed limits, and
    nearly every computed mel frame and LLM place is real (padded: 0.85 at best above). Each
    clip costs up to PACK_GAP + PACK_ALIGN - 1 frames more (~2.5 on average), which on FSDD's
    ~0.4-s digits is ~6 % (the embedded mixture's clips are ~2.3 s long: ~1 %)."""
    lim = BatchLimits(max_audio_seconds=60, max_tokens=4000, max_batch_size=64, pack=True, row_tokens=512)
    dm = module(fsdd_shards, batches_per_epoch=8, limits=lim)
    out = drain(dm, dm.train_dataloader())
    real, computed = map(sum, zip(*(token_counts(b) for b in out)))
    assert frame_efficiency(out) >= 0.92 and real / computed >= 0.95, (frame_efficiency(out), real / computed)
    for b in out:
        assert b["attention_mask"] is None and b["input_ids"].shape[1] <= 512
        assert int(b["sample_lengths"].sum()) <= 4000 and float(b["audio_frames"].sum()) / 100 <= 60 + 0.01
    assert sum(len(set(b["tasks"])) > 1 for b in out) >= len(out) // 2
    with pytest.raises(Exception, match="limits.pack=true with data.loader.pad_to_30s=true"):
        LoaderConfig(pad_to_30s=True, limits=lim)


def test_eval_reads_every_sample_once_unaugmented(fsdd_shards):
    dm = module(fsdd_shards, augment=AugmentConfig(spec_augment=True, noise=True, noise_prob=1.0))
    batches = list(dm.val_dataloader())
    keys = [k for b in batches for k in b["keys"]]
    assert len(keys) == len(set(keys)) == 60 + 24
    raw = {key: meta for shard in sorted(fsdd_shards.glob("test-*.tar")) for key, flac, meta in iter_shard(shard)
           for meta in [dict(meta, audio=sf.read(io.BytesIO(flac), dtype="float32")[0])]}
    b = batches[0]
    for i, key in enumerate(b["keys"][:5]):
        ref = whisper.log_mel_spectrogram(torch.from_numpy(raw[key]["audio"]))
        assert torch.allclose(b["mel"][i, :, : ref.shape[1]], ref, atol=1e-5)   # data/features.py: float32 rounding


def test_train_augmentation_changes_the_features(fsdd_shards):
    plain = module(fsdd_shards, batches_per_epoch=1)
    aug = module(fsdd_shards, batches_per_epoch=1, augment=AugmentConfig(spec_augment=True))
    a, b = next(iter(plain.train_dataloader())), next(iter(aug.train_dataloader()))
    assert a["keys"] == b["keys"]  # same seeds, same samples
    assert not torch.equal(a["mel"], b["mel"])


def test_resume_continues_with_fresh_samples(fsdd_shards):
    dm = module(fsdd_shards, batches_per_epoch=2)
    first = [k for b in drain(dm, dm.train_dataloader()) for k in b["keys"]]
    state = dm.state_dict()
    same = module(fsdd_shards, batches_per_epoch=2)
    assert [k for b in drain(same, same.train_dataloader()) for k in b["keys"]] == first  # deterministic
    resumed = module(fsdd_shards, batches_per_epoch=2)
    resumed.load_state_dict(state)
    assert resumed.state.seen == dm.state.seen and resumed.state.resumes == 1
    after = [k for b in drain(resumed, resumed.train_dataloader()) for k in b["keys"]]
    assert after[:20] != first[:20]
    assert sum(resumed.state.seen.values()) == 2 * sum(dm.state.seen.values())


def test_corrupt_members_are_skipped_and_counted(fsdd_shards, tmp_path):
    import shutil
    bad = tmp_path / "bad"
    shutil.copytree(fsdd_shards, bad)
    shard = sorted(bad.glob("train-fsdd_speaker-*.tar"))[0]
    members = [(m, tarfile.open(shard).extractfile(m).read()) for m in tarfile.open(shard) if m.isfile()]
    with tarfile.open(shard, "w") as tar:
        for i, (m, data) in enumerate(members):
            if i in (0, 5):           # two samples' audio replaced by garbage bytes
                data = b"not a flac file at all"
                m.size = len(data)
            tar.addfile(m, io.BytesIO(data))
    (bad / "train-digit_recognition-00000.tar").write_bytes(b"\x00garbage, not a tar" * 100)
    dm = module(bad, batches_per_epoch=30, limits=BatchLimits(max_batch_size=32, pool=64))
    batches = drain(dm, dm.train_dataloader())
    assert len(batches) == 30
    assert dm.state.skipped.get("undecodable_sample", 0) >= 1
    assert dm.state.skipped.get("corrupt_tar", 0) >= 1


# A worker's resource-sharer thread serving a consumer that dies mid-hand-over: the consumer's
# socket is reset (SO_LINGER 0) during the authentication challenge, as a SIGKILL leaves it.
LOST_CONSUMER = """
import os, socket, struct, sys, time
from multiprocessing import resource_sharer
from qwen_audio_mt.data import loader
if sys.argv[1] == "hooked":
    sys.excepthook = loader._quiet_lost_consumer
resource_sharer.DupFd(os.dup(0))  # starts the server thread, as a worker's first batch does
s = socket.socket(socket.AF_UNIX)
s.connect(resource_sharer._resource_sharer._address)
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
time.sleep(0.2)
s.close()
time.sleep(1)  # the thread reports the error, then serves on
print("worker still up")
"""


@pytest.mark.parametrize("mode", ["hooked", "plain"])
def test_worker_quiet_when_its_consumer_dies(mode):
    """An orphaned worker adds no traceback to the line its run's survivor prints (DDP faults)."""
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", LOST_CONSUMER, mode], capture_output=True, text=True, timeout=60)
    assert "worker still up" in out.stdout, out.stderr
    if mode == "hooked":
        assert out.stderr == ""
    else:  # what the hook removes: Python's own report of the thread's death
        assert "ConnectionResetError" in out.stderr and "resource_sharer.py" in out.stderr


class _Silent(torch.utils.data.IterableDataset):
    """A worker that is alive and never yields (as a worker stuck after its fork)."""

    def __iter__(self):
        import time
        time.sleep(8)  # beyond the 2-s timeout; short, so the worker's shutdown does not wait long
        yield {}


def test_a_silent_worker_stops_the_run_with_one_line_after_the_timeout():
    import time

    from qwen_audio_mt.data.loader import make_loader
    from qwen_audio_mt.errors import DataError
    loader = make_loader(_Silent(), LoaderConfig(num_workers=1, worker_timeout_s=2))
    t0 = time.monotonic()
    with pytest.raises(DataError) as e:
        next(iter(loader))
    assert 2 <= time.monotonic() - t0 < 30
    assert str(e.value) == ("no batch from a loader worker within 2 s (data.loader.worker_timeout_s): the worker "
                            "is stuck; resume with ckpt_path=last")


@pytest.mark.parametrize("field, value, error", [
    ("worker_timeout_s", -1.0, "data.loader.worker_timeout_s=-1: must be >= 0 (0: wait forever)"),
    ("max_skip_fraction", 1.5, "data.loader.max_skip_fraction=1.5: must be between 0 and 1 (null: no limit)"),
    ("skip_limit_min_samples", 0, "data.loader.skip_limit_min_samples=0: must be >= 1"),
])
def test_bad_loader_settings_name_the_key_and_the_rule(field, value, error):
    from qwen_audio_mt.errors import ConfigError
    with pytest.raises(ConfigError) as e:
        LoaderConfig(**{field: value})
    assert str(e.value) == error


def test_mixture_draws_are_numpys_choice():
    """The per-sample task draw takes numpy's choice path by hand: the same tasks from the same
    seeds as numpy's choice would draw, one uniform each."""
    for seed in range(5):
        p = np.random.default_rng(seed).random(42) ** 4   # uneven, as mixture weights are
        p /= p.sum()
        a, b = np.random.default_rng(seed), np.random.default_rng(seed)
        assert [draw(a, p) for _ in range(5000)] == [int(b.choice(42, p=p)) for _ in range(5000)]
        assert a.random() == b.random()   # one uniform consumed per draw, as choice does


@pytest.mark.parametrize("ahead", [1, 5])
def test_decoding_ahead_changes_no_sample_and_no_feature(fsdd_shards, monkeypatch, ahead):
    """Samples are decoded DECODE_AHEAD at a time for speed; the batches are the ones decoding
    one at a time gives, augmented alike (the draws, augmentation and buckets each have their
    own random stream)."""
    import qwen_audio_mt.data.loader as loader
    aug = AugmentConfig(spec_augment=True, speed=True)

    def batches():
        dm = module(fsdd_shards, batches_per_epoch=3, augment=aug)
        return list(dm.train_dataloader())

    ref = batches()
    monkeypatch.setattr(loader, "DECODE_AHEAD", ahead)
    out = batches()
    assert [b["keys"] for b in out] == [b["keys"] for b in ref] and len(ref[0]["keys"]) > 5
    assert all(torch.equal(a["mel"], b["mel"]) for a, b in zip(out, ref))
