"""Procedural recipes of the sound corpus: 12 event classes and the scene background textures.

Choices:
- Each class owns a frequency region and a time pattern, so a mean log-spectrum separates them:
  engine hum (harmonics of 35-70 Hz below 1 kHz), knock (wooden 120-220 Hz resonance), footsteps
  (low thumps + 2-6 kHz scuffs), buzzer (square wave 120-260 Hz, bright odd harmonics), wind
  (gusting 250-1500 Hz noise with a howl), siren (600-1500 Hz sweep with harmonics), bell
  (inharmonic decaying partials), clap (0.6-3 kHz noise bursts), drip (rising 0.7-1.5 kHz sine
  chirps), whistle (1.9-2.4 kHz vibrato tone + breath), rain (crackling 1.5-8 kHz hiss), alarm
  beep (pulsed 3-4 kHz sine).
- One event is one occurrence in its natural unit (a bell strike, a knock sequence, a round of
  claps, a few steps); silences inside one event are at most MAX_INNER_GAP_S.
- `finish` trims every event to the 10-ms frames within TRIM_DB of its loudest frame and scales
  that frame to RMS 1: the event's label times are then exactly where its energy is, on the
  0.01-s grid of the time tokens.
- numpy only (scipy is not a dependency): noise is shaped in the frequency domain with one irfft,
  harmonic tones are read from a one-cycle wavetable; everything float32.
"""
from __future__ import annotations

import functools

import numpy as np

from ...audio import HOP_LENGTH, SAMPLE_RATE

SR = SAMPLE_RATE
FRAME = HOP_LENGTH                    # 160 samples = 10 ms = one time-token step (0.01 s)
FRAMES_PER_S = SR // FRAME            # 100
TRIM_DB = -15.0                       # an event spans the frames within 15 dB of its loudest frame
TRIM_RATIO = 10 ** (TRIM_DB / 20)
MAX_INNER_GAP_S = 0.25                # longest sub-threshold stretch inside one event (claps, steps)
FADE_IN = int(0.002 * SR)             # 2 ms: no click at a cut onset, onset frame stays loud
FADE_OUT = int(0.005 * SR)            # 5 ms: same at the offset
TABLE_LEN = 4096                      # wavetable cycle (a power of 2: index by bit mask)
FFT_BLOCK = 4000                      # 2^5 * 5^3: noise lengths padded to it keep the FFT fast
NYQUIST_MARGIN_HZ = 7500.0            # highest harmonic a wavetable may hold (alias-free)
CHIRP_GAIN = 3.0                      # bird chirps (sine peak 3, RMS ~2.1) stand ~6 dB over the rustle


# ---------------------------------------------------------------- building blocks
def _n(seconds: float) -> int:
    return int(round(seconds * SR))


def _t(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float32) / SR


@functools.lru_cache(maxsize=256)
def _band_gain(m: int, lo: float, hi: float, tilt_db: float) -> np.ndarray:
    """|H(f)| on the rfft bins of an m-sample block (cached: scenes reuse a few shapes)."""
    f = np.fft.rfftfreq(m, 1 / SR)
    # tilt: 6.02 dB per octave is amplitude x2 per frequency doubling
    gain = np.where((f >= lo) & (f <= hi), (np.maximum(f, 1.0) / lo) ** (tilt_db / 6.0206), 0)
    return gain.astype(np.float32)


