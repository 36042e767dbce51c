"""The procedural music generators: labels checked against the signal, not against the code.

Pitch is read from the FFT peak, onsets from silence-separated energy runs, accents from run peaks,
chords from semitone-bin magnitudes, timbre from generic features (attack, decay, odd/even harmonic
balance, early/late brightness, inharmonic energy) with a nearest-centroid classifier.
"""
from __future__ import annotations

import time

import numpy as np
import pytest
import yaml

from qwen_audio_mt.data.corpus import music
from qwen_audio_mt.data.corpus.base import GENERATORS, SPLITS
from qwen_audio_mt.paths import tags_dir
from qwen_audio_mt.tasks import load_tasks

SR = 16_000
TASKS = ("note_analysis", "music_pitch", "music_velocity", "instrument", "chord_quality", "tempo",
         "melody", "meter", "music_caption", "music_qa")
# Music theory, written out independently of the generator.
QUALITIES = {"major": (0, 4, 7), "minor": (0, 3, 7), "diminished": (0, 3, 6), "augmented": (0, 4, 8),
             "dominant7": (0, 4, 7, 10), "major7": (0, 4, 7, 11), "minor7": (0, 3, 7, 10), "sus4": (0, 5, 7)}
PULSES_PER_BAR = {"2/4": 2, "3/4": 3, "4/4": 4, "6/8": 6}


def items(task, n, split="train", seed=0):
    return [music.make(task, i, np.random.default_rng([seed, i]), split) for i in range(n)]


def hz(pitch):
    return 440.0 * 2 ** ((pitch - 69) / 12)


def spectrum(x):
    n = 1 << (int(np.ceil(np.log2(len(x)))) + 1)
    return np.fft.rfftfreq(n, 1 / SR), np.abs(np.fft.rfft(x * np.hanning(len(x)), n))


def f0(x):
    """The strongest spectral peak above 30 Hz, refined by parabolic interpolation."""
    f, mag = spectrum(x)
    mag[f < 30] = 0
    k = int(np.argmax(mag))
    a, b, c = np.log(mag[k - 1:k + 2] + 1e-12)
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * (f[1] - f[0])


def midi(freq):
    return int(round(69 + 12 * np.log2(freq / 440)))


