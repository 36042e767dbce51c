"""Atomic, resumable webdataset shard writer.

Layout of a shard folder:
    {split}-{task}-{n:05d}.tar   members {key}.flac + {key}.json, one task per shard so the loader
                                 can mix tasks at any ratio (a conversation, chat_ingest.py:
                                 {key}.audio0.flac, {key}.audio1.flac, ... + {key}.json)
    _parts/{shard}.json          the commit record of a finished shard: the input range it
                                 consumed, its keys, durations and quarantined inputs
    quarantine.jsonl             every rejected input: source, key, reason, detail
    index.json                   written last: shards, per-task/split counts and hours, duration
                                 histogram, quarantine counts by reason, builder version, sources

A shard is written under a temporary name, renamed when complete, then committed by its part
record. A build killed at any moment and run again keeps the committed shards, skips the inputs
they consumed (no audio is decoded or generated for them) and ends with the same index: keys,
seeds and tar bytes (mtime 0, sorted members) are deterministic.

Every file is written through `open_for_write` (one place, so tests can fill the disk) under a
temporary name: a write that fails (ENOSPC, or any error) removes its temporary file, and
`remove_temporaries` clears what a killed build left; build.py turns a full disk into one line.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import re
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .ingest import IngestConfig, Quarantined, RawItem, Record

BUILDER_VERSION = "1"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
PARTS = "_parts"


@dataclass(frozen=True)
class ShardConfig:
    max_samples: int = 1000           # samples per shard
    max_bytes: int = 256 << 20        # bytes per shard (FLAC + JSON payload)
    workers: int = max(1, min(2, os.cpu_count() or 1))
    max_quarantine_fraction: float = 0.05  # the build fails above this share of rejected inputs
    ingest: IngestConfig = field(default_factory=IngestConfig)


@dataclass(frozen=True)
class Job:
    """A deferred input: `fn(*args) -> RawItem`. Picklable so pool workers can run it."""
    key: str
    source: str
    fn: Callable[..., RawItem]
    args: tuple = ()


@dataclass
class Stream:
    split: str
    task: str
    jobs: list[Job]

    @property
    def prefix(self) -> str:
        return _UNSAFE.sub("_", f"{self.split}-{self.task}")  # user-given names become file names


def shard_name(prefix: str, n: int) -> str:
    return f"{prefix}-{n:05d}.tar"


TMP = ".tmp"
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_full(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in DISK_FULL


def open_for_write(path: Path):
    return open(path, "wb")


def write_bytes_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + TMP)
    try:
        with open_for_write(tmp) as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, obj) -> None:
    # ASCII with escapes: quarantine details may quote undecodable file names
    write_bytes_atomic(path, (json.dumps(obj, indent=1, ensure_ascii=True, sort_keys=True) + "\n").encode())


def remove_temporaries(out: Path) -> list[Path]:
    """Delete the temporary files of a build that stopped (killed, disk full) in `out`."""
    found = [p for d in (out, out / PARTS) if d.is_dir() for p in d.glob(f"*{TMP}")]
    for p in found:
        p.unlink(missing_ok=True)
    return found


class TarShard:
    """One shard being written: deterministic members, temp name until `close`."""

    def __init__(self, path: Path):
        self.path = path
        self.tmp = path.with_name(path.name + TMP)
        self.file = open_for_write(self.tmp)
        self.tar = tarfile.open(fileobj=self.file, mode="w", format=tarfile.USTAR_FORMAT)
        self.samples, self.bytes, self.keys, self.durations = 0, 0, [], []

    def add(self, rec: Record) -> None:
        files = rec.files()
        for ext, data in files.items():
            info = tarfile.TarInfo(f"{rec.key}.{ext}")
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            self.tar.addfile(info, io.BytesIO(data))
        self.samples += 1
        self.bytes += sum(len(b) for b in files.values())
        self.keys.append(rec.key)
        self.durations.append(rec.meta["duration"])

    def close(self) -> str:
        self.tar.close()
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.tmp, self.path)
        return hashlib.sha256(self.path.read_bytes()).hexdigest()

    def abort(self) -> None:
        """Drop the unfinished shard. No tar trailer is written: the disk may be full."""
        with contextlib.suppress(OSError):  # flushing on a full disk fails; the file still closes
            self.file.close()
        self.tmp.unlink(missing_ok=True)


def load_parts(out: Path, prefix: str | None = None) -> list[dict]:
    """Committed part records (optionally of one stream), in shard order."""
    parts_dir = out / PARTS
    if not parts_dir.is_dir():
        return []
    parts = []
    for p in sorted(parts_dir.glob("*.json")):
        part = json.loads(p.read_text())
        if prefix is None or part["prefix"] == prefix:
            if part["samples"] and not (out / part["name"]).exists():
                break  # a committed shard went missing: rebuild from here
            parts.append(part)
    return parts


class StreamWriter:
    """Writes one stream's results into shards, committing each with its part record."""

    def __init__(self, out: Path, stream: Stream, cfg: ShardConfig, seen: set[str]):
        self.out, self.stream, self.cfg, self.seen = out, stream, cfg, seen
        done = load_parts(out, stream.prefix)
        self.pos = done[-1]["end"] if done else 0
        self.n = len(done)
        self.start, self.shard, self.quarantined = self.pos, None, []

    def feed(self, result: list[Record] | Quarantined) -> None:
        self.pos += 1
        if isinstance(result, Quarantined):
            self.quarantined.append(result.to_json())
        else:
            for rec in result:
                if rec.key in self.seen:
                    self.quarantined.append(Quarantined(rec.meta["source"], rec.key, "duplicate_key",
                                                        "key already written in this build").to_json())
                    continue
                self.seen.add(rec.key)
                if self.shard is None:
                    self.shard = TarShard(self.out / shard_name(self.stream.prefix, self.n))
                self.shard.add(rec)
        if self.shard and (self.shard.samples >= self.cfg.max_samples or self.shard.bytes >= self.cfg.max_bytes):
            self.commit()

    def commit(self) -> None:
        """Close the current shard (if any) and record the input range it consumed."""
        if self.pos == self.start:
            return
        s = self.shard
        name = shard_name(self.stream.prefix, self.n)
        part = {"name": name, "prefix": self.stream.prefix, "split": self.stream.split,
                "task": self.stream.task, "start": self.start, "end": self.pos,
                "samples": s.samples if s else 0, "bytes": s.bytes if s else 0,
                "keys": s.keys if s else [], "durations": s.durations if s else [],
                "quarantined": self.quarantined, "sha256": s.close() if s else None}
        (self.out / PARTS).mkdir(exist_ok=True)
        try:
            write_json_atomic(self.out / PARTS / f"{self.stream.prefix}-{self.n:05d}.json", part)
        except BaseException:  # not committed: the renamed shard would only take space until the rerun
            if s:
                (self.out / name).unlink(missing_ok=True)
            raise
        self.n += 1
        self.start, self.shard, self.quarantined = self.pos, None, []

    def abort(self) -> None:
        if self.shard is not None:
            self.shard.abort()
            self.shard = None


