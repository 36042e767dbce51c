"""Loader benchmarks on the embedded shards, each measured side by side in one run.

1. Throughput, audio-seconds per second on one worker core: the full path (read shard, decode,
   render, log-mel, bucket, collate; no augmentation), timed after a warm-up that fills the
   shuffle buffers and bucket pool, vs a bare loop over exactly the clips that path delivered
   (their FLAC bytes already in memory: decode + openai-whisper's log_mel_spectrogram, nothing
   else), medians of 3 interleaved rounds. The same clips, because the mixture's draws are not the
   shards' mix of lengths and a short clip costs more per second. Goals: >= 1,000x real time and
   >= 0.95 of the bare loop (issue 15).
2. Real / computed mel frames (encoder frames follow the same ratio): duration bucketing vs
   Qwen-Audio's 30-s padding, on the same stream, with the training default's limits (pool 256;
   bench_packing.py sets packing and Lhotse beside them). Goal: >= 0.9 with bucketing.
3. Peak resident memory of a loader run over a folder with 10x more shards (the same shard files
   listed 10 times over) vs the folder itself. Goal: <= 1.1x.
"""
from __future__ import annotations

import io
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import soundfile as sf
import torch
import whisper
import yaml
from common import ROOT, pin_one_core, record

from qwen_audio_mt.data.collate import BatchLimits, frame_counts
from qwen_audio_mt.data.features import whisper_log_mel
from qwen_audio_mt.data.datamodule import AudioDataModule, DataConfig
from qwen_audio_mt.data.loader import LoaderConfig
from qwen_audio_mt.data.mixture import MixtureConfig, SourceConfig
from qwen_audio_mt.data.shards import iter_shard
from qwen_audio_mt.malloc import keep_freed_memory

SHARDS = ROOT / "shards" / "embedded"
# the training default's batch limits (pool 256), read where training reads them
LIMITS = BatchLimits(**yaml.safe_load((ROOT / "conf" / "data" / "default.yaml").read_text())["loader"]["limits"])
WARMUP, TIMED = 40, 120


def module(folder: Path, batches: int, **loader) -> AudioDataModule:
    cfg = LoaderConfig(num_workers=0, batches_per_epoch=batches, limits=LIMITS, **loader)
    return AudioDataModule(DataConfig(MixtureConfig((SourceConfig(str(folder)),)), cfg))


def run(folder: Path, batches: int, warmup: int = 0, keys: list | None = None,
        **loader) -> tuple[float, float, int, int]:
    """(audio seconds, wall seconds, real frames, computed frames) over the batches after warm-up;
    the delivered samples' keys are appended to `keys`."""
    torch.set_num_threads(1)
    audio = real = computed = 0
    t0 = time.perf_counter()
    for i, b in enumerate(module(folder, warmup + batches, **loader).train_dataloader()):
        if i == warmup:
            t0 = time.perf_counter()
        if i >= warmup:
            r, c = frame_counts(b)
            audio, real, computed = audio + r / 100, real + r, computed + c
            if keys is not None:
                keys += b["keys"]
    return audio, time.perf_counter() - t0, real, computed


def flac_bytes(folder: Path, keys: list[str]) -> list[bytes]:
    """The FLAC members of these train samples, in this order (a key drawn twice, twice)."""
    wanted = set(keys)
    found = {k: flac for s in sorted(folder.glob("train-*.tar")) for k, flac, _ in iter_shard(s) if k in wanted}
    return [found[k] for k in keys]


def bare_loop(flacs: list[bytes], mel=whisper.log_mel_spectrogram) -> float:
    """Decode + whisper's log-mel (or `mel`) of each clip, nothing else: audio-s/s."""
    torch.set_num_threads(1)
    t0, audio = time.perf_counter(), 0.0
    for flac in flacs:
        x, _ = sf.read(io.BytesIO(flac), dtype="float32")
        mel(torch.from_numpy(x))
        audio += len(x) / 16000
    return audio / (time.perf_counter() - t0)


