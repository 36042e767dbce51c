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
