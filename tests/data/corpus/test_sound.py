"""The procedural sound corpus, checked against the signal it generates.

The labels are read back from the audio with tools that know nothing of the recipes: an RMS
envelope (10-ms frames, a threshold under the clip's loudest frame, short gaps bridged) finds the
events, and a nearest-centroid classifier on the mean log-band spectrum, trained on sound_event
items, names them. Detection, grounding and AQA labels must agree with what these find.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from qwen_audio_mt.data.corpus.base import GENERATORS, Item
from qwen_audio_mt.data.corpus.sound import MIN_EVENT_GAP_S, SOUND_TASKS, Event, Mix, caption, make, text
from qwen_audio_mt.data.corpus.sound_events import MAX_INNER_GAP_S
from qwen_audio_mt.tasks import load_tasks

SR = 16_000
FRAME = 160                     # 10 ms
THRESHOLD_DB = -28.0            # re the clip's loudest frame: events above, background below
BRIDGE_S = (MAX_INNER_GAP_S + MIN_EVENT_GAP_S) / 2  # joins one event's pieces, never two events
TOLERANCE_S = 0.03
N_FFT, HOP = 512, 256
BAND_EDGES = np.geomspace(40, 8000, 41)  # 40 log-spaced bands
FLOOR_DB = 30.0                 # bands further under the loudest band are floored: background, not event
EXPECTED_FIELDS = {
    "sound_event": {"label"}, "sound_tagging": {"labels"}, "sound_event_detection": {"events"},
    "acoustic_scene": {"scene"}, "caption_clotho": {"caption"}, "caption_audiocaps": {"caption"},
    "caption_plain": {"caption"}, "sound_aqa": {"question", "answer"}, "audio_grounding": {"query", "spans"},
}


def items(task: str, n: int, seed: int = 0) -> list[Item]:
    return [make(task, i, np.random.default_rng([seed, i]), "train") for i in range(n)]


def frame_db(audio: np.ndarray) -> np.ndarray:
    n = len(audio) // FRAME * FRAME
    rms = np.sqrt(np.mean(audio[:n].astype(np.float64).reshape(-1, FRAME) ** 2, axis=1)) + 1e-12
    return 20 * np.log10(rms / rms.max())


def segments(audio: np.ndarray) -> list[tuple[float, float]]:
    """(onset, offset) seconds of the loud stretches, gaps up to BRIDGE_S bridged."""
    active = np.flatnonzero(frame_db(audio) > THRESHOLD_DB)
    out: list[list[int]] = []
    for f in active:
        if out and f - out[-1][1] <= BRIDGE_S * 100:
            out[-1][1] = f + 1
        else:
            out.append([f, f + 1])
    return [(a / 100, b / 100) for a, b in out]


def band_spectrum(audio: np.ndarray, seg: tuple[float, float]) -> np.ndarray:
    """Log of the mean power in 40 log-spaced bands over a segment, floored, level removed."""
    x = audio[int(seg[0] * SR):int(seg[1] * SR)].astype(np.float64)
    x = np.pad(x, (0, max(0, N_FFT - len(x))))
    frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT)[::HOP] * np.hanning(N_FFT)
    power = (np.abs(np.fft.rfft(frames, axis=1)) ** 2).mean(axis=0)
    band = np.digitize(np.fft.rfftfreq(N_FFT, 1 / SR), BAND_EDGES)
    pooled = np.array([power[band == b].sum() for b in range(1, len(BAND_EDGES))])
    logp = np.maximum(np.log10(pooled + 1e-20), np.log10(pooled.max()) - FLOOR_DB / 10)
    return logp - logp.mean()


class Centroids:
    def __init__(self, feats: list[np.ndarray], labels: list[str]):
        self.names = sorted(set(labels))
        self.c = np.stack([np.mean([f for f, y in zip(feats, labels) if y == n], axis=0) for n in self.names])

    def __call__(self, feat: np.ndarray) -> str:
        return self.names[int(np.argmin(((self.c - feat) ** 2).sum(axis=1)))]


def single_event_feature(item: Item) -> np.ndarray:
    segs = segments(item.audio)
    assert len(segs) == 1, f"{item.labels}: expected one event, found {segs}"
    return band_spectrum(item.audio, segs[0])


@pytest.fixture(scope="module")
def classifier() -> Centroids:
    train = items("sound_event", 240, seed=1)
    return Centroids([single_event_feature(it) for it in train], [it.labels["label"] for it in train])


def named_segments(item: Item, clf: Centroids) -> list[tuple[str, float, float]]:
    return [(clf(band_spectrum(item.audio, s)), *s) for s in segments(item.audio)]


# ---------------------------------------------------------------- registry and text data
def test_generators_cover_the_sound_tasks_and_label_sets():
    reg = load_tasks()
    assert set(SOUND_TASKS) <= {t.name for t in reg.by_domain("sound")}
    assert all(GENERATORS[t] is make for t in SOUND_TASKS)
    assert tuple(text()["classes"]) == tuple(reg.get("sound_event").target.labels)
    assert set(text()["scenes"]) == set(reg.get("acoustic_scene").target.labels)
    for scene in text()["scenes"].values():
        assert set(scene["events"]) <= set(text()["classes"]) and scene["place"] and scene["bg"]
    for cls in text()["classes"].values():
        assert all(cls[k] for k in ("name", "a", "subjects", "verbs", "ing", "count_q"))


# ---------------------------------------------------------------- every task
@pytest.mark.parametrize("task", SOUND_TASKS)
def test_items_render_with_bounded_audio(task, renderer):
    for it in items(task, 12, seed=2):
        assert it.task == task and it.audio_lang == "unknown"
        assert it.audio.dtype == np.float32 and it.audio.ndim == 1 and np.isfinite(it.audio).all()
        assert 1.0 <= len(it.audio) / SR <= 10.0
        assert 0.1 < np.abs(it.audio).max() <= 1.0
        assert set(it.labels) == EXPECTED_FIELDS[task]
        json.dumps(it.labels)  # plain Python values: they go into shard JSON as they are
        ids, mask = renderer.render({"task": task, "duration": len(it.audio) / SR, **it.labels})
        assert sum(mask) >= 2  # a target and the end token


def test_deterministic_in_rng():
    for task in SOUND_TASKS:
        a, b = (make(task, 3, np.random.default_rng(7), "valid") for _ in range(2))
        c = make(task, 3, np.random.default_rng(8), "valid")
        assert np.array_equal(a.audio, b.audio) and a.labels == b.labels
        assert not np.array_equal(a.audio, c.audio)


# ---------------------------------------------------------------- labels against the signal
def test_event_times_match_the_energy_envelope():
    for it in items("sound_event_detection", 40, seed=3):
        found = segments(it.audio)
        labelled = sorted((s, e) for _, s, e in it.labels["events"])
        assert len(found) == len(labelled), (it.labels, found)
        for (s, e), (fs, fe) in zip(labelled, found):
            assert abs(s - fs) <= TOLERANCE_S and abs(e - fe) <= TOLERANCE_S, (it.labels, found)
        assert all(round(t * 100) == pytest.approx(t * 100, abs=1e-6) for _, s, e in it.labels["events"]
                   for t in (s, e))


def test_classes_are_distinguishable(classifier):
    test = items("sound_event", 120, seed=4)
    hits = [classifier(single_event_feature(it)) == it.labels["label"] for it in test]
    assert np.mean(hits) >= 0.9
    assert set(it.labels["label"] for it in test) == set(classifier.names)


def test_grounding_spans_hold_the_queried_sound(classifier):
    owners = {f"{s} {v}": c for c, d in text()["classes"].items() for s in d["subjects"] for v in d["verbs"]}
    named = agree = 0
    for it in items("audio_grounding", 30, seed=5):
        found = named_segments(it, classifier)
        spans = it.labels["spans"]
        in_span = [any(abs(fs - s) <= TOLERANCE_S and abs(fe - e) <= TOLERANCE_S for s, e in spans)
                   for _, fs, fe in found]
        assert sum(in_span) == len(spans), (it.labels, found)  # every span is one loud stretch
        db = frame_db(it.audio)
        quiet = np.ones(len(db), bool)
        for _, fs, fe in found:
            quiet[round(fs * 100):round(fe * 100)] = False
        span_peak = max(db[round(s * 100):round(e * 100)].max() for s, e in spans)
        assert db[quiet].max() <= span_peak - 25, "outside the events the clip must be quiet"
        # the queried class is what the classifier hears in the spans, and only there
        target = owners[it.labels["query"]]
        named += len(found)
        agree += sum((c == target) == inside for (c, _, _), inside in zip(found, in_span))
    assert agree / named >= 0.9


def test_aqa_answers_match_the_signal(classifier):
    names = {d["name"]: c for c, d in text()["classes"].items()}
    count_q = {q: c for c, d in text()["classes"].items() for q in d["count_q"]}
    checked = agree = 0
    for it in items("sound_aqa", 60, seed=6):
        q, a = it.labels["question"], it.labels["answer"]
        heard = [c for c, _, _ in named_segments(it, classifier)]
        if q in count_q:
            expected = str(heard.count(count_q[q]))
        elif a in names:  # order: the first heard of the two named classes
            pair = [c for n, c in names.items() if f"the {n} or" in q or f"or the {n}?" in q]
            assert len(pair) == 2, q
            expected = next((text()["classes"][c]["name"] for c in heard if c in pair), None)
        elif a in ("yes", "no"):
            cls = max((c for c, d in text()["classes"].items() if f" {d['a']}" in q),
                      key=lambda c: len(text()["classes"][c]["a"]))
            expected = "yes" if cls in heard else "no"
        else:
            assert a in text()["scenes"]
            continue
        checked += 1
        agree += expected == a
    assert checked >= 40 and agree / checked >= 0.9


# ---------------------------------------------------------------- captions
def composition(*events: tuple[str, float]) -> Mix:
    """A hand-made composition: (class, gain dB) per event, one second apart."""
    return Mix(np.zeros(SR, np.float32), "street",
               tuple(Event(c, i + 0.1, i + 0.5, g) for i, (c, g) in enumerate(events)))


def test_captions_describe_the_composition():
    mix = composition(("bell", -4.0), ("bell", -4.0), ("siren", 0.0), ("bell", -7.0))
    rng = np.random.default_rng(0)
    t = text()
    for _ in range(20):
        plain = caption(rng, mix, "plain")
        assert "bell x2, " in plain and "siren" in plain  # order and counts, as listed
        assert plain.index("bell x2") < plain.index("siren") < plain.rindex("bell")
        assert any(f"{adj} siren" in plain for adj in t["loudness"]["adjective"]["loud"])
        clotho = caption(rng, mix, "clotho")
        assert clotho[0].isupper() and clotho.endswith(".") and clotho.count(".") == 1
        assert t["counts"][2] in clotho and t["again"] in clotho
        assert any(a in clotho for a in t["loudness"]["adverb"]["loud"])
        assert any(p in clotho.lower() for p in t["scenes"]["street"]["place"])
        short = caption(rng, mix, "audiocaps")
        assert t["counts"][2] in short and len(short) < len(clotho) + 40


def test_captions_follow_their_styles():
    clotho = [i.labels["caption"] for i in items("caption_clotho", 20, seed=7)]
    audiocaps = [i.labels["caption"] for i in items("caption_audiocaps", 20, seed=7)]
    assert all(c[0].isupper() and c.endswith(".") and c.count(".") == 1 for c in clotho)
    assert np.mean([len(c.split()) for c in audiocaps]) < np.mean([len(c.split()) for c in clotho])
