"""Packing: several clips per mel row, several samples per LLM row, each computed as it would be alone.

Encoder rows: `plan_rows` places clips first-fit by decreasing length into rows of at most `max_frames` mel
frames (default 3,000, 30 s: the encoder's context), each clip starting on a multiple of
audio.PACK_ALIGN with audio.PACK_GAP silent frames at least after the one before it (why:
audio.py and model/packing.py). A clip longer than a row gets a row of its own. `pack_mels`
builds the rows and the layout [C, 3] of (row, start, frames) the model reads, in clip order.

LLM rows (`pack_ids`): samples' ids end to end in rows of at most `max_tokens`, position ids
restarting at 0 for every sample; with no 2-D attention mask, transformers reads the restarts
as packed sequences and keeps each sample's causal attention to itself (masking_utils'
find_packed_sequence_indices, for every attention implementation). `sample_index` says whose
each place is (-1: row padding), so losses stay per sample. A label never crosses a boundary:
a sample's first token is never a label.
"""
from __future__ import annotations

import torch

from ..audio import N_FRAMES, PACK_ALIGN, PACK_GAP


def _first_fit(lengths: list[int], cap: int, align: int, gap: int) -> list[tuple[int, int]]:
    ends: list[int] = []  # the last item's end in each row
    out: list = [None] * len(lengths)
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for row, end in enumerate(ends):
            start = -(-(end + gap) // align) * align
            if start + lengths[i] <= cap:
                break
        else:
            row, start = len(ends), 0
            ends.append(0)
        ends[row] = start + lengths[i]
        out[i] = (row, start)
    return out


def plan_rows(lengths: list[int], cap: int = N_FRAMES, align: int = PACK_ALIGN,
              gap: int = PACK_GAP) -> list[tuple[int, int]]:
    """(row, start) of every item, in the items' order: first fit by decreasing length, starts on
    multiples of `align`, `gap` free places at least after each item (the encoder's defaults; LLM
    rows take align 1, gap 0). Rows are as few as `cap` allows and as even as first fit makes
    them: every row is computed at the longest one's length, so a last, short row would waste
    the rest (the row length tried grows from the even share by 2 % until the rows suffice)."""
    fewest = len({r for r, _ in _first_fit(lengths, cap, align, gap)})
    share = -(-sum(-(-(n + gap) // align) * align for n in lengths) // fewest)
    width = max(max(lengths, default=0), share)
    while width < cap:
        places = _first_fit(lengths, width, align, gap)
        if len({r for r, _ in places}) <= fewest:
            return places
        width = int(width * 1.02) + 1
    return _first_fit(lengths, cap, align, gap)


def pack_mels(mels: list[torch.Tensor], max_frames: int = N_FRAMES) -> tuple[torch.Tensor, torch.Tensor]:
    """mels [n_mels, T_i] -> rows [R, n_mels, T] (zero between and after clips) and layout [C, 3]."""
    frames = [m.shape[-1] for m in mels]
    places = plan_rows(frames, max_frames)
    n_rows = 1 + max(r for r, _ in places)
    length = max(s + f for (_, s), f in zip(places, frames))
    rows = mels[0].new_zeros(n_rows, mels[0].shape[0], length)
    for m, (r, s) in zip(mels, places):
        rows[r, :, s: s + m.shape[-1]] = m
    layout = torch.tensor([[r, s, f] for (r, s), f in zip(places, frames)], dtype=torch.long)
    return rows, layout


def pack_ids(ids: list[list[int]], labels: list[list[int]], max_tokens: int, pad_id: int, ignore: int) -> dict:
    """Samples' ids and labels -> rows: input_ids, labels, position_ids, sample_index [R, T],
    sample_spans [N, 3] ((row, start, length) per sample), and `order`, the samples in reading order (row by row), which is the order their clips fill
    the placeholders in."""
    places = plan_rows([len(x) for x in ids], max_tokens, align=1, gap=0)
    n_rows = 1 + max(r for r, _ in places)
    length = max(s + len(x) for (_, s), x in zip(places, ids))
    out = {"input_ids": torch.full((n_rows, length), pad_id, dtype=torch.long),
           "labels": torch.full((n_rows, length), ignore, dtype=torch.long),
           "sample_index": torch.full((n_rows, length), -1, dtype=torch.long)}
    # row padding counts 0, 1, ... as a sequence of its own: never a continuation of the last sample
    ends = [0] * n_rows
    for (r, s), x in zip(places, ids):
        ends[r] = max(ends[r], s + len(x))
    pos = torch.zeros(n_rows, length, dtype=torch.long)
    for r, end in enumerate(ends):
        pos[r, end:] = torch.arange(length - end)
    for i, ((r, s), x, y) in enumerate(zip(places, ids, labels)):
        out["input_ids"][r, s: s + len(x)] = torch.tensor(x)
        out["labels"][r, s: s + len(y)] = torch.tensor(y)
        out["sample_index"][r, s: s + len(x)] = i
        pos[r, s: s + len(x)] = torch.arange(len(x))
    out["position_ids"] = pos
    out["sample_spans"] = torch.tensor([[r, s, len(x)] for (r, s), x in zip(places, ids)], dtype=torch.long)
    out["order"] = sorted(range(len(ids)), key=lambda i: places[i])
    return out
