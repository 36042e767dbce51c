"""Likelihood scoring: rank a closed label set, teacher-force a sample's own target.

- Closed tasks (target kind "label" or "tag"): one candidate per label (the sample with its
  target field set to that label, same prompt); the pick is the label whose target tokens plus
  the end token have the highest summed log-probability under teacher forcing. Summed, not
  length-normalised: every candidate is a complete answer from one closed set, and the end token
  already charges a label for stopping early. Ties go to the label listed first.
- Audio: each clip is encoded once, alone at its own length (its score never depends on its
  batch-mates, and equals a forward of the clip by itself); its positions are reused for all its
  candidate rows, which are batched up to `batch_rows` rows (memory ~ rows x length x width).
  Callers that also generate pass the positions in (`audio=`), so a clip is encoded once.
- Teacher forcing: summed log-probability, tokens and argmax-correct tokens of the real target
  (end token included).

evaluation.py builds the per-task metrics on these and on generation.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch.nn.utils.rnn import pad_sequence

from .data.collate import Example
from .render import IGNORE
from .generate import encode_clip
from .render import Renderer

CLOSED_KINDS = ("label", "tag")


class Item(NamedTuple):
    sample: dict        # the decoded sample without its audio (labels, languages, ...)
    example: Example    # mel and rendered ids of its true target


class Ranked(NamedTuple):
    scores: list[float]  # summed log-probability of each label's target, in label order
    pick: int            # index of the chosen label
    truth: int           # index of the true label


# ---------------------------------------------------------------------- forward
def _device_dtype(model) -> tuple[torch.device, torch.dtype]:
    w = model.encoder.whisper.conv1.weight
    return w.device, w.dtype


def clip_audio(model, example: Example) -> tuple[torch.Tensor, int]:
    """One clip's LLM positions [N, D] (N = its count), encoded alone at its own length."""
    positions = encode_clip(model, example.mel)
    return positions, len(positions)


@torch.no_grad()
def score_rows(model, rows: list[tuple[int, list[int], list[int]]], audio: list[tuple[torch.Tensor, int]],
               pad_id: int, batch_rows: int) -> torch.Tensor:
    """rows (clip index, ids, loss mask) -> [R, 3]: summed logprob, tokens, correct tokens."""
    device = _device_dtype(model)[0]
    out = []
    for start in range(0, len(rows), batch_rows):
        chunk = rows[start: start + batch_rows]
        clips = sorted({c for c, _, _ in chunk})
        where = {c: i for i, c in enumerate(clips)}
        positions = pad_sequence([audio[c][0] for c in clips], batch_first=True)
        idx = torch.tensor([where[c] for c, _, _ in chunk], device=device)
        counts = torch.tensor([audio[c][1] for c, _, _ in chunk], device=device)
        ids = pad_sequence([torch.tensor(r[1]) for r in chunk], batch_first=True, padding_value=pad_id).to(device)
        mask = pad_sequence([torch.tensor(r[2], dtype=torch.bool) for r in chunk], batch_first=True).to(device)
        attention = pad_sequence([torch.ones(len(r[1]), dtype=torch.long) for r in chunk], batch_first=True).to(device)
        labels = torch.where(mask, ids, IGNORE)
        res = model(ids, attention, None, None, labels, audio=(positions.index_select(0, idx), counts))
        out.append(torch.stack([res.sample_logprob, res.sample_tokens, res.sample_correct], 1).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 3)


# ---------------------------------------------------------------------- closed and open
def candidates(renderer: Renderer, item: Item, labels: tuple[str, ...]) -> list[tuple[list[int], list[int]]]:
    """(ids, loss mask) per label: the sample with its target field set to that label."""
    ex, name = item.example, renderer.task(item.sample["task"]).target.field
    prompt = ex.ids[: ex.loss_mask.index(1)]
    out = []
    for label in labels:
        ids, mask = renderer.render({**item.sample, name: label}, n_audio=ex.n_audio)
        if ids[: len(prompt)] != prompt or mask.index(1) != len(prompt):
            raise ValueError(f"task {item.sample['task']}: candidate {label!r} changes the prompt "
                             f"(its target field {name!r} is also a prompt field): cannot rank labels")
        out.append((ids, mask))
    return out


def rank_labels(model, renderer: Renderer, items: list[Item], labels: tuple[str, ...],
                batch_rows: int = 256, audio: list | None = None) -> tuple[list[Ranked], torch.Tensor]:
    """Rank each item's label set; also [len(items), 3] logprob/tokens/correct of the true label.
    `audio`: the items' (positions, count) when already encoded."""
    audio = audio or [clip_audio(model, it.example) for it in items]
    rows = [(i, ids, mask) for i, it in enumerate(items) for ids, mask in candidates(renderer, it, labels)]
    scores = score_rows(model, rows, audio, renderer.tok.end_id, batch_rows).view(len(items), len(labels), 3)
    field_ = renderer.task(items[0].sample["task"]).target.field if items else None
    ranked, truth_rows = [], []
    for it, s in zip(items, scores):
        lp = s[:, 0].tolist()
        pick = max(range(len(labels)), key=lambda j: (lp[j], -j))  # ties: the first label
        truth = labels.index(str(it.sample[field_]))
        ranked.append(Ranked(lp, pick, truth))
        truth_rows.append(s[truth])
    return ranked, torch.stack(truth_rows) if truth_rows else torch.zeros(0, 3)


def teacher_forced(model, items: list[Item], pad_id: int, batch_rows: int = 256,
                   audio: list | None = None) -> torch.Tensor:
    """[len(items), 3]: summed logprob, tokens and correct tokens of each item's own target."""
    audio = audio or [clip_audio(model, it.example) for it in items]
    rows = [(i, it.example.ids, it.example.loss_mask) for i, it in enumerate(items)]
    return score_rows(model, rows, audio, pad_id, batch_rows)
