"""espeak-ng speech generators of the embedded corpus (17 speech tasks; FSDD tasks live elsewhere).

Choices:
- Voices: each language's espeak voice (tags/languages.yaml) with one of the eight espeak variants
  m1..m4 / f1..f4 (tasks.yaml `voices`); the variant is the speaker, its letter the gender.
- Languages: ASR, translation, language ID, gender, speaker and rate cover Qwen-Audio's eight
  (Mandarin spoken through the pinyin voice and labelled with the pinyin it said; Japanese in
  kana); ITN sentences are English (numbers as words for `text`, digits for `text_itn`); word
  timestamps, overlap and diarization use the five space-separated languages (en de es fr it);
  emotion, vocal sounds, keywords, NER, commands and QA are English.
- Timed labels (word_timestamps, diarization, overlapped_asr) are built by laying out separately
  synthesised, silence-trimmed segments on a silent timeline: segment starts snap to the 10-ms
  time-token grid (exact), ends are rounded to it (within 5 ms). Word gaps are either short
  (< 0.10 s, one boundary token) or long (>= 0.15 s, a <|sil|> segment), never near the threshold.
- Emotion classes are synthetic prosody styles (pitch, pitch range, speed, loudness), and vocal
  sounds are espeak caricatures of the real sounds (tags/corpus/speech.yaml): both are labelled
  by construction, neither is acted or recorded emotion.
- A missing espeak-ng surfaces as SourceMissing from the first synthesis call of any generator
  (espeak.synth looks the executable up before it consults its cache).
- Randomness: the caller's Generator is mixed with (task, split, index), so train/valid/test
  differ even when a caller seeds every split alike; each clip gets random silence around it and
  a random peak level, except emotion, whose loudness is part of the class (fixed gain).
"""
from __future__ import annotations

import zlib
from functools import lru_cache

import numpy as np
import yaml

from ...audio import SAMPLE_RATE
from ...paths import tags_dir
from ...tasks import load_tasks
from . import speech_texts as tx
from .base import SPLITS, Item, generator
from .espeak import EspeakError, Prosody, synth, trim

MIN_S, MAX_S = 0.5, 12.0            # clip duration bounds of the corpus
GRID = SAMPLE_RATE // 100           # 160 samples = one 0.01-s time-token step
LEAD_S = (0.05, 0.35)               # silence before the speech (>= 0.10 gives a leading <|sil|>)
TAIL_S = (0.05, 0.30)               # silence after it
PEAK = (0.3, 0.9)                   # random peak level of a clip
SPEED_WPM = (150, 190)              # speaking speed of the tasks that are not about speed
PITCH = (42, 58)                    # espeak -p around its default 50, outside the speaker tasks
RATE_WPM = {"slow": 120, "normal": 170, "fast": 230}
RATE_JITTER = 8                     # +-wpm; neighbouring classes stay >= 34 wpm apart
EMOTIONS = {                        # synthetic prosody classes: pitch, range, speed, loudness
    "neutral": Prosody(speed=165, pitch=50, amplitude=100, pitch_range="medium"),
    "happy": Prosody(speed=195, pitch=70, amplitude=120, pitch_range="x-high"),
    "sad": Prosody(speed=120, pitch=30, amplitude=60, pitch_range="x-low"),
    "angry": Prosody(speed=215, pitch=45, amplitude=150, pitch_range="high"),
}
EMOTION_GAIN = 0.6                  # fixed: espeak -a 150 peaks near 1.0 -> 0.6, -a 60 -> ~0.25
MIN_SILENCE_S = 0.10                # tokens.yaml timestamps.min_silence_s: a gap this long is <|sil|>
LABEL_SLACK_S = 0.015               # a labelled gap = drawn gap + <= 0.01 grid snap +- 0.005 rounding
SHORT_GAP_S = (0.02, MIN_SILENCE_S - LABEL_SLACK_S - 0.025)   # (0.02, 0.06): one boundary token
LONG_GAP_S = (MIN_SILENCE_S + 0.05, MIN_SILENCE_S + 0.25)     # (0.15, 0.35): a <|sil|> segment
P_LONG_GAP = 0.3
TURN_GAP_S = (0.15, 0.6)            # silence between diarization turns
OVERLAP_AT = (0.3, 0.7)             # the second talker starts at this fraction of the first's speech
TIMED_LANGS = ("en", "en", "en", "de", "es", "fr", "it")   # en weighted 3/7
P_NUMBER = {"asr": 0.3, "asr_itn": 0.7}                    # share of English number sentences
# Word timestamps say each word separately; a word costs one espeak call (~15 ms) the first time
# and nothing after (cache). ~520 word types x 4 variants x 2 speeds ~ 4,200 keys ~ the word cache.
WORD_VARIANTS = ("m1", "m3", "f2", "f4")
WORD_SPEEDS = (155, 185)


