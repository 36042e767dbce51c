"""Real speech from the Free Spoken Digit Dataset (shared data root, `fsdd/`).

Tasks: digit_recognition (the digit, written), fsdd_speaker, accent (from metadata.json).
Split by recording index so every speaker is in every split: indices 0-4 test, 5-9 valid,
10-49 train (per digit and speaker). The recordings go through ingest as files (8 kHz wav ->
16 kHz), exercising the real decode and resample path.

digit_recognition's train split also speaks digits in espeak voices (tags/corpus/speech.yaml
`digit_voices`: a share of the items, many accents and voice variants), since a model that has
heard only FSDD's five speakers does not hold on a sixth; valid and test stay real recordings.
"""
from __future__ import annotations

import json
from functools import lru_cache

import numpy as np

from ...paths import data_missing_reason, data_root
from . import speech_texts as tx
from .base import Item, SourceMissing, generator
from .espeak import Prosody
from .speech import clip, item_rng, speak_as

SPLIT_OF_INDEX = {"test": range(0, 5), "valid": range(5, 10), "train": range(10, 50)}


@lru_cache(maxsize=1)
def metadata() -> dict:
    path = data_root() / "fsdd" / "metadata.json"
    if not path.exists():
        raise SourceMissing(data_missing_reason("fsdd", "metadata.json"))
    return json.loads(path.read_text())["speakers"]


@lru_cache(maxsize=4)
def recordings(split: str) -> tuple[tuple[str, str, str], ...]:
    """(path, digit, speaker) of the split, sorted for determinism."""
    speakers = metadata()
    out = []
    for path in sorted((data_root() / "fsdd").glob("*.wav")):
        digit, speaker, idx = path.stem.split("_")
        if speaker in speakers and int(idx) in SPLIT_OF_INDEX[split]:
            out.append((str(path), digit, speaker))
    if not out:
        raise SourceMissing(f"no FSDD recordings for split {split} under {data_root() / 'fsdd'}")
    return tuple(out)


def spoken_digit(index: int, rng: np.random.Generator, split: str) -> Item:
    """A digit's word in a random espeak accent, voice variant, speed and pitch (`digit_voices`)."""
    spec, r = tx.texts()["digit_voices"], item_rng(rng, "digit_recognition", index, split)
    digit = int(r.integers(10))
    voice = f"{tx.pick(r, spec['accents'])}+{tx.pick(r, spec['variants'])}"
    prosody = Prosody(speed=int(r.integers(*spec["speed"])), pitch=int(r.integers(*spec["pitch"])))
    audio = clip(speak_as(tx.number_words(digit), voice, prosody, short=True), r)
    return Item("digit_recognition", audio, {"text_itn": str(digit)}, audio_lang="en", source="espeak")


@generator("digit_recognition", "fsdd_speaker", "accent")
def make(task: str, index: int, rng: np.random.Generator, split: str) -> Item:
    recs = recordings(split)  # FSDD missing: the task is skipped, synthetic digits or not
    if task == "digit_recognition" and split == "train" and rng.random() < tx.texts()["digit_voices"]["share"]:
        return spoken_digit(index, rng, split)
    path, digit, speaker = recs[int(rng.integers(len(recs)))]
    labels = {"digit_recognition": {"text_itn": digit},
              "fsdd_speaker": {"speaker": speaker},
              "accent": {"accent": metadata()[speaker]["accent"]}}[task]
    return Item(task, None, labels, audio_lang="en", source="fsdd", path=path)
