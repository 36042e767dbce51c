"""Checkpoints that survive a kill or a full disk, a resume that finds one that loads, and a
bounded run folder.

- `AtomicCheckpointIO`: every checkpoint Lightning writes (periodic, last, SIGTERM, final, best)
  goes to `{name}.tmp-{pid}` in the same folder, is flushed and fsynced, then renamed over the
  name (and the folder fsynced). A kill mid-write leaves the previous file whole plus a stale
  temporary, which the next start removes; a full disk removes the temporary and raises
  `DiskFullError` (one line: the folder, its free space, how to resume).
- `PeriodicCheckpoint`: the every-N-steps ModelCheckpoint. Retention is Lightning's own top-k
  over `monitor: step, mode: max` (the newest k). `last.ckpt` is a symlink to the newest
  periodic file (`save_last: link`), swapped in atomically; with `save_weights_only: true` the
  periodic files cannot resume training, so last.ckpt is then a real file with the optimizer
  state. A stop between two periodic saves (the final step, SIGTERM) is saved as one more
  periodic file, so at most top-k full checkpoints exist at any time.
- `resolve_resume`: `ckpt_path=last|auto` -> the newest checkpoint of the run that loads and can
  resume (by modification time: the newest written wins, even over a higher step left by an
  abandoned branch of the run), announced in one line with what was skipped and why.

Resume loads with `weights_only=True` (never unpickle a checkpoint): our checkpoints hold only
tensors, numbers, strings and plain containers (the model and optim configs are saved as dicts),
so nothing needs allow-listing.
"""
from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import sys
from pathlib import Path

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.callbacks import ModelCheckpoint

from .errors import DiskFullError, UserError, free_space

