"""Train and eval streams: mixture components -> featurised, bucketed, collated batches.

Everything costly runs in DataLoader workers: shard reading, FLAC decoding, augmentation
(train only), Whisper log-mel, tag rendering, bucketing and collation. The datasets yield whole
batches (DataLoader batch_size=None).

Epoch length is fixed in batches per rank (`batches_per_epoch`, shared out among workers), so
every DDP rank takes the same number of steps whatever its shards: no hang, no crash.
Randomness: worker seeds come from SeedSequence([seed, resumes, iteration, rank, worker]);
`resumes` grows on every checkpoint restore, so a resumed run continues with fresh randomness
and does not replay the samples it started with. Exact replay of a stream is not supported
(it would need every shuffle buffer's contents in the checkpoint).

Skipped samples (skips.py) are counted by reason and shard in the workers and sent with the
batches (`batch["skipped"]` rows); a sample whose labels do not fit its task, or whose ids alone
pass the batch token limit, is skipped too. A DataError raised in a worker (a stream that can only
skip) reaches the caller with its own one-line message, not the worker's traceback.
"""
from __future__ import annotations

import itertools
import sys
import traceback
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..errors import ConfigError, DataError
from ..render import Renderer
from ..targets import LABEL_ERRORS
from ..tokenizer import Tokenizer, TokenizerSpec
from ..conversation import ConversationTooLong
from .augment import AugmentConfig, Augmenter
from .chat_features import ChatFeaturizer
from .collate import BatchLimits, Example, batches, collate_for
from .features import log_mel
from .mixture import Component, MixtureConfig
from .skips import STUCK_AFTER, SkipCounter
from .stream import eval_samples, train_samples

# Samples read and decoded ahead of featurising them (`_in_chunks`). Measured on the embedded shards'
# mixture, one core: decode + log-mel of 4,066 clips took 6.64 s one after the other, 5.67 s 16 at a
# time. The cost: "skips in a row" (skips.STUCK_AFTER) counts across up to 16 good samples' reads.
DECODE_AHEAD = 16
# labels of the wrong type fail inside rendering as TypeError/AttributeError: still the data's fault
SAMPLE_ERRORS = (*LABEL_ERRORS, TypeError, AttributeError)


@dataclass(frozen=True)
class LoaderConfig:
    n_mels: int = 80                  # 80 (Whisper <= large-v2, Qwen-Audio) or 128 (large-v3)
    pad_to_30s: bool = False          # every clip padded to 30 s, all 750 positions
    compat: str | None = None         # a released model's front end (data/features.py): the model's encoder.compat
    limits: BatchLimits = field(default_factory=BatchLimits)
    batches_per_epoch: int = 500      # per rank
    num_workers: int = 2
    shuffle_buffer: int = 64          # per component, raw bytes; memory ~ components x this
    seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    tokenizer: TokenizerSpec = field(default_factory=TokenizerSpec)
    max_conversation_tokens: int = 2048     # a conversation is cut after its last whole exchange within this
    max_skip_fraction: float | None = 0.05   # stop a run skipping more of its samples (None: never)
    skip_limit_min_samples: int = 200        # ... once this many were read, so one bad sample cannot
    worker_timeout_s: float = 600.0   # a worker that gives no batch for this long stops the run (0: wait forever)

    def __post_init__(self):
        f = self.max_skip_fraction
        if f is not None and not 0 <= f <= 1:
            raise ConfigError(f"data.loader.max_skip_fraction={f}: must be between 0 and 1 (null: no limit)")
        if self.skip_limit_min_samples < 1:
            raise ConfigError(f"data.loader.skip_limit_min_samples={self.skip_limit_min_samples}: must be >= 1")
        if self.worker_timeout_s < 0:
            raise ConfigError(f"data.loader.worker_timeout_s={self.worker_timeout_s:g}: must be >= 0 (0: wait forever)")
        if self.limits.pack and (self.pad_to_30s or self.compat):
            what = "pad_to_30s=true" if self.pad_to_30s else f"compat={self.compat}"
            raise ConfigError(f"data.loader.limits.pack=true with data.loader.{what}: packing needs clips at their own "
                              "length (a released front end pads every clip to 30 s)")


