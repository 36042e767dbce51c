"""Shard build throughput, audio-seconds per second on one core (workers=1), two workloads:
the embedded corpus (generation + ingest + FLAC) and real FSDD recordings (decode 8 kHz wav,
resample, check, FLAC). Baseline: real time (1 audio-second per second)."""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from common import pin_one_core, record

from qwen_audio_mt.data.build import build
from qwen_audio_mt.data.convert import manifest
from qwen_audio_mt.data.corpus.build import CorpusConfig, build_corpus
from qwen_audio_mt.data.shards import ShardConfig
from qwen_audio_mt.paths import data_available, data_root

SCALE = 0.25


def rate(index: dict, seconds: float) -> tuple[float, float]:
    audio = sum(s["seconds"] for s in index["shards"])
    return audio / seconds, audio


def fsdd_manifest(folder: Path) -> Path:
    lines = [json.dumps({"audio": str(p), "task": "digit_recognition", "audio_lang": "en",
                         "text_itn": p.stem.split("_")[0]}) for p in sorted((data_root() / "fsdd").glob("*.wav"))]
    path = folder / "fsdd.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> int:
    pin_one_core()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        index = build_corpus(Path(tmp) / "embedded", CorpusConfig(scale=SCALE), ShardConfig(workers=1), progress=False)
        r, audio = rate(index, time.perf_counter() - t0)
        print(f"embedded corpus (scale {SCALE}): {audio:,.0f} audio-s in {audio / r:.1f} s -> {r:,.0f} audio-s/s per core")
        rows.append({"benchmark": "shard build, embedded corpus", "figure": "audio-s/s, 1 core", "value": r,
                     "unit": "audio-s/s", "baseline": "real time", "ratio": r, "goal": "default scale in <= 5 min"})
        if data_available("fsdd"):
            src = fsdd_manifest(Path(tmp))
            t0 = time.perf_counter()
            plan = manifest.plan(src)
            index = build(plan.streams, Path(tmp) / "fsdd", ShardConfig(workers=1), plan.source, progress=False)
            r, audio = rate(index, time.perf_counter() - t0)
            print(f"FSDD (2,500 wav, 8 kHz): {audio:,.0f} audio-s in {audio / r:.1f} s -> {r:,.0f} audio-s/s per core")
            rows.append({"benchmark": "shard build, FSDD", "figure": "audio-s/s, 1 core", "value": r,
                         "unit": "audio-s/s", "baseline": "real time", "ratio": r, "goal": "-"})
    record("shards", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
