"""The public reader of a split: every sample of some shard sources once, in shard order.

Evaluation, the in-loop validation subset and the baselines read samples through `read_split`
(training streams through loader.TrainStream). Filters (tasks, keys, a per-task cap) look at the
labels before any audio is decoded, and `audio=False` reads labels only. A corrupt member is
skipped and counted per task in `skipped`, as the training loader skips it.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterator

from .mixture import MixtureConfig, SourceConfig, components
from .stream import SkipCounter, decoded, eval_raw


def as_sources(sources) -> tuple[SourceConfig, ...]:
    """Shard folders (str) or SourceConfigs as they are: a source's `tasks` filter holds (a run
    trained on three tasks of a folder is scored on those three); weights play no part here."""
    return tuple(s if isinstance(s, SourceConfig) else SourceConfig(str(s)) for s in sources)


def split_counts(sources, split: str) -> Counter:
    """Samples per task in the split, from the indexes (no shard is opened)."""
    counts: Counter = Counter()
    for comp in components(MixtureConfig(as_sources(sources)), split):
        counts[comp.task] += comp.samples
    return counts


def read_split(sources, split: str, *, tasks: Collection[str] | None = None, keys: Collection[str] | None = None,
               max_per_task: int | None = None, audio: bool = True,
               skipped: Counter | None = None) -> Iterator[dict]:
    """Decoded samples (labels, and `audio` as float32 16-kHz mono unless audio=False)."""
    kept: Counter = Counter()
    for comp in components(MixtureConfig(as_sources(sources)), split):
        if tasks is not None and comp.task not in tasks:
            continue
        if max_per_task is not None and kept[comp.task] >= max_per_task:
            continue
        bad = SkipCounter()
        keep = None if keys is None else (lambda meta: meta.get("key") in keys)
        for sample in decoded(eval_raw(comp, 0, 1, bad), bad, keep, audio):
            kept[comp.task] += 1
            yield sample
            if max_per_task is not None and kept[comp.task] >= max_per_task:
                break
        if skipped is not None and bad:
            skipped[comp.task] += sum(bad.values())
