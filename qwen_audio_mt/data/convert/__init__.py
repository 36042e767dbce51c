"""Converters from public dataset layouts to shards, one module per format.

Each module defines `FORMAT` (its --format name), `DESCRIPTION`, and
`plan(src: Path) -> Plan`: the streams of deferred jobs (one per input item; audio is decoded by
ingest inside the build workers), the dataset's own closed label sets, and a description of the
source. Planning reads only metadata; anything wrong with one item (missing file, bad bytes, bad
label, non-UTF-8 text) surfaces when its job runs and is quarantined with a reason.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from ..shards import Stream

MODULES = ("librispeech", "commonvoice", "covost", "audiocaps", "clotho", "esc50", "urbansound",
           "nsynth", "audioflan", "manifest", "qwen_chat")


class ConvertError(ValueError):
    """The source folder is not in the expected layout (names the missing file or column)."""


@dataclass
class Plan:
    streams: list[Stream]
    label_sets: dict = field(default_factory=dict)
    source: dict = field(default_factory=dict)


def formats() -> dict:
    """--format name -> module, for the converters present."""
    out = {}
    for name in MODULES:
        try:
            mod = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
            continue
        out[mod.FORMAT] = mod
    return out