def throughput(folder: Path, rounds: int = 3) -> tuple[float, float, float, float, int, int]:
    """(full path, bare loop, median ratio of the rounds, bare loop with the package's log-mel,
    real, computed frames), interleaved rounds on the same samples (the stream's seeds are fixed)."""
    fulls, bares, ours = [], [], []
    for _ in range(rounds):
        keys: list[str] = []
        audio, wall, real, computed = run(folder, TIMED, WARMUP, keys)
        flacs = flac_bytes(folder, keys)
        fulls.append(audio / wall)
        bares.append(bare_loop(flacs))
        ours.append(bare_loop(flacs, lambda x: whisper_log_mel(x, 80)))
    ratio = statistics.median([f / b for f, b in zip(fulls, bares)])
    return statistics.median(fulls), statistics.median(bares), ratio, statistics.median(ours), real, computed


def replicated(folder: Path, times: int, dest: Path) -> Path:
    """A folder listing every shard `times` times (symlinks): 10x the shards, same bytes."""
    dest.mkdir(parents=True, exist_ok=True)
    index = json.loads((folder / "index.json").read_text())
    shards = []
    for k in range(times):
        for s in index["shards"]:
            name = s["name"].replace(".tar", f"-r{k}.tar")
            if not (dest / name).exists():
                (dest / name).symlink_to((folder / s["name"]).resolve())
            shards.append({**s, "name": name})
    (dest / "index.json").write_text(json.dumps({**index, "shards": shards}))
    return dest


def peak_rss_mib(folder: Path) -> float:
    # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a child would report the
    # parent's peak at fork time.
    code = ("import sys, re; sys.path.insert(0, 'bench'); from pathlib import Path;"
            "from bench_loader import run; run(Path(sys.argv[1]), 100);"
            "print(int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1]) / 1024)")
    out = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, check=True,
                         cwd=ROOT)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> int:
    if not (SHARDS / "index.json").exists():
        print(f"no embedded shards at {SHARDS}: run `make shards` first", file=sys.stderr)
        return 1
    pin_one_core()
    keep_freed_memory()   # as training's loader workers run (train.py; malloc.py), for both loops
    full, bare, ratio, ours, real, computed = throughput(SHARDS)
    print(f"loader: full path {full:,.0f} audio-s/s per core ({full:,.0f}x real time), bare decode+log-mel "
          f"of the same clips {bare:,.0f} audio-s/s, ratio {ratio:.2f} (median of 3 rounds); the bare loop "
          f"with the package's log-mel (data/features.py) {ours:,.0f} audio-s/s")
    _, _, preal, pcomputed = run(SHARDS, TIMED // 4, pad_to_30s=True)
    eff, padded = real / computed, preal / pcomputed
    print(f"real/computed frames: bucketing {eff:.3f}, 30-s padding {padded:.3f}")
    x10 = replicated(SHARDS, 10, ROOT / "shards" / ".bench-x10")
    rss1, rss10 = peak_rss_mib(SHARDS), peak_rss_mib(x10)
    print(f"peak RSS: {rss1:,.0f} MiB with {len(list(SHARDS.glob('*.tar')))} shards, {rss10:,.0f} MiB with 10x "
          f"-> {rss10 / rss1:.3f}x")
    record("loader", [
        {"benchmark": "loader, full path", "figure": "audio-s/s per worker core", "value": full,
         "unit": "audio-s/s", "baseline": f"bare decode + whisper log-mel, same clips: {bare:,.0f} audio-s/s "
                                          f"(with the package's log-mel: {ours:,.0f})",
         "ratio": ratio, "goal": ">= 1,000x real time, >= 0.95 of bare"},
        {"benchmark": "bucketing", "figure": "real/computed frames x1000", "value": eff * 1000, "unit": "",
         "baseline": f"30-s padding: {padded:.3f}", "ratio": eff / padded, "goal": ">= 0.9 real/computed"},
        {"benchmark": "memory, 10x shards", "figure": "peak RSS", "value": rss10, "unit": "MiB",
         "baseline": f"1x shards: {rss1:,.0f} MiB", "ratio": rss10 / rss1, "goal": "<= 1.1x"},
    ])
    return 0


if __name__ == "__main__":
    sys.exit(main())
