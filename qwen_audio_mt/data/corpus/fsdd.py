"""Real speech from the Free Spoken Digit Dataset (shared data root, `fsdd/`).

Tasks: digit_recognition (the digit, written), fsdd_speaker, accent (from metadata.json).
Split by recording index so every speaker is in every split: indices 0-4 test, 5-9 valid,
10-49 train (per digit and speaker). The recordings go through ingest as files (8 kHz wav ->
16 kHz), exercising the real decode and resample path.
"""
from __future__ import annotations

import json
from functools import lru_cache

import numpy as np

from ...paths import data_missing_reason, data_root
from .base import Item, SourceMissing, generator

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


@generator("digit_recognition", "fsdd_speaker", "accent")
def make(task: str, index: int, rng: np.random.Generator, split: str) -> Item:
    recs = recordings(split)
    path, digit, speaker = recs[int(rng.integers(len(recs)))]
    labels = {"digit_recognition": {"text_itn": digit},
              "fsdd_speaker": {"speaker": speaker},
              "accent": {"accent": metadata()[speaker]["accent"]}}[task]
    return Item(task, None, labels, audio_lang="en", source="fsdd", path=path)
