"""Procedural music: single notes, chords, rhythms, melodies, captioned pieces and QA.

Choices made here:
- Timbres: additive wavetables (flute: near-sine, breath, late vibrato; organ: drawbars, box
  envelope; clarinet: odd harmonics; strings: three sawtooth players, slow attack, vibrato), FM
  (electric piano: decaying index and a 14:1 tine ping; brass: index follows the envelope, after
  Chowning), Karplus-Strong (guitar: triangle pluck, fractional-delay loop, vectorised by blocks
  of one delay) and modal (mallet: free-bar partials 1 : 2.756 : 5.404 : 8.933). The fundamental
  is always the strongest partial.
- Velocity sets level only: a note is peak-normalised, then scaled by velocity_gain (dB linear in
  velocity, HEADROOM at 127). Ingest keeps levels, so velocity stays recoverable.
- Rhythm: hit k starts at sample round((lead + k * interval) * SR) and dies out >= 30 ms before
  the next. Meters are accent cycles (2/4 S w, 3/4 S w w, 4/4 S w M w, 6/8 S w w M w w); strong,
  medium and weak hits differ in sound and by ACCENT_DB.
- Melodies: staccato random walks on a major or minor scale. Chords: root position, close voicing.
- Splits: each item has its own stream seeded by (a draw of the caller's rng, split, task, index).
- Text (caption and question templates, word lists) lives in tags/corpus/music.yaml.
"""
from __future__ import annotations

import re
import zlib
from functools import lru_cache

import numpy as np
import yaml

from ...audio import SAMPLE_RATE as SR
from ...paths import tags_dir
from .base import SPLITS, Item, generator
from .music_synth import (ACCENT_DB, CHORDS, HEADROOM, INSTRUMENTS, METERS, PERCUSSIVE, PITCH_RANGE, PROGRESSIONS, RELEASE, SCALES, TEMPOS, VELOCITIES, _drum, render_note)

@lru_cache(maxsize=1)
def text() -> dict:
    """tags/corpus/music.yaml: caption and question templates, word lists."""
    return yaml.safe_load((tags_dir() / "corpus" / "music.yaml").read_text(encoding="utf-8"))


def _pick(rng, words) -> str:
    return str(rng.choice(words))


def _band(bands, key: str, value: float, rng) -> str:
    """A word of the first band whose upper bound `key` covers `value`."""
    return _pick(rng, next(b["words"] for b in bands if value <= b[key]))


def _place(out: np.ndarray, start: int, wave: np.ndarray, room: int) -> None:
    """Add `wave` at `start`, cut to `room` samples with a 5-ms fade so it ends before the next hit."""
    wave = wave[:max(0, min(room, len(out) - start))].copy()
    fade = min(80, len(wave))
    wave[len(wave) - fade:] *= np.linspace(1, 0, fade)
    out[start:start + len(wave)] += wave


def _finish(out: np.ndarray, rng) -> np.ndarray:
    """Scale a mix to a random peak in [0.4, HEADROOM] (mixes carry no velocity label)."""
    return (out * (rng.uniform(0.4, HEADROOM) / np.max(np.abs(out)))).astype(np.float32)


# ------------------------------------------------------------------------------ compositions
def _fit(pitches, instrument: str) -> list[int]:
    """Shift a group of pitches by the fewest octaves that bring it inside the instrument's range."""
    lo, hi = PITCH_RANGE[instrument]
    up, down = (lo - min(pitches) + 11) // 12, (max(pitches) - hi + 11) // 12   # ceil divisions
    return [int(p + 12 * (up if up > 0 else -max(down, 0))) for p in pitches]


