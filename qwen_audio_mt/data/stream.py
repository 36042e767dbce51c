"""Reading shards: one webdataset pipeline per mixture component, decoded without pickle.

Train: resampled shards (infinite), seeded per (run seed, resume, iteration, rank, worker); when
a component has at least as many shards as there are readers (ranks x workers) each reader
resamples only its own slice (split by node and worker), otherwise every reader resamples all
shards with its own seed. A per-component shuffle buffer (raw bytes, before decoding) mixes
samples within shards. Eval: every shard once in order, sample i read by reader i mod readers.

Members are read as bytes and only `.flac` (any format libsndfile reads, which must hold finite
16-kHz mono audio), a conversation's `.audioN.flac` (the same, as `meta["audios"]` in order) and
`.json` (UTF-8, at most MAX_LABEL_BYTES) are decoded: nothing is ever unpickled, and a sample
with any other member (a pickle, a tensor file) is skipped whole. A bad
sample or an unreadable tar region is skipped and counted by reason and shard (skips.py); the
counts travel to the trainer with the batches, which shows them and stops a run that skips too
much.
"""
from __future__ import annotations

import io
import json
import random
import re
from collections.abc import Iterator, Mapping
from functools import partial

import numpy as np
import soundfile as sf
import webdataset as wds

from ..audio import SAMPLE_RATE
from .mixture import Component
from .skips import SkipCounter, error_text, shard_of

MAX_LABEL_BYTES = 1 << 20   # a label is a few hundred bytes; 1 MiB is a broken or hostile one
MEMBERS = {"flac", "json"}
_CHAT_AUDIO = re.compile(r"audio(\d+)\.flac")   # a conversation's audio members (chat_ingest.py)


class NonFiniteAudio(ValueError):
    """NaN or Inf samples: never fed to the model, never replaced by zeros."""


def decode_audio(flac: bytes) -> np.ndarray:
    """A shard's FLAC member -> float32 16-kHz mono samples; ValueError for anything else."""
    audio, sr = sf.read(io.BytesIO(flac), dtype="float32")
    if sr != SAMPLE_RATE or audio.ndim != 1:
        raise ValueError(f"expected 16 kHz mono audio, got sr={sr} shape={audio.shape}")
    if not np.isfinite(audio.sum()) and not np.all(np.isfinite(audio)):  # the sum first: no mask, one pass
        raise NonFiniteAudio(f"{int(np.sum(~np.isfinite(audio)))} of {audio.size} samples are NaN or Inf")
    return audio


class BadLabel(ValueError):
    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def decode_label(data: bytes) -> dict:
    """A `.json` member -> dict; BadLabel (with the skip reason) for anything else."""
    if len(data) > MAX_LABEL_BYTES:  # checked before parsing: a 10 MB label is not worth reading
        raise BadLabel("label_too_large", f"{len(data):,} bytes (at most {MAX_LABEL_BYTES:,})")
    try:
        meta = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise BadLabel("label_not_utf8", str(e)) from None
    except ValueError as e:
        raise BadLabel("bad_label_json", str(e)) from None
    if not isinstance(meta, dict):
        raise BadLabel("bad_label_json", f"a JSON {type(meta).__name__}, not an object")
    return meta


def _members_problem(raw: dict) -> tuple[str, str] | None:
    """Before decoding: only known members, and a label. A task sample also needs its `.flac`;
    a conversation's audio members are checked against its label (`_audio_members`)."""
    members = sorted(k for k in raw if not k.startswith("__"))
    chat = [m for m in members if _CHAT_AUDIO.fullmatch(m)]
    if set(members) - MEMBERS - set(chat) or (chat and "flac" in members):
        return "unexpected_member", f"{raw.get('__key__')} has {members}: only .flac (or .audioN.flac) and .json are read"
    if "json" not in members:
        return "incomplete_sample", f"{raw.get('__key__')} has {members}"
    return None


def _audio_members(raw: dict, meta: dict) -> list[str] | None:
    """A conversation's audio members in order (audio0.flac ...), [] for a text-only one, None
    for a task sample; BadLabel when they do not match the label's audio count."""
    if "messages" not in meta:
        if "flac" not in raw:
            raise BadLabel("incomplete_sample", f"has {sorted(k for k in raw if not k.startswith('__'))}")
        return None
    want = [f"audio{n}.flac" for n in range(len(meta.get("durations") or ()))]
    have = sorted((k for k in raw if _CHAT_AUDIO.fullmatch(k)), key=lambda k: int(_CHAT_AUDIO.fullmatch(k)[1]))
    if have != want:
        raise BadLabel("incomplete_sample", f"audio members {have}, its label says {want}")
    return want


