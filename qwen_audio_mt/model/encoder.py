"""Whisper's audio encoder at any length, with padded frames masked.

openai-whisper's `AudioEncoder.forward` asserts exactly 3,000 mel frames (30 s). Here the same
module (same weights, loadable from a Whisper checkpoint) runs on the real length: the
positional embedding is sliced to the clip's frames and padded frames are masked out of
attention, so a clip's output does not depend on what it was batched with. With
`pad_to_30s` the loader feeds 3,000 frames and nothing is masked.

Exactness (`compat`): conv2 (kernel 3, stride 2) centred on an odd-length clip's last frame
reads one frame past its end. Ours zeroes conv1's output there (the default), so a clip's output
never depends on its padding or batch-mates. Qwen-Audio and Qwen2-Audio let it read the padded
frame, whose value is the log-mel of the silence their front ends pad every clip with (30 s):
`compat="qwen2-audio"` / `"qwen-audio"` does the same (no zeroing) so that an imported model
gives the release's numbers, the front end (data/features.py) then pads and counts frames as
that release does, and each mel carries the 2 frames of context past the clip that the release
reads (`mel_lengths` include them; the encoder takes them off). Even lengths agree either way.

Packing (`layout`, model/packing.py): several clips share a row, each on the stride grid and
apart from the others; conv1's output is zeroed outside every clip, each clip's frames take
positional embeddings from 0 and attend within the clip only, so each equals its encoding alone.
Packing is ours only: a release's front end pads every clip to 30 s (`compat` refuses it).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from whisper.model import AudioEncoder, ModelDimensions, ResidualAttentionBlock

from ..audio import RELEASED_CONTEXT_FRAMES, n_encoder_frames
from ..errors import ConfigError
from . import packing
from .attention import span_attention

MEL_BINS = (80, 128)  # whisper/assets/mel_filters.npz: 80 (<= large-v2, Qwen-Audio), 128 (large-v3, Qwen2-Audio)
# Released models whose numbers an encoder can reproduce (`compat`); see the module docstring.
COMPAT = ("qwen-audio", "qwen2-audio")


@dataclass(frozen=True)
class EncoderConfig:
    n_mels: int = 80          # 80 (Whisper <= large-v2) or 128 (large-v3)
    n_ctx: int = 1500         # encoder frames in 30 s (3,000 mel frames / conv stride 2)
    n_state: int = 1280       # width (large-v2: 1280, small: 768)
    n_head: int = 20
    n_layer: int = 32
    checkpoint: str | None = None  # a local Whisper .pt ({"dims", "model_state_dict"}); None: random
    compat: str | None = None  # None: ours (padding zeroed); "qwen-audio" / "qwen2-audio": the release's numbers

    def __post_init__(self):  # shapes fail here, naming the key, not as a reshape error mid-step
        if self.compat is not None and self.compat not in COMPAT:
            raise ConfigError(f"model.encoder.compat={self.compat!r}: allowed are null (ours), {', '.join(COMPAT)}")
        if self.n_mels not in MEL_BINS:
            raise ConfigError(f"model.encoder.n_mels={self.n_mels}: Whisper's filter banks have {' or '.join(map(str, MEL_BINS))}")
        if self.n_head < 1 or self.n_state % self.n_head:
            raise ConfigError(f"model.encoder.n_state={self.n_state} is not divisible by model.encoder.n_head="
                              f"{self.n_head} (every head gets n_state / n_head dimensions)")
        for key in ("n_ctx", "n_state", "n_layer"):
            if getattr(self, key) < 1:
                raise ConfigError(f"model.encoder.{key}={getattr(self, key)}: must be >= 1")


def _attend(block: ResidualAttentionBlock, x: torch.Tensor, mask) -> torch.Tensor:
    """A Whisper residual block with an attention mask (whisper's own forward takes none):
    [B, 1, 1, T] key padding, or a packed row's clip spans (list of (row, start, frames))."""
    attn = block.attn
    h = block.attn_ln(x)
    b, t, d = h.shape
    q, k, v = (proj(h).view(b, t, attn.n_head, -1).transpose(1, 2) for proj in (attn.query, attn.key, attn.value))
    a = span_attention(q, k, v, mask) if isinstance(mask, list) else F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    x = x + attn.out(a.transpose(1, 2).reshape(b, t, d))
    return x + block.mlp(block.mlp_ln(x))


class WhisperEncoder(nn.Module):
    """Conv stem + transformer blocks of Whisper (its ln_post belongs to the adapter)."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.whisper = AudioEncoder(cfg.n_mels, cfg.n_ctx, cfg.n_state, cfg.n_head, cfg.n_layer)
        self.gradient_checkpointing = False

    def forward(self, mel: torch.Tensor, mel_lengths: torch.Tensor,
                layout: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """mel [B, n_mels, T] -> frames [B, T', n_state] and their valid lengths [B]; with a packed
        `layout` [C, 3] (model/packing.py) -> frames [R, T', n_state] and the clips' encoder layout."""
        w = self.whisper
        if layout is not None and self.cfg.compat is not None:
            raise ValueError(f"model.encoder.compat={self.cfg.compat!r} reads every clip padded to 30 s: packed clips "
                             "need compat=null")
        if self.cfg.compat is not None:  # the front end's context frames are not the clip's
            mel_lengths = (mel_lengths - RELEASED_CONTEXT_FRAMES).clamp(min=0)
        if layout is not None:
            packing.check(layout, mel.shape[0], mel.shape[-1])
        x = F.gelu(w.conv1(mel))
        if self.cfg.compat is None:
            # zero conv1 frames outside each clip: conv2 (stride 2) would read one padded frame (or
            # a packed neighbour's) into an odd-length clip's last output
            clips = packing.one_per_row(mel_lengths) if layout is None else layout
            x = x * packing.inside(clips, x.shape[0], x.shape[-1], x.device)[:, None, :].to(x.dtype)
        x = F.gelu(w.conv2(x)).permute(0, 2, 1)
        if layout is not None:
            self._check_length(x, mel.shape[-1])
            return self._blocks(*self._packed_positions(x, layout))
        lengths = torch.tensor([n_encoder_frames(int(n)) for n in mel_lengths], device=x.device)
        if self.cfg.compat is not None:  # frames from context only: masked keys, dropped
            x = x[:, : int(lengths.max())]
        self._check_length(x, mel.shape[-1])
        x = (x + w.positional_embedding[: x.shape[1]]).to(x.dtype)
        keep = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]
        return self._blocks(x, None if bool(keep.all()) else keep[:, None, None, :], lengths)

    def _packed_positions(self, x: torch.Tensor, layout: torch.Tensor):
        enc = packing.encoder_layout(layout)
        place = packing.offsets(enc, x.shape[0], x.shape[1], x.device)
        return (x + self.whisper.positional_embedding[place]).to(x.dtype), [tuple(c) for c in enc.tolist()], enc

    def _check_length(self, x: torch.Tensor, mel_frames: int) -> None:
        if x.shape[1] > self.cfg.n_ctx:
            raise ValueError(f"{mel_frames} mel frames exceed the encoder's {self.cfg.n_ctx * 2} (30 s)")

    def _blocks(self, x: torch.Tensor, mask, extra: torch.Tensor):
        for block in self.whisper.blocks:
            if self.gradient_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(_attend, block, x, mask, use_reentrant=False)
            else:
                x = _attend(block, x, mask)
        return x, extra


def load_whisper_checkpoint(path: str | Path) -> tuple[EncoderConfig, dict]:
    """Encoder config and weights from a local Whisper checkpoint (whisper.load_model's format)."""
    ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    dims = ModelDimensions(**ckpt["dims"])
    cfg = EncoderConfig(dims.n_mels, dims.n_audio_ctx, dims.n_audio_state, dims.n_audio_head,
                        dims.n_audio_layer, str(path))
    state = {k[len("encoder."):]: v for k, v in ckpt["model_state_dict"].items() if k.startswith("encoder.")}
    return cfg, state