# ---------------------------------------------------------------- registry, voices, randomness
@lru_cache(maxsize=None)
def labels_of(task: str) -> tuple[str, ...]:
    return load_tasks().get(task).target.labels


@lru_cache(maxsize=1)
def espeak_voices() -> dict[str, str]:
    """Language code -> espeak-ng voice, from tags/languages.yaml."""
    spec = yaml.safe_load((tags_dir() / "languages.yaml").read_text(encoding="utf-8"))
    return {x["code"]: x["espeak"] for x in spec["languages"] if x.get("espeak")}


def voice(lang: str, variant: str) -> str:
    return f"{espeak_voices()[lang]}+{variant}"


def gender_of(variant: str) -> str:
    return "female" if variant.startswith("f") else "male"


def item_rng(rng: np.random.Generator, task: str, index: int, split: str) -> np.random.Generator:
    """The caller's stream mixed with (task, split, index): splits never repeat each other."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    seed = [int(rng.integers(2**63)), zlib.crc32(task.encode()), SPLITS.index(split), int(index)]
    return np.random.default_rng(seed)


def casual(r: np.random.Generator) -> Prosody:
    """Everyday prosody for tasks that are not about speed, pitch or emotion."""
    return Prosody(speed=int(r.integers(*SPEED_WPM)), pitch=int(r.integers(*PITCH)))


# ---------------------------------------------------------------- audio assembly
def speak(text: str, lang: str, variant: str, prosody: Prosody = Prosody(),
          short: bool = False) -> np.ndarray:
    """Silence-trimmed speech of `text` (a writable copy)."""
    return speak_as(text, voice(lang, variant), prosody, short)


def speak_as(text: str, espeak_voice: str, prosody: Prosody = Prosody(), short: bool = False) -> np.ndarray:
    """`speak` with a whole espeak voice name ('en-gb-scotland+m3')."""
    x = trim(synth(text, espeak_voice, prosody, short=short))
    if x.size == 0:
        raise EspeakError(f"espeak-ng gave only silence for {text!r} (voice {espeak_voice})")
    return x.copy()


def snap(n_samples: float) -> int:
    """Up to the next 10-ms grid point, so a start time is exactly a time token."""
    return int(-(-round(n_samples) // GRID) * GRID)


def lay(segments: list[np.ndarray], starts: list[int]) -> np.ndarray:
    """Mix segments into one silent timeline at the given start samples (overlap allowed)."""
    out = np.zeros(max(s + len(x) for x, s in zip(segments, starts)), np.float32)
    for x, s in zip(segments, starts):
        out[s:s + len(x)] += x
    return out


def sequential_starts(lengths: list[int], gaps_s: list[float], lead_s: float) -> list[int]:
    """Start samples of segments laid one after another with the given silences between them."""
    starts, cursor = [], lead_s * SAMPLE_RATE
    for i, n in enumerate(lengths):
        start = snap(cursor + (gaps_s[i - 1] * SAMPLE_RATE if i else 0))
        starts.append(start)
        cursor = start + n
    return starts


def span_s(start: int, length: int) -> tuple[float, float]:
    return round(start / SAMPLE_RATE, 2), round((start + length) / SAMPLE_RATE, 2)


def finish(x: np.ndarray, r: np.random.Generator, gain: float | None = None) -> np.ndarray:
    """Add tail silence (and pad to MIN_S), then scale to a random peak (or by a fixed gain)."""
    tail = snap(r.uniform(*TAIL_S) * SAMPLE_RATE)
    n = max(len(x) + tail, snap(MIN_S * SAMPLE_RATE))
    out = np.zeros(n, np.float32)
    out[:len(x)] = x
    peak = float(np.max(np.abs(out)))
    scale = r.uniform(*PEAK) / peak if gain is None else min(gain, 1.0 / peak)
    out *= np.float32(scale)
    if len(out) > MAX_S * SAMPLE_RATE:
        raise RuntimeError(f"clip of {len(out) / SAMPLE_RATE:.2f} s exceeds {MAX_S} s")
    return out


def clip(x: np.ndarray, r: np.random.Generator, gain: float | None = None) -> np.ndarray:
    """One utterance with random leading silence, finished."""
    return finish(lay([x], [snap(r.uniform(*LEAD_S) * SAMPLE_RATE)]), r, gain)


def utterance(text: str, lang: str, r: np.random.Generator, variant: str | None = None,
              prosody: Prosody | None = None) -> np.ndarray:
    variant = variant or tx.pick(r, labels_of("speaker_id"))
    return clip(speak(text, lang, variant, prosody or casual(r)), r)


# ---------------------------------------------------------------- transcription tasks
@generator("asr", "asr_itn")
def make_transcript(task: str, index: int, rng: np.random.Generator, split: str) -> Item:
    r = item_rng(rng, task, index, split)
    if r.random() < P_NUMBER[task]:
        lang, (text, text_itn) = "en", tx.number_sentence(r)
    else:
        lang = tx.pick(r, labels_of("language_id"))
        text = text_itn = tx.sentence(lang, r)
    return Item(task, utterance(text, lang, r), {"text": text, "text_itn": text_itn}, audio_lang=lang)


@generator("speech_translation")
def make_translation(task: str, index: int, rng: np.random.Generator, split: str) -> Item:
    r = item_rng(rng, task, index, split)
    other = tx.pick(r, [x for x in labels_of("language_id") if x != "en"])
    src, tgt = ("en", other) if r.random() < 0.5 else (other, "en")
    spoken, written = tx.translation_pair(src, tgt, r)
    return Item(task, utterance(spoken, src, r), {"translation": written}, audio_lang=src, text_lang=tgt)


@generator("language_id")
def make_language_id(task: str, index: int, rng: np.random.Generator, split: str) -> Item:
    r = item_rng(rng, task, index, split)
    lang = tx.pick(r, labels_of("language_id"))
    return Item(task, utterance(tx.sentence(lang, r), lang, r), {"audio_lang": lang}, audio_lang=lang)


def word_gaps(n: int, r: np.random.Generator) -> list[float]:
    return [float(r.uniform(*(LONG_GAP_S if r.random() < P_LONG_GAP else SHORT_GAP_S)))
            for _ in range(n)]


@generator("word_timestamps")
def make_word_timestamps(task: str, index: int, rng: np.random.Generator, split: str) -> Item:
    """Words spoken one by one (cached per voice, word, speed) and laid out with known gaps."""
    r = item_rng(rng, task, index, split)
    lang = tx.pick(r, TIMED_LANGS)
    text = tx.number_sentence(r)[0] if lang == "en" and r.random() < 0.4 else tx.sentence(lang, r)
    variant, prosody = tx.pick(r, WORD_VARIANTS), Prosody(speed=tx.pick(r, WORD_SPEEDS))
    ws = tx.words(text)
    segs = [speak(w, lang, variant, prosody, short=True) for w in ws]
    starts = sequential_starts([len(s) for s in segs], word_gaps(len(ws) - 1, r), r.uniform(*LEAD_S))
    spans = [span_s(s, len(x)) for s, x in zip(starts, segs)]
    labels = {"words": [[w, a, b] for w, (a, b) in zip(ws, spans)]}
    return Item(task, finish(lay(segs, starts), r), labels, audio_lang=lang)


# ---------------------------------------------------------------- speaker and paralinguistics
@generator("gender", "speaker_id")
def make_speaker(task: str, index: int, rng: np.random.Generator, split: str) -> Item:
    r = item_rng(rng, task, index, split)
    lang = tx.pick(r, labels_of("language_id"))
    variant = tx.pick(r, labels_of("speaker_id"))
    prosody = Prosody(speed=int(r.integers(*SPEED_WPM)))  # default pitch: the variant is the voice
    audio = utterance(tx.sentence(lang, r), lang, r, variant, prosody)
    labels = {"gender": gender_of(variant)} if task == "gender" else {"speaker": variant}
    return Item(task, audio, labels, audio_lang=lang)


def rate_prosody(rate: str, jitter: int = 0) -> Prosody:
    return Prosody(speed=RATE_WPM[rate] + jitter)


@generator("speaking_rate")
def make_speaking_rate(task: str, index: int, rng: np.random.Generator, split: str) -> Item:
    r = item_rng(rng, task, index, split)
    lang = tx.pick(r, labels_of("language_id"))
    rate = tx.pick(r, labels_of(task))
    prosody = rate_prosody(rate, int(r.integers(-RATE_JITTER, RATE_JITTER + 1)))
    return Item(task, utterance(tx.sentence(lang, r), lang, r, prosody=prosody), {"rate": rate},
                audio_lang=lang)


@generator("emotion")
def make_emotion(task: str, index: int, rng: np.random.Generator, split: str) -> Item:
    r = item_rng(rng, task, index, split)
    emotion = tx.pick(r, labels_of(task))
    style = EMOTIONS[emotion]
    prosody = Prosody(speed=style.speed + int(r.integers(-10, 11)),
                      pitch=style.pitch + int(r.integers(-5, 6)),
                      amplitude=style.amplitude, pitch_range=style.pitch_range)
    x = speak(tx.sentence("en", r), "en", tx.pick(r, labels_of("speaker_id")), prosody)
    return Item(task, clip(x, r, gain=EMOTION_GAIN), {"emotion": emotion}, audio_lang="en")


def vocalisation(recipe: dict, variant: str) -> np.ndarray:
    """A vocal-sound recipe of speech.yaml spoken by one variant; `notes` sing it once per pitch."""
    speed, amplitude = int(recipe.get("speed", 170)), int(recipe.get("amplitude", 100))
    pitches = recipe.get("notes") or [recipe.get("pitch", 50)]
    notes = [speak(recipe["text"], "en", variant, Prosody(speed, int(p), amplitude), short=True)
             for p in pitches]
    return np.concatenate(notes)


@generator("vocal_sound")
def make_vocal_sound(task: str, index: int, rng: np.random.Generator, split: str) -> Item:
    r = item_rng(rng, task, index, split)
    label = tx.pick(r, labels_of(task))
    x = vocalisation(tx.vocal_recipe(label, r), tx.pick(r, labels_of("speaker_id")))
    return Item(task, clip(x, r), {"label": label}, audio_lang="unknown")


# ---------------------------------------------------------------- understanding
@generator("keyword_spotting")
def make_keyword(task: str, index: int, rng: np.random.Generator, split: str) -> Item:
    r = item_rng(rng, task, index, split)
    keyword = tx.pick(r, labels_of(task))
    audio = utterance(tx.keyword_phrase(keyword, r), "en", r)
    return Item(task, audio, {"keyword": keyword}, audio_lang="en")


@generator("named_entity_recognition")
def make_ner(task: str, index: int, rng: np.random.Generator, split: str) -> Item:
    r = item_rng(rng, task, index, split)
    text, entities = tx.ner_sentence(r)
    return Item(task, utterance(text, "en", r), {"text": text, "entities": entities}, audio_lang="en")


@generator("intent", "slot_filling")
def make_command(task: str, index: int, rng: np.random.Generator, split: str) -> Item:
    r = item_rng(rng, task, index, split)
    intent, text, slots = tx.command(r)
    labels = {"intent": intent} if task == "intent" else {"slots": slots}
    return Item(task, utterance(text, "en", r), labels, audio_lang="en")


@generator("speech_qa")
def make_speech_qa(task: str, index: int, rng: np.random.Generator, split: str) -> Item:
    r = item_rng(rng, task, index, split)
    fact, question, answer = tx.qa_item(r)
    return Item(task, utterance(fact, "en", r), {"question": question, "answer": answer}, audio_lang="en")


# ---------------------------------------------------------------- several talkers
def distinct_sentences(lang: str, r: np.random.Generator, k: int) -> list[str]:
    pool = list(dict.fromkeys(tx.sentence_pool(lang)))
    return [pool[i] for i in r.choice(len(pool), size=k, replace=False)]


def overlapped(task: str, index: int, rng: np.random.Generator, split: str) -> tuple[Item, list]:
    """The overlapped_asr item and its talkers as [[variant, start_s, end_s], ...] in onset order."""
    r = item_rng(rng, task, index, split)
    lang = tx.pick(r, TIMED_LANGS)
    texts = distinct_sentences(lang, r, 2)
    males = [v for v in labels_of("speaker_id") if gender_of(v) == "male"]
    females = [v for v in labels_of("speaker_id") if gender_of(v) == "female"]
    variants = [tx.pick(r, males), tx.pick(r, females)]
    if r.random() < 0.5:
        variants.reverse()
    segs = [speak(t, lang, v, casual(r)) for t, v in zip(texts, variants)]
    segs[1] *= np.float32(10 ** (r.uniform(-3, 3) / 20))  # +-3 dB between the talkers
    lead = snap(r.uniform(*LEAD_S) * SAMPLE_RATE)
    starts = [lead, snap(lead + r.uniform(*OVERLAP_AT) * len(segs[0]))]
    talkers = [[v, *span_s(s, len(x))] for v, s, x in zip(variants, starts, segs)]
    item = Item(task, finish(lay(segs, starts), r), {"texts": list(texts)}, audio_lang=lang)
    return item, talkers


@generator("overlapped_asr")
def make_overlapped(task: str, index: int, rng: np.random.Generator, split: str) -> Item:
    return overlapped(task, index, rng, split)[0]


@generator("diarization")
def make_diarization(task: str, index: int, rng: np.random.Generator, split: str) -> Item:
    """2-3 turns of two voices (A B or A B A) with silences between them."""
    r = item_rng(rng, task, index, split)
    lang = tx.pick(r, TIMED_LANGS)
    a, b = (str(v) for v in r.choice(labels_of("speaker_id"), size=2, replace=False))
    who = [a, b, a][: int(r.integers(2, 4))]
    lines = distinct_sentences(lang, r, 3)
    segs = [speak(t, lang, v, casual(r)) for t, v in zip(lines, who)]
    gaps = [float(r.uniform(*TURN_GAP_S)) for _ in segs[1:]]
    starts = sequential_starts([len(x) for x in segs], gaps, r.uniform(*LEAD_S))
    while len(segs) > 2 and starts[-1] + len(segs[-1]) > (MAX_S - TAIL_S[1]) * SAMPLE_RATE:
        segs, starts, who = segs[:-1], starts[:-1], who[:-1]  # keep the clip under MAX_S
    turns = [[v, *span_s(s, len(x))] for v, s, x in zip(who, starts, segs)]
    return Item(task, finish(lay(segs, starts), r), {"turns": turns}, audio_lang=lang)