def _decode_audio(raw: dict, meta: dict) -> None:
    names = _audio_members(raw, meta)
    if names is None:
        meta["audio"] = decode_audio(raw["flac"])
    else:
        meta["audios"] = [decode_audio(raw[n]) for n in names]


def decoded(src: Iterator[dict], skipped: SkipCounter, keep=None, audio: bool = True) -> Iterator[dict]:
    """Raw samples -> decoded ones (with `__url__`, the shard). `keep(meta)` filters on the labels
    before any audio is decoded; `audio=False` yields labels only."""
    for raw in src:
        url = raw.get("__url__")
        problem = _members_problem(raw)
        if problem:
            skipped.skip(problem[0], url, problem[1])
            continue
        try:
            meta = decode_label(raw["json"])
            _audio_members(raw, meta)
        except BadLabel as e:
            skipped.skip(e.reason, url, f"{raw.get('__key__')}: {e.detail}")
            continue
        meta.setdefault("key", raw.get("__key__"))
        meta["__url__"] = url
        if keep is not None and not keep(meta):
            continue
        if audio:
            try:  # corrupt FLAC, NaN: skip this one sample
                _decode_audio(raw, meta)
            except Exception as e:  # libsndfile raises its own error types
                reason = "non_finite_audio" if isinstance(e, NonFiniteAudio) else "undecodable_sample"
                skipped.skip(reason, url, f"{raw.get('__key__')}: {e}")
                continue
        yield meta


def tar_samples(urls: Iterator[dict], skipped: SkipCounter, expected: Mapping[str, int]) -> Iterator[dict]:
    """wds.tarfile_to_samples, plus: the samples a pass over a shard misses against its index
    entry (`expected`, url -> samples) count as corrupt_tar. tarfile ends an archive quietly at
    an invalid header (random bytes in the middle), so an error alone would not tell."""
    errors: list[BaseException] = []

    def note(exn: Exception) -> bool:  # webdataset's handler inside a shard: remember, go on
        errors.append(exn)
        return True

    def unopened(exn: Exception) -> bool:  # counted at once: an endless stream may never open one
        url = shard_of(exn)
        _count_lost(skipped, url, 0, expected.get(url), [exn])
        return True

    expand, group = wds.tariterators.tar_file_expander, wds.tariterators.group_by_keys
    for source in wds.tariterators.url_opener(urls, handler=unopened):
        n = 0
        for sample in group(expand([source], handler=note), handler=note):
            n += 1
            yield sample
        _count_lost(skipped, source["url"], n, expected.get(source["url"]), errors)
        errors.clear()


def _count_lost(skipped: SkipCounter, url: str, read: int, expected: int | None, errors: list) -> None:
    if expected is None:  # no index entry: one skip per error
        for exn in errors:
            skipped.skip("corrupt_tar", url, error_text(exn))
    elif read < expected:
        why = error_text(errors[0]) if errors else "the tar ends early (an invalid header, or truncated)"
        skipped.skip("corrupt_tar", url, f"read {read} of {expected} samples: {why}", n=expected - read)


def reader_slice(urls: tuple[str, ...], reader: int, readers: int) -> tuple[str, ...]:
    """split_by_node + split_by_worker when there are enough shards; else all of them."""
    return urls[reader::readers] if len(urls) >= readers else urls


def train_samples(comp: Component, seed: int, reader: int, readers: int, shuffle_buffer: int,
                  skipped: SkipCounter) -> Iterator[dict]:
    urls = list(reader_slice(comp.urls, reader, readers))
    pipeline = wds.DataPipeline(
        wds.ResampledShards(urls, seed=seed, worker_seed=lambda: 0, deterministic=True),
        partial(tar_samples, skipped=skipped, expected=comp.expected),
        wds.shuffle(shuffle_buffer, initial=min(shuffle_buffer, 16), rng=random.Random(seed)),
    )
    return decoded(iter(pipeline), skipped)


def eval_raw(comp: Component, reader: int, readers: int, skipped: SkipCounter) -> Iterator[dict]:
    """Raw samples (member bytes) of every shard once, in order; sample i goes to reader i mod readers."""
    raw = wds.DataPipeline(wds.SimpleShardList(list(comp.urls)),
                           partial(tar_samples, skipped=skipped, expected=comp.expected))
    return (s for i, s in enumerate(raw) if i % readers == reader)


def eval_samples(comp: Component, reader: int, readers: int, skipped: SkipCounter) -> Iterator[dict]:
    return decoded(eval_raw(comp, reader, readers, skipped), skipped)
