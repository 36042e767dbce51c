"""Optimiser settings and the learning-rate schedule (lit.py uses them; no torch here, so a
mistake in `optim.*` is reported before the trainer's imports).

- AdamW: see lit.py's docs (decay groups, `fused`).
- Schedule: linear warmup over `warmup_steps`, cosine to `min_lr_ratio` x lr at `total_steps`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import ConfigError


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-8
    warmup_steps: int = 100
    total_steps: int = 10_000       # the cosine's end (set to the trainer's max_steps)
    min_lr_ratio: float = 0.1
    loss_reduction: str = "token"   # "token" | "sample" (see the module docs)
    fused: bool = True              # torch's fused AdamW kernel (see the module docs)

    def __post_init__(self):
        if self.loss_reduction not in ("token", "sample"):
            raise ConfigError(f"optim.loss_reduction={self.loss_reduction!r}: allowed are 'token' and 'sample'")


def lr_lambda(cfg: OptimConfig):
    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.total_steps - cfg.warmup_steps))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return f
