"""Training augmentation: speed perturbation with label rescaling, gain, noise at an exact SNR, SpecAugment."""
import copy
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import need_data
from qwen_audio_mt.data.augment import AugmentConfig, Augmenter, coloured_noise, noise_bank
from qwen_audio_mt.data.ingest import check_labels
from qwen_audio_mt.tasks import load_tasks

SR = 16000


def tone(seconds, hz=1000.0, amp=0.3):
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def sample(task="word_timestamps", seconds=1.0, **labels):
    return {"task": task, "duration": seconds, "audio_lang": "en", "audio": tone(seconds), **labels}


def peak_hz(x):
    n = 1 << 18  # zero-padded: ~0.06 Hz bins
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)), n))
    return np.argmax(spec) * SR / n


def snr_of(mixed, clean):
    clean = clean.astype(np.float64)
    noise = mixed.astype(np.float64) - clean
    return 10 * math.log10(np.mean(clean ** 2) / np.mean(noise ** 2))


def grid_floor(seconds):
    return math.floor(seconds * 100 + 1e-6) / 100


@pytest.fixture(scope="module")
def registry():
    return load_tasks()


# ---------------------------------------------------------------------- speed
def test_speed_shortens_clip_and_raises_pitch(registry):
    aug = Augmenter(AugmentConfig(speed=True, speed_factors=(1.1,)), registry)
    src = sample(seconds=1.0)
    out = aug.wave(src, np.random.default_rng(0))
    assert out["speed"] == 1.1
    assert abs(len(out["audio"]) - len(src["audio"]) / 1.1) <= 1
    assert out["audio"].dtype == np.float32
    assert out["duration"] == pytest.approx(len(out["audio"]) / SR, abs=1e-4)
    assert peak_hz(out["audio"]) / peak_hz(src["audio"]) == pytest.approx(1.1, rel=2e-3)


def test_slow_down_lengthens_and_lowers_pitch(registry):
    aug = Augmenter(AugmentConfig(speed=True, speed_factors=(0.9,)), registry)
    src = sample(seconds=0.5)
    out = aug.wave(src, np.random.default_rng(0))
    assert abs(len(out["audio"]) - len(src["audio"]) / 0.9) <= 1
    assert peak_hz(out["audio"]) / peak_hz(src["audio"]) == pytest.approx(0.9, rel=2e-3)


@pytest.mark.parametrize("f", [0.9, 1.1])
def test_speed_scales_every_time_label(registry, renderer, f):
    labels = {
        "words": [["hello", 0.1, 0.42], ["world", 0.5, 1.0]],
        "spans": [[0.05, 0.3], ["dog_bark", 0.35, 0.99]],
        "turns": [["m1", 0.0, 0.47], ["f2", 0.52, 1.0]],
        "events": [["siren", 0.2, 0.8], {"label": "dog_bark", "start": 0.61, "end": 0.97}],
    }
    src = sample(seconds=1.0, **copy.deepcopy(labels))
    out = Augmenter(AugmentConfig(speed=True, speed_factors=(f,)), registry).wave(
        src, np.random.default_rng(0))
    dur = out["duration"]
    assert dur == pytest.approx(1.0 / f, abs=1e-4)
    limit = grid_floor(dur)
    for name, items in labels.items():
        assert len(out[name]) == len(items)
        for old, new in zip(items, out[name]):
            if isinstance(old, dict):
                assert {k: v for k, v in new.items() if k not in ("start", "end")} == {"label": old["label"]}
                old, new = [old["start"], old["end"]], [new["start"], new["end"]]
            assert new[:-2] == old[:-2]  # labels untouched, same structure
            want = [min(round(t / f, 2), limit) for t in old[-2:]]
            assert new[-2:] == pytest.approx(want, abs=1e-9)
            assert 0 <= new[-2] <= new[-1] <= dur
    if f > 1:  # 1.0 s / 1.1 = 0.909 s: the label at 1.0 s is clipped to the grid inside the clip
        assert out["words"][-1][-1] == 0.90
    # The perturbed sample still passes ingest's label checks and renders.
    words_only = {k: v for k, v in out.items() if k not in ("spans", "turns", "events", "audio")}
    check_labels(words_only, renderer)


