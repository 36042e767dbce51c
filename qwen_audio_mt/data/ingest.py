"""The one path by which any audio becomes a shard sample.

decode (soundfile: wav, flac, ogg, mp3) -> downmix -> resample to 16 kHz (soxr) -> check the
signal -> check the labels against the task registry -> FLAC 16-bit bytes + JSON metadata.
A bad item is never repaired or replaced by zeros: it becomes a Quarantined record with a reason
code (counted by reason in the build report) and a human-readable detail.

Long audio: tasks marked `long_audio: window` in tags/tasks.yaml (clip-level labels that hold for
any stretch, e.g. scene or language) are cut into consecutive windows of at most `max_seconds`;
any other task's long clip is quarantined as too_long.
"""
from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from ..audio import SAMPLE_RATE
from ..render import Renderer
from ..targets import TargetError
from ..tasks import TaskError

_KEY_BAD = re.compile(r"[^A-Za-z0-9_-]+")
TIME_FIELDS = {"words", "spans", "turns", "events"}  # label lists whose items end in (start, end)


@dataclass(frozen=True)
class IngestConfig:
    min_seconds: float = 0.1          # shorter clips carry no usable signal
    max_seconds: float = 30.0         # Whisper's window; longer clips are windowed or quarantined
    silence_peak: float = 1e-4        # -80 dBFS: below this the clip is all-silent
    clip_level: float = 0.999         # |x| at or above this counts as clipped
    clip_fraction: float = 1e-3       # flag (not reject) clips with more clipped samples than this
    resample_quality: str = "HQ"      # soxr quality


@dataclass
class RawItem:
    """One input item from a converter or the corpus: audio (array or file) + raw labels."""
    key: str
    task: str
    split: str
    labels: dict
    source: str
    audio: np.ndarray | None = None   # float samples, [n] or [n, channels]
    sr: int | None = None
    path: str | Path | None = None
    audio_lang: str = "unknown"
    text_lang: str | None = None


@dataclass
class Record:
    """A ready shard sample: the key, FLAC bytes and the JSON metadata. A conversation has no
    `.flac` member (flac=b"") but one `audioN.flac` per audio in `members`."""
    key: str
    flac: bytes
    meta: dict
    members: dict[str, bytes] = field(default_factory=dict)

    def files(self) -> dict[str, bytes]:
        """Member extension -> bytes, as the shard holds them ({key}.{extension})."""
        meta = json.dumps(self.meta, ensure_ascii=False, sort_keys=True).encode()
        return {**({"flac": self.flac} if self.flac else {}), **self.members, "json": meta}

    @property
    def nbytes(self) -> int:
        return sum(len(b) for b in self.files().values())


@dataclass
class Quarantined:
    source: str
    key: str
    reason: str                       # short code, counted by reason in the build report
    detail: str = ""

    def to_json(self) -> dict:
        return {"source": self.source, "key": self.key, "reason": self.reason, "detail": self.detail}


class Reject(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def sanitize_key(key: str) -> str:
    """A tar-safe key: no directories, no dots (webdataset splits key and extension at a dot)."""
    clean = _KEY_BAD.sub("_", str(key)).strip("_")
    if not clean:
        raise Reject("bad_key", f"key {key!r} has no usable characters")
    return clean


def decode(item: RawItem) -> tuple[np.ndarray, int]:
    if item.audio is not None:
        return np.asarray(item.audio), int(item.sr or SAMPLE_RATE)
    return decode_file(item.path)


def decode_file(path: str | Path | None) -> tuple[np.ndarray, int]:
    """(samples [n] or [n, channels], rate) of an audio file; Reject with the reason otherwise."""
    path = Path(path) if path is not None else None
    if path is None or not path.exists():
        raise Reject("missing_file", str(path))
    if path.stat().st_size == 0:
        raise Reject("empty_file", str(path))
    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=False)
    except Exception as e:  # libsndfile reports corrupt/truncated/unknown formats in many ways
        raise Reject("undecodable", f"{path.name}: {e}") from None
    if audio.size == 0:
        raise Reject("empty_audio", path.name)
    return audio, sr


def to_mono_16k(audio: np.ndarray, sr: int, quality: str = "HQ") -> np.ndarray:
    audio = audio.astype(np.float32, copy=False)
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    if not np.all(np.isfinite(audio)):
        raise Reject("non_finite", f"{int(np.sum(~np.isfinite(audio)))} NaN/Inf samples")
    if sr != SAMPLE_RATE:
        audio = soxr.resample(audio, sr, SAMPLE_RATE, quality=quality).astype(np.float32)
    return audio