@dataclass(frozen=True)
class DataConfig:
    mixture: MixtureConfig = field(default_factory=MixtureConfig)
    loader: LoaderConfig = field(default_factory=LoaderConfig)
    eval_mixture: MixtureConfig | None = None   # valid/test sources; default: the training ones
    valid_split: str = "valid"
    test_split: str = "test"


@dataclass
class StreamState:
    """What the loader saves in checkpoints."""
    seed: int = 0
    resumes: int = 0
    iteration: int = 0               # times a train stream was started (one per epoch)
    seen: dict = field(default_factory=dict)      # task -> samples delivered to training
    skipped: dict = field(default_factory=dict)   # reason -> samples skipped
    skipped_shards: dict = field(default_factory=dict)  # reason -> shard -> samples skipped


def reader_info(rank: int, world: int) -> tuple[int, int, int, int]:
    info = get_worker_info()
    worker, workers = (info.id, info.num_workers) if info else (0, 1)
    return worker, workers, rank * workers + worker, world * workers


class Featurizer:
    """Decoded sample -> Example: augmentation (train), log-mel, rendered ids."""

    def __init__(self, cfg: LoaderConfig, label_sets: dict, train: bool, renderer: Renderer | None = None):
        """`renderer`: the caller's (evaluation renders with a checkpoint's own tokenizer and
        registry); by default one from the loader's tokenizer spec and the label sets."""
        self.cfg, self.train = cfg, train
        self.renderer = renderer or Renderer(Tokenizer.from_spec(cfg.tokenizer), pad_to_30s=cfg.pad_to_30s,
                                             label_sets=label_sets)
        self.augmenter = Augmenter(cfg.augment, self.renderer.registry) if train else None
        self.audio_start = self.renderer.tok.role_id("audio_start")
        self.chat = ChatFeaturizer(self.renderer.tok, cfg.n_mels, cfg.pad_to_30s, cfg.max_conversation_tokens, cfg.compat)

    def __call__(self, sample: dict, rng: np.random.Generator) -> Example:
        if "messages" in sample:  # a conversation (chat SFT)
            return self.chat(sample)
        if self.augmenter is not None:
            sample = self.augmenter.wave(sample, rng)
        mel, frames, n_audio = log_mel(sample["audio"], self.cfg.n_mels, self.cfg.pad_to_30s, self.cfg.compat)
        if self.augmenter is not None and self.augmenter.cfg.spec_augment:   # off, it would only copy the mel
            mel = self.augmenter.spec(mel, rng)
        ids, mask = self.renderer.render(sample, n_audio=n_audio)
        return Example(str(sample.get("key")), sample["task"], self.renderer.registry.index[sample["task"]],
                       mel, frames, ids, mask, ids.index(self.audio_start) + 1, n_audio, float(sample["duration"]))


def _in_chunks(samples: Iterator[dict], size: int) -> Iterator[dict]:
    """The same samples in the same order, pulled (read, decoded) `size` at a time before any is
    featurised: each stage's code and tables stay in the core's caches through the chunk."""
    while chunk := list(itertools.islice(samples, size)):
        yield from chunk


def draw(rng: np.random.Generator, p: np.ndarray) -> int:
    """`rng.choice(len(p), p=p)`, the same index from the same draw (numpy's own cdf search),
    without its checks of p (7.8 against 23 us a draw, one draw per training sample)."""
    cdf = np.cumsum(p)
    cdf /= cdf[-1]
    return int(cdf.searchsorted(rng.random(), side="right"))


