"""FLOPs of a training step from the model's shapes and the batch's real (unpadded) lengths, and
the peak they are measured against: model FLOPs utilisation (MFU).

Counting (a multiply-add is 2 FLOPs; matmuls only: norms, activations, softmax, pooling and
biases are well under 1% at these shapes and left out):
- encoder, per clip of T real mel frames, T' = (T - 1) // 2 + 1 after the conv stem, d = n_state,
  L layers: conv1 2*3*n_mels*d*T, conv2 2*3*d*d*T'; per layer 24*T'*d^2 (q, k, v, out: 8*T'*d^2;
  MLP d -> 4d -> d: 16*T'*d^2) + 4*T'^2*d (scores and the weighted sum);
- adapter: 2*N*d*w per clip, N pooled positions, w the LLM width;
- LLM, per row of S real tokens (h wide, kv the key/value width, i the MLP width, L layers): per
  layer 2*S*(2*h*h + 2*h*kv + 3*h*i) + 2*S^2*h (causal: half of full attention's 4*S^2*h); the
  head 2*h*V per label position (AudioLM computes logits only there).
- A training step is 3 x the forward (the backward costs twice the forward: PaLM's convention for
  model FLOPs, Chowdhery et al. 2022, App. B), counted for every part whether it trains or not, so
  MFU compares across stages; padding and recomputation (gradient checkpointing) are not counted.

Peak: on CUDA the device's dense peak for the compute dtype (Lightning's table,
`get_available_flops`); on CPU, which lists none, the matmul throughput measured here
(`cpu_peak`: square matmuls on this process's threads, the best of a few rounds).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

BACKWARD_FACTOR = 3  # forward + backward (2 x forward)


@dataclass(frozen=True)
class Shapes:
    """What the count needs of a model: encoder and LLM widths, depths and vocabulary."""
    n_mels: int
    enc_width: int
    enc_layers: int
    width: int
    kv_width: int
    mlp_width: int
    layers: int
    vocab: int

    @classmethod
    def of(cls, model) -> "Shapes":
        return cls.from_parts(model.encoder.cfg, model.llm)

    @classmethod
    def from_parts(cls, enc, llm) -> "Shapes":
        """From an EncoderConfig and a transformers causal LM (also one on the meta device)."""
        c = llm.config
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        kv = (getattr(c, "num_key_value_heads", None) or c.num_attention_heads) * head_dim
        return cls(enc.n_mels, enc.n_state, enc.n_layer, c.hidden_size, kv, c.intermediate_size,
                   c.num_hidden_layers, llm.get_output_embeddings().weight.shape[0])


def encoder_flops(s: Shapes, mel_frames: int) -> int:
    t = (mel_frames - 1) // 2 + 1 if mel_frames > 0 else 0
    d = s.enc_width
    stem = 2 * 3 * s.n_mels * d * mel_frames + 2 * 3 * d * d * t
    return stem + s.enc_layers * (24 * t * d * d + 4 * t * t * d)


def adapter_flops(s: Shapes, positions: int) -> int:
    return 2 * positions * s.enc_width * s.width


def llm_flops(s: Shapes, tokens: int, label_tokens: int) -> int:
    h = s.width
    per_layer = 2 * tokens * (2 * h * h + 2 * h * s.kv_width + 3 * h * s.mlp_width) + 2 * tokens * tokens * h
    return s.layers * per_layer + 2 * h * s.vocab * label_tokens


def step_flops(s: Shapes, mel_frames: list[int], positions: list[int], row_tokens: list[int],
               label_tokens: int) -> int:
    """Model FLOPs of one training step on a batch (forward + backward)."""
    fwd = sum(encoder_flops(s, f) for f in mel_frames) + sum(adapter_flops(s, n) for n in positions)
    fwd += sum(llm_flops(s, n, 0) for n in row_tokens) + llm_flops(s, 0, label_tokens)
    return BACKWARD_FACTOR * fwd


def planned_step_flops(s: Shapes, tokens: int, audio_s: float, row_tokens: int = 2048) -> int:
    """A planned batch's step FLOPs (qwen-audio-mt plan): its audio as 30-s clips (attention's
    upper bound), its tokens in rows of `row_tokens`, every text token a label (the head's)."""
    from .audio import CHUNK_SECONDS, MAX_AUDIO_POSITIONS, N_FRAMES
    clips = int(-(-audio_s // CHUNK_SECONDS))
    rows = [row_tokens] * (tokens // row_tokens) + ([tokens % row_tokens] if tokens % row_tokens else [])
    labels = max(tokens - clips * MAX_AUDIO_POSITIONS, 0)
    return step_flops(s, [N_FRAMES] * clips, [MAX_AUDIO_POSITIONS] * clips, rows, labels)


def batch_flops(s: Shapes, batch: dict) -> int:
    """`step_flops` of a collated batch (data/collate.py): the real mel frames of every clip, the
    real tokens of every sample (attention stays within a sample, packed or not), the labels."""
    from .audio import n_encoder_frames, n_pooled_positions
    from .render import IGNORE
    frames = [int(f) for f in batch["audio_frames"]] if batch.get("audio_frames") is not None else []
    positions = [n_pooled_positions(n_encoder_frames(f)) for f in frames]
    rows = [int(n) for n in batch["sample_lengths"]]
    labels = int((batch["labels"][:, 1:] != IGNORE).sum())
    return step_flops(s, frames, positions, rows, labels)


def cpu_peak(size: int = 1024, rounds: int = 5, dtype=None) -> float:
    """Measured matmul FLOP/s of this process on the CPU (the best of `rounds` timed matmuls)."""
    import torch
    dtype = dtype or torch.float32
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b  # warm-up: thread pool, packing buffers
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best


def device_peak(device, dtype) -> tuple[float | None, str]:
    """(peak FLOP/s, where it comes from) for MFU on this device and compute dtype."""
    if device.type == "cuda":
        from lightning.fabric.utilities.throughput import get_available_flops
        peak = get_available_flops(device, dtype)
        return (float(peak), "the device's listed dense peak") if peak else (None, "no listed peak for this GPU")
    return cpu_peak(dtype=dtype), "matmul throughput measured on this CPU"
