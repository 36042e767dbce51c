"""Run streams of jobs through ingest into shards, in parallel, then write the index.

Workers make and ingest items (generation, decoding, resampling and FLAC encoding are the costly
parts); the parent writes tars in input order, so the result does not depend on the worker count.

A full disk (ENOSPC, or a quota) stops the build with a DiskFullError, one line naming the folder
and its free space; the unfinished shard and every temporary file are removed, committed shards
stay, and a rerun after space is freed resumes and ends with the same index.json.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import statistics
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

from tqdm import tqdm

from ..errors import DiskFullError, free_space
from ..render import Renderer
from ..tasks import load_tasks
from .ingest import IngestConfig
from .shards import (BUILDER_VERSION, Job, ShardConfig, Stream, StreamWriter, disk_full, iter_jobs, load_parts,
                     remove_temporaries, run_job, write_bytes_atomic, write_json_atomic)

HIST_BIN_S = 1.0  # duration histogram: 1-s bins from 0 to 30 s

_WORKER: dict = {}


def _init(label_sets, cfg: IngestConfig) -> None:
    _WORKER["renderer"] = Renderer(label_sets=label_sets)
    _WORKER["cfg"] = cfg
    _WORKER["windowable"] = load_tasks().windowable


def _work(job: Job):
    return run_job(job, _WORKER["renderer"], _WORKER["cfg"], _WORKER["windowable"])


def _results(jobs: list[Job], pool) -> Iterable:
    if pool is None:
        return map(_work, jobs)
    return pool.imap(_work, jobs, chunksize=4)


def build(streams: list[Stream], out: Path, cfg: ShardConfig = ShardConfig(), source: Mapping | None = None,
          label_sets: Mapping | None = None, progress: bool = True) -> dict:
    """Build (or resume) a shard folder; returns the index, also written as out/index.json."""
    out = Path(out)
    t0 = time.perf_counter()
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "index.json").unlink(missing_ok=True)  # an index exists only for a finished build
        remove_temporaries(out)  # left by a killed build
        label_sets = {k: list(v) for k, v in (label_sets or {}).items()}
        _write_shards(streams, out, cfg, label_sets, progress)
        index = make_index(out, streams, dict(source or {}), label_sets)
        quarantine = [q for part in load_parts(out) for q in part["quarantined"]]
        write_bytes_atomic(out / "quarantine.jsonl",
                           "".join(json.dumps(q, sort_keys=True) + "\n" for q in quarantine).encode())
        write_json_atomic(out / "index.json", index)
    except OSError as e:
        if not disk_full(e):
            raise
        remove_temporaries(out)
        where = _full_folder(e, out)
        raise DiskFullError(f"no space left on device writing {where} ({free_space(where)}); "
                            "free space and rerun to resume") from None
    index["_elapsed_s"] = time.perf_counter() - t0  # for the caller's report only, not written
    return index


def _full_folder(e: OSError, out: Path) -> Path:
    """The folder to name: the shard folder, or the one outside it a worker could not write to."""
    if not e.filename or Path(e.filename).absolute().is_relative_to(out.absolute()):
        return out
    return Path(e.filename).parent


def _write_shards(streams: list[Stream], out: Path, cfg: ShardConfig, label_sets: dict, progress: bool) -> None:
    """Every pending job, ingested by the workers, written by this process in input order."""
    seen = {k for part in load_parts(out) for k in part["keys"]}
    pending = list(iter_jobs(streams, out))
    pool = mp.get_context("fork").Pool(cfg.workers, _init, (label_sets, cfg.ingest)) if cfg.workers > 1 else None
    if pool is None:
        _init(label_sets, cfg.ingest)
    try:
        with tqdm(total=sum(len(j) for _, j in pending), desc="shards", unit="item",
                  disable=not progress, mininterval=1.0) as bar:
            for stream, jobs in pending:
                bar.set_postfix_str(stream.prefix, refresh=False)
                writer = StreamWriter(out, stream, cfg, seen)
                try:
                    for result in _results(jobs, pool):
                        writer.feed(result)
                        bar.update()
                    writer.commit()
                except BaseException:  # the unfinished shard goes; committed ones stay for the rerun
                    writer.abort()
                    raise
    finally:
        if pool is not None:
            pool.terminate()


def _summary(durations: list[float]) -> dict:
    if not durations:
        return {"samples": 0, "hours": 0.0}
    return {"samples": len(durations), "hours": round(sum(durations) / 3600, 6),
            "duration": {"min": min(durations), "median": statistics.median(durations),
                         "max": max(durations)}}


def make_index(out: Path, streams: list[Stream], source: dict, label_sets: dict) -> dict:
    parts = [p for s in streams for p in load_parts(out, s.prefix)]
    by_task: dict[str, list[float]] = {}
    by_split: dict[str, list[float]] = {}
    task_splits: dict[str, Counter] = {}
    hist = [0] * int(30 / HIST_BIN_S + 1)
    for p in (p for p in parts if p["samples"]):
        by_task.setdefault(p["task"], []).extend(p["durations"])
        by_split.setdefault(p["split"], []).extend(p["durations"])
        task_splits.setdefault(p["task"], Counter())[p["split"]] += p["samples"]
        for d in p["durations"]:
            hist[min(int(d / HIST_BIN_S), len(hist) - 1)] += 1
    reasons = Counter(q["reason"] for p in parts for q in p["quarantined"])
    inputs = sum(p["end"] - p["start"] for p in parts)
    rejected = sum(reasons.values())
    return {
        "format": "qwen-audio-mt/webdataset", "builder_version": BUILDER_VERSION,
        "sample_rate": 16000, "source": source, "label_sets": label_sets,
        "shards": [{"name": p["name"], "split": p["split"], "task": p["task"], "samples": p["samples"],
                    "seconds": round(sum(p["durations"]), 3), "bytes": p["bytes"], "sha256": p["sha256"]}
                   for p in parts if p["samples"]],
        "tasks": {t: {**_summary(d), "splits": dict(sorted(task_splits[t].items()))}
                  for t, d in sorted(by_task.items())},
        "splits": {s: _summary(d) for s, d in sorted(by_split.items())},
        "duration_histogram": {"bin_seconds": HIST_BIN_S, "counts": hist},
        "inputs": inputs,
        "quarantine": {"total": sum(reasons.values()), "by_reason": dict(sorted(reasons.items())),
                       "fraction": round(rejected / inputs, 6) if inputs else 0.0},
    }