def _examples(samples: Iterator[dict], feat: Featurizer, rng, skipped: SkipCounter) -> Iterator[Example]:
    for s in _in_chunks(samples, DECODE_AHEAD):
        try:
            ex = feat(s, rng)
        except ConversationTooLong as e:
            skipped.skip("conversation_too_long", s.get("__url__"), str(e))
            continue
        except SAMPLE_ERRORS as e:  # skipped and counted
            skipped.skip("bad_label", s.get("__url__"), f"{s.get('key')}: {type(e).__name__}: {e}")
            continue
        limit = feat.cfg.limits.max_tokens
        if len(ex.ids) > limit:  # alone it would pass every batch's limit
            skipped.skip("too_many_tokens", s.get("__url__"),
                         f"{s.get('key')}: {len(ex.ids):,} ids > data.loader.limits.max_tokens={limit}")
            continue
        skipped.ok()
        yield ex


def _setup_worker() -> None:
    """In a loader worker (not the main process, num_workers=0): one torch thread, since a worker
    decodes one sample at a time and must not contend with the trainer's threads; and quiet
    hand-over threads (`_quiet_lost_consumer`)."""
    if torch.utils.data.get_worker_info() is not None:
        torch.set_num_threads(1)
        sys.excepthook = _quiet_lost_consumer


def _quiet_lost_consumer(exc_type, exc, tb) -> None:
    """multiprocessing's resource sharer, a thread in each worker, hands batch tensors to the
    training process; when that process dies mid-hand-over (killed, or a DDP peer's launcher
    killing it) the thread reports a ConnectionError through sys.excepthook and serves on. The
    death is reported where it happened (a DDP survivor's one line) and the orphaned worker exits
    by itself: its traceback would only bury that line. Anything else keeps Python's report."""
    if issubclass(exc_type, (ConnectionError, EOFError)) and any(
            Path(f.filename).name == "resource_sharer.py" for f in traceback.extract_tb(tb)):
        return
    sys.__excepthook__(exc_type, exc, tb)


class TrainStream(IterableDataset):
    def __init__(self, comps: list[Component], probs: np.ndarray, cfg: LoaderConfig, label_sets: dict,
                 state: StreamState, rank: int = 0, world: int = 1, weights=None):
        """`weights`: a shared-memory tensor over `comps` that replaces `probs` and that the
        trainer updates while the workers draw (the adaptive mixture, adaptive.py)."""
        self.comps, self.probs, self.cfg, self.label_sets = comps, probs, cfg, label_sets
        self.state, self.rank, self.world, self.weights = state, rank, world, weights

    def _probs(self) -> np.ndarray:
        if self.weights is None:
            return self.probs
        # copy, then normalise the copy: the trainer may write between reading the sum and
        # dividing by it (a torn read of the live view fails rng.choice's sum check)
        p = self.weights.numpy().copy()
        return p / p.sum()

    def __len__(self) -> int:
        return self.cfg.batches_per_epoch

    def seeds(self, worker: int) -> np.random.SeedSequence:
        s = self.state
        return np.random.SeedSequence([s.seed, s.resumes, s.iteration, self.rank, worker])

    def examples(self, worker: int = 0, reader: int = 0, readers: int = 1):
        """(bucket rng, featurised examples in draw order, skip counter, featurizer) of one worker.
        The draws depend on the seeds only, not on the batching or on when samples are decoded."""
        seq = self.seeds(worker)
        # separate streams: turning augmentation on, or batching another way, must not change
        # which samples are drawn
        mix_seq, aug_seq, bucket_seq = seq.spawn(3)
        rng, aug_rng = np.random.default_rng(mix_seq), np.random.default_rng(aug_seq)
        comp_seeds = [int(x) for x in seq.generate_state(len(self.comps))]
        skipped = SkipCounter(log_first=False, stuck_after=STUCK_AFTER)  # the main process logs (skips.tally)
        streams: dict[int, Iterator[dict]] = {}

        def mixed() -> Iterator[dict]:
            while True:
                i = draw(rng, self._probs())
                if i not in streams:
                    streams[i] = train_samples(self.comps[i], comp_seeds[i], reader, readers,
                                               self.cfg.shuffle_buffer, skipped)
                yield next(streams[i])

        feat = Featurizer(self.cfg, self.label_sets, train=True)
        return np.random.default_rng(bucket_seq), _examples(mixed(), feat, aug_rng, skipped), skipped, feat

    def __iter__(self) -> Iterator[dict]:
        _setup_worker()
        worker, workers, reader, readers = reader_info(self.rank, self.world)
        rng, examples, skipped, feat = self.examples(worker, reader, readers)
        n = self.cfg.batches_per_epoch // workers + (worker < self.cfg.batches_per_epoch % workers)
        stream = batches(examples, self.cfg.limits, rng, self.cfg.pad_to_30s)
        reported = Counter()
        for _, batch in zip(range(n), stream):
            out = collate_for(batch, feat.renderer.tok.end_id, self.cfg.limits)
            out["skipped"] = skipped.rows(reported)  # new skips since the last batch
            yield out


