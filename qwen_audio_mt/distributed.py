"""What a DDP rank does when another rank dies or stops answering: one line, then exit.

A dead peer surfaces as gloo's "Connection reset/closed by peer" at the next collective (once
the dead rank's loader workers, which inherited its sockets, have noticed and exited: up to
~5 s); a hung peer as "Timed out waiting ...ms" (or, from a gloo barrier, "Application timeout
caused pair closure") after the process-group timeout (`trainer.strategy.timeout` in
conf/trainer/ddp.yaml). Lightning re-raises either as a
RuntimeError with several screens of traceback; `peer_lost` turns it into one line. The launcher
(rank 0) also kills the ranks it started: Lightning does so only on Ctrl-C, and a rank that hangs
outside a collective would otherwise outlive the run, holding its device.
"""
from __future__ import annotations

import re
import signal

# gloo's and NCCL's wording for a lost connection or a timed-out collective
_TIMEOUT = re.compile(r"timed out waiting|application timeout", re.IGNORECASE)
_COMM = re.compile(r"gloo|nccl|connection (reset|closed) by peer|" + _TIMEOUT.pattern, re.IGNORECASE)


def _reason(exc: BaseException, timeout_s: float | None) -> str:
    text = str(exc)
    if _TIMEOUT.search(text):
        limit = f"the {timeout_s:g}-s " if timeout_s else "the "
        return f"no answer within {limit}process-group timeout (trainer.strategy.timeout)"
    # "[.../pair.cc:537] Read error [127.0.0.1]:29884: Connection reset by peer. This is ..."
    core = re.sub(r"^\[[^\]]*\]\s*", "", text.strip().splitlines()[0]).split(". ")[0]
    return f"the connection dropped ({core})"


def peer_lost(trainer, exc: BaseException) -> str | None:
    """The one-line message when `exc` is a collective failing because a peer died or hung, else
    None (any other error is the caller's to raise). Kills the child ranks this process launched."""
    if trainer.world_size < 2 or not isinstance(exc, RuntimeError) or not _COMM.search(str(exc)):
        return None
    launcher = trainer.strategy.launcher
    if launcher is not None:
        launcher.kill(signal.SIGKILL)  # SIGKILL: a rank blocked in a collective ignores SIGTERM
    rank, world = trainer.global_rank, trainer.world_size
    peers = f"rank {1 - rank}" if world == 2 else "another rank"
    timeout = getattr(trainer.strategy, "_timeout", None)
    reason = _reason(exc, timeout.total_seconds() if timeout else None)
    return f"rank {rank} of {world} lost its peer ({peers}) at step {trainer.global_step}: {reason}"


def wrap_policy(classes: list[str]) -> set:
    """FSDP's `auto_wrap_policy` from dotted class names (a YAML file cannot hold a set of
    classes): each named block becomes its own FSDP unit, so a GPU gathers one block's weights at
    a time instead of the whole model (Lightning wraps the model as one unit without a policy)."""
    from hydra.utils import get_class
    return {get_class(name) for name in classes}
