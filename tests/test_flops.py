"""flops.py counts what the model computes: its forward equals torch's own FLOP counter on a
tiny AudioLM (every linear layer and convolution, the head on label positions only). Torch's
counter does not see the fused CPU attention kernels (SDPA), so those terms are checked by their
formula."""
from __future__ import annotations

import torch
from conftest import tiny_model_config
from torch.utils.flop_counter import FlopCounterMode

from qwen_audio_mt import flops
from qwen_audio_mt.audio import n_encoder_frames, n_pooled_positions
from qwen_audio_mt.model.builders import build_model
from qwen_audio_mt.render import IGNORE


def _batch(model, frames: int, text: int, labels: int):
    n = n_pooled_positions(n_encoder_frames(frames))
    ids = [model.audio_start_id, *[model.placeholder_id] * n, model.audio_end_id, *range(100, 100 + text)]
    input_ids = torch.tensor([ids])
    lab = torch.full_like(input_ids, IGNORE)
    lab[0, -labels:] = input_ids[0, -labels:]
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": lab,
            "mel": torch.randn(1, model.encoder.cfg.n_mels, frames), "mel_lengths": torch.tensor([frames]),
            "audio_frames": torch.tensor([frames]), "tasks": ["asr"], "sample_lengths": torch.tensor([len(ids)])}


def test_forward_count_is_torchs_flop_counter():
    torch.manual_seed(0)
    model = build_model(tiny_model_config(layers=2)).eval()
    shapes = flops.Shapes.of(model)
    for frames, text, labels in ((300, 20, 8), (1001, 40, 30)):
        b = _batch(model, frames, text, labels)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(b["input_ids"], b["attention_mask"], b["mel"], b["mel_lengths"], b["labels"])
        ours = flops.batch_flops(shapes, b) / flops.BACKWARD_FACTOR
        rows, t = int(b["attention_mask"].sum()), n_encoder_frames(frames)
        attention = shapes.enc_layers * 4 * t * t * shapes.enc_width + shapes.layers * 2 * rows * rows * shapes.width
        assert counter.get_total_flops() == ours - attention


def test_step_is_three_forwards_and_grows_with_real_length_not_padding():
    s = flops.Shapes(n_mels=80, enc_width=64, enc_layers=1, width=64, kv_width=32, mlp_width=128, layers=1, vocab=1000)
    one = flops.step_flops(s, [100], [25], [40], 10)
    assert one == 3 * (flops.encoder_flops(s, 100) + flops.adapter_flops(s, 25) + flops.llm_flops(s, 40, 10))
    assert flops.step_flops(s, [100, 100], [25, 25], [40, 40], 20) == 2 * one
    assert flops.llm_flops(s, 40, 0) - flops.llm_flops(s, 20, 0) > flops.llm_flops(s, 20, 0)  # attention is S^2


def test_cpu_peak_is_a_measured_matmul_rate():
    peak = flops.cpu_peak(size=256, rounds=3)
    assert 1e8 < peak < 1e14  # 0.1 GFLOP/s .. 100 TFLOP/s: a CPU's range
