"""Lightning callbacks of the trainer: a checkpoint on SIGTERM and at the final step, the
realised task mixture (and the adaptive mixture's updates), skipped samples in the progress bar,
and model FLOPs per second and MFU (PerfMonitor)."""
from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException


class SigtermCheckpoint(L.Callback):
    """On SIGTERM (a scheduler's preemption, `kill`), Lightning finishes the current step and
    raises SIGTERMException; this saves the step where `ckpt_path=last` finds it: as one more
    periodic file that last.ckpt links to, or a real last.ckpt before the first periodic save
    (checkpoints.save_stop)."""

    def __init__(self, dirpath: str):
        self.dirpath = Path(dirpath)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            from .checkpoints import save_stop
            save_stop(trainer, self.dirpath)


class FinalCheckpoint(L.Callback):
    """Brings `last.ckpt` to the final step when training ends between two periodic saves.

    ModelCheckpoint writes last.ckpt only together with its every-N-steps checkpoints, or once at
    the end of a run that saved none; a run ending at max_steps=250 with saves every 100 would
    leave last.ckpt at step 200, and `ckpt_path=last` would train steps 200-250 again. The final
    step becomes one more periodic file (checkpoints.save_stop), so retention bounds it too."""

    def __init__(self):
        self.saved_at = -1

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self.saved_at = trainer.global_step

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        cb = trainer.checkpoint_callback
        # no last.ckpt written yet: ModelCheckpoint's own on_train_end (it runs after this) writes it
        if cb is None or not cb.save_last or not cb.last_model_path or trainer.fast_dev_run:
            return
        if self.saved_at != trainer.global_step:
            from .checkpoints import save_stop
            save_stop(trainer, cb.dirpath)


class MixtureMonitor(L.Callback):
    """Logs the realised share of each task (mix/TASK) every N steps (skipped samples: SkipMonitor)."""

    def __init__(self, every_n_steps: int = 50):
        self.every = every_n_steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        dm = trainer.datamodule
        # global_step already counts this batch here: log where Lightning writes (step + 1) % N == 0
        if dm is None or trainer.global_step % self.every or not hasattr(dm, "realised_mixture"):
            return
        for task, share in dm.realised_mixture().items():
            pl_module.log(f"mix/{task}", share, rank_zero_only=True)
        if getattr(dm, "adaptive", None) is not None:
            for task, weight in dm.adaptive.task_weights().items():
                pl_module.log(f"adaptive/{task}", weight, rank_zero_only=True)


class AdaptiveMixtureUpdate(L.Callback):
    """Feeds the adaptive mixture (data/adaptive.py) each batch's per-sample losses and applies
    its update every `mixture.adaptive.every_n_steps` optimizer steps, the window summed over the
    DDP ranks so every rank sets the same weights. Without `mixture.adaptive` it does nothing."""

    def __init__(self):
        self.updated_at = -1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        adaptive = getattr(trainer.datamodule, "adaptive", None)
        if adaptive is None or not isinstance(outputs, dict):  # None: a step skipped as non-finite
            return
        adaptive.observe(batch["tasks"], outputs["sample_losses"].float().cpu().numpy())
        step = trainer.global_step  # already counts this batch's optimizer step
        if adaptive.due(step) and step != self.updated_at:  # once per step under gradient accumulation
            self.updated_at = step
            adaptive.update(step, lambda window: _sum_over_ranks(trainer, window))


def _sum_over_ranks(trainer, window):
    if trainer.world_size <= 1:
        return window
    import torch
    t = torch.tensor(window, dtype=torch.float64, device=trainer.strategy.root_device)
    return trainer.strategy.reduce(t, reduce_op="sum").cpu().numpy()


