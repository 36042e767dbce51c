"""Where the project finds its data files.

Three roots:
- tags: the tag vocabulary and task registry ($QWEN_AUDIO_MT_TAGS, else `tags_dir()`'s default).
- conf: the Hydra configs of `python -m qwen_audio_mt.train`.
- data: real audio and reference files ($QWEN_AUDIO_MT_DATA, else `../shared/data`). It is not
  part of the repo; code that needs it asks `data_root()` and treats a missing root as
  "skip with a reason", never as an error.

`tags/` and `conf/` live at the top of the checkout (their only copy in git). An installed wheel
carries them inside the package as `qwen_audio_mt/assets/{tags,conf}` (setup.py copies them there
at build time), so an installed copy reads its own vocabulary from any folder. An editable install
or a plain checkout has no `assets/` and reads the checkout's folders, so edits show at once.
"""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE.parent  # the checkout, when running from one
BUNDLED = PACKAGE / "assets"  # what setup.py's build_py adds to a wheel; never present in a checkout
TAGS_ENV = "QWEN_AUDIO_MT_TAGS"
DATA_ENV = "QWEN_AUDIO_MT_DATA"


def from_wheel() -> bool:
    """True for a copy installed from a wheel (it carries conf/ and tags/ as package data)."""
    return BUNDLED.is_dir()


def _shipped(name: str, override: str | None = None) -> Path:
    """A folder the project ships: the override, else the wheel's copy, else the checkout's."""
    path = Path(override) if override else (BUNDLED if from_wheel() else REPO_ROOT) / name
    path = path.expanduser().resolve()
    if not path.is_dir():
        hint = f" (set {TAGS_ENV} to a tags folder)" if name == "tags" else ""
        raise FileNotFoundError(f"{name} folder not found: {path}{hint}")
    return path


def tags_dir() -> Path:
    return _shipped("tags", os.environ.get(TAGS_ENV))


def conf_dir() -> Path:
    """The Hydra config folder (Hydra's own --config-dir adds more on the command line)."""
    return _shipped("conf")


def data_root() -> Path:
    """The shared real-data root (may not exist: callers check `data_available`)."""
    if os.environ.get(DATA_ENV):
        root = Path(os.environ[DATA_ENV])
    else:
        # ../shared/data beside the checkout; an installed copy has no checkout, so the folder the
        # job starts in stands for it, as conf/paths/default.yaml's ${paths.root}/../shared/data
        root = (Path.cwd() if from_wheel() else REPO_ROOT).parent / "shared" / "data"
    # resolved: relative roots must not change meaning when a job writes paths into manifests
    return root.expanduser().resolve()


def data_available(*parts: str) -> bool:
    return (data_root().joinpath(*parts)).exists()


def data_missing_reason(*parts: str) -> str:
    where = data_root().joinpath(*parts)
    return f"real data not found at {where} (set {DATA_ENV} to the shared data root)"


def start_dir() -> str:
    """The folder a Hydra job started in: HydraConfig's runtime.cwd once it is set, else the
    process's own (jobs never chdir: `hydra.job.chdir: false`). `${hydra:runtime.cwd}` cannot
    stand in conf/: a multirun's sweeper resolves `hydra.sweep.dir` before HydraConfig exists."""
    from hydra.core.hydra_config import HydraConfig
    return HydraConfig.get().runtime.cwd if HydraConfig.initialized() else os.getcwd()


def register_resolvers() -> None:
    """`${start_dir:}` for conf/ and the eval job's config (idempotent)."""
    from omegaconf import OmegaConf
    if not OmegaConf.has_resolver("start_dir"):
        OmegaConf.register_new_resolver("start_dir", start_dir)
