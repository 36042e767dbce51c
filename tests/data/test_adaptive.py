"""The adaptive mixture: its update rule, the floor, rank-summed windows, checkpoint state, and
loader workers drawing with the weights the trainer writes."""
import io
from collections import Counter

import numpy as np
import pytest
import torch

from qwen_audio_mt.config import ConfigError, from_dict
from qwen_audio_mt.data.adaptive import AdaptiveConfig, AdaptiveMixture
from qwen_audio_mt.data.collate import BatchLimits
from qwen_audio_mt.data.datamodule import AudioDataModule, DataConfig
from qwen_audio_mt.data.loader import LoaderConfig
from qwen_audio_mt.data.mixture import MixtureConfig, SourceConfig

TASKS = ["asr", "asr", "gender", "music_pitch"]      # components: asr has two sources
PRIOR = np.array([0.3, 0.2, 0.25, 0.25])


def feed(ad: AdaptiveMixture, losses: dict[str, float], n: int = 4) -> None:
    for task, loss in losses.items():
        ad.observe([task] * n, [loss] * n)


def test_starts_at_the_configured_mixture_and_follows_the_excess_loss():
    ad = AdaptiveMixture(AdaptiveConfig(every_n_steps=1, eta=1.0, floor=0.2, ema=0.0), TASKS, PRIOR)
    assert np.allclose(ad.weights.numpy(), PRIOR)
    feed(ad, {"asr": 8.0, "gender": 8.0, "music_pitch": 8.0})   # first window: the references
    w0 = ad.update(1)
    assert w0 == pytest.approx({"asr": 0.5, "gender": 0.25, "music_pitch": 0.25})  # all ratios 1: no excess
    feed(ad, {"asr": 6.0, "gender": 2.0, "music_pitch": 4.0})   # ratios .75, .25, .5
    w1 = ad.update(2)
    # excess against the mixture's average ratio (.5 * .75 + .25 * .25 + .25 * .5 = .5625)
    theta = np.array([0.75, 0.25, 0.5]) - 0.5625
    q = np.array([0.5, 0.25, 0.25]) * np.exp(theta)
    expected = 0.8 * q / q.sum() + 0.2 * np.array([0.5, 0.25, 0.25])
    assert [w1[t] for t in ("asr", "gender", "music_pitch")] == pytest.approx(expected.tolist(), abs=1e-12)
    assert w1["asr"] > w0["asr"] and w1["gender"] < w0["gender"]
    # the components of one task keep their configured ratio, and the tensor is what the loader reads
    assert ad.weights[0] / ad.weights[1] == pytest.approx(1.5)
    assert ad.weights.sum() == pytest.approx(1.0) and [h["step"] for h in ad.history] == [1, 2]


def test_floor_keeps_every_task_sampled():
    ad = AdaptiveMixture(AdaptiveConfig(every_n_steps=1, eta=5.0, floor=0.25, ema=0.0), TASKS, PRIOR)
    feed(ad, {"asr": 5.0, "gender": 5.0, "music_pitch": 5.0})
    ad.update(1)
    for step in range(2, 60):   # gender learnt, asr not: gender's weight falls to its floor, never below
        feed(ad, {"asr": 5.0, "gender": 0.01, "music_pitch": 2.5})
        w = ad.update(step)
    assert w["gender"] == pytest.approx(0.25 * 0.25, rel=1e-3) and w["gender"] >= 0.25 * 0.25
    assert w["asr"] > 0.8


def test_unsampled_task_keeps_its_signal_and_an_unknown_task_is_ignored():
    ad = AdaptiveMixture(AdaptiveConfig(every_n_steps=1, ema=0.5), TASKS, PRIOR)
    feed(ad, {"asr": 4.0, "gender": 4.0, "music_pitch": 4.0, "chat": 9.0})
    ad.update(1)
    feed(ad, {"asr": 2.0})
    ad.update(2)
    assert ad.smooth.tolist() == pytest.approx([0.75, 1.0, 1.0])  # ema .5 of ratios 1 then .5
    feed(ad, {"asr": float("nan")})                               # a non-finite loss adds nothing
    assert ad.window.sum() == 0


