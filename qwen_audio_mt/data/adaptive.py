"""The adaptive task mixture (`mixture.adaptive`): sampling weights updated online from each
task's training loss, by exponentiated gradient (DoReMi, Xie et al. 2023; Online Data Mixing,
Albalak et al. 2023), with a floor so that no task starves.

The rule, every `every_n_steps` optimizer steps:
1. Signal. Each task's mean per-sample loss over the window (the samples' own mean token loss,
   whatever `optim.loss_reduction`), summed over every DDP rank first, so all ranks see the same
   numbers. Divided by the task's loss in its first window of the run (its reference): the share
   of its starting loss it still has, comparable across tasks whose losses differ tenfold
   (captions against class labels). Smoothed: s = ema * s + (1 - ema) * ratio. A task not
   sampled in a window keeps its s.
2. Excess. e_t = s_t - sum_u q_u s_u: how much more of its starting loss a task has left than the
   current mixture's average (DoReMi's excess loss, with the task's own start as reference, since
   no reference model is trained here).
3. Update. theta_t += eta * e_t; a component of task t gets q ∝ p0 * exp(theta_t), p0 being the
   configured mixture (temperature, caps, weights), then q = (1 - floor) * q + floor * p0: every
   component keeps at least `floor` of its configured share. theta starts at 0, so a run starts
   at its configured mixture.

The weights live in one shared-memory tensor that the loader's workers read at every draw (a
weight change reaches the batches after the prefetched ones). They are part of the data
module's checkpoint state (theta, s, references, history), so a resumed run continues from the
same weights; the window in progress when the checkpoint was written is dropped, so the first
update after a resume averages a shorter window. No torch.distributed here: the caller passes
the all-reduce.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError


@dataclass(frozen=True)
class AdaptiveConfig:
    every_n_steps: int = 50   # optimizer steps per update (the window)
    eta: float = 1.0          # step size on the excess (in units of the starting loss)
    floor: float = 0.25       # every component keeps at least this share of its configured probability
    ema: float = 0.5          # smoothing of the loss ratio across windows (0: the last window only)

    def __post_init__(self):
        if self.every_n_steps < 1:
            raise ConfigError(f"mixture.adaptive.every_n_steps={self.every_n_steps}: must be >= 1")
        if not 0 < self.floor <= 1:
            raise ConfigError(f"mixture.adaptive.floor={self.floor}: must be in (0, 1] (1: the mixture never moves)")
        if not 0 <= self.ema < 1:
            raise ConfigError(f"mixture.adaptive.ema={self.ema}: must be in [0, 1)")
        if self.eta < 0:
            raise ConfigError(f"mixture.adaptive.eta={self.eta}: must be >= 0")


class AdaptiveMixture:
    """Weights over mixture components (`tasks[i]`: component i's task), updated per task."""

    def __init__(self, cfg: AdaptiveConfig, tasks: list[str], prior: np.ndarray):
        self.cfg = cfg
        self.names = sorted(set(tasks))
        self.index = {name: i for i, name in enumerate(self.names)}
        self.task_of = np.array([self.index[t] for t in tasks])
        self.prior = np.asarray(prior, dtype=np.float64)
        n = len(self.names)
        self.theta = np.zeros(n)
        self.smooth = np.full(n, np.nan)       # s per task; nan: no window seen yet
        self.reference = np.full(n, np.nan)    # the task's first-window loss
        self.window = np.zeros((n, 2))         # this rank's (loss sum, samples) since the last update
        self.history: list[dict] = []
        # shared memory: forked loader workers read what the trainer writes
        self.weights = torch.tensor(self.prior, dtype=torch.float64).share_memory_()

    # ------------------------------------------------------------------ signals
    def observe(self, tasks: list[str], losses) -> None:
        """One batch's per-sample losses (this rank's), by task name."""
        losses = np.asarray(losses, dtype=np.float64)
        for name, loss in zip(tasks, losses):
            if name in self.index and np.isfinite(loss):
                self.window[self.index[name]] += (loss, 1.0)

    def due(self, step: int) -> bool:
        return step > 0 and step % self.cfg.every_n_steps == 0

    def update(self, step: int, reduce=None) -> dict[str, float]:
        """Apply the rule to the window (summed over ranks by `reduce`, an all-reduce of a
        [tasks, 2] float64 array); returns the new per-task weights."""
        window = reduce(self.window.copy()) if reduce else self.window.copy()
        self.window[:] = 0
        seen = window[:, 1] > 0
        mean = np.where(seen, window[:, 0] / np.maximum(window[:, 1], 1), np.nan)
        first = seen & np.isnan(self.reference)
        self.reference[first] = np.maximum(mean[first], 1e-6)
        ratio = mean / self.reference
        blend = np.where(np.isnan(self.smooth), ratio, self.cfg.ema * self.smooth + (1 - self.cfg.ema) * ratio)
        self.smooth = np.where(seen, blend, self.smooth)
        known = ~np.isnan(self.smooth)
        if known.any():
            q = self.task_weights_array()
            avg = float((q[known] * self.smooth[known]).sum() / q[known].sum())
            self.theta[known] += self.cfg.eta * (self.smooth[known] - avg)
        self._write()
        weights = self.task_weights()
        self.history.append({"step": int(step), "weights": weights})
        return weights

    # ------------------------------------------------------------------ weights
    def component_weights(self) -> np.ndarray:
        t = self.theta[self.task_of]
        q = self.prior * np.exp(t - t.max())
        q /= q.sum()
        return (1 - self.cfg.floor) * q + self.cfg.floor * self.prior / self.prior.sum()

    def task_weights_array(self) -> np.ndarray:
        return np.bincount(self.task_of, weights=self.component_weights(), minlength=len(self.names))

    def task_weights(self) -> dict[str, float]:
        return {name: float(w) for name, w in zip(self.names, self.task_weights_array())}

    def _write(self) -> None:
        self.weights.copy_(torch.from_numpy(self.component_weights()))

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """Plain lists (checkpoints load with weights_only=True)."""
        return {"names": list(self.names), "theta": self.theta.tolist(), "smooth": self.smooth.tolist(),
                "reference": self.reference.tolist(), "history": list(self.history)}

    def load_state_dict(self, state: dict) -> None:
        if list(state["names"]) != self.names:
            raise ConfigError(f"mixture.adaptive: the checkpoint's tasks ({', '.join(state['names'])}) are not "
                              f"this mixture's ({', '.join(self.names)}); resume with the same mixture")
        self.theta = np.array(state["theta"], dtype=np.float64)
        self.smooth = np.array(state["smooth"], dtype=np.float64)
        self.reference = np.array(state["reference"], dtype=np.float64)
        self.history = list(state["history"])
        self.window[:] = 0
        self._write()
