"""Featurised examples -> duration-bucketed, padded batches.

Bucketing: examples gather in a pool (`bucket_pool`), are sorted by length and cut greedily into
batches whose padded cost stays under both limits — batch size x longest clip <=
`max_audio_seconds_per_batch` and batch size x longest id sequence <= `max_tokens_per_batch` —
then the pool's batches go out in random order. The tail of a pool (a partial batch) carries
over into the next pool, so batches stay full. With `pad_to_30s` every clip costs 30 s, which
is Qwen-Audio's fixed-size batching.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..audio import CHUNK_SECONDS, N_FRAMES
from ..errors import ConfigError
from ..render import IGNORE
from .packing import pack_ids, pack_mels


@dataclass
class Example:
    key: str
    task: str
    task_index: int          # in the registry; -1 for a conversation
    mel: torch.Tensor | None  # [n_mels, frames]; None for a conversation (its audios are `clips`)
    frames: int              # mel frames of the real audio (< mel frames with 30-s padding)
    ids: list[int]
    loss_mask: list[int]
    audio_start: int         # index of the first placeholder in ids (-1: a conversation)
    n_audio: int             # placeholders (LLM audio positions)
    seconds: float           # cost for bucketing (30 with pad_to_30s; a conversation: its audios' sum)
    clips: tuple = ()        # a conversation's audios in order: ((mel, frames), ...); text-only: ()

    def audio(self) -> list[tuple[torch.Tensor, int]]:
        """(mel, real frames) of every clip, in the order their placeholders appear in ids."""
        return [(self.mel, self.frames)] if self.mel is not None else list(self.clips)


@dataclass(frozen=True)
class BatchLimits:
    max_audio_seconds: float = 240.0   # per batch: batch size x longest clip (packed: the clips' sum)
    max_tokens: int = 16384            # per batch: batch size x longest sequence (packed: the sum)
    max_batch_size: int = 64
    pool: int = 1024                   # examples sorted together; larger -> tighter buckets
                                       # (0.79 real/computed frames at 256, 0.94 at 1024); unused packed
    pack: bool = False                 # clips share mel rows, samples share LLM rows (data/packing.py)
    row_frames: int = N_FRAMES         # packed: mel frames per encoder row (30 s, the encoder's context)
    row_tokens: int = 2048             # packed: ids per LLM row

    def __post_init__(self):
        if self.pack and self.row_frames > N_FRAMES:
            raise ConfigError(f"data.loader.limits.row_frames={self.row_frames}: the encoder holds {N_FRAMES} "
                              "mel frames (30 s) per row")


def _fits(batch: list[Example], ex: Example, lim: BatchLimits) -> bool:
    n = len(batch) + 1
    longest = max([ex.seconds] + [b.seconds for b in batch])
    tokens = max([len(ex.ids)] + [len(b.ids) for b in batch])
    return n <= lim.max_batch_size and n * longest <= lim.max_audio_seconds and n * tokens <= lim.max_tokens


def _fits_packed(cost: list, ex: Example, lim: BatchLimits) -> bool:
    """Packed, a batch costs what its samples hold: summed seconds and ids."""
    return cost[0] + 1 <= lim.max_batch_size and cost[1] + ex.seconds <= lim.max_audio_seconds \
        and cost[2] + len(ex.ids) <= lim.max_tokens


def packed_batches(examples: Iterator[Example], lim: BatchLimits) -> Iterator[list[Example]]:
    """Batches in arrival order (any task mix, no sorting: packing leaves no padding to save),
    each up to the limits on summed cost."""
    batch: list[Example] = []
    cost = [0, 0.0, 0]
    for ex in examples:
        if batch and not _fits_packed(cost, ex, lim):
            yield batch
            batch, cost = [], [0, 0.0, 0]
        batch.append(ex)
        cost = [cost[0] + 1, cost[1] + ex.seconds, cost[2] + len(ex.ids)]
    if batch:
        yield batch


def batches(examples: Iterator[Example], lim: BatchLimits, rng: np.random.Generator | None,
            pad_to_30s: bool = False) -> Iterator[list[Example]]:
    """Packed batches, or length-bucketed ones (`bucket`)."""
    return packed_batches(examples, lim) if lim.pack else bucket(examples, lim, rng, pad_to_30s)


def collate_for(batch: list[Example], pad_id: int, lim: BatchLimits) -> dict:
    """`collate` as the limits say: packed on both sides, or padded."""
    if lim.pack:
        return collate(batch, pad_id, pack_frames=lim.row_frames, pack_tokens=lim.row_tokens)
    return collate(batch, pad_id)


def bucket(examples: Iterator[Example], lim: BatchLimits, rng: np.random.Generator | None,
           pad_to_30s: bool = False) -> Iterator[list[Example]]:
    """Yield lists of examples; rng None keeps sorted order (evaluation)."""
    carry: list[Example] = []
    done = False
    while not done:
        pool = carry
        for ex in examples:
            if pad_to_30s:
                ex.seconds = float(CHUNK_SECONDS)
            pool.append(ex)
            if len(pool) >= lim.pool:
                break
        else:
            done = True
        pool.sort(key=lambda e: (e.seconds, len(e.ids)))
        batches, cur = [], []
        for ex in pool:
            if cur and not _fits(cur, ex, lim):
                batches.append(cur)
                cur = []
            cur.append(ex)
        carry = [] if done else cur
        if done and cur:
            batches.append(cur)
        if rng is not None:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        yield from batches


def collate(batch: list[Example], pad_id: int, pack_frames: int | None = None, pack_tokens: int | None = None) -> dict:
    """Tensors of a batch, padded or packed (data/packing.py).

    Padded: one sample per LLM row; `mel` stacks every clip of the batch, row by row and in order
    within a row (the order of the placeholders, which the model fills in that order): one clip
    per task sample, any number per conversation; None when no sample has audio.
    `pack_frames`: clips share mel rows of at most that many frames, `mel_layout` says where each
    one is. `pack_tokens`: samples share LLM rows of at most that many ids, with restarting
    `position_ids`, `sample_index` and no `attention_mask` (None). Per-sample entries (tasks,
    keys, task_index, sample_lengths) stay in batch order either way."""
    labels = [[i if m else IGNORE for i, m in zip(e.ids, e.loss_mask)] for e in batch]
    out = {"keys": [e.key for e in batch], "tasks": [e.task for e in batch],
           "task_index": torch.tensor([e.task_index for e in batch]),
           "sample_lengths": torch.tensor([len(e.ids) for e in batch], dtype=torch.long)}
    if pack_tokens:
        rows = pack_ids([e.ids for e in batch], labels, pack_tokens, pad_id, IGNORE)
        order = rows.pop("order")
        out.update(rows, attention_mask=None)
    else:
        order = list(range(len(batch)))
        length = max(len(e.ids) for e in batch)
        out["input_ids"] = torch.full((len(batch), length), pad_id, dtype=torch.long)
        out["labels"] = torch.full((len(batch), length), IGNORE, dtype=torch.long)
        out["attention_mask"] = torch.zeros(len(batch), length, dtype=torch.long)
        for i, (e, y) in enumerate(zip(batch, labels)):
            out["input_ids"][i, : len(e.ids)] = torch.tensor(e.ids)
            out["labels"][i, : len(y)] = torch.tensor(y)
            out["attention_mask"][i, : len(e.ids)] = 1
        if all(e.mel is not None for e in batch):  # task samples: where each one's audio span is
            out["audio_spans"] = torch.tensor([[e.audio_start, e.n_audio] for e in batch], dtype=torch.long)
    clips = [c for i in order for c in batch[i].audio()]  # the placeholders' reading order
    out.update(mel=None, mel_lengths=None, audio_frames=torch.tensor([f for _, f in clips], dtype=torch.long))
    if clips and pack_frames:
        out["mel"], out["mel_layout"] = pack_mels([m for m, _ in clips], pack_frames)
        out["mel_lengths"] = out["mel_layout"][:, 2].clone()
    elif clips:
        frames = max(m.shape[1] for m, _ in clips)
        out["mel"] = torch.zeros(len(clips), clips[0][0].shape[0], frames)
        out["mel_lengths"] = torch.tensor([m.shape[1] for m, _ in clips])
        for i, (m, _) in enumerate(clips):
            out["mel"][i, :, : m.shape[1]] = m
    return out


def frame_counts(batch: dict) -> tuple[int, int]:
    """(real, computed) mel frames of a batch; the encoder's frames follow the same ratio."""
    if batch["mel"] is None:
        return 0, 0
    return int(batch["audio_frames"].sum()), batch["mel"].shape[0] * batch["mel"].shape[2]


def token_counts(batch: dict) -> tuple[int, int]:
    """(real, computed) LLM places of a batch: its samples' ids, its id rows."""
    return int(batch["sample_lengths"].sum()), batch["input_ids"].numel()


def frame_efficiency(batches: list[dict]) -> float:
    """Real / computed mel frames over batches."""
    real, computed = map(sum, zip(*(frame_counts(b) for b in batches))) if batches else (0, 0)
    return real / computed if computed else 0.0