class ValidationMetrics(L.Callback):
    """The evaluation's registry metrics on a fixed, seeded subset of the validation split
    (`per_task` clips of every task, the same clips at every check), after each validation run
    (every `val_check_interval`). Logged as `val/<task>/<metric>` and `val/aggregate` (the mean
    margin over the baselines, in points: evaluation.py), which ModelCheckpoint can monitor
    (`monitor: val/aggregate, mode: max`). Rank 0 scores; every rank logs the same numbers."""

    def __init__(self, per_task: int = 8, seed: int = 0, batch_size: int = 32, max_new_tokens: int = 128):
        self.per_task, self.seed = per_task, seed
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens
        self._cache = None  # (sources, keys, renderer, baselines), built at the first check

    def _setup(self, trainer):
        from .baselines import train_targets
        from .evaluation import run_data, subset_keys
        sources, rend = run_data(trainer.datamodule)
        keys = subset_keys(sources, trainer.datamodule.cfg.valid_split, self.per_task, self.seed)
        return sources, keys, rend, train_targets(rend, sources, "train")

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.fast_dev_run or trainer.datamodule is None:
            return
        flat = None
        if trainer.is_global_zero:
            from .evaluation import EvalConfig, evaluate_model
            if self._cache is None:
                self._cache = self._setup(trainer)
            sources, keys, rend, baselines = self._cache
            dm = trainer.datamodule
            cfg = EvalConfig(split=dm.cfg.valid_split, keys=keys, pad_to_30s=dm.cfg.loader.pad_to_30s,
                             batch_size=self.batch_size, max_new_tokens=self.max_new_tokens, progress=False)
            metrics = evaluate_model(pl_module.model, rend, sources, cfg, baselines=baselines)
            flat = {f"val/{t}/{m['metric']}": float(m["value"]) for t, m in metrics["tasks"].items()
                    if m.get("value") is not None}
            if metrics["summary"]["aggregate"] is not None:
                flat["val/aggregate"] = float(metrics["summary"]["aggregate"])
        flat = trainer.strategy.broadcast(flat, src=0)
        for key, value in flat.items():
            pl_module.log(key, value, prog_bar=key == "val/aggregate", sync_dist=False)


class SkipMonitor(L.Callback):
    """Skipped samples by reason (`skipped/<reason>`, this rank's count) in the progress bar and
    the logs at every step from the first skip on, not only every N steps. The first skip of each
    (reason, shard) is also a warning in the log (data/skips.py) and the run ends with a summary
    line (train.py)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        dm = trainer.datamodule
        for reason, n in sorted(getattr(getattr(dm, "state", None), "skipped", {}).items()):
            pl_module.log(f"skipped/{reason}", float(n), prog_bar=True, rank_zero_only=True)


class PerfMonitor(L.Callback):
    """Model FLOPs of every training step (flops.py: the shapes and the batch's real lengths)
    over its wall time, from one step's end to the next (loading included, the first step not
    counted): `perf/tflops` (this rank's) and `perf/mfu` (over the device's peak, flops.py) every
    `every_n_steps`; the run's totals (and this rank's train samples/s) in `summary()` for the
    end-of-run summary."""

    def __init__(self, every_n_steps: int = 10):
        self.every_n_steps = every_n_steps
        self.flops = self.seconds = 0.0
        self.samples = 0
        self.peak, self.peak_source, self._last = None, "", None

    def setup(self, trainer, pl_module, stage: str) -> None:
        """The peak is measured here, before the sanity check and the training loader start their
        workers: measured beside them, it read 0.039 against 0.16 TFLOP/s alone (MFU over 100 %)."""
        import torch

        from .flops import device_peak
        if stage != "fit":
            return
        prec = str(trainer.precision)
        dtype = torch.bfloat16 if prec.startswith("bf16") else torch.float16 if prec.startswith("16") else torch.float32
        self.peak, self.peak_source = device_peak(trainer.strategy.root_device, dtype)

    def on_train_start(self, trainer, pl_module) -> None:
        from .flops import Shapes
        self.shapes = Shapes.of(pl_module.model)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        import time

        from .flops import batch_flops
        now, last, self._last = time.perf_counter(), self._last, time.perf_counter()
        if last is None:  # the first step holds start-up (workers, warm-up)
            return
        flops, seconds = batch_flops(self.shapes, batch), now - last
        self.flops, self.seconds = self.flops + flops, self.seconds + seconds
        self.samples += len(batch["tasks"])
        if trainer.global_step % self.every_n_steps == 0:
            rate = flops / seconds
            pl_module.log("perf/tflops", rate / 1e12, on_step=True, batch_size=len(batch["tasks"]))
            if self.peak:
                pl_module.log("perf/mfu", rate / self.peak, on_step=True, batch_size=len(batch["tasks"]))

    def summary(self) -> dict:
        rate = self.flops / self.seconds if self.seconds else None
        return {"tflop": self.flops / 1e12, "seconds": self.seconds, "tflops": rate and rate / 1e12,
                "samples_per_s": self.samples / self.seconds if self.seconds else None,
                "mfu": rate / self.peak if rate and self.peak else None,
                "peak_tflops": self.peak and self.peak / 1e12, "peak": self.peak_source}
