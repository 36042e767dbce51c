"""Conversations into shards, by ingest's own audio path.

A `ChatItem` (messages with `<audio>REF</audio>` references, and per reference a file or an
array) becomes one shard sample: `{key}.json` holds the messages, their references rewritten to
the member names (`audio0`, `audio1`, ...), the original references (`audio_sources`), each
audio's duration, and the item's evaluation labels; `{key}.audioN.flac` holds audio N as 16-kHz
mono FLAC, decoded, downmixed, resampled and checked exactly as task samples are
(ingest.to_mono_16k, check_signal, encode_flac). A text-only conversation has no audio member.

Bad input is quarantined whole, with the reason of its first bad audio and which one it was
(`missing_file: audio 2 of 2 (assets/audio/x.mp3): /root/assets/audio/x.mp3`), or
`bad_conversation` when the messages do not parse. Audio longer than `IngestConfig.max_seconds`
is quarantined as too_long: a conversation's answers are about the whole recording, so it cannot
be windowed like a clip-level label.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..audio import SAMPLE_RATE
from ..conversation import Conversation, ConversationError
from .ingest import (IngestConfig, Quarantined, Record, Reject, check_signal, decode_file, encode_flac,
                     sanitize_key, to_mono_16k)

CHAT_TASK = "chat"   # the default shard family name of conversations


@dataclass
class ChatItem:
    key: str
    split: str
    source: str
    messages: list[dict]                 # [{"role", "content"}], audio as <audio>REF</audio>
    audio: list = field(default_factory=list)   # per reference, in order: a path or (samples, rate)
    task: str = CHAT_TASK                # shard family (mixture component) name
    labels: dict = field(default_factory=dict)  # for evaluation: kind, answer, label, text ...


def member(n: int) -> str:
    """The shard member (and rewritten reference) of audio n (0-based)."""
    return f"audio{n}"


def _audio(ref: str, where, cfg: IngestConfig) -> np.ndarray:
    samples, sr = (decode_file(where) if isinstance(where, (str, Path)) else (np.asarray(where[0]), int(where[1])))
    audio = to_mono_16k(samples, sr, quality=cfg.resample_quality)
    seconds = len(audio) / SAMPLE_RATE
    if seconds > cfg.max_seconds:
        raise Reject("too_long", f"{seconds:.1f} s > {cfg.max_seconds} s (a conversation's audio is not windowed)")
    check_signal(audio, cfg)
    return audio


def ingest_chat(item: ChatItem, cfg: IngestConfig = IngestConfig()) -> list[Record] | Quarantined:
    key = str(item.key)
    try:
        key = sanitize_key(item.key)
        try:
            conv = Conversation.from_json(item.messages, key)
        except ConversationError as e:
            raise Reject("bad_conversation", str(e)) from None
        refs = conv.audios()
        if len(refs) != len(item.audio):
            raise Reject("bad_conversation", f"{len(refs)} audio references but {len(item.audio)} audios given")
        audios = []
        for n, (ref, where) in enumerate(zip(refs, item.audio)):
            try:
                audios.append(_audio(ref, where, cfg))
            except Reject as r:
                raise Reject(r.reason, f"audio {n + 1} of {len(refs)} ({ref}): {r.detail}") from None
        durations = [round(len(a) / SAMPLE_RATE, 4) for a in audios]
        meta = {**item.labels, "key": key, "task": item.task, "source": item.source, "split": item.split,
                "messages": conv.with_audios([member(n) for n in range(len(refs))]).to_json(),
                "audio_sources": refs, "durations": durations, "duration": round(sum(durations), 4)}
        return [Record(key, b"", meta, {f"{member(n)}.flac": encode_flac(a) for n, a in enumerate(audios)})]
    except Reject as r:
        return Quarantined(item.source, key, r.reason, r.detail)