def band_noise(n: int, rng: np.random.Generator, lo: float, hi: float, tilt_db: float = 0.0) -> np.ndarray:
    """Noise limited to lo..hi Hz with a spectral tilt (dB per octave), unit RMS.

    Random-phase synthesis: the shaped magnitude with uniform random phases, one irfft; each
    sample sums thousands of bins, so it is Gaussian (CLT), at 1/3 the cost of complex normals."""
    m = -(-max(n, 1) // FFT_BLOCK) * FFT_BLOCK
    gain = _band_gain(m, round(float(lo), 1), round(float(hi), 1), float(tilt_db))
    phase = rng.random(len(gain), np.float32) * np.float32(2 * np.pi)
    x = np.fft.irfft(gain * (np.cos(phase) + 1j * np.sin(phase)), m)[:n].astype(np.float32)
    return x / (np.sqrt(np.mean(x * x)) + 1e-12)


def wavetable(amps: dict[int, float], rng: np.random.Generator) -> np.ndarray:
    """One cycle of sum_k amps[k] sin(2 pi k x + random phase), built with one irfft."""
    spec = np.zeros(TABLE_LEN // 2 + 1, np.complex64)
    for k, a in amps.items():
        spec[k] = a * TABLE_LEN / 2 * np.exp(1j * (rng.uniform(0, 2 * np.pi) - np.pi / 2))
    return np.fft.irfft(spec, TABLE_LEN).astype(np.float32)


def oscillate(freq, n: int, table: np.ndarray | None = None, phase0: float = 0.0) -> np.ndarray:
    """A tone following `freq` (Hz, scalar or per sample): sine, or a wavetable read by phase."""
    if np.ndim(freq) == 0:
        phase = phase0 + np.arange(n, dtype=np.float64) * (float(freq) / SR)
    else:  # phase is the running sum of frequency; float64 so long clips keep their pitch
        phase = phase0 + np.cumsum(freq, dtype=np.float64) / SR
    phase -= np.floor(phase)  # cycles in [0, 1): float32 is then exact enough, and its sin ~7x faster
    if table is None:
        return np.sin(np.float32(2 * np.pi) * phase.astype(np.float32))
    return table[(phase * TABLE_LEN).astype(np.int64) & (TABLE_LEN - 1)]


def decay_train(n: int, period: float, tau: float, active: float, attack: float = 0.001) -> np.ndarray:
    """Repeating decaying pulses: exp(-t/tau) for `active` s every `period` s, attack ramp."""
    ph = _t(n) % np.float32(period)
    env = np.exp(-ph / np.float32(tau)) * np.minimum(ph / np.float32(attack), 1)
    return np.where(ph < active, env, 0).astype(np.float32)


def pulse_index(n: int, period: float) -> np.ndarray:
    """Which pulse of a train each sample belongs to (for per-pulse random parameters)."""
    return (_t(n) // np.float32(period)).astype(np.int64)


def frame_rms(x: np.ndarray) -> np.ndarray:
    n = len(x) // FRAME * FRAME
    return np.sqrt(np.mean(x[:n].reshape(-1, FRAME).astype(np.float32) ** 2, axis=1))


def finish(x: np.ndarray) -> np.ndarray:
    """Trim to the frames within TRIM_DB of the loudest, unit loudest-frame RMS, short fades."""
    rms = frame_rms(x)
    loud = np.flatnonzero(rms >= rms.max() * TRIM_RATIO)
    y = x[loud[0] * FRAME:(loud[-1] + 1) * FRAME] / rms.max()
    y[:FADE_IN] *= np.linspace(0, 1, FADE_IN, dtype=np.float32)
    y[-FADE_OUT:] *= np.linspace(1, 0, FADE_OUT, dtype=np.float32)
    return y.astype(np.float32)


# ---------------------------------------------------------------- the 12 classes
def alarm_beep(rng):
    beeps, on, off = rng.integers(3, 7), rng.uniform(0.08, 0.14), rng.uniform(0.06, 0.12)
    n = _n(beeps * on + (beeps - 1) * off)
    ph = _t(n) % np.float32(on + off)
    gate = np.clip(np.minimum(ph, on - ph) / 0.003, 0, 1)  # 3-ms ramps: beeps, not clicks
    return oscillate(rng.uniform(3000, 4000), n) * gate


def siren(rng):
    n = _n(rng.uniform(1.2, 2.5))
    centre, dev, rate = rng.uniform(850, 1050), rng.uniform(250, 400), rng.uniform(0.6, 1.5)
    freq = centre + dev * np.sin(2 * np.pi * rate * _t(n) + rng.uniform(0, 2 * np.pi))
    return oscillate(freq, n, wavetable({1: 1.0, 2: 0.5, 3: 0.25, 4: 0.12}, rng))


def knock(rng):
    knocks, period = rng.integers(2, 5), rng.uniform(0.12, 0.2)
    n = _n((knocks - 1) * period + 0.1)
    f = rng.uniform(120, 220)
    body = oscillate(f, n) + 0.4 * oscillate(2.3 * f, n)  # wood: a second inharmonic mode
    click = band_noise(n, rng, 1000, 5000)
    return body * decay_train(n, period, 0.025, 0.1) + 0.5 * click * decay_train(n, period, 0.003, 0.02)


def clap(rng):
    claps, period = rng.integers(3, 7), rng.uniform(0.14, 0.22)
    n = _n((claps - 1) * period + 0.05)
    gains = rng.uniform(0.6, 1.0, claps).astype(np.float32)[np.minimum(pulse_index(n, period), claps - 1)]
    return band_noise(n, rng, 600, 3000, -3) * decay_train(n, period, 0.008, 0.05) * gains


def whistle(rng):
    n = _n(rng.uniform(0.5, 1.5))
    t, f0 = _t(n), rng.uniform(1900, 2400)
    vibrato = 1 + rng.uniform(0.015, 0.03) * np.sin(2 * np.pi * rng.uniform(5, 7) * t)
    glide = 1 + rng.uniform(-0.05, 0.05) * t / t[-1]
    ramp = np.minimum(1, np.minimum(t, t[-1] - t) / 0.03)
    return (oscillate(f0 * vibrato * glide, n) + 0.1 * band_noise(n, rng, f0 - 300, f0 + 300)) * ramp


def engine_hum(rng):
    n = _n(rng.uniform(1.5, 3.0))
    f0 = rng.uniform(35, 70)
    amps = {k: k ** -0.9 for k in range(1, 26) if k * f0 < 1000}
    wobble = 1 + 0.01 * np.sin(2 * np.pi * rng.uniform(0.3, 1.0) * _t(n))  # uneven rpm
    return oscillate(f0 * wobble, n, wavetable(amps, rng)) + 0.3 * band_noise(n, rng, 30, 300, -3)


def rain(rng):
    n = _n(rng.uniform(1.5, 3.0))
    drops = np.zeros(n, np.float32)
    hits = rng.integers(0, n, int(rng.uniform(150, 300) * n / SR))
    drops[hits] = rng.exponential(1.0, len(hits))
    crackle = np.convolve(drops, np.exp(-np.arange(48, dtype=np.float32) / 16), "same")  # 1-ms decays
    return band_noise(n, rng, 1500, 8000, -2) * (0.6 + crackle)


def wind(rng):
    n = _n(rng.uniform(1.5, 3.0))
    t = _t(n)
    gust = 1 - rng.uniform(0.3, 0.6) * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.5, 1.5) * t
                                                        + rng.uniform(0, 2 * np.pi)))
    res = rng.uniform(500, 900)  # the howl: a narrow resonance on top of the broadband rush
    return (band_noise(n, rng, 250, 1500, -4) + 0.4 * band_noise(n, rng, res - 40, res + 40)) * gust


