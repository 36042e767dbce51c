"""espeak-ng as a function: (text, voice, prosody) -> float32 mono 16 kHz waveform.

Choices:
- One espeak-ng process per utterance. The text goes in on stdin (`--stdin`: no argv quoting, and
  a text starting with '-' cannot become an option); the WAV comes back on stdout (`--stdout`) and
  soundfile decodes it in memory, so no temporary files.
- espeak-ng writes 22.05 kHz for every voice; soxr resamples to the project's 16 kHz.
- Prosody is espeak's own knobs (-s words per minute, -p pitch, -a amplitude) plus an optional
  SSML pitch range; SSML is used only when a range or markup asks for it.
- Waveforms are cached in-process per (text, voice, prosody): the word-timestamp task says the
  same words in the same voices again and again. Two caches, so that long sentences (which rarely
  repeat) do not evict short words (which do). Cached arrays are read-only; callers copy.
- `trim` cuts the digital silence espeak puts around an utterance, at 1 % of the clip's peak,
  so that a segment's first and last samples are where its energy starts and ends.
"""
from __future__ import annotations

import io
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from xml.sax.saxutils import escape

import numpy as np
import soundfile as sf
import soxr

from ...audio import SAMPLE_RATE
from .base import SourceMissing

ESPEAK = "espeak-ng"
ESPEAK_RATE = 22_050          # espeak-ng's output rate, every voice
TIMEOUT_S = 20.0              # a 12-s clip takes ~50 ms; 20 s means a hung process
TRIM_FRACTION = 0.01          # silence = |x| below 1 % of the clip's peak (-40 dB)
WORD_CACHE = 4096             # words: ~0.4 s x 16 kHz x 4 B ~ 26 kB each -> ~100 MB at most
SENTENCE_CACHE = 256          # sentences: ~2.5 s -> ~160 kB each -> ~40 MB at most


class EspeakError(RuntimeError):
    """espeak-ng ran but gave no audio (bad voice, bad markup, crash, timeout)."""


@dataclass(frozen=True)
class Prosody:
    speed: int = 170                 # -s: words per minute (espeak's default is 175)
    pitch: int = 50                  # -p: 0..99, relative to the voice's base pitch
    amplitude: int = 100             # -a: 0..200; above ~150 the output starts to clip
    pitch_range: str | None = None   # SSML <prosody range>: x-low .. x-high; None = the voice's own


def executable() -> str:
    """Path of espeak-ng, or SourceMissing (looked up on every call: PATH may change)."""
    path = shutil.which(ESPEAK)
    if path is None:
        raise SourceMissing("espeak-ng not found on PATH (install it, e.g. apt-get install espeak-ng); "
                            "the speech tasks of the embedded corpus need it")
    return path


def synth(text: str, voice: str, prosody: Prosody = Prosody(), markup: bool = False,
          short: bool = False) -> np.ndarray:
    """Speak `text` (an SSML fragment if `markup`) with an espeak-ng voice such as 'en-us+f2'.

    Returns a read-only float32 array at 16 kHz, silence included (see `trim`). `short` files the
    result in the word cache."""
    cached = _word_cached if short else _sentence_cached
    return cached(executable(), text, voice, prosody, markup)


def _command(exe: str, text: str, voice: str, prosody: Prosody, markup: bool) -> tuple[list[str], str]:
    args = [exe, "-v", voice, "-s", str(prosody.speed), "-p", str(prosody.pitch),
            "-a", str(prosody.amplitude), "-z", "--stdout", "--stdin"]  # -z: no final pause (trimmed anyway)
    if not (markup or prosody.pitch_range):
        return args, text
    body = text if markup else escape(text)
    if prosody.pitch_range:
        body = f'<prosody range="{prosody.pitch_range}">{body}</prosody>'
    return [*args[:1], "-m", *args[1:]], f"<speak>{body}</speak>"


def _run(exe: str, text: str, voice: str, prosody: Prosody, markup: bool) -> np.ndarray:
    args, body = _command(exe, text, voice, prosody, markup)
    try:
        proc = subprocess.run(args, input=body.encode("utf-8"), capture_output=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        raise EspeakError(f"espeak-ng timed out after {TIMEOUT_S:g} s on {text!r} (voice {voice})") from e
    if proc.returncode != 0 or len(proc.stdout) <= 44:  # 44 bytes = a WAV header and no samples
        err = proc.stderr.decode("utf-8", "replace").strip() or "no audio"
        raise EspeakError(f"espeak-ng failed (exit {proc.returncode}) on {text!r} with voice {voice}: {err}")
    x, rate = sf.read(io.BytesIO(proc.stdout), dtype="float32", always_2d=True)
    y = soxr.resample(x.mean(axis=1), rate, SAMPLE_RATE).astype(np.float32)
    y.setflags(write=False)
    return y


_word_cached = lru_cache(maxsize=WORD_CACHE)(_run)
_sentence_cached = lru_cache(maxsize=SENTENCE_CACHE)(_run)


def trim(x: np.ndarray, fraction: float = TRIM_FRACTION) -> np.ndarray:
    """`x` without the leading and trailing samples below `fraction` of its peak."""
    loud = np.flatnonzero(np.abs(x) >= fraction * float(np.max(np.abs(x), initial=0.0)))
    if loud.size == 0 or not np.any(x):
        return x[:0]
    return x[loud[0]:loud[-1] + 1]


def clear_cache() -> None:
    """Drop cached waveforms (tests, or a long-running builder that changes voices)."""
    _word_cached.cache_clear()
    _sentence_cached.cache_clear()