def test_task_without_speed_perturbation_is_never_sped_up(registry):
    assert registry.get("music_pitch").speed_perturbation is False
    aug = Augmenter(AugmentConfig(speed=True, speed_factors=(1.1,)), registry)
    src = sample(task="music_pitch", seconds=0.5, pitch="69")
    for seed in range(5):
        out = aug.wave(src, np.random.default_rng(seed))
        assert "speed" not in out and out["duration"] == 0.5
        np.testing.assert_array_equal(out["audio"], src["audio"])


def test_gain_scales_the_level_by_the_drawn_decibels(registry):
    aug = Augmenter(AugmentConfig(gain_db=(-15.0, 5.0)), registry)
    src = sample(task="digit_recognition", seconds=0.5, text="7")  # a 0.3 tone: +5 dB does not clip
    drawn = []
    for seed in range(20):
        out = aug.wave(src, np.random.default_rng(seed))
        db = out["gain_db"]
        assert -15.0 <= db <= 5.0
        np.testing.assert_allclose(out["audio"], src["audio"] * 10 ** (db / 20), rtol=1e-6, atol=1e-7)
        assert out["audio"].dtype == np.float32 and out["duration"] == src["duration"]
        drawn.append(db)
    assert np.ptp(drawn) > 10  # the levels vary


def test_gain_that_would_clip_is_rescaled_and_level_tasks_keep_their_level(registry):
    loud = {**sample(task="digit_recognition", seconds=0.5, text="7"), "audio": tone(0.5, amp=0.9)}
    out = Augmenter(AugmentConfig(gain_db=(6.0, 6.0)), registry).wave(loud, np.random.default_rng(0))
    assert np.max(np.abs(out["audio"])) == pytest.approx(1.0)  # 0.9 x 2 -> rescaled to full scale
    assert registry.get("music_velocity").gain_perturbation is False
    assert registry.get("note_analysis").gain_perturbation is False
    note = sample(task="music_velocity", seconds=0.5, velocity="100")
    out = Augmenter(AugmentConfig(gain_db=(-15.0, 5.0)), registry).wave(note, np.random.default_rng(0))
    assert "gain_db" not in out
    np.testing.assert_array_equal(out["audio"], note["audio"])


def test_factor_one_and_too_long_slow_down_leave_the_clip(registry):
    src = sample(seconds=0.5, words=[["hi", 0.1, 0.3]])
    out = Augmenter(AugmentConfig(speed=True, speed_factors=(1.0,)), registry).wave(
        src, np.random.default_rng(0))
    assert out == {**src, "audio": out["audio"]} and "speed" not in out
    np.testing.assert_array_equal(out["audio"], src["audio"])
    long = sample(task="asr", seconds=29.5, text="x")  # 29.5 s / 0.9 would pass Whisper's 30 s
    out = Augmenter(AugmentConfig(speed=True, speed_factors=(0.9,)), registry).wave(
        long, np.random.default_rng(0))
    assert "speed" not in out and len(out["audio"]) == len(long["audio"])


def test_input_sample_is_not_mutated(registry):
    src = sample(seconds=0.5, words=[["hi", 0.1, 0.3]], turns=[["m1", 0.0, 0.4]])
    before = copy.deepcopy(src)
    cfg = AugmentConfig(speed=True, speed_factors=(1.1,), noise=True, noise_prob=1.0)
    out = Augmenter(cfg, registry).wave(src, np.random.default_rng(1))
    assert out is not src and "speed" in out and "snr_db" in out
    assert src.keys() == before.keys()
    for k in before:
        if k == "audio":
            np.testing.assert_array_equal(src[k], before[k])
        else:
            assert src[k] == before[k]


# ---------------------------------------------------------------------- noise
def test_generated_noise_hits_the_drawn_snr(registry):
    cfg = AugmentConfig(noise=True, noise_prob=1.0, snr_db=(5.0, 30.0))
    aug = Augmenter(cfg, registry)
    src = sample(task="sound_event", seconds=0.5, label="dog_bark")
    snrs = []
    for seed in range(12):
        out = aug.wave(src, np.random.default_rng(seed))
        assert 5.0 <= out["snr_db"] <= 30.0
        assert snr_of(out["audio"], src["audio"]) == pytest.approx(out["snr_db"], abs=0.1)
        assert np.max(np.abs(out["audio"])) <= 1.0
        snrs.append(out["snr_db"])
    assert len(set(snrs)) == len(snrs)  # drawn per sample


