"""Reading shards: one webdataset pipeline per mixture component, decoded without pickle.

Train: resampled shards (infinite), seeded per (run seed, resume, iteration, rank, worker); when
a component has at least as many shards as there are readers (ranks x workers) each reader
resamples only its own slice (split by node and worker), otherwise every reader resamples all
shards with its own seed. A per-component shuffle buffer (raw bytes, before decoding) mixes
samples within shards. Eval: every shard once in order, sample i read by reader i mod readers.

A corrupt tar member or an undecodable sample is skipped, counted by reason and logged (once per
reason and reader); it never stops training.
"""
from __future__ import annotations

import io
import json
import logging
import random
from collections import Counter
from collections.abc import Iterator

import numpy as np
import soundfile as sf
import webdataset as wds

from ..audio import SAMPLE_RATE
from .mixture import Component

log = logging.getLogger(__name__)


class SkipCounter(Counter):
    """Skipped samples by reason; also the webdataset exception handler (continue on error)."""

    def skip(self, reason: str, detail: str) -> None:
        if reason not in self:
            log.warning("skipping %s: %s (further ones counted, not logged)", reason, detail)
        self[reason] += 1

    def handler(self, exn: Exception) -> bool:
        self.skip("corrupt_tar", repr(exn)[:200])
        return True


def decode_audio(flac: bytes) -> np.ndarray:
    """A shard's FLAC member -> float32 16-kHz mono samples; ValueError for anything else."""
    audio, sr = sf.read(io.BytesIO(flac), dtype="float32")
    if sr != SAMPLE_RATE or audio.ndim != 1 or not np.all(np.isfinite(audio)):
        raise ValueError(f"expected finite 16 kHz mono audio, got sr={sr} shape={audio.shape}")
    return audio


def decode_sample(raw: dict) -> dict:
    """webdataset sample ({"flac": bytes, "json": bytes, ...}) -> metadata dict + float32 audio."""
    meta = json.loads(raw["json"])
    meta["audio"] = decode_audio(raw["flac"])
    meta.setdefault("key", raw.get("__key__"))
    return meta


def decoded(src: Iterator[dict], skipped: SkipCounter, keep=None, audio: bool = True) -> Iterator[dict]:
    """Raw samples -> decoded ones. `keep(meta)` filters on the labels before any audio is
    decoded; `audio=False` yields labels only."""
    for raw in src:
        if "flac" not in raw or "json" not in raw:
            skipped.skip("incomplete_sample", f"{raw.get('__key__')} has {sorted(k for k in raw if not k.startswith('__'))}")
            continue
        try:  # corrupt FLAC, bad JSON: skip this one sample
            meta = json.loads(raw["json"])
            meta.setdefault("key", raw.get("__key__"))
            if keep is not None and not keep(meta):
                continue
            if audio:
                meta["audio"] = decode_audio(raw["flac"])
        except Exception as e:
            skipped.skip("undecodable_sample", f"{raw.get('__key__')} in {raw.get('__url__')}: {e}")
            continue
        yield meta


def reader_slice(urls: tuple[str, ...], reader: int, readers: int) -> tuple[str, ...]:
    """split_by_node + split_by_worker when there are enough shards; else all of them."""
    return urls[reader::readers] if len(urls) >= readers else urls


def train_samples(comp: Component, seed: int, reader: int, readers: int, shuffle_buffer: int,
                  skipped: SkipCounter) -> Iterator[dict]:
    urls = list(reader_slice(comp.urls, reader, readers))
    pipeline = wds.DataPipeline(
        wds.ResampledShards(urls, seed=seed, worker_seed=lambda: 0, deterministic=True),
        wds.tarfile_to_samples(handler=skipped.handler),
        wds.shuffle(shuffle_buffer, initial=min(shuffle_buffer, 16), rng=random.Random(seed)),
    )
    return decoded(iter(pipeline), skipped)


def eval_raw(comp: Component, reader: int, readers: int, skipped: SkipCounter) -> Iterator[dict]:
    """Raw samples (member bytes) of every shard once, in order; sample i goes to reader i mod readers."""
    raw = wds.DataPipeline(wds.SimpleShardList(list(comp.urls)), wds.tarfile_to_samples(handler=skipped.handler))
    return (s for i, s in enumerate(raw) if i % readers == reader)


def eval_samples(comp: Component, reader: int, readers: int, skipped: SkipCounter) -> Iterator[dict]:
    return decoded(eval_raw(comp, reader, readers, skipped), skipped)
