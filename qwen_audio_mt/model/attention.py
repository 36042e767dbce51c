"""LLM attention that computes packed rows sample by sample.

transformers reads restarting position ids (no 2-D mask, no cache) as packed sequences and
builds a block-causal mask, but SDPA then computes every row's full T x T scores: on rows of
2,048 ids holding samples of ~100-800 that is most of the attention work, masked away. Flash
attention's varlen kernels skip it on CUDA; here the implementation `PACKED` (registered with
transformers' attention and mask interfaces) runs SDPA once per sample span when AudioLM passes
the spans (`sample_spans`: (row, start, length) per sample), and is plain SDPA otherwise
(unpacked batches, generation with its cache). The LLM is switched to it at build time only
when it runs SDPA; the choice is not saved with the config (transformers keeps it private).
"""
from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

PACKED = "qwen_audio_mt_packed"


def span_attention(q, k, v, spans: list[tuple[int, int, int]], causal: bool = False, scale=None) -> torch.Tensor:
    """SDPA within each (row, start, length) span only (spans do not overlap): q [B, H, T, D],
    k/v [B, H_kv, T, D] -> [B, H, T, D], zeros outside every span. The rows are laid end to end
    and split at the span edges, so autograd joins the pieces once (a slice per span would
    write a full-size gradient per span)."""
    B, H, T, D = q.shape
    flat = [x.transpose(0, 1).reshape(x.shape[1], B * T, D) for x in (q, k, v)]
    sizes, real, at = [], [], 0
    for start, n in sorted((r * T + s, n) for r, s, n in spans):
        if start > at:
            sizes.append(start - at)
            real.append(False)
        sizes.append(n)
        real.append(True)
        at = start + n
    if at < B * T:
        sizes.append(B * T - at)
        real.append(False)
    gqa = q.shape[1] != k.shape[1]
    pieces = []
    for is_span, qs, ks, vs in zip(real, *(x.split(sizes, 1) for x in flat)):
        pieces.append(F.scaled_dot_product_attention(qs[None], ks[None], vs[None], is_causal=causal, scale=scale,
                                                     enable_gqa=gqa)[0] if is_span else torch.zeros_like(qs))
    return torch.cat(pieces, 1).reshape(H, B, T, D).transpose(0, 1)


def packed_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                     sample_spans=None, **kwargs):
    """query [B, H, T, D], key/value [B, H_kv, T, D] -> ([B, T, H, D], None), as sdpa's."""
    if sample_spans is None or query.shape[2] != key.shape[2]:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    out = span_attention(query, key, value, sample_spans, causal=True, scale=scaling)
    return out.transpose(1, 2).contiguous(), None


def use_packed(llm) -> None:
    """Route an SDPA LLM's attention through `packed_attention` (same numbers unpacked)."""
    if getattr(llm.config, "_attn_implementation", None) == "sdpa":
        _register()
        llm.config._attn_implementation = PACKED


@lru_cache(maxsize=1)
def _register() -> None:
    """Once, when first used: importing transformers' attention code takes seconds, which a
    config check (train.check_config) should not wait for."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    AttentionInterface.register(PACKED, packed_attention)
    AttentionMaskInterface.register(PACKED, sdpa_mask)