class EvalStream(IterableDataset):
    """Every sample of the split once (across ranks and workers), in order, unaugmented."""

    def __init__(self, comps: list[Component], cfg: LoaderConfig, label_sets: dict, rank: int = 0, world: int = 1):
        self.comps, self.cfg, self.label_sets, self.rank, self.world = comps, cfg, label_sets, rank, world

    def __iter__(self) -> Iterator[dict]:
        _setup_worker()
        _, _, reader, readers = reader_info(self.rank, self.world)
        feat = Featurizer(self.cfg, self.label_sets, train=False)
        skipped = SkipCounter()
        for comp in self.comps:
            examples = _examples(eval_samples(comp, reader, readers, skipped), feat, None, skipped)
            for batch in batches(examples, self.cfg.limits, None, self.cfg.pad_to_30s):
                yield {**collate_for(batch, feat.renderer.tok.end_id, self.cfg.limits), "skipped": []}  # logged here


class StreamLoader(DataLoader):
    """A DataLoader that tells its train stream each time it starts (fresh seeds per epoch).
    Workers are not persistent, so each start pickles the current state into them."""

    def __iter__(self):
        if isinstance(self.dataset, TrainStream):
            self.dataset.state.iteration += 1
        return _OneLineDataErrors(super().__iter__(), self.timeout)


class _OneLineDataErrors:
    """DataLoader re-raises a worker's exception with the worker's traceback as its message; a
    DataError keeps its own one line (what entry points print). A worker that is alive but gives
    no batch within `worker_timeout_s` (torch's DataLoader `timeout`) becomes one line too: a DDP
    run once hung forever on a worker that rank 0 forked at an epoch start and that never reached
    its loop (forking a process that runs threads is not safe), so waiting has a bound."""

    def __init__(self, it, timeout_s: float = 0.0):
        self.it, self.timeout_s = it, timeout_s

    def __iter__(self):
        return self

    def __len__(self):
        return len(self.it)

    def __next__(self):
        try:
            return next(self.it)
        except RuntimeError as e:
            if not self.timeout_s or not str(e).startswith("DataLoader timed out"):
                raise
            raise DataError(f"no batch from a loader worker within {self.timeout_s:g} s (data.loader.worker_timeout_s): "
                            "the worker is stuck; resume with ckpt_path=last") from None
        except DataError as e:
            text = str(e)
            if not text.startswith("Caught "):
                raise
            raise DataError(text.rstrip().splitlines()[-1].partition(": ")[2]) from None


def make_loader(dataset: IterableDataset, cfg: LoaderConfig) -> StreamLoader:
    return StreamLoader(dataset, batch_size=None, num_workers=cfg.num_workers, persistent_workers=False,
                        timeout=cfg.worker_timeout_s if cfg.num_workers else 0,
                        prefetch_factor=4 if cfg.num_workers else None,
                        multiprocessing_context="fork" if cfg.num_workers else None)