def bell(rng):
    n = _n(rng.uniform(1.0, 1.6))
    t, f0, tau = _t(n), rng.uniform(300, 600), rng.uniform(0.5, 0.9)
    # hum, prime, tierce, quint, nominal and upper partials of a church bell, slightly detuned
    ratios = np.array([0.5, 1.0, 1.19, 1.5, 2.0, 2.51, 2.66, 3.01]) * rng.uniform(0.99, 1.01, 8)
    amps = [0.6, 1.0, 0.7, 0.5, 0.8, 0.4, 0.3, 0.2]
    x = sum(a * oscillate(f0 * r, n, phase0=rng.uniform()) * np.exp(-t / np.float32(tau / r ** 0.5))
            for a, r in zip(amps, ratios))
    return x + 0.5 * band_noise(n, rng, 2000, 7000) * np.exp(-t / np.float32(0.004))  # strike


def drip(rng):
    drops, period = rng.integers(2, 6), rng.uniform(0.18, 0.28)
    n = _n((drops - 1) * period + 0.1)
    ph, tau_rise = _t(n) % np.float32(period), np.float32(0.015)
    f0 = rng.uniform(700, 1000, drops).astype(np.float32)[np.minimum(pulse_index(n, period), drops - 1)]
    # the drop's pitch rises by `rise` with time constant tau_rise; phase is its integral
    rise = np.float32(rng.uniform(0.4, 0.6))
    cycles = f0 * (ph + rise * (ph - tau_rise * (1 - np.exp(-ph / tau_rise))))
    return np.sin(2 * np.pi * cycles) * decay_train(n, period, 0.02, 0.1)