def runs(x, floor_db=-45.0, hop=16, hold=15):
    """(start, end) samples of stretches louder than the floor, i.e. notes or hits. The envelope
    is the peak of |x| over the last `hold` 1-ms frames: causal, so a run starts at its onset,
    and long enough to bridge the zero crossings of a 45-Hz kick. A run must rise 15 dB above the
    floor: a decaying tail flickering around the floor is not a new onset."""
    frames = np.abs(x[:len(x) // hop * hop]).reshape(-1, hop).max(1)
    env = np.lib.stride_tricks.sliding_window_view(np.concatenate([np.zeros(hold - 1), frames]), hold).max(1)
    on = env > env.max() * 10 ** (floor_db / 20)
    edges = np.diff(np.concatenate([[0], on.astype(int), [0]]))
    spans = zip(np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0])
    return [(s * hop, t * hop) for s, t in spans if env[s:t].max() > env.max() * 10 ** ((floor_db + 15) / 20)]


def chord_intervals(x):
    """Semitones above the lowest strong note whose fundamentals carry energy (one octave)."""
    f, mag = spectrum(x)
    bins = np.array([mag[(f > hz(p - 0.3)) & (f < hz(p + 0.3))].max() for p in range(30, 100)])
    root = int(np.nonzero(bins > 0.2 * bins.max())[0][0])
    window = bins[root:root + 12] / bins[root:root + 12].max()
    return tuple(int(i) for i in np.nonzero(window > 0.1)[0])


def strong_spacing(x):
    """Pulses between the loudest (downbeat) hits."""
    peaks = np.array([np.abs(x[s:t]).max() for s, t in runs(x)])
    strong = np.nonzero(peaks > 0.7 * peaks.max())[0]
    return set(np.diff(strong).tolist())


def band_power(seg, freqs):
    """Power within +-3 % of each frequency."""
    f, mag = spectrum(seg)
    return np.array([(mag[(f > q * 0.97) & (f < q * 1.03)] ** 2).sum() for q in freqs])


def timbre(x):
    """Attack time, decay, odd/even harmonic balance, early and late brightness, inharmonic share."""
    pitch, hop = f0(x), 80
    e = np.sqrt(np.convolve(x ** 2, np.ones(hop) / hop, "valid")[::hop])
    pk = int(np.argmax(e))
    on, half = int(np.argmax(e > 0.05 * e[pk])), int(np.argmax(e > 0.5 * e[pk]))
    end = int(np.nonzero(e > 0.05 * e[pk])[0][-1])
    k = np.arange(1, 9)
    h, early, late = (band_power(seg, k * pitch) for seg in (x, x[on * hop:on * hop + 1600], x[on * hop + 4800:]))
    f, mag = spectrum(x)
    upper = (mag[f > 1.5 * pitch] ** 2).sum()
    harmonic = band_power(x, pitch * np.arange(2, int(7000 / pitch) + 1)).sum()
    return np.array([np.log((half - on + 1) * hop / SR), np.log(e[on + int(0.7 * (end - on))] / e[pk] + 1e-6),
                     np.log((h[2] + h[4] + h[6] + 1e-12) / (h[1] + h[3] + h[5] + 1e-12)),
                     np.log((k * early).sum() / early.sum()), np.log((k * late).sum() / late.sum() + 1e-12),
                     (upper - harmonic) / (upper + 1e-12)])


# ------------------------------------------------------------------------------------------ tests
def test_registered_for_exactly_the_music_tasks():
    assert {t for t, g in GENERATORS.items() if g is music.make} == set(TASKS)
    assert set(TASKS) <= {t.name for t in load_tasks() if t.domain == "music"}


@pytest.mark.parametrize("task", TASKS)
def test_items_are_well_formed_and_render(task, renderer):
    for it in items(task, 12):
        assert it.task == task and it.audio.dtype == np.float32 and it.audio.ndim == 1
        assert 0.5 <= len(it.audio) / SR <= 8.0
        assert 0 < np.abs(it.audio).max() <= 1.0
        assert it.audio_lang == "unknown" and it.text_lang is None
        ids, mask = renderer.render({"task": task, "duration": len(it.audio) / SR, **it.labels})
        assert sum(mask) >= 2


def test_label_fields_are_exactly_what_the_task_needs():
    want = {"note_analysis": {"pitch", "velocity", "instrument"}, "music_pitch": {"pitch"},
            "music_velocity": {"velocity"}, "instrument": {"instrument"}, "chord_quality": {"chord"},
            "tempo": {"tempo"}, "melody": {"notes"}, "meter": {"meter"}, "music_caption": {"caption"},
            "music_qa": {"question", "answer"}}
    for task, fields in want.items():
        assert set(items(task, 1)[0].labels) == fields


def test_deterministic_and_splits_differ():
    for task in TASKS:
        a, b = items(task, 2), items(task, 2)
        assert all(np.array_equal(x.audio, y.audio) and x.labels == y.labels for x, y in zip(a, b))
        others = [music.make(task, 0, np.random.default_rng([0, 0]), s).audio for s in SPLITS]
        assert not any(np.array_equal(others[0], o) for o in others[1:])


def test_note_pitch_is_the_spectral_peak():
    for it in items("note_analysis", 60) + items("music_pitch", 30, "valid"):
        assert abs(f0(it.audio) / hz(it.labels["pitch"]) - 1) < 0.02, it.labels


def test_every_instrument_and_pitch_edge_keeps_its_pitch():
    for name, (lo, hi) in music.PITCH_RANGE.items():
        for p in (lo, (lo + hi) // 2, hi):
            x = music.render_note(name, p, 100, 0.6, np.random.default_rng(p))
            assert abs(f0(x) / hz(p) - 1) < 0.02, (name, p)


def test_velocity_orders_loudness():
    for name in music.INSTRUMENTS:
        rms = [np.sqrt(np.mean(music.render_note(name, 64, v, 1.0, np.random.default_rng(v)) ** 2))
               for v in music.VELOCITIES]
        assert all(a < b for a, b in zip(rms, rms[1:])), name
    peaks = {}
    for it in items("music_velocity", 60):
        peaks.setdefault(it.labels["velocity"], []).append(np.abs(it.audio).max())
    levels = [peaks[v] for v in sorted(peaks)]
    assert len(levels) == len(music.VELOCITIES)
    assert all(max(a) < min(b) for a, b in zip(levels, levels[1:]))  # level alone recovers velocity


def test_instrument_timbres_are_distinct():
    data = items("instrument", 120)
    feats = np.array([timbre(it.audio) for it in data])
    names = np.array([it.labels["instrument"] for it in data])
    assert set(names) == set(music.INSTRUMENTS)
    z = (feats - feats.mean(0)) / feats.std(0)
    hits = 0
    for i in range(len(z)):   # leave-one-out nearest centroid
        rest = np.arange(len(z)) != i
        centroids = {n: z[rest & (names == n)].mean(0) for n in music.INSTRUMENTS}
        hits += min(centroids, key=lambda n: np.linalg.norm(z[i] - centroids[n])) == names[i]
    assert hits / len(z) >= 0.9


def test_chord_pitch_classes():
    data = items("chord_quality", 64)
    assert len({it.labels["chord"] for it in data}) == len(QUALITIES)
    for it in data:
        assert chord_intervals(it.audio) == QUALITIES[it.labels["chord"]], it.labels


def test_tempo_onsets_are_one_beat_apart():
    for it in items("tempo", 40):
        starts = np.array([s for s, _ in runs(it.audio)]) / SR
        assert len(starts) >= 4
        assert np.abs(np.diff(starts) - 60 / it.labels["tempo"]).max() < 0.010, it.labels


def test_meter_accents():
    data = items("meter", 40)
    assert {it.labels["meter"] for it in data} == set(PULSES_PER_BAR)
    for it in data:
        assert strong_spacing(it.audio) == {PULSES_PER_BAR[it.labels["meter"]]}, it.labels


def test_melody_notes_recovered():
    for it in items("melody", 40):
        notes = [midi(f0(it.audio[s:t])) for s, t in runs(it.audio)]
        assert notes == it.labels["notes"] and 3 <= len(notes) <= 8


def test_captions_are_filled_sentences():
    caps = [it.labels["caption"] for it in items("music_caption", 40)]
    assert len(set(caps)) > 30
    assert all(c[0].isupper() and "{" not in c and "}" not in c for c in caps)
    assert not any(f" a {v}" in c.lower() for c in caps for v in "aeiou")   # "an", not "a", before a vowel
    slots = dict.fromkeys(("accomp", "lead", "tempo", "mood", "register", "meter", "bpm"), "x")
    for templates in music.text()["captions"].values():   # every template fills from these slots
        assert all(t.format(**slots) for t in templates)


def test_qa_answers_match_the_audio():
    questions = yaml.safe_load((tags_dir() / "corpus" / "music.yaml").read_text())["questions"]
    kind_of = {q: k for k, qs in questions.items() for q in qs}
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight"]
    seen = set()
    for it in items("music_qa", 150):
        kind, answer, x = kind_of[it.labels["question"]], it.labels["answer"], it.audio
        seen.add(kind)
        notes = [midi(f0(x[s:t])) for s, t in runs(x)] if "beat" not in kind and "tempo" not in kind else []
        if kind == "count_notes":
            assert answer == words[len(notes)]
        elif kind in ("second_higher", "second_lower"):
            assert answer == ("yes" if (notes[1] > notes[0]) == (kind == "second_higher") else "no")
        elif kind == "direction":
            assert answer == ("up" if notes[-1] > notes[0] else "down")
        elif kind == "chord_mode":
            assert answer == {(0, 4, 7): "major", (0, 3, 7): "minor"}[chord_intervals(x)]
        elif kind == "register":
            assert answer == ("high" if notes[0] >= 79 else "low" if notes[0] <= 50 else None)
        elif kind == "tempo_feel":
            beat = np.median(np.diff([s for s, _ in runs(x)])) / SR
            assert answer == ("fast" if beat < 0.45 else "slow" if beat > 0.7 else None)
        elif kind == "beats_per_bar":
            assert {words.index(answer)} == strong_spacing(x)
        else:
            assert kind == "instrument" and answer in {"flute", "organ", "clarinet", "strings", "guitar",
                                                       "electric piano", "brass", "mallet"}
    assert seen == set(questions)


def test_generation_is_fast():
    t0 = time.perf_counter()
    n = 0
    for task in TASKS:
        n += len(items(task, 5, seed=7))
    assert (time.perf_counter() - t0) / n < 0.05
