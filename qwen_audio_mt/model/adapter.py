"""Encoder frames -> LLM positions, as Qwen-Audio does it.

avg-pool (kernel 2, stride 2: 20 ms -> 40 ms) -> layer norm (Whisper's ln_post) -> linear to the
LLM width; plus two learned vectors that take the places of <audio> and </audio> (Qwen-Audio's
audio_bos_eos_token).
"""
from __future__ import annotations

import torch
from torch import nn

from ..audio import n_pooled_positions


class AudioAdapter(nn.Module):
    def __init__(self, n_state: int, llm_width: int):
        super().__init__()
        self.pool = nn.AvgPool1d(kernel_size=2, stride=2)
        self.ln_post = nn.LayerNorm(n_state)
        self.proj = nn.Linear(n_state, llm_width)
        self.bos_eos = nn.Embedding(2, llm_width)

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """frames [B, T', n_state] -> positions [B, N, width] and valid counts [B]."""
        x = self.rows(frames)
        counts = torch.tensor([n_pooled_positions(int(n)) for n in lengths], device=x.device)
        return x, counts

    def rows(self, frames: torch.Tensor) -> torch.Tensor:
        """frames [R, T', n_state] -> positions [R, T' // 2, width], a row's clips as they lie in it."""
        x = self.pool(frames.transpose(1, 2)).transpose(1, 2)
        return self.proj(self.ln_post(x))
