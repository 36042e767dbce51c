"""The evaluation entry point: Hydra overrides of the EvalJob dataclass, one-line errors for a
missing or wrong model. (README's `make eval ARGS="model=..."` as written: test_readme.py.)"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from qwen_audio_mt.paths import REPO_ROOT


@pytest.fixture(scope="module")
def exported(tiny_export):
    return tiny_export


@pytest.fixture
def root(tmp_path, small_corpus):
    """A project root (QWEN_AUDIO_MT_ROOT) whose shards/embedded is the small corpus."""
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "embedded").symlink_to(small_corpus / "embedded")
    return tmp_path


def test_eval_overrides_and_a_missing_model(root, exported, tmp_path):
    env = {**os.environ, "QWEN_AUDIO_MT_ROOT": str(root), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, "-m", "qwen_audio_mt.eval", f"model={exported}", f"out={out}",
                          "eval.max_per_task=1", "eval.split=valid", "eval.progress=false"],
                         cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"] == "valid" and {m["n"] for m in metrics["tasks"].values()} == {1}
    res = subprocess.run([sys.executable, "-m", "qwen_audio_mt.eval"], cwd=REPO_ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        'qwen_audio_mt.eval: error: no model given: make eval ARGS="model=outputs/train/RUN/export" (an export '
        "folder or a .ckpt)"]
    res = subprocess.run([sys.executable, "-m", "qwen_audio_mt.eval", f"model={tmp_path}"], cwd=REPO_ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and "not an export folder" in res.stderr