TMP = ".tmp-"  # temporaries: {name}.tmp-{pid}; never end in .ckpt, so no reader mistakes one for a checkpoint
LAST = "last.ckpt"
_FULL_DISK = (errno.ENOSPC, errno.EDQUOT)


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable: the directory entry itself must reach the disk."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # platforms that cannot open a directory (Windows): the rename is all we get
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _disk_full(exc: BaseException) -> bool:
    """torch.save reports the file's OSError, with its own RuntimeError as context; look at both."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _FULL_DISK:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save into a temporary beside the target, fsync, rename: a reader only ever sees a
    complete file. Loads default to `weights_only=True`. Given to the Trainer by
    `checkpoint_plugins` for every strategy that writes through a CheckpointIO: single device,
    DDP, FSDP with `state_dict_type: full`. FSDP's sharded folders (torch.distributed.checkpoint)
    and DeepSpeed's (its engine) are written by their own code, which no CheckpointIO reaches;
    DeepSpeed gets none, sharded FSDP gets it for removals only."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None or not _is_local_file_protocol(path):  # remote: fsspec's own
            return super().save_checkpoint(checkpoint, path, storage_options)  # transaction (or its TypeError)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}{TMP}{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)  # replaces a symlink itself, never writes through it
        except BaseException as e:
            tmp.unlink(missing_ok=True)
            if _disk_full(e):
                raise DiskFullError(
                    f"no space left writing checkpoint {path.name} in {path.parent} ({free_space(path.parent)}); "
                    "the partial file was removed and the earlier checkpoints there are intact: free some "
                    "space, then resume with ckpt_path=last") from e
            raise
        _fsync_dir(path.parent)

    def load_checkpoint(self, path, map_location=lambda storage, loc: storage, weights_only=None) -> dict:
        return super().load_checkpoint(path, map_location, True if weights_only is None else weights_only)


def checkpoint_plugins(trainer_cfg) -> dict:
    """Trainer kwargs adding AtomicCheckpointIO: `{"plugins": [...]}`, or {} when the config brings
    its own CheckpointIO (in `plugins` or the strategy's `checkpoint_io`) or uses DeepSpeed,
    whose engine saves folders without a CheckpointIO."""
    from hydra.utils import instantiate
    from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO
    from omegaconf import DictConfig, ListConfig
    strategy = trainer_cfg.get("strategy")
    target = str(strategy.get("_target_", "")) if hasattr(strategy, "get") else str(strategy)
    if "deepspeed" in target.lower() or (hasattr(strategy, "get") and strategy.get("checkpoint_io")):
        return {}
    plugins = trainer_cfg.get("plugins") or []
    plugins = list(plugins) if isinstance(plugins, (list, tuple, ListConfig)) else [plugins]
    plugins = [instantiate(p) if isinstance(p, (dict, DictConfig)) else p for p in plugins]  # strings: Lightning's
    if any(isinstance(p, CheckpointIO) for p in plugins):
        return {}
    return {"plugins": [*plugins, AtomicCheckpointIO()]}


def link_atomically(target: Path, link: Path) -> None:
    """Point `link` at `target` (relative, so the run folder can move) by renaming a new link over
    it: a kill leaves the old link or the new one, never no last.ckpt."""
    target, link = Path(target), Path(link)
    tmp = link.with_name(f"{link.name}{TMP}{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        os.symlink(os.path.relpath(target, link.parent), tmp)
    except OSError as e:  # no symlinks (Windows without the privilege): a copy, swapped in whole
        if _disk_full(e):
            raise DiskFullError(f"no space left linking {link.name} in {link.parent} ({free_space(link.parent)}); "
                                "the checkpoints there are intact: free some space, then resume with "
                                "ckpt_path=last") from e
        shutil.copyfile(target, tmp)
    if link.is_dir() and not link.is_symlink():  # a strategy's checkpoint folder
        shutil.rmtree(link)
    os.replace(tmp, link)
    _fsync_dir(link.parent)


class PeriodicCheckpoint(ModelCheckpoint):
    """ModelCheckpoint for the periodic saves (see the module docstring), changing four things:

    - last.ckpt links are swapped in atomically (Lightning removes the old link, then links);
    - with `save_weights_only`, last.ckpt is a real full file (a link would point at weights);
    - the file a run resumed from is not kept for ever (Lightning protects it): here it is an
      older periodic file that top-k retention drops like the others;
    - a save on an epoch's last batch happens at that step (Lightning would wait for a
      validation that may not come: the 1,800-step default lost every 200th step's file).
    `save_now` saves the current step like a periodic save (the final step, SIGTERM)."""

    @staticmethod
    def _link_checkpoint(trainer, filepath: str, linkpath: str) -> None:
        if trainer.is_global_zero and os.path.abspath(filepath) != os.path.abspath(linkpath):
            link_atomically(Path(filepath), Path(linkpath))
        trainer.strategy.barrier()

    def _save_last_checkpoint(self, trainer, monitor_candidates) -> None:
        if not (self.save_last and self.save_weights_only):
            return super()._save_last_checkpoint(trainer, monitor_candidates)
        saved = self.save_last, self.save_weights_only
        self.save_last, self.save_weights_only = True, False
        try:
            super()._save_last_checkpoint(trainer, monitor_candidates)
        finally:
            self.save_last, self.save_weights_only = saved

    def _should_remove_checkpoint(self, trainer, previous: str, current: str) -> bool:
        if previous == current or self.dirpath is None:
            return False
        return Path(self.dirpath).absolute() in Path(previous).absolute().parents

    def load_state_dict(self, state_dict: dict) -> None:
        """A run folder that moved (copied to another disk, renamed) keeps its retention: the
        saved paths are moved into this dirpath. Lightning would forget them, and the files
        they name would stay for ever beside the new ones."""
        old = state_dict.get("dirpath")
        if old and self.dirpath and old != self.dirpath:
            def move(p):
                return os.path.join(self.dirpath, os.path.basename(p)) if p and os.path.dirname(p) == old else p
            state_dict = {**state_dict, "dirpath": self.dirpath,
                          "best_k_models": {move(k): v for k, v in (state_dict.get("best_k_models") or {}).items()},
                          **{k: move(state_dict.get(k) or "")
                             for k in ("best_model_path", "kth_best_model_path", "last_model_path")}}
        super().load_state_dict(state_dict)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        # On an epoch's last batch Lightning defers a monitored save to the end of validation (for
        # fresh validation metrics). The step needs none, and with val_check_interval in batches
        # no validation follows: the save at that step would be lost. Save now instead.
        if self._defer_save_until_validation and self.monitor == "step":
            self._defer_save_until_validation = False
            if not self._should_skip_saving_checkpoint(trainer):
                candidates = self._monitor_candidates(trainer)
                self._save_topk_checkpoint(trainer, candidates)
                self._save_last_checkpoint(trainer, candidates)

    def save_now(self, trainer) -> None:
        """A periodic save (plus last.ckpt) at the current step, unless this step is saved."""
        if trainer.fast_dev_run or trainer.sanity_checking or self._last_global_step_saved == trainer.global_step:
            return
        candidates = self._monitor_candidates(trainer)
        self._save_topk_checkpoint(trainer, candidates)
        self._save_last_checkpoint(trainer, candidates)


def save_stop(trainer, dirpath) -> None:
    """The checkpoint of a run that stops between periodic saves (SIGTERM, the final step): one
    more periodic file when the periodic callback has saved before (so retention bounds it),
    else a real last.ckpt."""
    cb = trainer.checkpoint_callback
    if isinstance(cb, PeriodicCheckpoint) and cb.save_last and cb.last_model_path:
        cb.save_now(trainer)
    else:
        trainer.save_checkpoint(str(Path(dirpath) / LAST))


# ---------------------------------------------------------------------------- resume
def remove_stale_temps(folder: Path) -> list[str]:
    """Delete `*.tmp-PID` files left by a write that was killed (their writer is gone); a
    temporary whose process still runs (another job writing this folder) is left alone."""
    removed = []
    for p in sorted(Path(folder).glob(f"*{TMP}*")) if Path(folder).is_dir() else ():
        pid = p.name.rsplit(TMP, 1)[1]
        if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
            continue
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
        removed.append(p.name)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def probe(path: Path) -> tuple[int | None, str | None]:
    """(global_step, why it cannot resume training or None). Reads lazily (mmap, weights_only):
    the tensors are not read, only the zip directory and the pickled structure."""
    if path.is_dir():  # a strategy's folder (FSDP sharded, DeepSpeed): its strategy checks it
        m = re.search(r"(\d+)", path.name)
        return (int(m.group(1)) if m else None), None
    if path.is_symlink() and not path.exists():
        return None, f"a link to the missing {os.readlink(path)}"
    if path.stat().st_size == 0:
        return None, "empty (0 bytes)"
    with open(path, "rb") as f:  # torch.save writes a zip; mmap would blame anything else on the format
        if f.read(4) != b"PK\x03\x04":
            return None, "not a checkpoint (no zip header)"
    try:
        ckpt = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch reports broken files in many ways
        msg = " ".join(str(e).split()).split(". ")[0] or type(e).__name__  # torch adds advice sentences
        kind = "truncated" if "zip archive" in msg or "central directory" in msg else "unreadable"
        return None, f"{kind}: {msg[:160]}"
    if not isinstance(ckpt, dict) or "global_step" not in ckpt:
        return None, "not a training checkpoint (no global_step)"
    if not ckpt.get("optimizer_states"):
        return int(ckpt["global_step"]), "weights only (no optimizer state)"
    return int(ckpt["global_step"]), None


def candidates(folder: Path) -> list[tuple[Path, str]]:
    """(path, name to show) of every checkpoint, newest written first, last.ckpt first on a tie; a
    link's target is tried once, through the link ("last.ckpt -> step000030.ckpt")."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.name.endswith(".ckpt")]
    linked = {p.resolve() for p in found if p.is_symlink()}
    found = [p for p in found if p.is_symlink() or p.resolve() not in linked]
    found.sort(key=lambda p: (p.lstat().st_mtime_ns, p.name == LAST), reverse=True)
    return [(p, f"{p.name} -> {os.readlink(p)}" if p.is_symlink() else p.name) for p in found]


def resolve_resume(run_dir, ckpt_path, announce: bool | None = None) -> str | None:
    """What `trainer.fit(ckpt_path=...)` gets. null: None (stale temporaries are removed either
    way). "last": the newest checkpoint of run_dir/checkpoints that loads with optimizer state,
    announced in one line (with the newer ones skipped and why); none found or none loads: a
    UserError. "auto": the same, but a run folder without checkpoints starts afresh. A path: it
    must load and hold optimizer state. Called before the Trainer exists (so an error is the only
    line printed): `announce` defaults to rank 0 as the launch environment says (LOCAL_RANK, RANK,
    SLURM_PROCID), every DDP rank resolving the same file."""
    if announce is None:
        from lightning.fabric.utilities.rank_zero import rank_zero_only
        announce = getattr(rank_zero_only, "rank", 0) == 0
    folder = Path(run_dir) / "checkpoints"
    removed = remove_stale_temps(folder)
    note = f"; removed {len(removed)} partial write(s) of a killed save ({', '.join(removed)})" if removed else ""
    tried = candidates(folder) if ckpt_path in ("last", "auto") else []
    if ckpt_path in (None, "", "auto") and not tried:  # a fresh start
        if removed and announce:
            print(f"checkpoints: {note[2:]}", file=sys.stderr)
        return None
    if ckpt_path not in ("last", "auto"):
        return _explicit(Path(ckpt_path))
    if not tried:
        raise UserError(f"ckpt_path=last: no checkpoint in {folder} (start without ckpt_path, or use "
                        "ckpt_path=auto to resume only when there is one)")
    skipped = []
    for path, name in tried:
        step, why = probe(path)
        if why is None:
            if announce:
                print(f"resuming from checkpoints/{name} (step {step}){_skipped(skipped, step)}{note}",
                      file=sys.stderr, flush=True)
            return str(path)
        skipped.append((name, step, why))
    listed = "; ".join(f"{name}: {why}" for name, _, why in skipped)
    raise UserError(f"ckpt_path={ckpt_path}: no checkpoint in {folder} can resume training ({listed}); "
                    "start afresh without ckpt_path, or pass ckpt_path=PATH")


def _skipped(skipped: list, step: int | None) -> str:
    """The skipped files worth a word: broken ones, and weights-only ones past the chosen step
    (best.ckpt is weights-only by design and usually no newer in steps)."""
    shown = [f"{n} ({why})" for n, s, why in skipped if s is None or step is None or s > step]
    return f"; skipped {', '.join(shown)}" if shown else ""


def _explicit(path: Path) -> str:
    if not path.exists() and not path.is_symlink():
        raise UserError(f"ckpt_path={path}: no such checkpoint (use last, auto, or a checkpoint file)")
    _, why = probe(path)
    if why is not None:
        raise UserError(f"ckpt_path={path} cannot resume training: {why}")
    return str(path)


# ---------------------------------------------------------------------------- disk use
def folder_bytes(folder) -> int:
    """Bytes of the regular files under `folder`; a symlink adds nothing (last.ckpt's target is
    counted once, as itself)."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            st = os.lstat(os.path.join(root, name))
            total += 0 if stat.S_ISLNK(st.st_mode) else st.st_size
    return total


def report_run_folder(run_dir) -> dict:
    """Prints `run folder X: 512.3 MB (checkpoints 469.2 MB)`; returns the sizes in bytes."""
    run_dir = Path(run_dir)
    sizes = {"run_folder_bytes": folder_bytes(run_dir), "checkpoints_bytes": folder_bytes(run_dir / "checkpoints")}
    print(f"run folder {run_dir}: {sizes['run_folder_bytes'] / 1e6:,.1f} MB "
          f"(checkpoints {sizes['checkpoints_bytes'] / 1e6:,.1f} MB)", flush=True)
    return sizes
