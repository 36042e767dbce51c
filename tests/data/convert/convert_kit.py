"""Helpers for the converter tests: real clips from the shared data written into a dataset's
layout under tmp_path, a one-worker build, and the shards read back (tar + JSON + FLAC)."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import soundfile as sf

from conftest import need_data
from qwen_audio_mt.data.build import build
from qwen_audio_mt.data.shards import ShardConfig

SR = 16_000
JFK_TEXT = ("And so my fellow Americans, ask not what your country can do for you, "
            "ask what you can do for your country.")
ROBIN = ("real_clips", "456440__inspectorj__bird-whistling-robin-single-13.ogg")
TRUMPET = ("real_clips", "sorohanro_-_solo-trumpet-06.ogg")
PIBBLE = ("real_clips", "pibble.ogg")
WHALE = ("real_clips", "glacier-bay-humpback.ogg")
DRUMS = ("real_clips", "admiralbob77_-_Choice_-_Drum-bass.ogg")
JFK = ("real_clips", "jfk.flac")


def clip(*parts: str, seconds: float | None = None, start: float = 0.0) -> tuple[np.ndarray, int]:
    """A real recording of the shared data (skips the test when it is missing), optionally cut."""
    audio, sr = sf.read(str(need_data(*parts)), dtype="float32")
    a = int(start * sr)
    return audio[a:a + int(seconds * sr) if seconds else None], sr


def put(path: Path, audio: np.ndarray, sr: int, fmt: str | None = None, subtype: str | None = None) -> Path:
    """Write audio in the format named by the suffix (or `fmt`, e.g. MP3), making the folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, sr, format=fmt, subtype=subtype)
    return path


def put_text(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def run(plan, out: Path) -> dict:
    return build(plan.streams, out, ShardConfig(workers=1), plan.source, plan.label_sets, progress=False)


def samples(out: Path) -> dict[str, dict]:
    """key -> its JSON metadata plus `_audio` (decoded FLAC) and `_sr`, over every shard."""
    found = {}
    for shard in sorted(out.glob("*.tar")):
        with tarfile.open(shard) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        for name, data in members.items():
            if name.endswith(".json"):
                key = name[:-5]
                meta = json.loads(data)
                meta["_audio"], meta["_sr"] = sf.read(io.BytesIO(members[f"{key}.flac"]), dtype="float32")
                meta["_shard"] = shard.name
                found[key] = meta
    return found


def quarantined(out: Path) -> dict[str, str]:
    """key -> reason of every quarantined input."""
    lines = (out / "quarantine.jsonl").read_text().splitlines()
    return {q["key"]: q["reason"] for q in map(json.loads, lines)}


def index(out: Path) -> dict:
    return json.loads((out / "index.json").read_text())


def splits(idx: dict, task: str) -> dict:
    return idx["tasks"][task]["splits"]


def assert_audio(meta: dict, seconds: float, tol: float = 0.05) -> None:
    """The FLAC member is 16-kHz mono of the expected duration, matching its JSON."""
    audio = meta["_audio"]
    assert meta["_sr"] == SR and audio.ndim == 1
    assert abs(len(audio) / SR - seconds) <= tol, (meta["key"], len(audio) / SR, seconds)
    assert abs(meta["duration"] - len(audio) / SR) < 1e-3
    assert np.max(np.abs(audio)) > 1e-3
