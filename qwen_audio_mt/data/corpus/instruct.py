"""Instruction-following items: another task's item with its label asked as a free question.

The templates live in tags/corpus/instruct.yaml; the base task's generator makes the audio, so
the answer is exactly as consistent with the audio as the base label is.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import yaml

from ...paths import tags_dir
from .base import GENERATORS, Item, generator


@lru_cache(maxsize=1)
def templates() -> dict:
    return yaml.safe_load((tags_dir() / "corpus" / "instruct.yaml").read_text(encoding="utf-8"))


@generator("speech_instruction", "sound_instruction", "music_instruction")
def make(task: str, index: int, rng: np.random.Generator, split: str) -> Item:
    choice = templates()[task][int(rng.integers(len(templates()[task])))]
    base = GENERATORS[choice["base"]](choice["base"], index, rng, split)
    label = base.audio_lang if choice["field"] == "audio_lang" else base.labels[choice["field"]]
    answer = (choice.get("answers") or {}).get(str(label), str(label))
    question = choice["questions"][int(rng.integers(len(choice["questions"])))]
    return Item(task, base.audio, {"question": question, "answer": answer.replace("_", " ")},
                audio_lang=base.audio_lang if task == "speech_instruction" else "unknown",
                source=base.source, path=base.path)
