"""Where each clip sits in a batch of encoder rows: one clip per row (padded) or several (packed).

A layout is a long tensor [C, 3] of (row, start, frames) per clip, in mel frames, in the order
the clips' placeholders appear in the ids (the order the splice fills them). Unpacked input is
the layout (i, 0, mel_lengths[i]). Packed rows (data/packing.py plans them) hold clips that
start on a multiple of audio.PACK_ALIGN with at least audio.PACK_GAP zero frames between them;
with that, and conv1's output zeroed outside every clip (as it is past a lone clip's end), a
clip's encoder frames and pooled positions equal its encoding alone (tests/model/test_packing.py
holds this to 1e-5 in fp32):
- conv1 (k3, s1, p1) at a clip's edge reads a gap frame, as it reads zero padding alone;
- conv2 (k3, s2, p1) reads conv1's zeroed output there, as it reads its zero padding alone;
- the encoder frames start at start / 2 and the pooled positions at start / 4, on the strides'
  grids, and take positional embeddings from 0;
- attention stays inside the clip (model/attention.span_attention, span by span).
"""
from __future__ import annotations

import torch

from ..audio import CONV_STRIDE, PACK_ALIGN, PACK_GAP, POOL_STRIDE, n_encoder_frames, n_pooled_positions


def one_per_row(mel_lengths: torch.Tensor) -> torch.Tensor:
    """The layout of unpacked input: clip i alone in row i from frame 0."""
    n = len(mel_lengths)
    return torch.stack([torch.arange(n), torch.zeros(n, dtype=torch.long), mel_lengths.long().cpu()], 1)


def is_packed(layout: torch.Tensor) -> bool:
    """Whether any row holds more than one clip (or a clip not at frame 0)."""
    rows = layout[:, 0]
    return bool((layout[:, 1] != 0).any()) or len(rows.unique()) != len(rows)


def check(layout: torch.Tensor, n_rows: int, n_frames: int) -> None:
    """ValueError unless every clip fits its row on the grid, apart from the others."""
    for row in range(n_rows):
        clips = sorted((int(s), int(f)) for r, s, f in layout.tolist() if r == row)
        end = -PACK_GAP
        for start, frames in clips:
            if start % PACK_ALIGN or start < end + PACK_GAP or frames < 1 or start + frames > n_frames:
                raise ValueError(f"encoder row {row}: a clip at mel frame {start} ({frames} frames) is not on the "
                                 f"{PACK_ALIGN}-frame grid, {PACK_GAP} frame(s) apart from the last, inside "
                                 f"{n_frames} frames")
            end = start + frames


def _spans(layout: torch.Tensor, n_frames: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """[C, T] each clip's place at each frame of its row, and whether the frame is the clip's."""
    layout = layout.to(device)
    place = torch.arange(n_frames, device=device)[None, :] - layout[:, 1:2]
    return place, (place >= 0) & (place < layout[:, 2:3])


def inside(layout: torch.Tensor, n_rows: int, n_frames: int, device) -> torch.Tensor:
    """[R, T] True on the frames of some clip."""
    _, mine = _spans(layout, n_frames, device)
    rows = torch.zeros(n_rows, n_frames, device=device).index_add_(0, layout[:, 0].to(device), mine.float())
    return rows > 0


def encoder_layout(layout: torch.Tensor) -> torch.Tensor:
    """The clips' (row, start, frames) in encoder frames (conv2 halves the rate)."""
    frames = torch.tensor([n_encoder_frames(int(f)) for f in layout[:, 2]], dtype=torch.long)
    return torch.stack([layout[:, 0], layout[:, 1] // CONV_STRIDE, frames], 1)


def pooled_layout(enc_layout: torch.Tensor) -> torch.Tensor:
    """The clips' (row, start, positions) after the adapter's pool."""
    counts = torch.tensor([n_pooled_positions(int(f)) for f in enc_layout[:, 2]], dtype=torch.long)
    return torch.stack([enc_layout[:, 0], enc_layout[:, 1] // POOL_STRIDE, counts], 1)


def offsets(enc_layout: torch.Tensor, n_rows: int, n_frames: int, device) -> torch.Tensor:
    """[R, T'] each frame's place within its clip (0 outside): positional embeddings from 0 per clip."""
    place, mine = _spans(enc_layout, n_frames, device)
    row = enc_layout[:, 0].to(device)
    return torch.zeros(n_rows, n_frames, dtype=torch.long, device=device).index_add_(0, row, place * mine)


def unpack(rows: torch.Tensor, layout: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """rows [R, T, width] -> per clip [C, N, width] (N: the longest clip, zero past each end)
    and counts [C], in layout order."""
    counts = layout[:, 2].to(rows.device)
    n = int(counts.max()) if len(counts) else 0
    place = torch.arange(n, device=rows.device)
    valid = place[None, :] < counts[:, None]
    frame = (layout[:, 1].to(rows.device)[:, None] + place[None, :]).clamp(max=rows.shape[1] - 1)
    out = rows[layout[:, 0].to(rows.device)[:, None], frame]
    return out * valid[..., None].to(out.dtype), counts
