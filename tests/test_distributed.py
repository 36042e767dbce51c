"""The one line a DDP rank prints when its peer dies or hangs, for each wording gloo uses (the
end-to-end runs are in tests/faults/test_ddp_faults.py; which wording a hang produces depends on
the collective it hits, so each is pinned here)."""
from __future__ import annotations

import signal
from datetime import timedelta
from types import SimpleNamespace

import pytest

from qwen_audio_mt.distributed import peer_lost


class Launcher:
    def __init__(self):
        self.killed = []

    def kill(self, sig):
        self.killed.append(sig)


def trainer(world=2, rank=0, launcher=None):
    strategy = SimpleNamespace(launcher=launcher, _timeout=timedelta(seconds=20))
    return SimpleNamespace(world_size=world, global_rank=rank, global_step=7, strategy=strategy)


@pytest.mark.parametrize("text, reason", [
    # a hung peer, seen from an all-reduce and from a barrier
    ("[../third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:81] Timed out waiting 20000ms for "
     "recv operation to complete", "no answer within the 20-s process-group timeout"),
    ("Application timeout caused pair closure", "no answer within the 20-s process-group timeout"),
    # a dead peer
    ("[../third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:29884: Connection "
     "reset by peer. This is likely due to the peer dying", "the connection dropped (Read error "
     "[127.0.0.1]:29884: Connection reset by peer)"),
])
def test_each_gloo_wording_becomes_one_line_and_kills_the_launched_ranks(text, reason):
    launcher = Launcher()
    line = peer_lost(trainer(launcher=launcher), RuntimeError(text))
    assert line.startswith("rank 0 of 2 lost its peer (rank 1) at step 7: " + reason), line
    assert "\n" not in line
    assert launcher.killed == [signal.SIGKILL]


def test_other_errors_and_single_process_runs_are_not_peer_losses():
    assert peer_lost(trainer(), RuntimeError("mat1 and mat2 shapes cannot be multiplied")) is None
    assert peer_lost(trainer(), ValueError("Connection reset by peer")) is None
    assert peer_lost(trainer(world=1), RuntimeError("Application timeout caused pair closure")) is None