def test_rank_windows_summed_give_the_single_process_update():
    cfg = AdaptiveConfig(every_n_steps=1, ema=0.3)
    one, ranks = AdaptiveMixture(cfg, TASKS, PRIOR), [AdaptiveMixture(cfg, TASKS, PRIOR) for _ in range(2)]
    batches = [({"asr": 3.0, "gender": 1.0}, {"music_pitch": 2.0, "asr": 5.0}),
               ({"asr": 2.0, "music_pitch": 1.0}, {"gender": 0.5, "music_pitch": 1.5})]
    for step, (a, b) in enumerate(batches, 1):
        feed(one, a), feed(one, b)
        feed(ranks[0], a), feed(ranks[1], b)
        both = ranks[0].window + ranks[1].window   # what the all-reduce returns on every rank
        expect = one.update(step)
        assert ranks[0].update(step, lambda w: both) == ranks[1].update(step, lambda w: both) == pytest.approx(expect)
    assert torch.equal(ranks[0].weights, ranks[1].weights)


def test_checkpoint_state_round_trips_with_weights_only():
    cfg = AdaptiveConfig(every_n_steps=1)
    ad = AdaptiveMixture(cfg, TASKS, PRIOR)
    for step, losses in enumerate([{"asr": 4.0, "gender": 4.0}, {"asr": 3.0, "gender": 1.0}], 1):
        feed(ad, losses)
        ad.update(step)
    buf = io.BytesIO()
    torch.save(ad.state_dict(), buf)
    buf.seek(0)
    fresh = AdaptiveMixture(cfg, TASKS, PRIOR)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    assert torch.equal(fresh.weights, ad.weights) and fresh.history == ad.history
    feed(ad, {"asr": 2.0}), feed(fresh, {"asr": 2.0})
    assert fresh.update(3) == ad.update(3)
    with pytest.raises(ConfigError, match="resume with the same mixture"):
        AdaptiveMixture(cfg, ["asr", "gender"], [0.5, 0.5]).load_state_dict(ad.state_dict())


@pytest.mark.parametrize("kw, msg", [({"floor": 0}, "floor=0"), ({"every_n_steps": 0}, "every_n_steps=0"),
                                     ({"ema": 1.0}, "ema=1.0"), ({"eta": -1}, "eta=-1")])
def test_bad_settings(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        AdaptiveConfig(**kw)


def test_mixture_config_reads_adaptive_from_a_plain_dict():
    cfg = from_dict(MixtureConfig, {"adaptive": {"every_n_steps": 7}}, "mixture")
    assert cfg.adaptive == AdaptiveConfig(every_n_steps=7)
    assert from_dict(MixtureConfig, {"adaptive": None}).adaptive is None


@pytest.mark.parametrize("workers, pack", [(0, False), (1, False), (1, True)])
def test_loader_draws_with_the_weights_the_trainer_writes(fsdd_shards, workers, pack):
    """A forked worker reads the shared weights: after the trainer moves all weight to one task,
    the batches past the prefetched ones hold only that task. Bucketed, a pool's last partial
    batch (its longest samples) carries into the next pool, so fewer than one batch of samples
    drawn before the change may come later still; packed batches keep arrival order."""
    mixture = MixtureConfig((SourceConfig(str(fsdd_shards)),), adaptive=AdaptiveConfig(floor=1e-9))
    limits = BatchLimits(max_batch_size=8, pool=16, pack=pack)   # bucketed: the pool is drawn anew often
    dm = AudioDataModule(DataConfig(mixture, LoaderConfig(num_workers=workers, batches_per_epoch=40, limits=limits)))
    dm.setup()
    loader = iter(dm.train_dataloader())
    first = [next(loader)["tasks"] for _ in range(3)]
    assert {"digit_recognition", "fsdd_speaker"} <= {t for b in first for t in b}
    speaker = dm.adaptive.names.index("fsdd_speaker")
    dm.adaptive.theta[speaker] = 50.0   # as updates would, in the trainer's process
    dm.adaptive._write()
    batches = [next(loader)["tasks"] for _ in range(16)]
    later = Counter(t for b in batches[8:] for t in b)  # past a worker's prefetch of 4 and a pool
    carried = 0 if pack else limits.max_batch_size - 1
    assert later["fsdd_speaker"] >= 8 and sum(later.values()) - later["fsdd_speaker"] <= carried, later
