"""Helpers shared by the converters: file checksums, CSV/TSV rows, grouping jobs into streams."""
from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterable
from pathlib import Path

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
    text = path.read_bytes().decode("utf-8", errors="surrogateescape")
    rows = list(csv.DictReader(io.StringIO(text), delimiter=delimiter, quoting=csv.QUOTE_MINIMAL
                               if delimiter == "," else csv.QUOTE_NONE))
    missing = [c for c in required if rows and c not in rows[0]]
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
