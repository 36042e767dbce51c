"""Training benchmarks, measured side by side in one run on the same model and batches.

1. Lightning steps/s vs a bare PyTorch loop (forward, backward, clip, AdamW step) over the same
   pre-collated batches, same model config, same threads. Goal: >= 0.95.
2. Train samples/s with dynamic lengths (duration buckets) vs 30-s padding (Qwen-Audio), same
   model, same samples. Goal: >= 3x.
3. Train samples/s and MFU, the default (fused AdamW, malloc keeping freed memory) vs the old
   default (fp32 eager, bucketed, torch's per-tensor AdamW loop, glibc's malloc as it comes),
   with packed batches and the default on glibc's own malloc settings beside them, 2 threads,
   best of 5 interleaved rounds, each variant in its own interpreter. Goal (issue 15): >= 2x.
The tiny default model; batches come from the embedded shards (make shards).
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path
from dataclasses import replace

import lightning as L
import torch
import yaml
from common import ROOT, record

from qwen_audio_mt.config import from_dict
from qwen_audio_mt.data.collate import BatchLimits
from qwen_audio_mt.data.datamodule import AudioDataModule, DataConfig
from qwen_audio_mt.data.loader import LoaderConfig
from qwen_audio_mt.data.mixture import MixtureConfig, SourceConfig
from qwen_audio_mt.flops import Shapes, batch_flops, cpu_peak
from qwen_audio_mt.lit import AudioLMModule, OptimConfig, batch_forward
from qwen_audio_mt.malloc import keep_freed_memory
from qwen_audio_mt.model.builders import ModelConfig

SHARDS = ROOT / "shards" / "embedded"
STEPS = 20
# the training default's batch limits (pool 256: mixed-task batches), read where training reads them
LIMITS = BatchLimits(**yaml.safe_load((ROOT / "conf" / "data" / "default.yaml").read_text())["loader"]["limits"])


def model_cfg() -> ModelConfig:
    raw = yaml.safe_load((ROOT / "conf" / "model" / "tiny.yaml").read_text())
    return from_dict(ModelConfig, raw)


def batches(n: int, limits: BatchLimits = LIMITS, **loader) -> list[dict]:
    cfg = LoaderConfig(num_workers=0, batches_per_epoch=n, limits=limits, **loader)
    return list(AudioDataModule(DataConfig(MixtureConfig((SourceConfig(str(SHARDS)),)), cfg)).train_dataloader())


def bare(data: list[dict], fused: bool = True, keep_freed: bool = False) -> float:
    """Seconds for the batches' steps; `keep_freed` sets glibc's malloc as training does
    (malloc.py): run it in a child (`in_child`), where the setting stays."""
    if keep_freed:
        keep_freed_memory()
    torch.manual_seed(0)
    module = AudioLMModule(model_cfg(), OptimConfig(total_steps=len(data), fused=fused))
    opt = module.configure_optimizers()["optimizer"]
    model = module.model.train()
    t0 = time.perf_counter()
    for b in data:
        out = batch_forward(model, b)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
    return time.perf_counter() - t0


class Timed(L.Callback):
    def on_train_start(self, trainer, pl_module):
        self.t0 = time.perf_counter()

    def on_train_end(self, trainer, pl_module):
        self.seconds = time.perf_counter() - self.t0


def lightning(data: list[dict]) -> float:
    torch.manual_seed(0)
    module = AudioLMModule(model_cfg(), OptimConfig(total_steps=len(data)), log_every=10)
    timer = Timed()
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=len(data), gradient_clip_val=1.0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[timer], num_sanity_val_steps=0, limit_val_batches=0)
    # the same pre-collated batches, one per step (a plain list would be read as many loaders)
    loader = torch.utils.data.DataLoader(data, batch_size=None, shuffle=False)
    trainer.fit(module, train_dataloaders=loader)
    return timer.seconds


def in_child(path: Path, fused: bool, keep_freed: bool) -> float:
    """`bare` on the batches saved at `path`, in a fresh interpreter: a process-wide setting made
    there (glibc's malloc thresholds cannot be unset) leaves the other variants untouched. Not a
    fork: OpenMP's threads do not survive one (the child hangs in its first parallel op)."""
    cmd = [sys.executable, __file__, "--step", str(path), str(int(fused)), str(int(keep_freed))]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return float(out.split()[-1])


def child_main(path: str, fused: str, keep_freed: str) -> int:
    torch.set_num_threads(2)
    print(bare(torch.load(path, weights_only=True), fused=fused == "1", keep_freed=keep_freed == "1"))
    return 0


def default_step(dyn: list[dict]) -> dict:
    """Row 3: the default against the old default and packed batches (module docs)."""
    samples = sum(len(b["tasks"]) for b in dyn)
    torch.set_num_threads(2)
    packed = batches(STEPS, replace(LIMITS, pack=True))
    n_packed = sum(len(b["tasks"]) for b in packed)
    peak = cpu_peak() / 1e12
    shapes = Shapes.of(AudioLMModule(model_cfg()).model)
    tflop_dyn, tflop_packed = (sum(batch_flops(shapes, b) for b in bs) / 1e12 for bs in (dyn, packed))
    # (batches, fused AdamW, malloc keeps freed memory, samples, TFLOP)
    runs = {"old": (dyn, False, False, samples, tflop_dyn), "new": (dyn, True, True, samples, tflop_dyn),
            "packed": (packed, True, True, n_packed, tflop_packed),
            "new, plain malloc": (dyn, True, False, samples, tflop_dyn)}
    seconds = {k: [] for k in runs}
    with tempfile.TemporaryDirectory() as tmp:
        saved = {id(d): Path(tmp) / f"{i}.pt" for i, d in enumerate((dyn, packed))}
        for d in (dyn, packed):
            torch.save(d, saved[id(d)])
        for _ in range(5):  # interleaved: the machine's drift hits every variant alike
            for k, (data, fused, keep, _, _) in runs.items():
                seconds[k].append(in_child(saved[id(data)], fused, keep))
    best = {k: runs[k][3] / min(seconds[k]) for k in runs}
    mfu = {k: runs[k][4] / min(seconds[k]) / peak for k in runs}  # model TFLOP/s over the peak
    print(f"train samples/s, 2 threads: default (fused AdamW, malloc keeps freed memory) {best['new']:.1f}, "
          f"packed {best['packed']:.1f}, old default (per-tensor AdamW) {best['old']:.1f}: "
          f"{best['new'] / best['old']:.2f}x; MFU {mfu['new']:.1%} / {mfu['packed']:.1%} / {mfu['old']:.1%} "
          f"of {peak:.3f} TFLOP/s; the default with glibc's own malloc settings "
          f"{best['new, plain malloc']:.1f} ({best['new'] / best['new, plain malloc']:.2f}x)")
    return {"benchmark": "default step", "figure": f"train samples/s, 2 threads, MFU {mfu['new']:.1%}",
            "value": best["new"], "unit": "samples/s",
            "baseline": f"old default (per-tensor AdamW) {best['old']:.1f}, MFU {mfu['old']:.1%}; packed "
                        f"{best['packed']:.1f}, MFU {mfu['packed']:.1%}; plain malloc "
                        f"{best['new, plain malloc']:.1f}",
            "ratio": best["new"] / best["old"], "goal": ">= 2x"}


def main() -> int:
    if sys.argv[1:2] == ["--step"]:
        return child_main(*sys.argv[2:5])
    if not (SHARDS / "index.json").exists():
        print(f"no embedded shards at {SHARDS}: run `make shards` first", file=sys.stderr)
        return 1
    torch.set_num_threads(1)
    dyn = batches(STEPS)
    t_bare, t_lit = bare(dyn), lightning(dyn)
    print(f"steps/s: Lightning {STEPS / t_lit:.3f}, bare loop {STEPS / t_bare:.3f}, ratio {t_bare / t_lit:.3f}")
    samples = sum(len(b["tasks"]) for b in dyn)
    padded = batches(STEPS, pad_to_30s=True)
    n_pad = sum(len(b["tasks"]) for b in padded)
    dyn_rate, pad_rate = samples / t_bare, n_pad / bare(padded)
    print(f"train samples/s: dynamic {dyn_rate:.1f}, 30-s padding {pad_rate:.1f}, ratio {dyn_rate / pad_rate:.2f}x")
    step_row = default_step(dyn)
    record("train", [
        {"benchmark": "trainer overhead", "figure": "steps/s, tiny model, 1 thread", "value": STEPS / t_lit,
         "unit": "steps/s", "baseline": f"bare PyTorch loop: {STEPS / t_bare:.3f} steps/s", "ratio": t_bare / t_lit,
         "goal": ">= 0.95"},
        {"benchmark": "dynamic lengths", "figure": "train samples/s", "value": dyn_rate, "unit": "samples/s",
         "baseline": f"30-s padding: {pad_rate:.1f} samples/s", "ratio": dyn_rate / pad_rate, "goal": ">= 3x"},
        step_row,
    ])
    return 0


if __name__ == "__main__":
    sys.exit(main())
