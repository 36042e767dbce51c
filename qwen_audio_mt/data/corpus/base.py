"""Item and the generator registry of the embedded corpus.

A generator makes one sample of one task: `make(task, index, rng, split) -> Item`. It must be
deterministic in (task, index, rng state, split), return audio at 16 kHz mono float32 in [-1, 1], and
labels exactly consistent with that audio (tests check them against the signal). A generator
whose external source is missing (espeak-ng, the shared FSDD folder) raises SourceMissing with a
reason; the corpus builder then skips that task and says why.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

SPLITS = ("train", "valid", "test")


class SourceMissing(RuntimeError):
    """An external source a generator needs is not on this machine (reason in the message)."""


@dataclass
class Item:
    task: str
    audio: np.ndarray | None          # float32, mono, 16 kHz, peak <= 1 (None: read `path`)
    labels: dict = field(default_factory=dict)  # raw label fields the task's target/prompt need
    audio_lang: str = "unknown"
    text_lang: str | None = None
    source: str = "embedded"
    path: str | None = None           # a real recording for ingest to decode (e.g. FSDD)


Generator = Callable[[str, int, np.random.Generator, str], Item]
GENERATORS: dict[str, Generator] = {}


def generator(*tasks: str):
    """Register `fn(task, index, rng, split) -> Item` as the generator of these tasks."""
    def wrap(fn: Generator) -> Generator:
        for t in tasks:
            if t in GENERATORS:
                raise ValueError(f"task {t!r} has two generators")
            GENERATORS[t] = fn
        return fn
    return wrap