def _beats(accents, interval: float, count: int, rng, style=None, lead=None) -> np.ndarray:
    """`count` hits `interval` s apart cycling through accent levels (0 strong, 1 medium, 2 weak)."""
    style = style or str(rng.choice(("drums", "click", "notes")))
    inst = str(rng.choice(PERCUSSIVE))
    root = int(rng.integers(PITCH_RANGE[inst][0], PITCH_RANGE[inst][1] - 16 + 1))
    lead = rng.uniform(0.05, 0.3) if lead is None else lead
    room = int(min(0.85 * interval, interval - 0.03) * SR)   # >= 30 ms of silence before the next hit
    out = np.zeros(int(round((lead + count * interval) * SR)))
    for k in range(count):
        level = accents[k % len(accents)]
        if style == "notes":      # oom-pah: low root strong, fifth medium, high third weak
            wave = render_note(inst, root + (0, 7, 16)[level], 127, 0.6 * interval, rng)
        else:
            kit = {"drums": (("kick", "hat"), ("snare",), ("hat",)),
                   "click": (("2000",), ("1500",), ("1000",))}[style][level]
            wave = sum(_drum(s, room, rng) for s in kit)
        wave = wave * (10 ** (ACCENT_DB[level] / 20) / np.max(np.abs(wave)))
        _place(out, int(round((lead + k * interval) * SR)), wave, room)
    return out


