"""Lightning callbacks of the trainer: a checkpoint on SIGTERM and at the final step, and the
realised task mixture."""
from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException


class SigtermCheckpoint(L.Callback):
    """On SIGTERM (a scheduler's preemption, `kill`), Lightning finishes the current step and
    raises SIGTERMException; this writes `last.ckpt` where `ckpt_path=last` finds it."""

    def __init__(self, dirpath: str):
        self.dirpath = Path(dirpath)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            trainer.save_checkpoint(str(self.dirpath / "last.ckpt"))


class FinalCheckpoint(L.Callback):
    """Brings `last.ckpt` to the final step when training ends between two periodic saves.

    ModelCheckpoint writes last.ckpt only together with its every-N-steps checkpoints, or once at
    the end of a run that saved none; a run ending at max_steps=250 with saves every 100 would
    leave last.ckpt at step 200, and `ckpt_path=last` would train steps 200-250 again."""

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
            trainer.save_checkpoint(str(Path(cb.dirpath) / "last.ckpt"))


class MixtureMonitor(L.Callback):
    """Logs the realised share of each task (mix/TASK) and skipped samples every N steps."""

    def __init__(self, every_n_steps: int = 50):
        self.every = every_n_steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        dm = trainer.datamodule
        # global_step already counts this batch here: log where Lightning writes (step + 1) % N == 0
        if dm is None or trainer.global_step % self.every or not hasattr(dm, "realised_mixture"):
            return
        for task, share in dm.realised_mixture().items():
            pl_module.log(f"mix/{task}", share, rank_zero_only=True)
        for reason, n in dm.state.skipped.items():
            pl_module.log(f"skipped/{reason}", float(n), rank_zero_only=True)
