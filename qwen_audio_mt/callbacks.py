"""Lightning callbacks of the trainer: a checkpoint on SIGTERM, and the realised task mixture."""
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


class MixtureMonitor(L.Callback):
    """Logs the realised share of each task (mix/TASK) and skipped samples every N steps."""

    def __init__(self, every_n_steps: int = 50):
        self.every = every_n_steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        dm = trainer.datamodule
        if dm is None or trainer.global_step % self.every or not hasattr(dm, "realised_mixture"):
            return
        for task, share in dm.realised_mixture().items():
            pl_module.log(f"mix/{task}", share, rank_zero_only=True)
        for reason, n in dm.state.skipped.items():
            pl_module.log(f"skipped/{reason}", float(n), rank_zero_only=True)
