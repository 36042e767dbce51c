"""LightningDataModule: the mixture's train stream, valid and test streams, and loader state.

The realised mixture is counted in the main process as batches reach the model
(`on_after_batch_transfer`): `state.seen` (task -> samples), `state.skipped` (reason -> samples)
and `state.skipped_shards` (reason -> shard -> samples) are what the trainer logs and what
checkpoints keep. After each batch the skipped share of samples (over all DDP ranks) is checked
against `data.loader.max_skip_fraction`: past it the run stops with a DataError naming the
shards. When training ends the ranks' skip counts are merged for the run's summary
(`skip_summary`). Restoring a checkpoint bumps `state.resumes`, so the stream continues with fresh
randomness (see loader.py).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import lightning as L
import numpy as np
import torch

from ..errors import DataError
from . import skips
from .loader import DataConfig, EvalStream, LoaderConfig, StreamState, TrainStream, make_loader  # noqa: F401 (DataConfig: re-exported)
from .adaptive import AdaptiveMixture
from .mixture import MixtureConfig, components, label_sets, probabilities


class AudioDataModule(L.LightningDataModule):
    def __init__(self, cfg: DataConfig):
        super().__init__()
        self.cfg = cfg
        self.state = StreamState(seed=cfg.loader.seed)
        self.comps = self.probs = None
        self.adaptive: AdaptiveMixture | None = None   # mixture.adaptive: weights the loader reads
        self.label_sets: dict = {}
        self.run_skips: dict | None = None   # every rank's skips, merged when training ends
        self.rank_weights: list | None = None  # every rank's adaptive weights when training ended

    def _ranks(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def setup(self, stage: str | None = None) -> None:
        if self.comps is None:
            self.comps = components(self.cfg.mixture, "train")
            self.probs = probabilities(self.comps, self.cfg.mixture)
            self.label_sets = label_sets(self.cfg.mixture)
            if self.cfg.mixture.adaptive is not None:
                self.adaptive = AdaptiveMixture(self.cfg.mixture.adaptive, [c.task for c in self.comps], self.probs)

    def target_mixture(self) -> dict[str, float]:
        self.setup()
        out: dict[str, float] = {}
        for comp, p in zip(self.comps, self.probs):
            out[comp.task] = out.get(comp.task, 0.0) + float(p)
        return out

    def train_stream(self) -> TrainStream:
        self.setup()
        rank, world = self._ranks()
        weights = self.adaptive.weights if self.adaptive is not None else None
        return TrainStream(self.comps, self.probs, self.cfg.loader, self.label_sets, self.state, rank, world, weights)

    def train_dataloader(self):
        return make_loader(self.train_stream(), self.cfg.loader)

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
            if trainer is not None:
                self.check_skip_limit()
        return batch

    def observe(self, batch: dict) -> None:
        for task in batch["tasks"]:
            self.state.seen[task] = self.state.seen.get(task, 0) + 1
        skips.tally(self.state.skipped, self.state.skipped_shards, batch.get("skipped"))

    def _world(self) -> int:
        return self.trainer.world_size if self.trainer is not None else 1

    def check_skip_limit(self) -> None:
        """DataError once the skipped share passes the limit; every rank decides on the same
        (summed) counts, so all stop together."""
        cfg = self.cfg.loader
        if cfg.max_skip_fraction is None:
            return
        seen, skipped = sum(self.state.seen.values()), sum(self.state.skipped.values())
        if self._world() > 1:  # one small all-reduce per step, as the loss's finiteness check
            both = torch.tensor([seen, skipped], dtype=torch.float64, device=self.trainer.strategy.root_device)
            seen, skipped = (int(x) for x in self.trainer.strategy.reduce(both, reduce_op="sum").tolist())
        if skips.over_limit(seen, skipped, cfg.max_skip_fraction, cfg.skip_limit_min_samples):
            shards = skips.merge(_gather(self.state.skipped_shards, self._world()))
            raise DataError(skips.limit_message(seen, skipped, cfg.max_skip_fraction, shards))

    def teardown(self, stage: str) -> None:
        if stage == "fit":  # every rank is here (the process group is still up): merge their skips
            world = self._world()
            self.run_skips = skips.summary(
                sum(_gather(sum(self.state.seen.values()), world)),
                skips.merge(_gather(self.state.skipped_shards, world)))
            if self.adaptive is not None:  # the same on every rank, or the update rule is broken
                self.rank_weights = _gather(self.adaptive.weights.tolist(), world)

    def skip_summary(self) -> dict:
        """Skipped samples of the run (all ranks once training ended, else this process's)."""
        return self.run_skips or skips.summary(sum(self.state.seen.values()), self.state.skipped_shards)

    def realised_mixture(self) -> dict[str, float]:
        total = sum(self.state.seen.values())
        return {t: n / total for t, n in sorted(self.state.seen.items())} if total else {}

    def mixture_record(self) -> dict:
        """What mixture.json keeps: the configured and realised shares per task, and the
        adaptive weights' history (with every rank's final weights, once training ended)."""
        record = {"target": self.target_mixture(), "realised": self.realised_mixture(),
                  "samples": sum(self.state.seen.values()), "adaptive": None}
        if self.adaptive is not None:
            record["adaptive"] = {"config": asdict(self.cfg.mixture.adaptive), "history": self.adaptive.history,
                                  "final": self.adaptive.task_weights(), "ranks": self.rank_weights}
        return record

    def state_dict(self) -> dict:
        state = asdict(self.state)
        if self.adaptive is not None:
            state["adaptive"] = self.adaptive.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        state = dict(state)
        adaptive = state.pop("adaptive", None)
        if adaptive is not None and self.adaptive is not None:
            self.adaptive.load_state_dict(adaptive)
        self.state = StreamState(**state)
        self.state.resumes += 1  # continue with fresh randomness, never replay the start
        for reason, n in self.state.skipped.items():  # a checkpoint from before per-shard counts
            known = sum(self.state.skipped_shards.get(reason, {}).values())
            if n > known:
                self.state.skipped_shards.setdefault(reason, {})[skips.UNKNOWN_SHARD] = n - known


def _gather(obj, world: int) -> list:
    """`obj` of every rank (DDP), or [obj]."""
    if world <= 1 or not torch.distributed.is_initialized():
        return [obj]
    out = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def mixture_z_scores(counts: dict[str, int], probs: dict[str, float]) -> dict[str, float]:
    """Per-task z-scores of observed counts against the target (binomial): |z| <= 3 is on target."""
    n = sum(counts.values())
    return {t: (counts.get(t, 0) - n * p) / max(np.sqrt(n * p * (1 - p)), 1e-9) for t, p in probs.items()}
