"""Audio-FLAN-style instruction JSONL -> speech_instruction / music_instruction / sound_instruction.

Layout (`--src` is one .jsonl file or a folder searched recursively for *.jsonl), one object a line:

    {"instruction": "...", "input": "...", "output": "...", "audio_path": "clips/a.wav",
     "task_type": {"major": [...], "minor": [...]}, "domain": "speech", "split": "train"}

`audio_path` is relative to the JSONL file's folder (or absolute). Task by `domain`: speech ->
speech_instruction, music -> music_instruction, audio or sound -> sound_instruction (another
domain is quarantined as bad_task). Labels: question = instruction, plus "\\n" + input when input
is non-empty; answer = output; task_type is kept as a label for filtering. audio_lang: the line's
`audio_lang` when given, else unknown. Split: the line's `split` (a string, or the first of a
list; dev -> valid), else from the file name (a stem containing train / valid / dev / test as a
word), else from its folders below --src, nearest first, else train. Generation lines without
input audio (no audio_path) and lines that are not JSON objects are quarantined as
bad_manifest_line (as in the manifest format), non-UTF-8 lines as bad_text_encoding. Key: the
line's `uuid` when given, else `{file}-{line number}`, the file's path below --src made tar-safe.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..shards import Job
from . import Plan
from .common import SPLIT_WORDS, BadRow, bad_row, checksum, file_key, group, is_utf8, line_files, make_raw_any

FORMAT = "audioflan"
DESCRIPTION = "Audio-FLAN instruction JSONL (instruction/input/output/audio_path/domain) -> *_instruction"
SOURCE = "audioflan"
DOMAINS = {"speech": "speech_instruction", "music": "music_instruction", "audio": "sound_instruction",
           "sound": "sound_instruction"}


def _split(value, default: str) -> str:
    value = value[0] if isinstance(value, list) and value else value
    return SPLIT_WORDS.get(str(value).strip().lower(), default) if value else default


def _row(line: bytes, where: str) -> dict:
    """The line's object, or BadRow with its quarantine reason."""
    try:
        row = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadRow("bad_text_encoding", f"{where} is not UTF-8") from None
    except json.JSONDecodeError as e:
        raise BadRow("bad_manifest_line", f"{where}: {e}") from None
    if not isinstance(row, dict) or not row.get("audio_path") or "output" not in row:
        raise BadRow("bad_manifest_line", f"{where}: needs audio_path and output")
    if str(row.get("domain", "")).strip().lower() not in DOMAINS:
        raise BadRow("bad_task", f"{where}: domain {row.get('domain')!r} is not speech, music, audio or sound")
    return row


def _job(line: bytes, n: int, f: Path, fid: str, split: str) -> tuple[str, str, Job]:
    key = f"{fid}-{n}"
    try:
        row = _row(line, f"{f.name} line {n}")
    except BadRow as e:
        return split, "unparsed", Job(key, SOURCE, bad_row, (e.reason, str(e)))
    key = file_key(str(row["uuid"])) if row.get("uuid") else key
    task = DOMAINS[str(row["domain"]).strip().lower()]
    tt = row.get("task_type")
    extra = str(row.get("input") or "").strip()
    labels = {"question": str(row.get("instruction") or "") + (f"\n{extra}" if extra else ""),
              "answer": str(row["output"]), "task_type": tt if is_utf8(json.dumps(tt, ensure_ascii=False)) else None}
    split = _split(row.get("split"), split)
    paths = (str(f.parent / str(row["audio_path"])),)
    return split, task, Job(key, SOURCE, make_raw_any, (paths, key, task, split, labels, SOURCE,
                                                       str(row.get("audio_lang") or "unknown")))


def plan(src: Path) -> Plan:
    files = line_files(src, ("*.jsonl",), ".jsonl file")
    jobs = []
    for f, fid, split in files:
        for n, line in enumerate(f.read_bytes().splitlines(), 1):
            if line.strip():
                jobs.append(_job(line, n, f, fid, split))
    return Plan(group(jobs), {}, {"format": FORMAT, "dataset": "Audio-FLAN", "files": checksum(*(f for f, _, _ in files))})
