"""Music synthesis for the embedded corpus: timbres, notes, drums (see music.py for the choices).

Additive wavetables (flute, organ, clarinet, strings), FM (electric piano, brass), Karplus-Strong
(guitar) and modal (mallet) voices; velocity sets level only (velocity_gain).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from ...audio import SAMPLE_RATE as SR

F_MAX = 7000.0        # highest partial: Nyquist (8 kHz) less room for vibrato and FM sidebands
HEADROOM = 0.9        # peak of a velocity-127 note; mixes are scaled to at most this
DB_SPAN = 30.0        # level drop from velocity 127 to 0; 25 -> -24 dB, steps of ~6 dB
VELOCITIES = (25, 50, 75, 100, 127)     # NSynth's velocities
TEMPOS = tuple(range(60, 181, 10))      # integer BPM
RELEASE = 0.16        # note tail after the gate: the longest release (strings, 0.15 s) + margin
TABLE = 2048          # wavetable length; linear interpolation errors < -60 dB at harmonic 24
TWO_PI = 2 * np.pi
_T = np.arange(8 * SR) / SR   # sample times; every single sound is shorter than an 8-s item
INSTRUMENTS = ("flute", "organ", "clarinet", "strings", "guitar", "electric_piano", "brass", "mallet")
PITCH_RANGE = {"flute": (60, 96), "organ": (36, 84), "clarinet": (50, 86), "strings": (43, 88),
               "guitar": (40, 76), "electric_piano": (36, 88), "brass": (40, 77), "mallet": (53, 96)}
PERCUSSIVE = ("guitar", "electric_piano", "mallet")   # sharp onsets for beat patterns
CHORDS = {"major": (0, 4, 7), "minor": (0, 3, 7), "diminished": (0, 3, 6), "augmented": (0, 4, 8),
          "dominant7": (0, 4, 7, 10), "major7": (0, 4, 7, 11), "minor7": (0, 3, 7, 10), "sus4": (0, 5, 7)}
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
PROGRESSIONS = {"major": ((0, 4, 5, 3), (0, 3, 4, 0), (0, 5, 3, 4)),      # scale degrees, 0 = tonic
                "minor": ((0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 6))}
METERS = {"2/4": (0, 2), "3/4": (0, 2, 2), "4/4": (0, 2, 1, 2), "6/8": (0, 2, 2, 1, 2, 2)}  # accents
ACCENT_DB = (0.0, -7.0, -14.0)         # strong, medium, weak
# Harmonic amplitudes (1, 2, 3, ...) of the wavetable instruments.
FLUTE = (1.0, 0.25, 0.1, 0.04, 0.02)                  # nearly a sine
ORGAN_BARS = (1.0, 0.6, 0.45, 0.4, 0, 0.3, 0, 0.25)   # drawbars 8' 4' 2 2/3' 2' 1 1/3' 1'
CLARINET = tuple(1 / k if k % 2 else 0.02 / k for k in range(1, 16))   # closed pipe: odd harmonics
SAW = tuple(1 / k for k in range(1, 25))                                # bowed string: all, 1/k
MALLET_MODES = ((1.0, 1.0, 1.0), (2.756, 0.4, 0.45), (5.404, 0.2, 0.25), (8.933, 0.1, 0.15))


def velocity_gain(velocity: int) -> float:
    """Peak amplitude of a note of this velocity: dB linear in velocity, HEADROOM at 127."""
    return HEADROOM * 10 ** (DB_SPAN * (velocity / 127 - 1) / 20)


# ------------------------------------------------------------------------------ building blocks
def _env(n: int, attack: float, gate: float, release: float, sustain=1.0, decay=0.1) -> np.ndarray:
    """Linear ADSR; attack and decay shrink to fit short gates."""
    a = min(attack, 0.5 * gate)
    d = min(decay, gate - a)
    return np.interp(_T[:n], [0, a, a + d, gate, gate + release], [0, 1, sustain, sustain, 0])


def _cycles(f0: float, n: int, rng, depth=0.0, rate=5.0, delay=0.2, start=None) -> np.ndarray:
    """Phase in periods; vibrato fades in after `delay`, as players add it once the tone settles."""
    t = _T[:n]
    start = rng.uniform() if start is None else start
    if not depth:
        return f0 * t + start
    wobble = np.clip((t - delay) / 0.2, 0, 1) * np.sin(TWO_PI * rate * t + rng.uniform(0, TWO_PI))
    return np.cumsum(f0 * (1 + depth * wobble)) / SR + start


@lru_cache(maxsize=2048)
def _table(amps: tuple, f0: float) -> np.ndarray:
    """One period of harmonics 1..len(amps), those under F_MAX, plus a wrap-around sample.
    Cached: pitches are MIDI notes, so a few hundred tables serve every note (read-only)."""
    k = np.arange(1, len(amps) + 1)
    amps = np.where(k * f0 < F_MAX, np.asarray(amps, float), 0.0)
    table = amps @ np.sin(TWO_PI * np.outer(k, np.arange(TABLE + 1) / TABLE))
    table.flags.writeable = False
    return table


def _osc(table: np.ndarray, cycles: np.ndarray) -> np.ndarray:
    """Read a wavetable at these phases (in periods) with linear interpolation."""
    pos = cycles * TABLE
    i = pos.astype(np.int64)
    frac = pos - i
    i &= TABLE - 1                     # TABLE is a power of two: the phase wraps by masking
    return table[i] + frac * (table[i + 1] - table[i])


# ------------------------------------------------------------------------------ instruments
def _flute(f0, gate, n, rng):
    cyc = _cycles(f0, n, rng, depth=0.006, rate=rng.uniform(4.5, 5.5), delay=0.25)
    tone = _osc(_table(FLUTE, f0), cyc)
    breath = np.convolve(rng.standard_normal(n), np.ones(3) / 3, "same")  # soft-edged air noise
    return (tone + 0.05 * breath) * _env(n, rng.uniform(0.06, 0.1), gate, 0.08, sustain=0.9)


def _organ(f0, gate, n, rng):
    return _osc(_table(ORGAN_BARS, f0), _cycles(f0, n, rng)) * _env(n, 0.004, gate, 0.02, decay=0.0)


def _clarinet(f0, gate, n, rng):
    return _osc(_table(CLARINET, f0), _cycles(f0, n, rng)) * _env(n, rng.uniform(0.025, 0.04), gate, 0.05, 0.85)


def _strings(f0, gate, n, rng):
    saw = _table(SAW, f0)
    rate, start = rng.uniform(5.5, 6.5), rng.uniform()
    # An ensemble: three players in tune, each with their own vibrato. Detuned voices would beat
    # and could cancel the fundamental of a short note; vibrato phase offsets stay bounded.
    voices = sum(_osc(saw, _cycles(f0, n, rng, 0.005, rate * r, 0.1, start)) for r in (0.93, 1, 1.07))
    return voices * _env(n, rng.uniform(0.15, 0.25), gate, 0.15, sustain=0.95)


def _guitar(f0, gate, n, rng):
    period = SR / f0
    m = int(period)
    delay, frac = m - 1, period - m
    # Loop filter: damping taps (group delay 1) times a linear fractional delay (delay ~frac),
    # so the loop is exactly `period` samples long at the fundamental.
    h = np.convolve([0.12, 0.76, 0.12], [1 - frac, frac])
    t60 = 0.8 + 1.5 * np.sqrt(110 / f0)
    g = 10 ** (-3 / (t60 * f0))          # -60 dB after t60 seconds = t60 * f0 round trips
    beta = rng.uniform(0.12, 0.25)       # pluck position along the string
    x = np.zeros(n)
    x[:m] = np.interp(np.arange(m), [0, beta * m, m], [0, 1, 0]) + 0.3 * rng.standard_normal(m)
    x[:m] -= x[:m].mean()                # no DC: the loop would sustain it
    pad = delay + 3
    y = np.zeros(pad + n)
    for s in range(0, n, delay):         # a block of `delay` samples depends only on earlier blocks
        e = min(s + delay, n)
        y[pad + s:pad + e] = x[s:e] + g * np.convolve(y[pad + s - delay - 3:pad + e - delay], h, "valid")
    return y[pad:] * _env(n, 0.0005, gate, 0.05, decay=0.0)


def _electric_piano(f0, gate, n, rng):
    t = _T[:n]
    cyc = f0 * t + rng.uniform()
    index = 1.6 * np.exp(-t / 0.25) + 0.2        # bright attack mellowing to near-sine
    tone = np.sin(TWO_PI * cyc + index * np.cos(TWO_PI * cyc))
    if 14 * f0 < F_MAX:                          # the tine's metallic ping
        tone += 0.3 * np.sin(TWO_PI * 14 * f0 * t) * np.exp(-t / 0.02)
    tau = 0.4 + 0.8 * np.sqrt(261.6 / f0)
    return tone * np.exp(-t / tau) * _env(n, 0.002, gate, 0.06, decay=0.0)


def _brass(f0, gate, n, rng):
    env = _env(n, rng.uniform(0.04, 0.07), gate, 0.08, sustain=0.8, decay=0.1)
    cyc = _cycles(f0, n, rng, depth=0.003, rate=5.5, delay=0.3)
    return np.sin(TWO_PI * cyc + 1.8 * env * np.cos(TWO_PI * cyc)) * env  # louder is brighter


def _mallet(f0, gate, n, rng):
    t = _T[:n]
    tau = 0.25 + 0.5 * np.sqrt(261.6 / f0)
    out = np.zeros(n)
    for ratio, amp, life in MALLET_MODES:
        if ratio * f0 < F_MAX:
            out += amp * np.sin(TWO_PI * ratio * f0 * t + rng.uniform(0, TWO_PI)) * np.exp(-t / (tau * life))
    strike = np.zeros(n)
    strike[:48] = 0.3 * rng.standard_normal(48) * np.linspace(1, 0, 48)   # 3 ms mallet click
    return (out + strike) * _env(n, 0.001, gate, 0.04, decay=0.0)


SYNTHS = {"flute": _flute, "organ": _organ, "clarinet": _clarinet, "strings": _strings,
          "guitar": _guitar, "electric_piano": _electric_piano, "brass": _brass, "mallet": _mallet}


def render_note(instrument: str, pitch: int, velocity: int, gate: float, rng) -> np.ndarray:
    """One note: `gate` seconds held, then its release; peak = velocity_gain(velocity)."""
    n = int(round((gate + RELEASE) * SR))
    wave = SYNTHS[instrument](440.0 * 2 ** ((pitch - 69) / 12), gate, n, rng)
    return wave * (velocity_gain(velocity) / np.max(np.abs(wave)))


def _drum(sound: str, n: int, rng) -> np.ndarray:
    t = _T[:n]
    if sound == "kick":                                   # falling sine thump
        return np.sin(TWO_PI * np.cumsum(45 + 90 * np.exp(-t / 0.03)) / SR) * np.exp(-t / 0.12)
    if sound == "snare":                                  # noise rattle over a drum-head tone
        return (0.6 * rng.standard_normal(n) + np.sin(TWO_PI * 185 * t)) * np.exp(-t / 0.05)
    if sound == "hat":                                    # differenced noise: bright, short
        return np.diff(rng.standard_normal(n + 1)) * np.exp(-t / 0.012)
    return np.sin(TWO_PI * float(sound) * t) * np.exp(-t / 0.01)  # metronome click at this Hz
