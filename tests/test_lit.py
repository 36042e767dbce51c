"""LightningModule pieces that need no trainer: the loss reductions and their config check."""
from __future__ import annotations

import pytest
import torch

from qwen_audio_mt.lit import AudioLMModule, OptimConfig
from qwen_audio_mt.model.audio_lm import LMOutput
from qwen_audio_mt.model.builders import LLMConfig, ModelConfig
from qwen_audio_mt.model.encoder import EncoderConfig


def module(reduction: str) -> AudioLMModule:
    cfg = ModelConfig(EncoderConfig(n_state=32, n_head=2, n_layer=1),
                      LLMConfig(config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                            num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)))
    return AudioLMModule(cfg, OptimConfig(loss_reduction=reduction), log_every=1)


def output(logprob: list[float], tokens: list[float]) -> LMOutput:
    lp, n = torch.tensor(logprob), torch.tensor(tokens)
    token_mean = -lp.sum() / n.sum()
    return LMOutput(token_mean, lp, n, torch.zeros_like(n), torch.zeros_like(n))


def test_sample_reduction_weighs_every_sample_the_same():
    # a one-token class label with loss 2.0 beside a 40-token caption with loss 0.5 per token;
    # the third sample has no label tokens and must not count
    out = output([-2.0, -20.0, 0.0], [1.0, 40.0, 0.0])
    assert module("token")._loss(out).item() == pytest.approx(22.0 / 41)
    assert module("sample")._loss(out).item() == pytest.approx((2.0 + 0.5) / 2)


def test_sample_reduction_without_label_tokens_is_the_zero_loss():
    out = output([0.0, 0.0], [0.0, 0.0])
    out.loss = torch.zeros((), requires_grad=True)
    assert module("sample")._loss(out) is out.loss


def test_unknown_reduction_is_refused():
    with pytest.raises(ValueError, match="optim.loss_reduction='mean': allowed are 'token' and 'sample'"):
        OptimConfig(loss_reduction="mean")



def fsdd_batch(model) -> dict:
    """Three real FSDD digits as task samples: an audio span, then a 6-token target."""
    from conftest import need_data

    from qwen_audio_mt.audio import n_encoder_frames, n_pooled_positions
    from qwen_audio_mt.data.collate import Example, collate
    from qwen_audio_mt.data.features import log_mel
    from qwen_audio_mt.data.ingest import load_audio
    examples = []
    for i, name in enumerate(["0_george_0.wav", "3_jackson_10.wav", "7_nicolas_2.wav"]):
        mel, _, _ = log_mel(load_audio(need_data("fsdd", name)), 80)
        n = n_pooled_positions(n_encoder_frames(mel.shape[-1]))
        ids = [model.audio_start_id] + [model.placeholder_id] * n + [model.audio_end_id] + list(range(30 + i, 40 + i))
        mask = [0] * (len(ids) - 6) + [1] * 6
        examples.append(Example(f"k{i}", "digit_recognition", 0, mel, mel.shape[-1], ids, mask, 1, n,
                                mel.shape[-1] / 100))
    return collate(examples, model.audio_end_id)


def test_fused_adamw_matches_the_per_tensor_loop_over_100_steps():
    """optim.fused (the default) is the same AdamW: over 100 steps on one batch of real digits the
    losses stay within 1e-4 of torch's per-tensor loop (fp32), and so do the weights."""
    runs = []
    for fused in (True, False):
        torch.manual_seed(1)
        mod = module("token")
        mod.optim_cfg = OptimConfig(fused=fused, warmup_steps=1, total_steps=100)
        opt = mod.configure_optimizers()["optimizer"]
        assert opt.param_groups[0]["fused"] is (True if fused else None)
        b = fsdd_batch(mod.model)
        losses = []
        for _ in range(100):
            out = mod.model(b["input_ids"], b["attention_mask"], b["mel"], b["mel_lengths"], b["labels"])
            out.loss.backward()
            opt.step()
            opt.zero_grad()
            losses.append(out.loss.item())
        runs.append((torch.tensor(losses), [p.detach().clone() for p in mod.model.parameters()]))
    (fused_losses, fused_w), (loop_losses, loop_w) = runs
    assert fused_losses[-1] < fused_losses[0] - 1.0  # it trains
    assert torch.allclose(fused_losses, loop_losses, atol=1e-4, rtol=0), (fused_losses - loop_losses).abs().max()
    assert all(torch.allclose(a, b, atol=1e-4, rtol=0) for a, b in zip(fused_w, loop_w))
