"""Training-time augmentation: speed perturbation, gain, additive noise, SpecAugment.

Valid and test samples are never augmented: the loader calls `Augmenter` on the train split only.
Every part is off by default and switched on in `AugmentConfig`.

Choices:
- Speed = Kaldi/sox "speed" (tempo and pitch change together): resample as if the clip were
  recorded at 16 kHz * f, so a factor f plays f times faster (len / f samples). Every time label
  (TIME_FIELDS of ingest: words/spans/turns/events, list or mapping items) is scaled by 1/f,
  rounded to the 0.01-s time-token grid and clipped to the new duration floored to that grid.
  Tasks whose registry entry says `speed_perturbation: false` (pitch/tempo labels) are never
  perturbed. A slow-down that would push a clip past Whisper's 30 s is skipped (f -> 1.0).
- Gain: the clip scaled by a level drawn uniformly in dB from `gain_db`, after the speed change
  and before the noise (the SNR is relative to the scaled clip), except for tasks whose registry
  entry says `gain_perturbation: false` (labels that are a level, e.g. MIDI velocity). A
  recording's level is a trait of its speaker and microphone (FSDD's five speakers sit at -21 to
  -38 dB RMS, each within +-2.5 dB), so a level can stand in for a voice; yet on digits from a
  speaker held out of training, [-15, 5] dB gave 38 % against 52 % without (400 steps, one run
  each), so the default leaves it off. A gain that would clip is undone by the anti-clipping
  rescale, so loud clips only get quieter.
- Noise is mixed after the speed change (a noise recording is not itself sped up). SNR is the mean
  power of the clean clip over that of the noise segment actually used, so it is exact before the
  anti-clipping rescale (which scales clean and noise alike). Silent clips get no noise (SNR is
  undefined). Without `noise_dir`, white/pink/brown noise is generated per use from the rng
  (fresh noise each time, deterministic); a `noise_dir` bank is decoded once per process.
- SpecAugment (LD policy) masks with the mel's mean: after Whisper's log-mel normalisation zero
  is not "silence", the mean is a neutral value. Call it on the real-length mel, before padding.
- The returned sample is a shallow copy: changed fields are new objects, the rest are shared,
  and nothing is modified in place.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

from ..audio import N_SAMPLES, SAMPLE_RATE
from .ingest import TIME_FIELDS

TIME_STEP = 0.01                  # the time tokens' grid (<|0.00|> ... <|30.00|>)
NOISE_COLOURS = (0.0, 1.0, 2.0)   # power spectrum ~ 1/f^alpha: white, pink, brown
# Decodable suffixes: libsndfile's format names plus common aliases.
AUDIO_SUFFIXES = frozenset({f".{x.lower()}" for x in sf.available_formats()}
                           | {".oga", ".opus", ".aif", ".wave"})


@dataclass(frozen=True)
class AugmentConfig:
    spec_augment: bool = False    # time and frequency masks on the log-mel, as Qwen-Audio trains with
    freq_masks: int = 2           # SpecAugment LD policy (Park et al. 2019): 2 masks of <= 27 bins
    freq_width: int = 27
    time_masks: int = 2           # 2 masks of <= min(100 frames, 5% of the clip)
    time_width: int = 100
    time_width_ratio: float = 0.05
    speed: bool = False           # Kaldi-style speed perturbation (pitch shifts too)
    speed_factors: tuple[float, ...] = (0.9, 1.0, 1.1)
    gain_db: tuple[float, float] | None = None   # random level change, uniform in dB; None: off
    noise: bool = False           # additive noise at a random SNR
    snr_db: tuple[float, float] = (10.0, 30.0)
    noise_prob: float = 0.5       # chance a sample gets noise at all
    noise_dir: str | None = None  # folder of noise recordings; None -> generated coloured noise


class Augmenter:
    def __init__(self, cfg: AugmentConfig, registry=None):
        self.cfg = cfg
        self._registry = registry

    @property
    def registry(self):
        if self._registry is None:  # loaded only when a speed decision needs it
            from ..tasks import load_tasks
            self._registry = load_tasks()
        return self._registry

    # ------------------------------------------------------------------ waveform
    def wave(self, sample: Mapping, rng: np.random.Generator) -> dict:
        """A new sample, speed-perturbed, gained and/or noised as configured; the input is untouched."""
        out = dict(sample)
        changed = False
        if self.cfg.speed and self.registry.get(sample["task"]).speed_perturbation:
            f = float(self.cfg.speed_factors[rng.integers(len(self.cfg.speed_factors))])
            if f != 1.0 and round(len(sample["audio"]) / f) <= N_SAMPLES:
                out.update(speed_perturb(sample, f))
                changed = True
        if self.cfg.gain_db is not None and self.registry.get(sample["task"]).gain_perturbation:
            db = float(rng.uniform(*self.cfg.gain_db))
            out["audio"], out["gain_db"] = (out["audio"] * np.float32(10 ** (db / 20))).astype(np.float32), db
            changed = True
        if self.cfg.noise and rng.random() < self.cfg.noise_prob:
            snr = float(rng.uniform(*self.cfg.snr_db))
            noise = self._noise(len(out["audio"]), rng)
            mixed = mix_at_snr(out["audio"], noise, snr)
            if mixed is not None:
                out["audio"], out["snr_db"] = mixed, snr
                changed = True
        if changed:
            out["audio"] = _no_clip(out["audio"])
        return out

    def _noise(self, n: int, rng: np.random.Generator) -> np.ndarray:
        if self.cfg.noise_dir is None:
            return coloured_noise(n, float(rng.choice(NOISE_COLOURS)), rng)
        bank = noise_bank(str(Path(self.cfg.noise_dir).resolve()))
        rec = bank[rng.integers(len(bank))]
        start = int(rng.integers(len(rec)))
        return rec[(start + np.arange(n)) % len(rec)]  # a random segment, tiled if too short

    # ------------------------------------------------------------------ log-mel
    def masks(self, shape: tuple[int, int], rng: np.random.Generator):
        """SpecAugment bands for a [n_mels, T] mel: ([(f0, width)...], [(t0, width)...])."""
        n_mels, n_frames = shape
        t_cap = min(self.cfg.time_width, int(self.cfg.time_width_ratio * n_frames))
        freq = _bands(self.cfg.freq_masks, min(self.cfg.freq_width, n_mels), n_mels, rng)
        time = _bands(self.cfg.time_masks, t_cap, n_frames, rng)
        return freq, time

    def spec(self, mel: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """A masked copy of a [n_mels, T] log-mel (an unchanged copy when SpecAugment is off)."""
        out = mel.clone()
        if not self.cfg.spec_augment:
            return out
        fill = mel.mean()
        freq, time = self.masks(tuple(mel.shape[-2:]), rng)
        for f0, w in freq:
            out[..., f0:f0 + w, :] = fill
        for t0, w in time:
            out[..., t0:t0 + w] = fill
        return out


def _bands(count: int, max_width: int, size: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    out = []
    for _ in range(count):
        w = int(rng.integers(0, max(max_width, 0) + 1))  # width ~ U{0..W}, as in Park et al.
        out.append((int(rng.integers(0, size - w + 1)), w))
    return out


# ---------------------------------------------------------------------- speed
def speed_perturb(sample: Mapping, f: float) -> dict:
    """The changed fields (audio, duration, time labels, speed) of `sample` played f times faster."""
    audio = np.asarray(sample["audio"], dtype=np.float32)
    # Read the clip as if sampled at 16 kHz * f, write it at 16 kHz: len / f samples, pitch x f.
    fast = soxr.resample(audio, SAMPLE_RATE * f, SAMPLE_RATE).astype(np.float32)
    duration = round(len(fast) / SAMPLE_RATE, 4)
    limit = math.floor(duration / TIME_STEP + 1e-6) * TIME_STEP  # last grid time inside the clip
    out = {"audio": fast, "duration": duration, "speed": f}
    for name in TIME_FIELDS & set(sample):
        if sample[name] is not None:
            out[name] = [_scale_item(item, f, limit) for item in sample[name]]
    return out


def _scale_item(item, f: float, limit: float):
    def t(x):
        return round(min(max(round(float(x) / f, 2), 0.0), limit), 2)

    if isinstance(item, Mapping):
        start = t(item["start"])
        return {**item, "start": start, "end": max(t(item["end"]), start)}
    *head, start, end = item
    start = t(start)
    return [*head, start, max(t(end), start)]


# ---------------------------------------------------------------------- noise
def mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray | None:
    """clean + g * noise with mean-power SNR snr_db; None when either signal is silent."""
    c = np.asarray(clean, dtype=np.float64)
    n = np.asarray(noise, dtype=np.float64)
    p_clean, p_noise = float(np.mean(c ** 2)), float(np.mean(n ** 2))
    if p_clean == 0.0 or p_noise == 0.0:
        return None
    gain = math.sqrt(p_clean / (p_noise * 10 ** (snr_db / 10)))
    return (c + gain * n).astype(np.float32)


def _no_clip(audio: np.ndarray) -> np.ndarray:
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    return (audio / np.float32(peak)).astype(np.float32) if peak > 1.0 else audio


def coloured_noise(n: int, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with power spectrum ~ 1/f^alpha (0 white, 1 pink, 2 brown), unit power."""
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n)
    freqs[0] = freqs[1] if n > 1 else 1.0  # no infinite DC gain
    x = np.fft.irfft(spec / freqs ** (alpha / 2), n)
    x -= x.mean()
    rms = math.sqrt(float(np.mean(x ** 2)))
    return (x / rms if rms > 0 else x).astype(np.float32)


@lru_cache(maxsize=4)
def noise_bank(folder: str) -> tuple[np.ndarray, ...]:
    """Every non-silent recording under `folder`, mono 16 kHz float32; decoded once per process."""
    from .ingest import to_mono_16k

    paths = sorted(p for p in Path(folder).rglob("*")
                   if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    bank = []
    for p in paths:
        try:
            audio, sr = sf.read(str(p), dtype="float32", always_2d=False)
        except Exception as e:  # a broken noise file is a configuration error: say which
            raise ValueError(f"noise_dir: cannot decode {p}: {e}") from None
        audio = to_mono_16k(audio, sr)
        if audio.size and np.any(audio != 0):
            bank.append(audio)
    if not bank:
        raise ValueError(f"noise_dir {folder!r} holds no usable audio "
                         f"(looked for {', '.join(sorted(AUDIO_SUFFIXES)[:6])}, ...)")
    return tuple(bank)
