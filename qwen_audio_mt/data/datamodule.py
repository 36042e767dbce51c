"""LightningDataModule: the mixture's train stream, valid and test streams, and loader state.

The realised mixture is counted in the main process as batches reach the model
(`on_after_batch_transfer`): `state.seen` (task -> samples) and `state.skipped`
(reason -> samples) are what the trainer logs and what checkpoints keep. Restoring a checkpoint
bumps `state.resumes`, so the stream continues with fresh randomness (see loader.py).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import lightning as L
import numpy as np

from .loader import EvalStream, LoaderConfig, StreamState, TrainStream, make_loader
from .mixture import MixtureConfig, components, label_sets, probabilities


@dataclass(frozen=True)
class DataConfig:
    mixture: MixtureConfig = field(default_factory=MixtureConfig)
    loader: LoaderConfig = field(default_factory=LoaderConfig)
    eval_mixture: MixtureConfig | None = None   # valid/test sources; default: the training ones
    valid_split: str = "valid"
    test_split: str = "test"


class AudioDataModule(L.LightningDataModule):
    def __init__(self, cfg: DataConfig):
        super().__init__()
        self.cfg = cfg
        self.state = StreamState(seed=cfg.loader.seed)
        self.comps = self.probs = None
        self.label_sets: dict = {}

    def _ranks(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def setup(self, stage: str | None = None) -> None:
        if self.comps is None:
            self.comps = components(self.cfg.mixture, "train")
            self.probs = probabilities(self.comps, self.cfg.mixture)
            self.label_sets = label_sets(self.cfg.mixture)

    def target_mixture(self) -> dict[str, float]:
        self.setup()
        out: dict[str, float] = {}
        for comp, p in zip(self.comps, self.probs):
            out[comp.task] = out.get(comp.task, 0.0) + float(p)
        return out

    def train_dataloader(self):
        self.setup()
        rank, world = self._ranks()
        return make_loader(TrainStream(self.comps, self.probs, self.cfg.loader, self.label_sets, self.state,
                                       rank, world), self.cfg.loader)

    def _eval(self, split: str):
        self.setup()
        mixture = self.cfg.eval_mixture or self.cfg.mixture
        rank, world = self._ranks()
        return make_loader(EvalStream(components(mixture, split), self.cfg.loader, self.label_sets, rank, world),
                           self.cfg.loader)

    def val_dataloader(self):
        return self._eval(self.cfg.valid_split)

    def test_dataloader(self):
        return self._eval(self.cfg.test_split)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        trainer = self.trainer
        if trainer is None or trainer.training:
            self.observe(batch)
        return batch

    def observe(self, batch: dict) -> None:
        for task in batch["tasks"]:
            self.state.seen[task] = self.state.seen.get(task, 0) + 1
        for reason, n in (batch.get("skipped") or {}).items():
            self.state.skipped[reason] = self.state.skipped.get(reason, 0) + int(n)

    def realised_mixture(self) -> dict[str, float]:
        total = sum(self.state.seen.values())
        return {t: n / total for t, n in sorted(self.state.seen.items())} if total else {}

    def state_dict(self) -> dict:
        return asdict(self.state)

    def load_state_dict(self, state: dict) -> None:
        self.state = StreamState(**state)
        self.state.resumes += 1  # continue with fresh randomness, never replay the start


def mixture_z_scores(counts: dict[str, int], probs: dict[str, float]) -> dict[str, float]:
    """Per-task z-scores of observed counts against the target (binomial): |z| <= 3 is on target."""
    n = sum(counts.values())
    return {t: (counts.get(t, 0) - n * p) / max(np.sqrt(n * p * (1 - p)), 1e-9) for t, p in probs.items()}
