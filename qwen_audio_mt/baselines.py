"""Baselines beside every figure, from the labels of the training split.

- Closed label sets: chance (1 / labels) and "majority", the accuracy of always answering the
  most frequent training label; the baseline is the larger.
- Open tasks: always answering the most frequent training target (its canonical fields; ties go
  to the first seen), scored by the task's own metric; for wer / cer also the empty answer, and
  the baseline is the better of the two.
- Word timestamps (timestamp_shift): the most frequent target matches almost no word, so the
  baseline is the reference words spread evenly from the first word's start to the last word's
  end: what the model's timing adds beyond knowing the words and the speech's extent.
A task with no training labels (an evaluation-only source) keeps chance or the empty answer.
The same pass finds each task's longest training target, which sizes its generation budget.
"""
from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from .data.mixture import MixtureError
from .data.reader import read_split
from .metrics import HIGHER_IS_BETTER, score_task
from .parse import expected_fields
from .targets import LABEL_ERRORS, render_target, target_for
from .tasks import CLOSED_KINDS



@dataclass
class Baselines:
    most_frequent: dict[str, dict] = field(default_factory=dict)   # task -> canonical fields
    longest: dict[str, int] = field(default_factory=dict)          # task -> target tokens

    def max_new_tokens(self, task: str, cap: int) -> int:
        """1.25 x the longest training target + 4 (the end token and some slack), at most `cap`."""
        n = self.longest.get(task)
        return cap if n is None else min(cap, math.ceil(1.25 * n) + 4)

    def score(self, task, refs: list[dict], langs: list) -> dict:
        """{"baseline": the one to beat, and each candidate by name} for these references."""
        out: dict = {}
        mode = self.most_frequent.get(task.name)
        if mode is not None:
            key = "majority" if task.target.kind in CLOSED_KINDS else "most_frequent"
            out[key] = score_task(task, [mode] * len(refs), refs, langs).value
        if task.target.kind in CLOSED_KINDS:
            out["chance"] = 1 / len(task.target.labels)
        if task.metric in ("wer", "cer"):
            out["empty"] = score_task(task, [None] * len(refs), refs, langs).value
        if task.metric == "timestamp_shift":
            out["uniform"] = score_task(task, [_uniform(task.target.field, r) for r in refs], refs, langs).value
        out["baseline"] = _pick(task, out)
        return out


def _pick(task, candidates: dict):
    if task.metric == "timestamp_shift":
        return candidates.get("uniform")
    values = [v for v in candidates.values() if v is not None]
    if not values:
        return None
    return max(values) if HIGHER_IS_BETTER[task.metric] else min(values)


def _uniform(name: str, ref: dict) -> dict:
    words = ref[name]
    if not words:
        return {name: []}
    t0, t1 = words[0]["start"], words[-1]["end"]
    step = (t1 - t0) / len(words)
    return {name: [{"word": w["word"], "start": round(t0 + i * step, 2), "end": round(t0 + (i + 1) * step, 2)}
                   for i, w in enumerate(words)]}


def train_targets(rend, sources, split: str, tasks: set[str] | None = None) -> Baselines:
    """Most frequent canonical target and longest target (tokens) per task of `split` (every
    task, or only `tasks`)."""
    counts: dict[str, Counter] = defaultdict(Counter)
    first: dict[str, dict] = {}
    out = Baselines()
    try:
        samples = list(read_split(sources, split, tasks=tasks, audio=False))
    except MixtureError:  # no training split in these sources
        return out
    for s in samples:
        try:
            task = rend.task(s["task"])
            ts = bool(s.get("timestamps", False))
            fields = expected_fields(task, s, rend.tok, ts)
            n = len(render_target(target_for(task, ts), s, rend.tok, task.name)) + 1
        except LABEL_ERRORS:
            continue
        key = json.dumps(fields, sort_keys=True)
        counts[task.name][key] += 1
        first.setdefault(key, fields)
        out.longest[task.name] = max(out.longest.get(task.name, 0), n)
    for name, c in counts.items():
        top = max(c.values())
        # ties: the first seen (Counter keeps insertion order)
        out.most_frequent[name] = first[next(k for k, v in c.items() if v == top)]
    return out
