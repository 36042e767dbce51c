"""Likelihood scoring: rank a closed label set, teacher-force a sample's own target.

- Closed tasks (target kind "label" or "tag"): one candidate per label (the sample with its
  target field set to that label, same prompt); the pick is the label whose target tokens plus
  the end token have the highest summed log-probability. Summed, not length-normalised: every
  candidate is a complete answer from one closed set, and the end token already charges a label
  for stopping early. Ties go to the label listed first.
- Teacher forcing: summed log-probability, tokens and argmax-correct tokens of the real target
  (end token included).
- Both score continuations of one prefill per clip (generate.Generator.score): the prefix (audio
  and prompt, ~300-750 places) runs once and every candidate only adds its own 1-3 target
  tokens, on a copy of the prefix's cache. Clips are encoded with padded frames masked, so a
  score does not depend on the clip's batch-mates (it equals a forward of the clip by itself, to
  float rounding). Log-probabilities are over the full vocabulary, as in training's loss.

evaluation.py builds the per-task metrics on these and on generation.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from .data.collate import Example
from .generate import GenerationConfig, Generator, Request, encode_clip, encode_clips
from .render import Renderer


class Item(NamedTuple):
    sample: dict        # the decoded sample without its audio (labels, languages, ...)
    example: Example    # mel and rendered ids of its true target


class Ranked(NamedTuple):
    scores: list[float]  # summed log-probability of each label's target, in label order
    pick: int            # index of the chosen label
    truth: int           # index of the true label


def clip_audio(model, example: Example) -> tuple[torch.Tensor, int]:
    """One clip's LLM positions [N, D] (N = its count), encoded alone at its own length."""
    positions = encode_clip(model, example.mel)
    return positions, len(positions)


def prompt_of(item: Item) -> list[int]:
    """The ids before the target: audio span and prompt."""
    return item.example.ids[: item.example.loss_mask.index(1)]


def requests(model, items: list[Item], audio: list | None = None, batch: int = 16) -> list[Request]:
    """Prefix requests of the items; their clips encoded `batch` at a time unless `audio` (the
    items' (positions, count)) is given."""
    positions = [a[0] for a in audio] if audio else encode_clips(model, [it.example.mel for it in items], batch)
    return [Request(prompt_of(it), pos) for it, pos in zip(items, positions)]


def candidates(renderer: Renderer, item: Item, labels: tuple[str, ...]) -> list[list[int]]:
    """Target ids (end token included) per label: the sample with its target field set to it."""
    name = renderer.task(item.sample["task"]).target.field
    prompt = prompt_of(item)
    out = []
    for label in labels:
        ids, mask = renderer.render({**item.sample, name: label}, n_audio=item.example.n_audio)
        if ids[: len(prompt)] != prompt or mask.index(1) != len(prompt):
            raise ValueError(f"task {item.sample['task']}: candidate {label!r} changes the prompt "
                             f"(its target field {name!r} is also a prompt field): cannot rank labels")
        out.append(ids[len(prompt):])
    return out


def truth_index(renderer: Renderer, item: Item, labels: tuple[str, ...]) -> int:
    return labels.index(str(item.sample[renderer.task(item.sample["task"]).target.field]))


def ranked(renderer: Renderer, items: list[Item], labels: tuple[str, ...],
           scores: list[torch.Tensor]) -> tuple[list[Ranked], torch.Tensor]:
    """Picks from each item's [labels, 3] scores; also [items, 3] of the true labels."""
    out, truth_rows = [], []
    for it, s in zip(items, scores):
        lp = s[:, 0].tolist()
        pick = max(range(len(labels)), key=lambda j: (lp[j], -j))  # ties: the first label
        truth = truth_index(renderer, it, labels)
        out.append(Ranked(lp, pick, truth))
        truth_rows.append(s[truth])
    return out, torch.stack(truth_rows) if truth_rows else torch.zeros(0, 3)


def scorer(model, renderer: Renderer, batch_rows: int = 256, batch_size: int = 16) -> Generator:
    return Generator(model, renderer.tok, GenerationConfig(batch_size=batch_size), batch_rows)


def rank_labels(model, renderer: Renderer, items: list[Item], labels: tuple[str, ...],
                batch_rows: int = 256, audio: list | None = None) -> tuple[list[Ranked], torch.Tensor]:
    """Rank each item's label set; also [len(items), 3] logprob/tokens/correct of the true label.
    `audio`: the items' (positions, count) when already encoded."""
    conts = [candidates(renderer, it, labels) for it in items]
    scores = scorer(model, renderer, batch_rows).score(requests(model, items, audio), conts)
    return ranked(renderer, items, labels, scores)


def teacher_forced(model, items: list[Item], renderer: Renderer, batch_rows: int = 256,
                   audio: list | None = None) -> torch.Tensor:
    """[len(items), 3]: summed logprob, tokens and correct tokens of each item's own target."""
    conts = [[it.example.ids[len(prompt_of(it)):]] for it in items]
    scores = scorer(model, renderer, batch_rows).score(requests(model, items, audio), conts)
    return torch.cat(scores) if scores else torch.zeros(0, 3)
