"""The task mixture: which (source, task) streams feed training, and with what probability.

A source is a shard folder or URL prefix holding `index.json` (anything webdataset reads: a
local folder, `s3://...`, `pipe:...`). Each (source, task) with shards in the split is one
component (with each shard's sample count from the index, against which readers count what an
unreadable shard lost). Probabilities:
- no weights: temperature sampling from the index counts, p_i ∝ min(n_i, cap_i)^(1/T)
  (T = 1 proportional, T -> inf uniform; caps are T5's examples-proportional cap K);
- source weights: a source gets its normalised weight, split among its tasks by temperature.
  Either every source has a weight or none does.
`task_weights` multiply a task's share before normalising (0 drops it); `domain_weights` (speech,
sound, music) and `kind_weights` (a target kind of tags/tasks.yaml, or `closed` / `open` for all
closed-label / all other kinds) multiply every task of that domain or kind, read from the task
registry, so presets (conf/mixture/) say "speech x3" instead of listing tasks. All three multiply.
`temperature: .inf` is uniform over tasks. These give the configured mixture; with `adaptive`
(data/adaptive.py) it is where training starts, and the weights then move with the task losses.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError
from .adaptive import AdaptiveConfig

DEFAULT_TEMPERATURE = 2.0  # between proportional (1) and uniform (inf): small tasks up-sampled


class MixtureError(UserError):
    """A mixture that cannot be built (missing index, no shards for the split, mixed weights)."""


@dataclass(frozen=True)
class SourceConfig:
    path: str                       # folder or URL prefix with index.json
    weight: float | None = None
    name: str | None = None
    tasks: tuple[str, ...] | None = None  # only these tasks of the source


@dataclass(frozen=True)
class MixtureConfig:
    sources: tuple[SourceConfig, ...] = ()
    temperature: float = DEFAULT_TEMPERATURE
    cap: int | None = None                                  # every task counts at most this many
    caps: dict = field(default_factory=dict)                # per-task caps
    task_weights: dict = field(default_factory=dict)        # per-task multipliers
    domain_weights: dict = field(default_factory=dict)      # per-domain multipliers (registry domains)
    kind_weights: dict = field(default_factory=dict)        # per target kind, or closed / open
    adaptive: AdaptiveConfig | None = None                  # online weights from task losses (adaptive.py)

    def __post_init__(self):  # checked when the config is read, before any source is opened
        if self.temperature <= 0:
            raise MixtureError(f"mixture.temperature={self.temperature}: must be > 0 (1 proportional, larger flatter)")


@dataclass(frozen=True)
class Component:
    source: str
    task: str
    split: str
    urls: tuple[str, ...]
    samples: int
    shard_samples: tuple[int, ...] = ()   # per url, from the index: a reader counts what it misses

    @property
    def expected(self) -> dict[str, int]:
        return dict(zip(self.urls, self.shard_samples))


def _join(base: str, name: str) -> str:
    return f"{base.rstrip('/')}/{name}" if "://" in base or base.startswith("pipe:") else str(Path(base) / name)


def source_name(src: SourceConfig) -> str:
    return src.name or Path(src.path.rstrip("/")).name


def read_index(path: str) -> dict:
    """index.json of a folder or URL prefix (URLs through webdataset's gopen: s3, http, pipe)."""
    target = _join(path, "index.json")
    try:
        if "://" in path or path.startswith("pipe:"):
            import webdataset as wds
            with wds.gopen(target, "rb") as f:
                return json.loads(f.read())
        return json.loads(Path(target).read_text())
    except (OSError, ValueError) as e:
        why = "no such file" if isinstance(e, FileNotFoundError) else str(e)
        raise MixtureError(f"mixture.sources: {path}: cannot read {target} ({why}); build the shards first "
                           "(make shards) or point mixture.sources / paths.shards at a shard folder") from None


def components(cfg: MixtureConfig, split: str) -> list[Component]:
    out = []
    for src in cfg.sources:
        index = read_index(src.path)
        name = source_name(src)
        by_task: dict[str, list] = {}
        for shard in index["shards"]:
            if shard["split"] == split and (src.tasks is None or shard["task"] in src.tasks):
                by_task.setdefault(shard["task"], []).append(shard)
        for task, shards in sorted(by_task.items()):
            out.append(Component(name, task, split, tuple(_join(src.path, s["name"]) for s in shards),
                                 sum(s["samples"] for s in shards), tuple(s["samples"] for s in shards)))
    if not out:
        raise MixtureError(f"no shards for split {split!r} in {[s.path for s in cfg.sources]}")
    return out


def label_sets(cfg: MixtureConfig) -> dict[str, list[str]]:
    """Datasets' own closed label sets (from their indexes), merged per task."""
    merged: dict[str, list[str]] = {}
    for src in cfg.sources:
        for task, labels in (read_index(src.path).get("label_sets") or {}).items():
            merged.setdefault(task, [])
            merged[task] += [x for x in labels if x not in merged[task]]
    return merged


def group_weights(tasks: list[str], cfg: MixtureConfig) -> list[float]:
    """Each task's domain x kind multiplier (1 for a task outside the registry: chat, ...)."""
    if not cfg.domain_weights and not cfg.kind_weights:
        return [1.0] * len(tasks)
    from ..tasks import CLOSED_KINDS, DOMAINS, TARGET_KINDS, load_tasks
    for key, known, what in ((cfg.domain_weights, DOMAINS, "domain_weights"),
                             (cfg.kind_weights, (*TARGET_KINDS, "closed", "open"), "kind_weights")):
        if bad := sorted(set(key) - set(known)):
            raise MixtureError(f"mixture.{what}: unknown {', '.join(bad)} (known: {', '.join(known)})")
    registry, out = load_tasks(), []
    for name in tasks:
        if name not in registry:
            out.append(1.0)
            continue
        task = registry.get(name)
        group = "closed" if task.target.kind in CLOSED_KINDS else "open"
        kind = cfg.kind_weights.get(task.target.kind, cfg.kind_weights.get(group, 1.0))
        out.append(float(cfg.domain_weights.get(task.domain, 1.0)) * float(kind))
    return out


def probabilities(comps: list[Component], cfg: MixtureConfig) -> np.ndarray:
    weighted = [s.weight is not None for s in cfg.sources]
    if any(weighted) and not all(weighted):
        missing = [s.path for s in cfg.sources if s.weight is None]
        raise MixtureError(f"either every source has a weight or none does; no weight: {missing}")
    if cfg.temperature <= 0:
        raise MixtureError(f"mixture.temperature={cfg.temperature}: must be > 0 (1 proportional, larger flatter)")
    raw = np.array([min(c.samples, cfg.caps.get(c.task, cfg.cap or c.samples)) ** (1.0 / cfg.temperature)
                    * float(cfg.task_weights.get(c.task, 1.0)) for c in comps])
    raw *= np.array(group_weights([c.task for c in comps], cfg))
    if weighted and all(weighted):
        names = [source_name(s) for s in cfg.sources]
        weight = dict(zip(names, (s.weight for s in cfg.sources)))
        total = sum(weight.values())
        for name in set(c.source for c in comps):
            idx = [i for i, c in enumerate(comps) if c.source == name]
            raw[idx] = raw[idx] / raw[idx].sum() * weight[name] / total
    if raw.sum() <= 0:
        raise MixtureError("every component has weight 0")
    return raw / raw.sum()