def _scale_notes(rng, instrument: str, count: int, steps=(-3, -2, -1, 0, 1, 2, 3)) -> list[int]:
    """A random walk of `count` notes on a major or minor scale inside the instrument's range."""
    mode, key = _pick(rng, tuple(SCALES)), int(rng.integers(12))
    lo, hi = PITCH_RANGE[instrument]
    ladder = [p for p in range(lo, hi + 1) if (p - key) % 12 in SCALES[mode]]
    i = int(rng.integers(len(ladder) // 4, 3 * len(ladder) // 4))
    notes = [ladder[i]]
    for _ in range(count - 1):
        i = int(np.clip(i + rng.choice(steps), 0, len(ladder) - 1))
        notes.append(ladder[i])
    return notes


def _sequence(instrument: str, notes, rng) -> np.ndarray:
    """Notes one after another, each followed by a short silence (staccato)."""
    gate, gap = rng.uniform(0.2, 0.4), rng.uniform(0.03, 0.08)
    waves = [render_note(instrument, p, 100, gate, rng) for p in notes]
    silence = np.zeros(int(gap * SR))
    return np.concatenate([np.zeros(int(rng.uniform(0.02, 0.2) * SR))]
                          + [x for w in waves for x in (w, silence)])


def _chord(quality: str, instrument: str, rng) -> np.ndarray:
    """Root position, close voicing; guitar strums, others hit (almost) together."""
    lo, hi = PITCH_RANGE[instrument]
    top = 12 if rng.random() < 0.3 else 0                 # optional root doubled above
    root = int(rng.integers(max(48, lo), min(66, hi - 11 - top) + 1))
    pitches = [root + i for i in CHORDS[quality]] + ([root + top] if top else [])
    spread = rng.uniform(0.015, 0.03) if instrument == "guitar" else rng.uniform(0, 0.006)
    gate = rng.uniform(1.0, 1.6)
    starts = [int(i * spread * SR) for i in range(len(pitches))]
    out = np.zeros(starts[-1] + int(round((gate + RELEASE) * SR)))
    for s, p in zip(starts, pitches):
        _place(out, s, render_note(instrument, p, 100, gate, rng), len(out))
    return out


def _piece(rng) -> tuple[np.ndarray, dict]:
    """Chords (one per bar) on one instrument, maybe a lead line on another, maybe drums."""
    mode, key = str(rng.choice(("major", "minor"))), int(rng.integers(12))
    beats, bpm = int(rng.choice((3, 4))), int(rng.choice(TEMPOS))
    beat, scale = 60 / bpm, SCALES[mode]
    bars = max(1, int(rng.uniform(3, 6.5) / (beats * beat)))
    accomp, lead = (str(x) for x in rng.choice(INSTRUMENTS, 2, replace=False))
    melody, drums = rng.random() < 0.5, rng.random() < 0.5
    prog = PROGRESSIONS[mode][int(rng.integers(3))]
    out = np.zeros(int(round((bars * beats * beat + RELEASE) * SR)))
    hits = [0] if accomp not in PERCUSSIVE else range(0, beats, 2)   # sustained: hold; else comp
    held = beats * beat if accomp not in PERCUSSIVE else 2 * beat
    tune, chord_notes = [], []
    def tone(deg, octave):   # scale degree -> MIDI pitch
        return key + 12 * (octave + deg // 7) + scale[deg % 7]
    for b in range(bars):
        deg = prog[b % len(prog)]
        triad = _fit([tone(deg + j, 4) for j in (0, 2, 4)], accomp)
        for h in hits:
            start = int(round((b * beats + h) * beat * SR))
            for p in triad:
                _place(out, start, 0.5 * render_note(accomp, p, 100, 0.85 * held, rng), len(out))
        chord_notes += triad
        tune += [tone(deg + int(rng.choice((0, 1, 2, 4))), 5) for _ in range(beats)]  # chord tones + passing
    if melody:
        tune = [_fit([p], lead)[0] for p in tune]
        for k, p in enumerate(tune):
            _place(out, int(round(k * beat * SR)), render_note(lead, p, 100, 0.6 * beat, rng), len(out))
    if drums:
        kit = _beats(METERS[f"{beats}/4"], beat, bars * beats, rng, "drums", lead=0.0)
        out[:len(kit)] += 0.4 * kit
    facts = {"mode": mode, "bpm": bpm, "beats": beats, "accomp": accomp, "lead": lead,
             "melody": melody, "drums": drums, "register": float(np.mean(tune if melody else chord_notes))}
    return out, facts


# ------------------------------------------------------------------------------ questions
def _qa_melody(rng, t):
    inst = _pick(rng, INSTRUMENTS)
    kind = _pick(rng, ("count_notes", "second_higher", "second_lower", "direction"))
    if kind == "direction":
        up = rng.random() < 0.5
        notes = _scale_notes(rng, inst, int(rng.integers(3, 7)), steps=(1, 2) if up else (-1, -2))
        return _sequence(inst, notes, rng), kind, t["answers"]["up" if notes[-1] > notes[0] else "down"]
    if kind == "count_notes":
        notes = _scale_notes(rng, inst, int(rng.integers(2, 9)))
        return _sequence(inst, notes, rng), kind, t["number_words"][len(notes)]
    # the walk starts mid-range, so a nonzero first step is never clipped to a repeat
    notes = _scale_notes(rng, inst, int(rng.integers(2, 6)), steps=(-3, -2, -1, 1, 2, 3))
    yes = (notes[1] > notes[0]) == (kind == "second_higher")
    return _sequence(inst, notes, rng), kind, t["answers"]["yes" if yes else "no"]


def _qa_sound(rng, t):
    kind = _pick(rng, ("chord_mode", "instrument", "register", "tempo_feel", "beats_per_bar"))
    inst = _pick(rng, INSTRUMENTS)
    if kind == "tempo_feel":
        fast = rng.random() < 0.5
        bpm = int(rng.choice((140, 150, 160, 170, 180) if fast else (60, 70, 80)))
        return _tempo_item(rng, bpm)[0], kind, t["answers"]["fast" if fast else "slow"]
    if kind == "beats_per_bar":
        meter = _pick(rng, ("2/4", "3/4", "4/4"))
        return _meter_item(rng, meter, rng.uniform(0.3, 0.6))[0], kind, t["number_words"][int(meter[0])]
    if kind == "chord_mode":
        mode = _pick(rng, ("major", "minor"))
        return _chord(mode, inst, rng), kind, t["answers"][mode]
    if kind == "instrument":
        notes = _scale_notes(rng, inst, int(rng.integers(2, 5)))
        return _sequence(inst, notes, rng), kind, t["instruments"][inst]["name"]
    high = rng.random() < 0.5
    band = (79, 96) if high else (36, 50)     # a gap of two octaves keeps high/low unambiguous
    inst = _pick(rng, [i for i, (lo, hi) in PITCH_RANGE.items() if lo <= band[1] and hi >= band[0]])
    lo, hi = max(band[0], PITCH_RANGE[inst][0]), min(band[1], PITCH_RANGE[inst][1])
    note = render_note(inst, int(rng.integers(lo, hi + 1)), 100, rng.uniform(0.6, 1.2), rng)
    return note, kind, t["answers"]["high" if high else "low"]


# ------------------------------------------------------------------------------ tasks
def _note_item(rng):
    inst = _pick(rng, INSTRUMENTS)
    pitch = int(rng.integers(PITCH_RANGE[inst][0], PITCH_RANGE[inst][1] + 1))
    velocity = int(rng.choice(VELOCITIES))
    note = render_note(inst, pitch, velocity, rng.uniform(0.8, 1.4), rng)
    return np.concatenate([np.zeros(int(rng.uniform(0, 0.05) * SR)), note]), {
        "pitch": pitch, "velocity": velocity, "instrument": inst}


def _chord_item(rng):
    quality = _pick(rng, tuple(CHORDS))
    return _chord(quality, _pick(rng, INSTRUMENTS), rng), {"chord": quality}


def _tempo_item(rng, bpm=None):
    """Quarter-note beats filling 3.5-6.5 s (at least 4), accented as 2/4, 3/4 or 4/4."""
    bpm = bpm or int(rng.choice(TEMPOS))
    accents = METERS[_pick(rng, ("2/4", "3/4", "4/4"))]
    return _beats(accents, 60 / bpm, int(rng.uniform(3.5, 6.5) * bpm / 60) + 1, rng), {"tempo": bpm}


def _meter_item(rng, meter=None, interval=None):
    """At least two bars (4-6.5 s); 6/8 pulses are eighths (0.15-0.3 s), the others quarters."""
    meter = meter or _pick(rng, tuple(METERS))
    interval = interval or (rng.uniform(0.15, 0.3) if meter == "6/8" else rng.uniform(0.3, 0.75))
    bars = max(2, int(rng.uniform(4, 6.5) / (len(METERS[meter]) * interval)))
    return _beats(METERS[meter], interval, bars * len(METERS[meter]), rng), {"meter": meter}


def _melody_item(rng):
    inst = _pick(rng, INSTRUMENTS)
    notes = _scale_notes(rng, inst, int(rng.integers(3, 9)))
    return _sequence(inst, notes, rng), {"notes": notes}


def _caption_item(rng):
    audio, f = _piece(rng)
    t, names = text(), text()["instruments"]
    slots = {"accomp": _pick(rng, names[f["accomp"]]["phrases"]), "bpm": f["bpm"],
             "lead": _pick(rng, names[f["lead"]]["phrases"]),
             "tempo": _band(t["tempo_words"], "max_bpm", f["bpm"], rng),
             "mood": _pick(rng, t["mood_words"][f["mode"]]),
             "register": _band(t["register_words"], "max_pitch", f["register"], rng),
             "meter": _pick(rng, t["meter_words"][f["beats"]])}
    texture = ("melody" if f["melody"] else "chords") + ("_drums" if f["drums"] else "")
    caption = re.sub(r"\b([Aa]) (?=[aeiou])", r"\1n ", _pick(rng, t["captions"][texture]).format(**slots))
    return audio, {"caption": caption[0].upper() + caption[1:]}


def _qa_item(rng):
    t = text()
    audio, kind, answer = (_qa_melody if rng.random() < 4 / 9 else _qa_sound)(rng, t)  # kinds: 4 + 5
    return audio, {"question": _pick(rng, t["questions"][kind]), "answer": answer}


NOTE_FIELDS = {"note_analysis": ("pitch", "velocity", "instrument"), "music_pitch": ("pitch",),
               "music_velocity": ("velocity",), "instrument": ("instrument",)}
MAKERS = {**{task: _note_item for task in NOTE_FIELDS}, "chord_quality": _chord_item,
          "tempo": _tempo_item, "melody": _melody_item, "meter": _meter_item,
          "music_caption": _caption_item, "music_qa": _qa_item}


@generator(*MAKERS)
def make(task: str, index: int, rng: np.random.Generator, split: str) -> Item:
    """One item of a music task, deterministic in (task, index, rng state, split)."""
    seed = [int(rng.integers(2 ** 63)), SPLITS.index(split), zlib.crc32(task.encode()), index]
    stream = np.random.default_rng(seed)
    audio, labels = MAKERS[task](stream)
    if task in NOTE_FIELDS:   # a note keeps its level: velocity is in it
        return Item(task, audio.astype(np.float32), {k: labels[k] for k in NOTE_FIELDS[task]})
    return Item(task, _finish(audio, stream), labels)
