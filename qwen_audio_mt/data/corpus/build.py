"""Build the embedded corpus: every registry task, train/valid/test, through the ingest path.

Item counts per task: tags/corpus/counts.yaml (train 160, valid 20, test 40; more train items
for closed-label tasks), times --scale. Seeds: item i of task t in
split s is generated from np.random.default_rng([seed, split#, crc32(t), i]), so any item can be
made alone (a resumed build skips finished ones without generating them) and the corpus is the
same on every machine.
"""
from __future__ import annotations

import importlib
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import yaml

from ...tasks import load_tasks
from ..build import build
from ..ingest import RawItem
from ..shards import Job, ShardConfig, Stream
from .base import GENERATORS, SPLITS, SourceMissing

MODULES = ("speech", "fsdd", "sound", "music", "instruct")
CORPUS_VERSION = "1"


@dataclass(frozen=True)
class CorpusConfig:
    scale: float = 1.0   # multiplies the counts of tags/corpus/counts.yaml (at least 1 item each)
    seed: int = 0

    def count(self, split: str, task: str | None = None) -> int:
        """Items of `task` in `split` (None: the default for tasks without an entry)."""
        spec = base_counts()
        return max(1, round(spec["tasks"].get(task, {}).get(split, spec["default"][split]) * self.scale))


def base_counts() -> dict:
    """Items per split, with per-task exceptions (tags/corpus/counts.yaml of the current tags root)."""
    from ...paths import tags_dir
    return _read_counts(tags_dir() / "corpus" / "counts.yaml")


@lru_cache(maxsize=4)
def _read_counts(path: Path) -> dict:
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    spec["tasks"] = spec.get("tasks") or {}
    if set(spec.get("default", {})) != set(SPLITS):
        raise ValueError(f"{path}: default must give exactly the splits {list(SPLITS)}")
    unknown = sorted(set(spec["tasks"]) - set(load_tasks().names))
    if unknown:
        raise ValueError(f"{path}: unknown task(s) {unknown}")
    for task, counts in spec["tasks"].items():
        if set(counts) - set(SPLITS):
            raise ValueError(f"{path}: task {task}: unknown split(s) {sorted(set(counts) - set(SPLITS))}")
    return spec


def load_generators() -> dict:
    for name in MODULES:
        importlib.import_module(f"{__package__}.{name}")
    return GENERATORS


def rng_for(seed: int, split: str, task: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, SPLITS.index(split), zlib.crc32(task.encode()), index])


def make_item(task: str, split: str, index: int, seed: int) -> RawItem:
    item = load_generators()[task](task, index, rng_for(seed, split, task, index), split)
    return RawItem(key=f"{task}-{split}-{index:06d}", task=task, split=split, labels=item.labels,
                   source=item.source, audio=item.audio, sr=16000 if item.audio is not None else None,
                   path=item.path, audio_lang=item.audio_lang, text_lang=item.text_lang)


def available_tasks(cfg: CorpusConfig) -> tuple[list[str], dict[str, str]]:
    """Registry tasks whose sources are here; the others with the reason they are skipped."""
    gens, ok, skipped = load_generators(), [], {}
    for task in load_tasks().names:
        if task not in gens:
            skipped[task] = "no generator for this task"
            continue
        try:
            make_item(task, "test", 0, cfg.seed)
            ok.append(task)
        except SourceMissing as e:
            skipped[task] = str(e)
    return ok, skipped


def corpus_streams(tasks: list[str], cfg: CorpusConfig) -> list[Stream]:
    return [Stream(split, task, [Job(f"{task}-{split}-{i:06d}", "embedded", make_item, (task, split, i, cfg.seed))
                                 for i in range(cfg.count(split, task))])
            for split in SPLITS for task in tasks]


def source_info(cfg: CorpusConfig, skipped: dict) -> dict:
    """What the corpus was built from: config, version and checksums of the data files."""
    from ...paths import tags_dir
    files = sorted(p for p in tags_dir().rglob("*.yaml"))
    sums = {str(p.relative_to(tags_dir())): f"{zlib.crc32(p.read_bytes()):08x}" for p in files}
    return {"name": "embedded", "corpus_version": CORPUS_VERSION, "scale": cfg.scale, "seed": cfg.seed,
            "counts": {s: cfg.count(s) for s in SPLITS},
            "task_counts": {t: {s: cfg.count(s, t) for s in c} for t, c in base_counts()["tasks"].items()},
            "tag_checksums_crc32": sums, "skipped": skipped}


def build_corpus(out: Path, cfg: CorpusConfig = CorpusConfig(), shard_cfg: ShardConfig = ShardConfig(),
                 progress: bool = True, only: list[str] | None = None) -> dict:
    """Build every available task, or `only` these (e.g. a focused learning check)."""
    tasks, skipped = available_tasks(cfg)
    if only is not None:
        tasks = [t for t in tasks if t in only]
    return build(corpus_streams(tasks, cfg), out, shard_cfg, source_info(cfg, skipped), progress=progress)
