"""Where the project finds its data files.

Two roots, each overridable by an environment variable:
- tags: the tag vocabulary and task registry (`tags/` beside the package in a checkout).
- data: real audio and reference files (`../shared/data` beside the checkout by default). It is
  not part of the repo; code that needs it asks `data_root()` and treats a missing root as
  "skip with a reason", never as an error.
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
TAGS_ENV = "QWEN_AUDIO_MT_TAGS"
DATA_ENV = "QWEN_AUDIO_MT_DATA"
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"  # ../shared/data relative to the checkout


def tags_dir() -> Path:
    return Path(os.environ.get(TAGS_ENV) or REPO_ROOT / "tags").expanduser().resolve()


def data_root() -> Path:
    """The shared real-data root (may not exist: callers check `data_available`)."""
    # resolved: relative roots must not change meaning when a job writes paths into manifests
    return Path(os.environ.get(DATA_ENV) or DEFAULT_DATA).expanduser().resolve()


def data_available(*parts: str) -> bool:
    return (data_root().joinpath(*parts)).exists()


def data_missing_reason(*parts: str) -> str:
    where = data_root().joinpath(*parts)
    return f"real data not found at {where} (set {DATA_ENV} to the shared data root)"