def run_job(job: Job, renderer, cfg: IngestConfig, windowable: frozenset) -> list[Record] | Quarantined:
    """Make the item and ingest it; a failing source becomes a quarantine entry, never a crash."""
    from .ingest import ingest
    try:
        item = job.fn(*job.args)
    except Exception as e:  # a converter meeting bad bytes/encodings must not stop the build
        if disk_full(e):  # not the item's fault: quarantining it would lose it for the rerun
            raise
        reason = getattr(e, "reason", None) or ("bad_text_encoding" if isinstance(e, UnicodeError)
                                                 else "source_error")
        return Quarantined(job.source, job.key, reason, f"{type(e).__name__}: {e}")
    from .chat_ingest import ChatItem, ingest_chat
    if isinstance(item, ChatItem):
        return ingest_chat(item, cfg)
    return ingest(item, renderer, cfg, windowable)


def iter_jobs(streams: Iterable[Stream], out: Path) -> Iterable[tuple[Stream, list[Job]]]:
    for stream in streams:
        done = load_parts(out, stream.prefix)
        yield stream, stream.jobs[(done[-1]["end"] if done else 0):]


def iter_shard(path: Path) -> Iterable[tuple[str, bytes, dict]]:
    """(key, flac bytes, metadata) of each sample in a shard; JSON only, never pickle."""
    with tarfile.open(path, mode="r:") as tar:
        pending: dict[str, dict] = {}
        for member in tar:
            if not member.isfile() or "/" in member.name or member.name.startswith(".."):
                continue  # this writer never makes such members; others are not trusted
            key, _, ext = member.name.partition(".")
            pending.setdefault(key, {})[ext] = tar.extractfile(member).read()
            entry = pending[key]
            if "flac" in entry and "json" in entry:
                del pending[key]
                yield key, entry["flac"], json.loads(entry["json"])