def load_audio(path: str | Path, cfg: IngestConfig = IngestConfig()) -> np.ndarray:
    """Any file soundfile reads -> 16-kHz mono float32, by the same decode and resampling as
    ingest (for inference); Reject (missing, empty, undecodable, non-finite, too short) otherwise."""
    audio = to_mono_16k(*decode_file(path), quality=cfg.resample_quality)
    if len(audio) / SAMPLE_RATE < cfg.min_seconds:
        raise Reject("too_short", f"{len(audio) / SAMPLE_RATE:.3f} s < {cfg.min_seconds} s")
    return audio


def check_signal(audio: np.ndarray, cfg: IngestConfig) -> list[str]:
    """Raise Reject for unusable audio; return warning flags (e.g. clipping) otherwise."""
    seconds = len(audio) / SAMPLE_RATE
    if seconds < cfg.min_seconds:
        raise Reject("too_short", f"{seconds:.3f} s < {cfg.min_seconds} s")
    if float(np.max(np.abs(audio))) < cfg.silence_peak:
        raise Reject("silent", "peak below -80 dBFS")
    clipped = float(np.mean(np.abs(audio) >= cfg.clip_level))
    return ["clipping"] if clipped > cfg.clip_fraction else []


def _times(labels: Mapping) -> list[tuple[str, float, float]]:
    out = []
    for name in TIME_FIELDS & set(labels):
        for entry in labels[name] or ():
            start, end = (entry["start"], entry["end"]) if isinstance(entry, Mapping) else entry[-2:]
            out.append((name, float(start), float(end)))
    return out


def _bad_text(value, path: str = "") -> str | None:
    """The first label string (at any depth) that is not valid UTF-8, e.g. undecodable bytes
    carried as surrogates from a file read with surrogateescape."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path or "label"
    elif isinstance(value, Mapping):
        return next((b for k, v in value.items() if (b := _bad_text(v, f"{path}.{k}".strip(".")))), None)
    elif isinstance(value, (list, tuple)):
        return next((b for i, v in enumerate(value) if (b := _bad_text(v, f"{path}[{i}]"))), None)
    return None


def check_labels(meta: dict, renderer: Renderer) -> None:
    """Text encoding, task, languages, closed label sets (by rendering), times inside the clip."""
    bad = _bad_text(meta)
    if bad:
        raise Reject("bad_text_encoding", f"{bad} is not valid UTF-8")
    for name, start, end in _times(meta):
        if not (0 <= start <= end <= meta["duration"] + 0.01):
            raise Reject("time_out_of_range",
                         f"{name} time {start}..{end} outside the clip's {meta['duration']:.2f} s")
    try:
        renderer.render(meta)
    except TaskError as e:
        raise Reject("bad_task", str(e)) from None
    except TargetError as e:
        raise Reject("bad_label", str(e)) from None
    except ValueError as e:  # unknown language codes
        raise Reject("bad_language" if "language" in str(e) else "bad_label", str(e)) from None


def encode_flac(audio: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.clip(audio, -1.0, 1.0), SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def windows(audio: np.ndarray, max_seconds: float) -> list[np.ndarray]:
    step = int(max_seconds * SAMPLE_RATE)
    return [audio[i:i + step] for i in range(0, len(audio), step)]


def ingest(item: RawItem, renderer: Renderer, cfg: IngestConfig = IngestConfig(),
           windowable: frozenset[str] = frozenset()) -> list[Record] | Quarantined:
    """One input item -> its shard records (one, or several windows), or its quarantine entry."""
    key = str(item.key)
    try:
        key = sanitize_key(item.key)
        audio = to_mono_16k(*decode(item), quality=cfg.resample_quality)
        pieces = [audio]
        if len(audio) / SAMPLE_RATE > cfg.max_seconds:
            if item.task not in windowable:
                raise Reject("too_long", f"{len(audio) / SAMPLE_RATE:.1f} s > {cfg.max_seconds} s "
                                         f"and task {item.task} cannot be windowed")
            pieces = [w for w in windows(audio, cfg.max_seconds) if len(w) / SAMPLE_RATE >= cfg.min_seconds]
        records = []
        for n, piece in enumerate(pieces):
            flags = check_signal(piece, cfg)
            meta = {**item.labels, "key": key if len(pieces) == 1 else f"{key}_w{n}",
                    "task": item.task, "source": item.source, "split": item.split,
                    "audio_lang": item.audio_lang, "text_lang": item.text_lang,
                    "duration": round(len(piece) / SAMPLE_RATE, 4), "flags": flags}
            check_labels(meta, renderer)
            records.append(Record(meta["key"], encode_flac(piece), meta))
        return records
    except Reject as r:
        return Quarantined(item.source, key, r.reason, r.detail)
