"""Procedural sound corpus: every sound task's audio and labels from one composition.

A composition (`Mix`) is a scene background plus non-overlapping events at known frames; each
task reads its labels off the composition, so they are exact by construction. Choices:
- Events never overlap and are at least MIN_EVENT_GAP_S apart: every label span is recoverable
  from the energy envelope (overlap is left to the real datasets).
- Times live on the 10-ms frame grid of the time tokens: onsets are whole frames, event lengths
  whole frames (sound_events.finish), labels are frame / 100, exact to 0.01 s.
- Levels: an event's loudest frame is at gain GAIN_DB (0 dB = frame RMS 1), its quietest kept
  frame 15 dB lower; the background's loudest frame sits at the plan's bg_db. Tasks checked
  against timing (events, detection, grounding, AQA counts) keep it at -42 dB or lower, so a
  threshold 28 dB under the clip's loudest frame separates events from background; scene and
  caption clips let the scene be heard (-20 dB).
- Classes come uniformly for the event tasks (every class gets timing supervision) and from the
  scene's weights for scene, caption and AQA clips (a scene is also what is heard in it).
- Text (class phrases, caption and question templates, scenes) is data: tags/corpus/sound.yaml.
- `split` does not change the distribution: the corpus builder seeds `rng` per split.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import yaml

from ...paths import tags_dir
from .base import Item, generator
from .sound_events import FRAME, FRAMES_PER_S, MAX_INNER_GAP_S, synth_event, texture

MIN_EVENT_GAP_S = 0.6        # > 2 x MAX_INNER_GAP_S: bridging one event's inner gaps never merges two
EDGE_S = 0.1                 # silence before the first and after the last event
MIN_SECONDS, MAX_SECONDS = 1.0, 10.0
GAIN_DB = (-8.0, 0.0)        # an event's loudest frame; >= LOUD_DB reads "loud", <= QUIET_DB "quiet"
LOUD_DB, QUIET_DB = -2.0, -6.0
PEAK = (0.3, 0.9)            # the mixture is scaled to this peak: never clips, levels vary
COUNT_HEARD_P = 0.75         # count questions ask about a heard class, else an absent one (answer 0)
PRESENCE_YES_P = 0.5         # presence questions: balanced yes / no
GAP_FRAMES = round(MIN_EVENT_GAP_S * FRAMES_PER_S)
EDGE_FRAMES = round(EDGE_S * FRAMES_PER_S)
MIN_FRAMES, MAX_FRAMES = round(MIN_SECONDS * FRAMES_PER_S), round(MAX_SECONDS * FRAMES_PER_S)
assert MIN_EVENT_GAP_S > 2 * MAX_INNER_GAP_S

SOUND_TASKS = ("sound_event", "sound_tagging", "sound_event_detection", "acoustic_scene",
               "caption_clotho", "caption_audiocaps", "caption_plain", "sound_aqa", "audio_grounding")


@dataclass(frozen=True)
class Plan:
    events: tuple[int, int]       # events per clip, inclusive range
    seconds: tuple[float, float]  # clip length drawn before fitting the events (then >= their need)
    bg_db: float                  # the background's loudest frame re a 0-dB event
    scene_events: bool            # classes drawn from the scene's weights (else uniformly)


TIMED = Plan((1, 4), (4.0, 8.0), -45.0, False)
CAPTION = Plan((1, 3), (4.0, 8.0), -20.0, True)
PLANS = {
    "sound_event": Plan((1, 1), (1.0, 3.0), -45.0, False),
    "sound_tagging": Plan((1, 4), (3.0, 7.0), -30.0, False),
    "sound_event_detection": TIMED,
    "acoustic_scene": Plan((1, 3), (4.0, 8.0), -20.0, True),
    "caption_clotho": CAPTION, "caption_audiocaps": CAPTION, "caption_plain": CAPTION,
    "sound_aqa": Plan((2, 4), (4.0, 8.0), -42.0, True),
    "audio_grounding": Plan((2, 5), (4.0, 8.0), -45.0, False),
}


@dataclass(frozen=True)
class Event:
    cls: str
    start: float   # seconds, on the 0.01-s grid
    end: float
    gain_db: float


@dataclass(frozen=True)
class Mix:
    audio: np.ndarray
    scene: str
    events: tuple[Event, ...]

    def present(self) -> list[str]:
        return sorted({e.cls for e in self.events})


@functools.cache
def text() -> dict:
    return yaml.safe_load((tags_dir() / "corpus" / "sound.yaml").read_text(encoding="utf-8"))


def classes() -> tuple[str, ...]:
    return tuple(text()["classes"])


def scenes() -> tuple[str, ...]:
    return tuple(text()["scenes"])


# ---------------------------------------------------------------- composition
def draw_classes(rng: np.random.Generator, plan: Plan, scene: str) -> list[str]:
    k = int(rng.integers(plan.events[0], plan.events[1] + 1))
    if not plan.scene_events:
        return [str(c) for c in rng.choice(classes(), k)]
    weights = text()["scenes"][scene]["events"]
    p = np.array(list(weights.values()), float)
    return [str(c) for c in rng.choice(list(weights), k, p=p / p.sum())]


def _need(frames: list[int]) -> int:
    """Frames a clip needs for these events: the events, both edges, the gaps between."""
    return sum(frames) + 2 * EDGE_FRAMES + GAP_FRAMES * (len(frames) - 1)


def compose(rng: np.random.Generator, cls: list[str], plan: Plan, scene: str) -> Mix:
    """Synthesize the events, place them with random gaps, add the scene background.

    Events that do not fit MAX_SECONDS are dropped from the end; the first two always fit
    (the longest recipe is 3 s: 2 x 3 + 0.6 + 2 x 0.1 < 10)."""
    bufs = [synth_event(c, rng) for c in cls]
    frames = [len(b) // FRAME for b in bufs]
    while len(frames) > 1 and _need(frames) > MAX_FRAMES:
        bufs.pop(), frames.pop()
    need = _need(frames)
    total = min(max(need, MIN_FRAMES, round(rng.uniform(*plan.seconds) * FRAMES_PER_S)), MAX_FRAMES)
    slack = rng.multinomial(total - need, np.full(len(frames) + 1, 1 / (len(frames) + 1)))
    gains = rng.uniform(*GAIN_DB, len(frames))
    audio = texture(total * FRAME, rng, text()["scenes"][scene]["texture"])
    audio *= np.float32(10 ** (plan.bg_db / 20))
    events, pos = [], EDGE_FRAMES + slack[0]
    for i, (buf, n) in enumerate(zip(bufs, frames)):
        audio[pos * FRAME:(pos + n) * FRAME] += np.float32(10 ** (gains[i] / 20)) * buf
        events.append(Event(cls[i], float(round(pos / FRAMES_PER_S, 2)),
                            float(round((pos + n) / FRAMES_PER_S, 2)), float(gains[i])))
        pos += n + GAP_FRAMES + slack[i + 1]
    audio *= np.float32(rng.uniform(*PEAK) / np.abs(audio).max())
    return Mix(audio.astype(np.float32), scene, tuple(events))


# ---------------------------------------------------------------- captions
def runs(events) -> list[tuple[str, int, float, bool]]:
    """Consecutive same-class events as (class, count, mean gain dB, heard before)."""
    out, seen = [], set()
    for e in events:
        if out and out[-1][0] == e.cls:
            c, k, g, again = out[-1]
            out[-1] = (c, k + 1, (g * k + e.gain_db) / (k + 1), again)
        else:
            out.append((e.cls, 1, e.gain_db, e.cls in seen))
        seen.add(e.cls)
    return out


def _loudness(gain_db: float) -> str | None:
    return "loud" if gain_db >= LOUD_DB else "quiet" if gain_db <= QUIET_DB else None


def _phrase(rng, head: str, count: int, gain_db: float, again: bool) -> str:
    """head + loudness adverb + count + 'again', as the composition says."""
    t, level = text(), _loudness(gain_db)
    words = [head]
    if level:
        words.append(str(rng.choice(t["loudness"]["adverb"][level])))
    if count > 1:
        words.append(t["counts"][min(count, max(t["counts"]))])
    if again:
        words.append(t["again"])
    return " ".join(words)


def _join(rng, parts: list[str], joiners: list[str]) -> str:
    """Join clauses, never the same joiner twice in a row ('x before y before z' reads badly)."""
    out, last = parts[0], None
    for p in parts[1:]:
        last = str(rng.choice([j for j in joiners if j != last]))
        out += last + p
    return out


def _sentence(template: str, capital: bool, **fields) -> str:
    s = template.format(**fields)
    return s[0].upper() + s[1:] if capital else s


def caption(rng: np.random.Generator, mix: Mix, style: str) -> str:
    """A caption of `mix` in style clotho (one sentence), audiocaps (short) or plain (a list)."""
    t, scene = text(), text()["scenes"][mix.scene]
    fields = dict(place=str(rng.choice(scene["place"])), bg=str(rng.choice(scene["bg"])),
                  bg_noun=str(rng.choice(scene["bg_noun"])), scene=mix.scene)
    parts = []
    for cls, count, gain, again in runs(mix.events):
        c = t["classes"][cls]
        if style == "clotho":
            head = f"{rng.choice(c['subjects'])} {rng.choice(c['verbs'])}"
            parts.append(_phrase(rng, head, count, gain, again))
        elif style == "audiocaps":
            parts.append(_phrase(rng, str(rng.choice(c["ing"])), count, gain, again))
        else:
            level = _loudness(gain)
            name = f"{rng.choice(t['loudness']['adjective'][level])} {c['name']}" if level else c["name"]
            parts.append(t["plain"]["count"].format(name=name, n=count) if count > 1 else name)
    style_t = t[style]
    events = t["plain"]["join"].join(parts) if style == "plain" else _join(rng, parts, style_t["joiners"])
    return _sentence(str(rng.choice(style_t["sentence"])), style != "plain", events=events, **fields)


# ---------------------------------------------------------------- questions and queries
def question(rng: np.random.Generator, mix: Mix) -> tuple[str, str]:
    """A (question, answer) about `mix`: a count, an order, a presence or the scene."""
    q, t = text()["questions"], text()
    present = mix.present()
    kinds = {k: w for k, w in q["kinds"].items() if k != "order" or len(present) >= 2}
    p = np.array(list(kinds.values()), float)
    kind = str(rng.choice(list(kinds), p=p / p.sum()))
    absent = [c for c in classes() if c not in present]
    if kind == "count":
        cls = str(rng.choice(present if rng.random() < COUNT_HEARD_P or not absent else absent))
        n = sum(e.cls == cls for e in mix.events)
        return str(rng.choice(t["classes"][cls]["count_q"])), str(n)
    if kind == "order":
        x, y = (str(c) for c in rng.choice(present, 2, replace=False))
        first = next(e.cls for e in mix.events if e.cls in (x, y))
        name = {c: t["classes"][c]["name"] for c in (x, y)}
        return str(rng.choice(q["order"])).format(x=name[x], y=name[y]), name[first]
    if kind == "presence":
        yes = rng.random() < PRESENCE_YES_P or not absent
        cls = str(rng.choice(present if yes else absent))
        answer = q["answers"]["yes" if yes else "no"]
        return str(rng.choice(q["presence"])).format(a=t["classes"][cls]["a"]), answer
    return str(rng.choice(q["scene"])), mix.scene


def query(rng: np.random.Generator, cls: str) -> str:
    """A grounding query for a class: one subject + one verb, 'a bell rings'."""
    c = text()["classes"][cls]
    return f"{rng.choice(c['subjects'])} {rng.choice(c['verbs'])}"


# ---------------------------------------------------------------- the generator
def _grounding_classes(rng: np.random.Generator, plan: Plan) -> tuple[str, list[str]]:
    """The queried class (1-3 occurrences) and distractors of other classes, shuffled; one
    occurrence among the first two, which compose always keeps."""
    target = str(rng.choice(classes()))
    others = [c for c in classes() if c != target]
    k = int(rng.integers(plan.events[0], plan.events[1] + 1))
    hits = int(rng.integers(1, min(3, k) + 1))
    cls = [target] * hits + [str(c) for c in rng.choice(others, k - hits)]
    cls = [cls[i] for i in rng.permutation(len(cls))]
    if target not in cls[:2]:
        i = cls.index(target)
        cls[0], cls[i] = cls[i], cls[0]
    return target, cls


@generator(*SOUND_TASKS)
def make(task: str, index: int, rng: np.random.Generator, split: str) -> Item:
    """One sample of a sound task (index and split only name it: rng carries the randomness)."""
    plan = PLANS[task]
    scene = str(rng.choice(scenes()))
    target = None
    if task == "audio_grounding":
        target, cls = _grounding_classes(rng, plan)
    else:
        cls = draw_classes(rng, plan, scene)
    mix = compose(rng, cls, plan, scene)
    events = mix.events
    if task == "sound_event":
        labels = {"label": events[0].cls}
    elif task == "sound_tagging":
        labels = {"labels": [c for c in classes() if c in mix.present()]}
    elif task == "sound_event_detection":
        labels = {"events": [[e.cls, e.start, e.end] for e in events]}
    elif task == "acoustic_scene":
        labels = {"scene": scene}
    elif task.startswith("caption_"):
        labels = {"caption": caption(rng, mix, task.removeprefix("caption_"))}
    elif task == "sound_aqa":
        q, a = question(rng, mix)
        labels = {"question": q, "answer": a}
    else:
        labels = {"query": query(rng, target), "spans": [[e.start, e.end] for e in events if e.cls == target]}
    return Item(task=task, audio=mix.audio, labels=labels)
