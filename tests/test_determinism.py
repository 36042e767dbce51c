"""Determinism, as README states it: the same config on the same machine with the same thread
count gives the same metric table and the same weights, byte for byte.

Two runs of the real command line (a shrunk model, 30 steps, in-loop validation twice, the
end-of-run evaluation on 2 clips per task), each in its own process with a different
PYTHONHASHSEED, so that nothing may depend on the order of a set or of str hashes.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from test_train import QUIET, SHRINK
from test_train_resume import BATCHES

from qwen_audio_mt.paths import REPO_ROOT

SHORT = ["trainer.max_steps=30", "data.loader.num_workers=1", "trainer.val_check_interval=15",
         "trainer.limit_val_batches=2", "callbacks.validation_metrics.per_task=1",
         "callbacks.validation_metrics.max_new_tokens=8", "evaluate=true", "eval.max_per_task=2"]


def run(run_dir: Path, shards: Path, hash_seed: int) -> str:
    cmd = [sys.executable, "-m", "qwen_audio_mt.train", f"paths.shards={shards}", f"run_dir={run_dir}",
           f"hydra.run.dir={run_dir}", *SHRINK, *BATCHES, *QUIET, *SHORT]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": str(hash_seed)}
    done = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return done.stdout


def logged(path) -> list[list[str]]:
    """metrics.csv without the perf/ columns: wall-clock rates (callbacks.PerfMonitor) differ
    from run to run by nature; everything else logged must not."""
    import csv
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    keep = [i for i, name in enumerate(rows[0]) if not name.startswith("perf/")]
    assert len(keep) < len(rows[0]), "PerfMonitor logged nothing"
    return [[row[i] for i in keep] for row in rows]


def test_same_config_same_machine_same_table_and_weights(tmp_path, small_corpus):
    a, b = tmp_path / "a", tmp_path / "b"
    printed = [run(a, small_corpus, 1), run(b, small_corpus, 2)]
    table = (a / "metrics.md").read_text()
    assert table.count("\n| ") >= 40, table  # a row per task: the evaluation really ran
    assert table == (b / "metrics.md").read_text()
    assert all(table in out for out in printed), "the printed table is not metrics.md"
    # the full-precision values behind the table, and what was logged along the way
    assert (a / "metrics.json").read_bytes() == (b / "metrics.json").read_bytes()
    logs = [logged(d / "logs" / "metrics.csv") for d in (a, b)]
    assert "val/aggregate" in logs[0][0] and logs[0] == logs[1]
    weights = [(d / "export" / "model.safetensors").read_bytes() for d in (a, b)]
    assert weights[0] == weights[1], "the same config trained different weights"
