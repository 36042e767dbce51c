"""Generic JSONL manifest: one line per item.

    {"audio": "clips/a.wav", "task": "asr", "split": "train", "audio_lang": "en", "text": "..."}

`audio` is relative to the manifest's folder (or absolute); `key` defaults to the audio file's
stem; `split` defaults to train; every other field is a raw label for the task. A line that is
not valid JSON or lacks audio/task is quarantined as bad_manifest_line.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..shards import Job
from . import ConvertError, Plan
from .common import checksum, group, make_raw

FORMAT = "manifest"
DESCRIPTION = "generic JSONL manifest (audio path + task + label fields)"
RESERVED = {"audio", "task", "split", "key", "audio_lang", "text_lang"}


class BadLine(ValueError):
    reason = "bad_manifest_line"


def _item(line: bytes, number: int, root: str):
    try:
        row = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        raise UnicodeError(f"line {number} is not valid UTF-8") from None
    except json.JSONDecodeError as e:
        raise BadLine(f"line {number}: {e}") from None
    if not isinstance(row, dict) or "audio" not in row or "task" not in row:
        raise BadLine(f"line {number}: needs 'audio' and 'task'")
    path = Path(root) / row["audio"]
    labels = {k: v for k, v in row.items() if k not in RESERVED}
    return make_raw(str(row.get("key") or path.stem), row["task"], row.get("split", "train"), labels,
                    "manifest", str(path), row.get("audio_lang", "unknown"), row.get("text_lang"))


def _peek(line: bytes) -> tuple[str, str]:
    """Split and task for grouping, tolerant of bad lines (their jobs fail on their own)."""
    try:
        row = json.loads(line.decode("utf-8"))
        return str(row.get("split", "train")), str(row.get("task", "unknown"))
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return "train", "unparsed"


def plan(src: Path) -> Plan:
    files = [src] if src.is_file() else sorted(src.glob("*.jsonl"))
    if not files:
        raise ConvertError(f"no .jsonl manifest at {src}")
    jobs = []
    for f in files:
        for n, line in enumerate(f.read_bytes().splitlines(), 1):
            if line.strip():
                split, task = _peek(line)
                jobs.append((split, task, Job(f"{f.stem}:{n}", "manifest", _item, (line, n, str(f.parent)))))
    return Plan(group(jobs), {}, {"format": FORMAT, "files": checksum(*files)})