def test_noise_probability(registry):
    aug = Augmenter(AugmentConfig(noise=True, noise_prob=0.3), registry)
    src = sample(task="sound_event", seconds=0.05, label="dog_bark")
    rng = np.random.default_rng(0)
    hits = sum("snr_db" in aug.wave(src, rng) for _ in range(400))
    assert 0.3 * 400 - 40 < hits < 0.3 * 400 + 40  # ~4.3 sigma


def test_loud_mix_is_scaled_not_clipped(registry):
    aug = Augmenter(AugmentConfig(noise=True, noise_prob=1.0, snr_db=(0.0, 0.0)), registry)
    src = sample(task="sound_event", seconds=0.5, label="dog_bark")
    src["audio"] = np.sign(tone(0.5)).astype(np.float32) * 0.99  # a square wave at -0.1 dBFS
    out = aug.wave(src, np.random.default_rng(0))
    assert np.max(np.abs(out["audio"])) <= 1.0
    assert set(out) - set(src) == {"snr_db"}


@pytest.mark.parametrize("alpha, octave_ratio", [(0.0, 2.0), (1.0, 1.0), (2.0, 0.5)])
def test_generated_noise_colours(alpha, octave_ratio):
    """White noise doubles its power per octave, pink keeps it, brown halves it."""
    x = coloured_noise(1 << 16, alpha, np.random.default_rng(0)).astype(np.float64)
    assert np.mean(x ** 2) == pytest.approx(1.0, rel=1e-4)
    power, freqs = np.abs(np.fft.rfft(x)) ** 2, np.fft.rfftfreq(len(x))
    low = power[(freqs >= 0.05) & (freqs < 0.1)].sum()
    high = power[(freqs >= 0.1) & (freqs < 0.2)].sum()
    assert high / low == pytest.approx(octave_ratio, rel=0.1)


def _best_match(residual, rec):
    """Highest normalised circular correlation of `residual` against any segment of `rec`."""
    n, L = len(residual), len(rec)
    corr = np.fft.irfft(np.conj(np.fft.rfft(residual, L)) * np.fft.rfft(rec), L)
    energy = np.cumsum(np.concatenate([[0.0], np.concatenate([rec, rec[:n]]) ** 2]))
    seg = np.sqrt(energy[n:n + L] - energy[:L])
    return float(np.max(corr / (np.linalg.norm(residual) * np.maximum(seg, 1e-12))))


def test_noise_from_a_folder_of_real_recordings(tmp_path, registry):
    files = ("456440__inspectorj__bird-whistling-robin-single-13.ogg", "sorohanro_-_solo-trumpet-06.ogg")
    for name, fmt in zip(files, ("wav", "flac")):
        audio, sr = sf.read(need_data("real_clips", name), dtype="float32")
        sf.write(tmp_path / f"{name[:12]}.{fmt}", audio, sr)  # native 22.05 kHz: resampled on load
    (tmp_path / "README.txt").write_text("not audio")
    bank = noise_bank(str(tmp_path.resolve()))
    assert len(bank) == 2 and all(b.dtype == np.float32 for b in bank)
    assert sorted(len(b) / SR for b in bank) == pytest.approx([2.7, 5.33], abs=0.01)

    aug = Augmenter(AugmentConfig(noise=True, noise_prob=1.0, noise_dir=str(tmp_path)), registry)
    src = sample(task="sound_event", seconds=1.0, label="dog_bark")
    used = set()
    for seed in range(6):
        out = aug.wave(src, np.random.default_rng(seed))
        assert snr_of(out["audio"], src["audio"]) == pytest.approx(out["snr_db"], abs=0.1)
        residual = out["audio"].astype(np.float64) - src["audio"]
        match = [_best_match(residual, b.astype(np.float64)) for b in bank]
        assert max(match) > 0.999  # the added noise is a segment of one recording
        used.add(int(np.argmax(match)))
    assert used == {0, 1}
    hits = noise_bank.cache_info().hits
    aug.wave(src, np.random.default_rng(0))
    assert noise_bank.cache_info().hits == hits + 1  # decoded once, then served from memory