def buzzer(rng):
    buzzes, on, off = rng.integers(1, 4), rng.uniform(0.3, 0.7), rng.uniform(0.08, 0.15)
    n = _n(buzzes * on + (buzzes - 1) * off)
    f0 = rng.uniform(120, 260)
    square = wavetable({k: 1 / k for k in range(1, int(NYQUIST_MARGIN_HZ / f0), 2)}, rng)
    ph = _t(n) % np.float32(on + off)
    return oscillate(f0, n, square) * np.clip(np.minimum(ph, on - ph) / 0.005, 0, 1)


def footsteps(rng):
    steps, period = rng.integers(3, 7), rng.uniform(0.24, 0.3)
    n = _n((steps - 1) * period + 0.12)
    thump = band_noise(n, rng, 40, 400, -3) * decay_train(n, period, 0.025, 0.08, 0.003)
    lag = _n(0.04)  # the toe scuffs 40 ms after the heel lands
    scuff = np.zeros(n, np.float32)
    scuff[lag:] = decay_train(n - lag, period, 0.02, 0.07, 0.005)
    return thump + 0.3 * band_noise(n, rng, 2000, 6000) * scuff


RECIPES = {f.__name__: f for f in (alarm_beep, siren, knock, clap, whistle, engine_hum, rain, wind,
                                   bell, drip, buzzer, footsteps)}


def synth_event(cls: str, rng: np.random.Generator) -> np.ndarray:
    """One occurrence of `cls`, trimmed to its energy (length a multiple of FRAME), loudest frame RMS 1."""
    return finish(np.asarray(RECIPES[cls](rng), np.float32))


# ---------------------------------------------------------------- scene backgrounds
def bird_chirps(n: int, rng: np.random.Generator, per_s: float) -> np.ndarray:
    """Short chirps rising by half from 2.8-3.4 kHz, at random times (the park's birds)."""
    out = np.zeros(n, np.float32)
    m = _n(0.06)
    t = _t(m)
    for start in rng.integers(0, max(n - m, 1), rng.poisson(per_s * n / SR)):
        f = rng.uniform(2800, 3400) * (1 + 0.5 * t / t[-1])
        out[start:start + m] += oscillate(f, m) * np.sin(np.pi * t / t[-1]) * rng.uniform(0.3, 1)
    return out


def texture(n: int, rng: np.random.Generator, spec: dict) -> np.ndarray:
    """A scene background from its tags/corpus/sound.yaml `texture`; loudest frame RMS 1."""
    t = _t(n)
    x = band_noise(n, rng, spec["lo_hz"], spec["hi_hz"], spec["tilt_db"])
    swell = 1 - spec["swell_depth"] * (0.5 + 0.5 * np.sin(2 * np.pi * spec["swell_hz"] * t
                                                          + rng.uniform(0, 2 * np.pi)))
    x *= swell.astype(np.float32)
    hum = 10 ** (spec["hum_db"] / 20)
    for f in spec["hum_hz"]:
        x += hum * oscillate(f, n, phase0=rng.uniform())
    if spec["chirps_per_s"]:
        x += CHIRP_GAIN * bird_chirps(n, rng, spec["chirps_per_s"])
    return (x / frame_rms(x).max()).astype(np.float32)
