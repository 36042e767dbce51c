"""The text side of the espeak-ng speech corpus: tags/corpus/speech.yaml -> what is said + labels.

Choices:
- Every sentence, vocabulary, question and translation lives in the YAML; this module only
  composes them, so labels are exact by construction (the spoken text is the label text, entity
  offsets are recorded while filling the template).
- Numbers are English cardinals written out US style without "and" (2541 -> "two thousand five
  hundred forty one"); clock times as "seven fifteen" / "seven oh five" -> 7:15 / 7:05.
- A slot name ending in a digit (person2) draws from the vocabulary of its stem (person) and
  never repeats another slot's value in the same sentence.
- All random choices go through the caller's numpy Generator (deterministic).
"""
from __future__ import annotations

import re
from functools import lru_cache

import numpy as np
import yaml

from ...paths import tags_dir

SLOT = re.compile(r"\{(\w+)\}")
EDGE_PUNCT = "¿¡.,;:!?\"()«»。、？！"  # stripped from word edges for word timestamps


@lru_cache(maxsize=1)
def texts() -> dict:
    path = tags_dir() / "corpus" / "speech.yaml"
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def pick(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


def stem(slot: str) -> str:
    return slot.rstrip("0123456789")


def fill(template: str, values: dict[str, str]) -> tuple[str, dict[str, tuple[int, int]]]:
    """Fill {slot}s; returns the text and each slot's (start, end) character offsets in it."""
    out, spans, pos = [], {}, 0
    for m in SLOT.finditer(template):
        out.append(template[pos:m.start()])
        start = sum(len(p) for p in out)
        out.append(values[m.group(1)])
        spans[m.group(1)] = (start, start + len(values[m.group(1)]))
        pos = m.end()
    out.append(template[pos:])
    return "".join(out), spans


def draw_slots(template: str, vocab: dict, rng: np.random.Generator) -> dict[str, str]:
    """A value for every slot of `template`, distinct within a sentence."""
    values: dict[str, str] = {}
    for slot in dict.fromkeys(SLOT.findall(template)):
        choices = [v for v in vocab[stem(slot)] if v not in values.values()]
        values[slot] = str(pick(rng, choices))
    return values


# ---------------------------------------------------------------- numbers
def number_words(n: int) -> str:
    """English cardinal for 0 <= n < 1,000,000, e.g. 2541 -> 'two thousand five hundred forty one'."""
    spec = texts()["numbers"]
    ones, tens = spec["ones"], spec["tens"]
    if not 0 <= n < 1_000_000:
        raise ValueError(f"number {n} is outside 0..999999")
    if n < 20:
        return ones[n]
    if n < 100:
        return tens[n // 10] + ("" if n % 10 == 0 else " " + ones[n % 10])
    if n < 1000:
        rest = "" if n % 100 == 0 else " " + number_words(n % 100)
        return f"{ones[n // 100]} {spec['hundred']}{rest}"
    rest = "" if n % 1000 == 0 else " " + number_words(n % 1000)
    return f"{number_words(n // 1000)} {spec['thousand']}{rest}"


def clock(hour: int, minute: int) -> tuple[str, str]:
    """(spoken, written) clock time; minute > 0 (a bare hour would need "o'clock")."""
    zero = texts()["numbers"]["minute_zero"]
    m = number_words(minute) if minute >= 10 else f"{zero} {number_words(minute)}"
    return f"{number_words(hour)} {m}", f"{hour}:{minute:02d}"


def _capitalise(s: str) -> str:
    return s[:1].upper() + s[1:]


def number_sentence(rng: np.random.Generator) -> tuple[str, str]:
    """(spoken text with the number in words, written text with digits)."""
    spec = pick(rng, texts()["numbers"]["templates"])
    if "{clock}" in spec["text"]:
        spoken, written = clock(int(rng.integers(1, 13)), 5 * int(rng.integers(1, 12)))
        key = "clock"
    else:
        n = int(rng.integers(spec["min"], spec["max"] + 1))
        spoken, written, key = number_words(n), str(n), "n"
    return (_capitalise(fill(spec["text"], {key: spoken})[0]),
            _capitalise(fill(spec["text"], {key: written})[0]))


# ---------------------------------------------------------------- sentences
def sentence_pool(lang: str) -> list[str]:
    """Every parallel sentence as spoken in `lang` (Mandarin: pinyin)."""
    key = "zh_spoken" if lang == "zh" else lang
    return [str(entry[key]) for entry in texts()["parallel"]]


def sentence(lang: str, rng: np.random.Generator) -> str:
    return pick(rng, sentence_pool(lang))


def translation_pair(src: str, tgt: str, rng: np.random.Generator) -> tuple[str, str]:
    """(spoken source sentence, written target sentence) of one parallel entry."""
    entry = pick(rng, texts()["parallel"])
    return str(entry["zh_spoken" if src == "zh" else src]), str(entry[tgt])


def words(text: str) -> list[str]:
    """Words of a space-separated sentence without edge punctuation (inner apostrophes kept)."""
    out = [w.strip(EDGE_PUNCT) for w in text.split()]
    return [w for w in out if w]


def ner_sentence(rng: np.random.Generator) -> tuple[str, list[list]]:
    """(text, entities as [[start_char, end_char, type], ...] in text order)."""
    spec = texts()["ner"]
    template = str(pick(rng, spec["templates"]))
    text, spans = fill(template, draw_slots(template, spec, rng))
    ents = sorted([start, end, stem(slot)] for slot, (start, end) in spans.items())
    return text, ents


def command(rng: np.random.Generator) -> tuple[str, str, list[list[str]]]:
    """(intent, spoken command, slots as [[type, value], ...] in spoken order)."""
    spec = texts()["commands"]
    intent = str(pick(rng, sorted(spec["intents"])))
    template = str(pick(rng, spec["intents"][intent]))
    text, spans = fill(template, draw_slots(template, spec["slots"], rng))
    order = sorted(spans, key=lambda s: spans[s][0])
    return intent, text, [[stem(s), text[slice(*spans[s])]] for s in order]


def qa_item(rng: np.random.Generator) -> tuple[str, str, str]:
    """(spoken fact, question about it, answer). Number slots: words when spoken, digits in answers."""
    spec = texts()["qa"]
    fact = pick(rng, spec["facts"])
    qa = pick(rng, fact["questions"])
    spoken, written = {}, {}
    for slot in dict.fromkeys(SLOT.findall(fact["text"] + qa["q"] + qa["a"])):
        if slot in spec["numeric"]:
            lo, hi = spec["numeric"][slot]
            n = int(rng.integers(lo, hi + 1))
            spoken[slot], written[slot] = number_words(n), str(n)
        else:
            spoken[slot] = written[slot] = str(pick(rng, spec[slot]))
    return fill(fact["text"], spoken)[0], fill(qa["q"], written)[0], fill(qa["a"], written)[0]


def keyword_phrase(keyword: str, rng: np.random.Generator) -> str:
    return fill(str(pick(rng, texts()["keyword_carriers"])), {"keyword": keyword})[0]


def vocal_recipe(label: str, rng: np.random.Generator) -> dict:
    """One synthesis recipe of a vocal sound: text, speed, pitch or notes, amplitude."""
    return dict(pick(rng, texts()["vocal_sounds"][label]))