def test_empty_noise_dir_fails_loudly(tmp_path, registry):
    (tmp_path / "notes.txt").write_text("no audio here")
    aug = Augmenter(AugmentConfig(noise=True, noise_prob=1.0, noise_dir=str(tmp_path)), registry)
    with pytest.raises(ValueError, match="no usable audio"):
        aug.wave(sample(task="sound_event", label="dog_bark"), np.random.default_rng(0))


# ---------------------------------------------------------------------- SpecAugment
def test_spec_augment_masks_the_configured_bands():
    cfg = AugmentConfig(spec_augment=True)
    aug = Augmenter(cfg)
    mel = torch.randn(80, 600, generator=torch.Generator().manual_seed(0))
    original = mel.clone()
    t_cap = min(cfg.time_width, int(cfg.time_width_ratio * 600))  # 30 frames
    widths = []
    for seed in range(8):
        freq, time = aug.masks((80, 600), np.random.default_rng(seed))
        out = aug.spec(mel, np.random.default_rng(seed))
        assert out.shape == mel.shape and torch.equal(mel, original)
        assert len(freq) == cfg.freq_masks and len(time) == cfg.time_masks
        assert all(0 <= w <= cfg.freq_width and f0 + w <= 80 for f0, w in freq)
        assert all(0 <= w <= t_cap and t0 + w <= 600 for t0, w in time)
        rows = sorted({r for f0, w in freq for r in range(f0, f0 + w)})
        cols = sorted({c for t0, w in time for c in range(t0, t0 + w)})
        fill = mel.mean()
        assert torch.all(out[rows] == fill) and torch.all(out[:, cols] == fill)
        keep_r = [r for r in range(80) if r not in set(rows)]
        keep_c = [c for c in range(600) if c not in set(cols)]
        assert torch.equal(out[keep_r][:, keep_c], mel[keep_r][:, keep_c])
        # From the output alone: exactly the masked rows/columns hold the fill everywhere.
        assert (out == fill).all(dim=1).nonzero().flatten().tolist() == rows
        assert (out == fill).all(dim=0).nonzero().flatten().tolist() == cols
        widths += [w for _, w in freq + time]
    assert max(widths) > 0


def test_spec_augment_off_is_a_copy():
    mel = torch.randn(80, 100)
    out = Augmenter(AugmentConfig()).spec(mel, np.random.default_rng(0))
    assert out is not mel and torch.equal(out, mel)


# ---------------------------------------------------------------------- determinism / off
def test_same_seed_same_output(registry):
    cfg = AugmentConfig(spec_augment=True, speed=True, noise=True, noise_prob=1.0)
    aug = Augmenter(cfg, registry)
    src = sample(seconds=0.5, words=[["hi", 0.1, 0.3]])
    mel = torch.randn(80, 50)
    a, b = (aug.wave(src, np.random.default_rng(7)) for _ in range(2))
    assert a.keys() == b.keys() and a["snr_db"] == b["snr_db"] and a.get("speed") == b.get("speed")
    np.testing.assert_array_equal(a["audio"], b["audio"])
    assert torch.equal(aug.spec(mel, np.random.default_rng(7)), aug.spec(mel, np.random.default_rng(7)))
    c = aug.wave(src, np.random.default_rng(8))
    assert c["snr_db"] != a["snr_db"]


def test_everything_off_is_identity(registry):
    aug = Augmenter(AugmentConfig(), registry)
    src = sample(seconds=0.5, words=[["hi", 0.1, 0.3]])
    rng = np.random.default_rng(0)
    out = aug.wave(src, rng)
    assert out is not src and out.keys() == src.keys()
    assert all(out[k] == src[k] for k in src if k != "audio")
    np.testing.assert_array_equal(out["audio"], src["audio"])
    mel = torch.randn(80, 40)
    assert torch.equal(aug.spec(mel, rng), mel)
