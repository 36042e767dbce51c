"""AudioLM: Whisper encoder -> adapter -> spliced into a causal LLM's input embeddings.

The rendered ids hold `<audio>`, one placeholder per audio position, `</audio>`; the encoder's
pooled positions replace the placeholders' embeddings (clips in batch order fill the
placeholders in reading order, so a row may hold several clips, a conversation's, or none) and the learned bos/eos vectors replace
`<audio>`/`</audio>` (Qwen-Audio's layout). Logits are computed only where a label needs them
(the LM head over a 150k vocabulary is the largest single cost otherwise).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..render import IGNORE
from .adapter import AudioAdapter
from . import packing
from .attention import use_packed
from .encoder import WhisperEncoder


@dataclass
class LMOutput:
    loss: torch.Tensor              # mean token cross-entropy over the batch's label tokens
    sample_logprob: torch.Tensor    # [B] summed log-probability of each sample's label tokens
    sample_tokens: torch.Tensor     # [B] label tokens per sample
    sample_correct: torch.Tensor    # [B] label tokens predicted right (argmax) per sample
    sample_first_correct: torch.Tensor  # [B] 1 where every label token is right


class AudioLM(nn.Module):
    def __init__(self, encoder: WhisperEncoder, adapter: AudioAdapter, llm: nn.Module, token_ids: dict):
        super().__init__()
        self.encoder, self.adapter, self.llm = encoder, adapter, llm
        self.placeholder_id = token_ids["audio_placeholder"]
        self.audio_start_id = token_ids["audio_start"]
        self.audio_end_id = token_ids["audio_end"]
        use_packed(llm)

    @property
    def base(self) -> nn.Module:
        return getattr(self.llm, self.llm.base_model_prefix)

    def audio_embeddings(self, mel: torch.Tensor, mel_lengths: torch.Tensor,
                         layout: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per clip, LLM positions [C, N, width] and valid counts [C]: one clip per mel row, or
        packed rows placed by `layout` (model/packing.py), taken back apart after the pool."""
        if layout is None:
            return self.adapter(*self.encoder(mel, mel_lengths))
        frames, enc_layout = self.encoder(mel, mel_lengths, layout)
        return packing.unpack(self.adapter.rows(frames), packing.pooled_layout(enc_layout))

    def embed(self, input_ids: torch.Tensor, mel: torch.Tensor | None, mel_lengths: torch.Tensor | None,
              audio: tuple[torch.Tensor, torch.Tensor] | None = None,
              layout: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings with the audio spliced in; `audio` = precomputed (positions, counts)
        from `audio_embeddings`, e.g. one clip scored against many candidate targets."""
        emb = self.llm.get_input_embeddings()(input_ids)
        slots = input_ids == self.placeholder_id
        if audio is None and (mel is None or len(mel) == 0):  # text only (a chat turn without audio)
            if slots.any():
                raise ValueError(f"the ids hold {int(slots.sum())} audio placeholders but no audio was given")
            return emb
        audio, counts = audio if audio is not None else self.audio_embeddings(mel, mel_lengths, layout)
        valid = torch.arange(audio.shape[1], device=audio.device)[None, :] < counts[:, None]
        if int(slots.sum()) != int(valid.sum()):
            raise ValueError(f"the ids hold {int(slots.sum())} audio placeholders but the encoder made "
                             f"{int(valid.sum())} positions: render and mel lengths disagree")
        emb = emb.clone()
        emb[slots] = audio[valid].to(emb.dtype)
        bos, eos = self.adapter.bos_eos.weight.to(emb.dtype)
        emb[input_ids == self.audio_start_id] = bos
        emb[input_ids == self.audio_end_id] = eos
        return emb

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, mel: torch.Tensor | None,
                mel_lengths: torch.Tensor | None, labels: torch.Tensor,
                audio: tuple[torch.Tensor, torch.Tensor] | None = None, mel_layout: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, sample_index: torch.Tensor | None = None,
                sample_spans: torch.Tensor | None = None) -> LMOutput:
        """One sample per row, or packed (data/packing.py): `mel_layout` places the clips in mel
        rows; `position_ids` restarting per sample with `attention_mask` None keep each sample's
        attention to itself (computed span by span with `sample_spans`, attention.py), and
        `sample_index` [R, T] (-1: padding) gives the per-sample sums in sample order."""
        emb = self.embed(input_ids, mel, mel_lengths, audio, mel_layout)
        extra = {} if sample_spans is None else {"sample_spans": [tuple(s) for s in sample_spans.tolist()]}
        # no cache: transformers reads packed position ids only without one (and training needs none)
        hidden = self.base(inputs_embeds=emb, attention_mask=attention_mask, position_ids=position_ids,
                           use_cache=False, **extra).last_hidden_state
        target = labels[:, 1:]
        sel = target != IGNORE
        logits = self.llm.get_output_embeddings()(hidden[:, :-1][sel]).float()
        tokens = target[sel]
        logprob = F.log_softmax(logits, dim=-1).gather(1, tokens[:, None]).squeeze(1)
        correct = (logits.argmax(-1) == tokens).float()
        if sample_index is None:
            B = len(labels)
            row = torch.arange(B, device=labels.device)[:, None].expand_as(target)[sel]
        else:  # a label's sample is its own place's (never a neighbour's first token: not a label)
            B = int(sample_index.max()) + 1
            row = sample_index[:, 1:].to(labels.device)[sel]
        per_lp = torch.zeros(B, device=logits.device).index_add(0, row, logprob)
        per_n = torch.zeros(B, device=logits.device).index_add(0, row, torch.ones_like(logprob))
        per_ok = torch.zeros(B, device=logits.device).index_add(0, row, correct)
        loss = -logprob.mean() if len(logprob) else logits.sum() * 0
        return LMOutput(loss, per_lp, per_n, per_ok, (per_ok == per_n).float())
