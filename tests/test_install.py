"""An installed copy runs outside the checkout: the sdist and a wheel built from it (what
`pip install .` and `python -m build` do), installed apart from the checkout, run
`qwen-audio-mt tasks`, `corpus build` and a 3-step `python -m qwen_audio_mt.train` from a third
folder. The wheel must carry conf/ and tags/, and every output must land in the current folder,
none in the install.

The build runs on a copy of the sources: setuptools writes build/ and *.egg-info beside the
sources it builds, and the checkout is shared. ~25 s on 2 cores.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from test_train import QUIET, SHRINK

from qwen_audio_mt.paths import data_available, data_root
from qwen_audio_mt.tasks import load_tasks

CHECKOUT = Path(__file__).resolve().parent.parent  # the sources of this test, not of an import
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "qwen_audio_mt", "conf", "tags")
TRAIN = ["trainer.max_steps=3", "evaluate=false", *SHRINK, "data.loader.limits.max_batch_size=8",
         "data.loader.limits.pool=32", "data.loader.num_workers=0", *QUIET]


def _sh(cmd: list, cwd: Path, env: dict | None = None) -> str:
    res = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"{cmd} exited {res.returncode}:\n{res.stdout[-1500:]}\n{res.stderr[-3000:]}"
    return res.stdout


def _copy_sources(dest: Path) -> None:
    for name in SOURCES:
        src = CHECKOUT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif src.exists():  # setup.py / MANIFEST.in: absent before packaging knew about conf/, tags/
            shutil.copy2(src, dest / name)


@pytest.fixture(scope="module")
def install(tmp_path_factory) -> dict:
    """sdist -> wheel -> `pip install --target SITE`: the wheel's files only, no checkout on the path."""
    root = tmp_path_factory.mktemp("install")
    src, dist, site = root / "src", root / "dist", root / "site"
    src.mkdir()
    _copy_sources(src)
    py = sys.executable
    _sh([py, "-c", f"from setuptools import build_meta; build_meta.build_sdist({str(dist)!r})"], src)
    sdist, = dist.glob("*.tar.gz")
    # no build isolation: the venv's setuptools builds it, nothing is downloaded
    _sh([py, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", dist, sdist], root)
    wheel, = dist.glob("*.whl")
    _sh([py, "-m", "pip", "install", "-q", "--no-deps", "--target", site, wheel], root)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "QWEN_AUDIO_MT_ROOT", "QWEN_AUDIO_MT_TAGS", "QWEN_AUDIO_MT_DATA")}
    env.update(PYTHONPATH=str(site), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    return {"wheel": wheel, "site": site, "env": env, "before": _tree(site)}


def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if "__pycache__" not in p.parts}


def run(install: dict, cwd: Path, *args, data: bool = False) -> str:
    """`python ARGS` of the installed copy in `cwd`; the install must stay as pip left it."""
    env = dict(install["env"], **({"QWEN_AUDIO_MT_DATA": str(data_root())} if data else {}))
    out = _sh([sys.executable, *args], cwd, env)
    assert _tree(install["site"]) == install["before"], "a command wrote into the install"
    return out


def test_wheel_carries_conf_and_tags(install):
    names = set(zipfile.ZipFile(install["wheel"]).namelist())
    for folder in ("conf", "tags"):
        files = [p.relative_to(CHECKOUT).as_posix() for p in (CHECKOUT / folder).rglob("*.yaml")]
        assert files and {f"qwen_audio_mt/assets/{f}" for f in files} <= names, folder


def test_installed_copy_reads_its_own_files(install, tmp_path):
    code = ("import json, qwen_audio_mt, qwen_audio_mt.paths as p, qwen_audio_mt.train as t; "
            "print(json.dumps([qwen_audio_mt.__file__, str(p.tags_dir()), t.CONF_DIR]))")
    files = json.loads(run(install, tmp_path, "-c", code))
    site = install["site"].resolve()
    assert all(Path(f).exists() and Path(f).resolve().is_relative_to(site) for f in files), files


def test_tasks_lists_the_registry(install, tmp_path):
    script = install["site"] / "bin" / "qwen-audio-mt"  # the console script pip wrote
    rows = json.loads(run(install, tmp_path, script, "tasks", "--json"))
    assert tuple(r["name"] for r in rows) == load_tasks().names and len(rows) == 42


def test_corpus_build_without_data_says_so_and_carries_on(install, tmp_path):
    out = run(install, tmp_path, "-m", "qwen_audio_mt", "corpus", "build", "--out", "shards/embedded",
              "--scale", "0.02", "--workers", "1")
    assert "skipped digit_recognition: real data not found at" in out and "QWEN_AUDIO_MT_DATA" in out
    assert (tmp_path / "shards" / "embedded" / "index.json").is_file()


def test_corpus_and_training_write_into_the_current_folder(install, tmp_path):
    out = run(install, tmp_path, "-m", "qwen_audio_mt", "corpus", "build", "--out", "shards/embedded",
              "--scale", "0.05", data=True)
    if data_available("fsdd"):
        assert "real data not found" not in out
    run(install, tmp_path, "-m", "qwen_audio_mt.train", *TRAIN)  # default paths.shards: ./shards
    run_dir, = (tmp_path / "outputs" / "train").iterdir()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    tokens = run_dir / "export" / "tokenizer" / "tokens.yaml"  # the install's copy of the vocabulary
    assert tokens.read_bytes() == (CHECKOUT / "tags" / "tokens.yaml").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outputs", "shards"]
