"""Qwen-Audio-Chat's SFT format -> conversation shards (task `chat`).

`--src` is a text file (or a folder searched recursively for *.txt and *.chatml) with one
conversation per line in ChatML, as `../shared/data/qwen_audio/sft_sample.txt`:

    <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\nAudio 1: <audio>assets/audio/a.flac</audio>\\nwhat does the person say?<|im_end|>\\n<|im_start|>assistant\\n...<|im_end|>

(newlines inside a line written as backslash-n; conversation.parse_chatml reads the variants the
official sample holds). Audio paths: an absolute path as it is; a relative one is looked up
under the audio root (`--audio-root`, default the file's folder) as written, then by its file
name alone in the root (Qwen's sample files name their audio `assets/audio/NAME` while the
audio sits beside them); the first that exists is used, and a missing one is quarantined
(`missing_file: audio 1 of 2 (assets/audio/x.flac): ROOT/assets/audio/x.flac`) while the other
lines train. Split: from the file name as for Audio-FLAN (a stem with train / valid / dev / test
as a word), else train. Key: `{file}-{line number}`.
"""
from __future__ import annotations

from pathlib import Path

from ...conversation import ConversationError, parse_chatml
from ..chat_ingest import CHAT_TASK, ChatItem
from ..shards import Job
from . import Plan
from .common import BadRow, bad_row, checksum, group, line_files, strict_text

FORMAT = "qwen_chat"
DESCRIPTION = "Qwen-Audio-Chat ChatML, one conversation per line, <audio>PATH</audio> -> chat"
SOURCE = "qwen_chat"


def resolve(ref: str, root: Path) -> Path:
    """The audio file of a reference (see the module docs); the first candidate when none exists."""
    p = Path(ref)
    if p.is_absolute():
        return p
    candidates = [root / p, root / p.name]
    return next((c for c in candidates if c.is_file()), candidates[0])


def chat_item(line: bytes, key: str, split: str, root: str) -> ChatItem:
    """A job function: the line's conversation and its audio files (ingest decodes them)."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRow("bad_text_encoding", f"{key} is not UTF-8") from None
    try:
        conv = parse_chatml(text, key)
    except ConversationError as e:
        raise BadRow("bad_conversation", str(e)) from None
    paths = [str(resolve(ref, Path(root))) for ref in conv.audios()]
    for p in paths:
        strict_text(p, f"audio path of {key}")
    return ChatItem(key, split, SOURCE, conv.to_json(), paths, CHAT_TASK)


def plan(src: Path, audio_root: str | Path | None = None) -> Plan:
    files = line_files(src, ("*.txt", "*.chatml"), "ChatML file (.txt, .chatml)")
    jobs = []
    for f, fid, split in files:
        root = str(Path(audio_root) if audio_root else f.parent)
        for n, line in enumerate(f.read_bytes().splitlines(), 1):
            if not line.strip():
                continue
            key = f"{fid}-{n}"
            if not line.strip().startswith(b"<|im_start|>"):
                job = Job(key, SOURCE, bad_row, ("bad_conversation", f"{f.name} line {n}: does not start with <|im_start|>"))
            else:
                job = Job(key, SOURCE, chat_item, (line, key, split, root))
            jobs.append((split, CHAT_TASK, job))
    return Plan(group(jobs), {}, {"format": FORMAT, "dataset": "Qwen-Audio-Chat SFT", "files": checksum(*(f for f, _, _ in files)),
                                  "audio_root": str(audio_root) if audio_root else None})
