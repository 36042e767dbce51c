"""Helpers shared by the converters: file checksums, CSV/TSV rows, grouping jobs into streams."""
from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from ..ingest import RawItem
from ..shards import Job, Stream
from . import ConvertError


def checksum(*paths: Path) -> dict:
    """sha256 of the metadata files a plan was made from (audio is checked by ingest)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def read_rows(path: Path, delimiter: str = ",", required: Iterable[str] = ()) -> list[dict]:
    """Rows of a CSV/TSV as dicts; undecodable bytes are kept (surrogateescape) so the one bad row
    fails in its own job, not the whole plan."""
    if not path.is_file():
        raise ConvertError(f"missing {path}")
    text = path.read_bytes().decode("utf-8-sig", errors="surrogateescape")  # -sig: Excel's BOM
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter,
                            quoting=csv.QUOTE_MINIMAL if delimiter == "," else csv.QUOTE_NONE)
    rows = list(reader)
    missing = [c for c in required if c not in (reader.fieldnames or [])]
    if missing:
        raise ConvertError(f"{path}: missing column(s) {', '.join(missing)}")
    return rows


def strict_text(value: str, what: str) -> str:
    """Text that must be valid UTF-8; raises UnicodeError (quarantined as bad_text_encoding)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise UnicodeError(f"{what} is not valid UTF-8") from None
    return value


def is_utf8(value: str) -> bool:
    """False for text holding undecodable bytes (read with surrogateescape)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def make_raw(key: str, task: str, split: str, labels: dict, source: str, path: str,
             audio_lang: str = "unknown", text_lang: str | None = None) -> RawItem:
    """A job function: checks text fields, then hands the file to ingest."""
    for name, value in labels.items():
        if isinstance(value, str):
            strict_text(value, f"{name} of {key}")
    return RawItem(key, task, split, labels, source, path=path, audio_lang=audio_lang, text_lang=text_lang)


def group(jobs: Iterable[tuple[str, str, Job]]) -> list[Stream]:
    """(split, task, job) triples -> one stream per (split, task), in first-seen order."""
    streams: dict[tuple[str, str], Stream] = {}
    for split, task, job in jobs:
        streams.setdefault((split, task), Stream(split, task, [])).jobs.append(job)
    return list(streams.values())


# ---------------------------------------------------------------- helpers added for the dataset converters
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


SPLIT_WORDS = {"train": "train", "valid": "valid", "validation": "valid", "dev": "valid", "test": "test"}


def file_split(rel: Path) -> str:
    """The split named by a file's stem, else by its folders (nearest first), else train."""
    for name in (rel.stem, *reversed(rel.parent.parts)):
        words = re.split(r"[^a-z]+", name.lower())
        found = next((SPLIT_WORDS[w] for w in words if w in SPLIT_WORDS), None)
        if found:
            return found
    return "train"


def line_files(src: Path, patterns: tuple[str, ...], what: str) -> list[tuple[Path, str, str]]:
    """The line-per-item files of a converter's --src (one file, or a folder searched recursively
    for `patterns`), each as (path, tar-safe file key, split from its name); none is an error."""
    src = Path(src)
    files = [src] if src.is_file() else sorted({p for pat in patterns for p in src.rglob(pat)}) \
        if src.is_dir() else []
    if not files:
        raise ConvertError(f"no {what} at {src}")
    rels = [(f, f.relative_to(src) if f != src else Path(f.name)) for f in files]
    return [(f, file_key(str(rel)), file_split(rel)) for f, rel in rels]


def file_key(name: str) -> str:
    """A tar-safe, unique key from a file name (or relative path) without its extension: unsafe
    characters become `_`, and a name that had any gets a short hash of the original, so that
    `a b.wav` and `a_b.wav` stay distinct."""
    path = PurePosixPath(str(name).replace("\\", "/"))
    stem = str(path.with_suffix("")) if path.name else str(name)
    clean = _KEY_UNSAFE.sub("_", stem).strip("_")
    if clean == stem:
        return clean
    return f"{clean}-{hashlib.sha1(stem.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"


def make_raw_any(paths: tuple, key: str, task: str, split: str, labels: dict, source: str,
                 audio_lang: str = "unknown", text_lang: str | None = None) -> RawItem:
    """make_raw with the first existing of several candidate audio paths (the first when none
    exists, so missing_file names the documented layout). Unlike make_raw it also checks the
    strings inside list labels (a clip's several captions) and the paths: a non-UTF-8 name would
    otherwise reach the JSON of the build's records in a quarantine detail."""
    for name, value in labels.items():
        for item in value if isinstance(value, list) else ():
            if isinstance(item, str):
                strict_text(item, f"{name} of {key}")
    for p in paths:
        strict_text(str(p), f"audio path of {key}")
    path = next((p for p in paths if Path(p).is_file()), paths[0])
    return make_raw(key, task, split, labels, source, str(path), audio_lang, text_lang)


class BadRow(ValueError):
    """A metadata row that cannot become an item; `reason` is its quarantine code."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def bad_row(reason: str, detail: str) -> RawItem:
    """A job function for a row found unusable at plan time: its job is quarantined with `reason`."""
    raise BadRow(reason, detail.encode("utf-8", "backslashreplace").decode("utf-8"))


def fold_jobs(rows: list[dict], folds: dict, file_col: str, label_col: str, audio_path, task: str,
              source: str) -> list[tuple[str, str, Job]]:
    """Jobs of a fold-split classification CSV (ESC-50, UrbanSound8K): one per row, its split from
    `folds`, a row with an unknown fold quarantined as bad_fold. `audio_path(fname, fold)` -> path."""
    jobs = []
    for row in rows:
        fname, fold = row[file_col] or "", (row["fold"] or "").strip()
        key = file_key(fname)
        split = folds.get(fold)
        if split is None:
            why = f"{fname}: fold {fold!r} is not one of {', '.join(folds)}"
            jobs.append(("train", task, Job(key, source, bad_row, ("bad_fold", why))))
            continue
        labels = {"label": (row[label_col] or "").strip()}
        args = ((str(audio_path(fname, fold)),), key, task, split, labels, source)
        jobs.append((split, task, Job(key, source, make_raw_any, args)))
    return jobs
