"""LoRA SFT vs full SFT on the tiny default model (conf/model/tiny.yaml), stage sft (encoder frozen).

1. Trainable parameters: full SFT trains the adapter and the whole LLM; LoRA (r=8 on the seven
   Qwen2 projections) trains the adapter, the LoRA matrices and the special tokens' rows.
2. Seconds per training step (forward, backward, clip, AdamW step with lit.py's groups), the same
   batch for both: 12 clips of 10 s (120 s of audio, the training default's per-batch limit) with
   30 text tokens each. Median of STEPS steps after WARMUP; one thread. LoRA saves the frozen
   weights' gradients and AdamW updates, not the backward through the activations, and peft's
   trainable token rows rebuild the embedding matrix every forward: on a model this small the
   step costs about what full SFT's does.
Synthetic batches (random mel, random text ids): step time does not depend on the values, and
no shards are needed. `--no-readme`: write bench/results.json only, leave README's table as is.
"""
from __future__ import annotations

import statistics
import sys
import time
from dataclasses import replace

import common
import torch
import yaml
from common import ROOT, record

from qwen_audio_mt.config import from_dict
from qwen_audio_mt.lit import AudioLMModule, OptimConfig
from qwen_audio_mt.model.builders import ModelConfig, Trainable, count_parameters
from qwen_audio_mt.model.lora import LoRAConfig
from qwen_audio_mt.render import IGNORE

WARMUP, STEPS = 2, 9
CLIPS, SECONDS, TEXT = 12, 10, 30
RANK = 8


def model_cfg(r: int) -> ModelConfig:
    raw = yaml.safe_load((ROOT / "conf" / "model" / "tiny.yaml").read_text())
    sft = yaml.safe_load((ROOT / "conf" / "stage" / "sft.yaml").read_text())
    cfg = from_dict(ModelConfig, raw)
    return replace(cfg, trainable=Trainable(**sft), lora=replace(cfg.lora, r=r))


def make_batch(model) -> dict:
    g = torch.Generator().manual_seed(0)
    mel = torch.randn(CLIPS, 80, SECONDS * 100, generator=g)
    lens = torch.full((CLIPS,), SECONDS * 100)
    with torch.no_grad():
        count = int(model.audio_embeddings(mel[:1], lens[:1])[1][0])
    audio = [model.audio_start_id] + [model.placeholder_id] * count + [model.audio_end_id]
    ids = torch.tensor([audio + torch.randint(0, 50000, (TEXT,), generator=g).tolist() for _ in range(CLIPS)])
    labels = ids.clone()
    labels[:, :len(audio)] = IGNORE
    return dict(input_ids=ids, attention_mask=torch.ones_like(ids), mel=mel, mel_lengths=lens, labels=labels)


def step_seconds(r: int) -> tuple[float, dict]:
    torch.manual_seed(0)
    module = AudioLMModule(model_cfg(r), OptimConfig(total_steps=WARMUP + STEPS))
    opt = module.configure_optimizers()["optimizer"]
    model = module.model.train()
    batch, times = make_batch(model), []
    for i in range(WARMUP + STEPS):
        t0 = time.perf_counter()
        model(**batch).loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        opt.zero_grad()
        if i >= WARMUP:
            times.append(time.perf_counter() - t0)
    return statistics.median(times), count_parameters(model)


def main() -> int:
    if "--no-readme" in sys.argv:
        common.README = ROOT / "bench" / ".no-readme"  # update_readme skips a missing README
    torch.set_num_threads(1)
    t_full, n_full = step_seconds(0)
    t_lora, n_lora = step_seconds(RANK)
    total = sum(n_full[k] for k in ("encoder", "adapter", "llm"))
    print(f"trainable parameters: LoRA r={RANK} {n_lora['trainable']:,}, full SFT {n_full['trainable']:,} "
          f"({n_lora['trainable'] / n_full['trainable']:.3%}); model {total:,}")
    print(f"s/step ({CLIPS} x {SECONDS} s clips, median of {STEPS}, 1 thread): LoRA {t_lora:.3f}, "
          f"full SFT {t_full:.3f}, speed-up {t_full / t_lora:.2f}x")
    record("lora", [
        {"benchmark": "LoRA SFT", "figure": f"trainable parameters, tiny model, r={RANK}", "value": n_lora["trainable"],
         "unit": "params", "baseline": f"full SFT: {n_full['trainable']:,} params",
         "ratio": n_lora["trainable"] / n_full["trainable"], "goal": "< 0.1"},
        {"benchmark": "LoRA SFT", "figure": f"s/train step, {CLIPS} x {SECONDS} s clips, 1 thread", "value": t_lora,
         "unit": "s", "baseline": f"full SFT: {t_full:.3f} s", "ratio": t_full / t_lora, "goal": "reported (issue 12)"},
    ])
    return 0


if __name__ == "__main__":
    sys.exit(main())
