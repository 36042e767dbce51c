"""Packing benchmark: real / computed encoder frames and LLM places, side by side in one run on
the same examples of the default mixture (`make pretrain`'s config, composed as training does).

- packed: data.loader.limits.pack=true (clips share 30-s mel rows, samples share `row_tokens` rows)
- bucketing: today's default (length-sorted pools of 256, padded to each batch's longest)
- 30-s padding: Qwen-Audio's fixed clips (every clip 3,000 mel frames, 750 audio positions)
- Lhotse 1.33's DynamicBucketingSampler (the loader NeMo's speech LLMs use) over the same
  examples' durations and id counts, `max_duration` our `max_audio_seconds`, `max_cuts` our
  batch size, its default 10 buckets, its batches padded to their longest (lhotse is a bench-only
  extra: `pip install '.[bench]'`; the row says so when it is missing).
Mel frames stand for encoder frames (the encoder halves both alike). Goals: packed >= 0.97 on
the encoder, >= 0.95 on the LLM side.
"""
from __future__ import annotations

import math
import sys
from dataclasses import replace
from itertools import islice

import numpy as np
from common import ROOT, record
from hydra import compose, initialize_config_dir

from qwen_audio_mt.config import plain
from qwen_audio_mt.data.collate import batches, collate_for, frame_counts, token_counts
from qwen_audio_mt.data.datamodule import AudioDataModule
from qwen_audio_mt.train import CONF_DIR, data_config

SHARDS = ROOT / "shards" / "embedded"
N = 4000  # examples: ~125 default batches


def default_data():
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.shards={SHARDS.parent}", f"paths.root={ROOT}",
                                          "data.loader.num_workers=0", "run_dir=."])
    return data_config(plain(cfg))


def draws(data, **loader) -> tuple[list, int]:
    """The first N featurised examples of the train stream (same seeds: the same samples), pad id."""
    stream = AudioDataModule(replace(data, loader=replace(data.loader, **loader))).train_stream()
    _, examples, _, feat = stream.examples()
    return list(islice(examples, N)), feat.renderer.tok.end_id


def ratios(examples: list, limits, pad_id: int, pad_to_30s=False) -> tuple[int, int, int, int]:
    """(real frames, computed frames, real places, computed places) over the batched examples."""
    totals = np.zeros(4, dtype=np.int64)
    for batch in batches(iter(examples), limits, np.random.default_rng(0), pad_to_30s):
        b = collate_for(batch, pad_id, limits)
        totals += [*frame_counts(b), *token_counts(b)]
    return tuple(int(x) for x in totals)


def lhotse_ratios(examples: list, limits) -> tuple[float, float] | None:
    try:
        from lhotse import CutSet, MonoCut, Recording
        from lhotse.dataset import DynamicBucketingSampler
    except ImportError:
        return None
    cuts = []
    for i, e in enumerate(examples):
        seconds = e.frames / 100
        rec = Recording(id=f"r{i}", sources=[], sampling_rate=16000, num_samples=round(seconds * 16000),
                        duration=seconds)
        cuts.append(MonoCut(id=f"c{i}", start=0, duration=seconds, channel=0, recording=rec,
                            custom={"ids": len(e.ids)}))
    sampler = DynamicBucketingSampler(CutSet.from_cuts(cuts), max_duration=limits.max_audio_seconds,
                                      max_cuts=limits.max_batch_size, shuffle=True, seed=0)
    frames, places = [0, 0], [0, 0]
    for batch in sampler:
        f = [math.ceil(c.duration * 100) for c in batch]
        t = [c.custom["ids"] for c in batch]
        frames = [frames[0] + sum(f), frames[1] + len(f) * max(f)]
        places = [places[0] + sum(t), places[1] + len(t) * max(t)]
    return frames[0] / frames[1], places[0] / places[1]


def main() -> int:
    if not (SHARDS / "index.json").exists():
        print(f"no embedded shards at {SHARDS}: run `make shards` first", file=sys.stderr)
        return 1
    data = default_data()
    lim = data.loader.limits
    examples, pad_id = draws(data)
    padded, _ = draws(data, pad_to_30s=True)
    assert [e.key for e in examples] == [e.key for e in padded], "the two streams drew different samples"
    pk = ratios(examples, replace(lim, pack=True), pad_id)
    bk = ratios(examples, replace(lim, pack=False), pad_id)
    real_ids = sum(len(e.ids) for e in examples)  # 30-s padding's placeholders past the clip are padding
    p30 = ratios(padded, replace(lim, pack=False), pad_id, pad_to_30s=True)
    enc = {"packed": pk[0] / pk[1], "bucketing": bk[0] / bk[1], "30-s padding": p30[0] / p30[1]}
    llm = {"packed": pk[2] / pk[3], "bucketing": bk[2] / bk[3], "30-s padding": real_ids / p30[3]}
    lh = lhotse_ratios(examples, lim)
    if lh:
        enc["Lhotse DynamicBucketingSampler"], llm["Lhotse DynamicBucketingSampler"] = lh
    print(f"{len(examples):,} examples of the default mixture, pool {lim.pool}, batch <= {lim.max_batch_size}")
    print(f"{'':32} {'encoder frames':>15} {'LLM places':>11}")
    for name in enc:
        print(f"{name:32} {enc[name]:15.3f} {llm[name]:11.3f}")
    if not lh:
        print("Lhotse not installed (pip install '.[bench]'): its row is left out")
    others = " / ".join(f"{k} {enc[k]:.3f}" for k in enc if k != "packed")
    others_llm = " / ".join(f"{k} {llm[k]:.3f}" for k in llm if k != "packed")
    record("packing", [
        {"benchmark": "packing, encoder", "figure": "real/computed mel frames x1000", "value": enc["packed"] * 1000,
         "unit": "", "baseline": others, "ratio": enc["packed"] / enc["bucketing"], "goal": ">= 0.97"},
        {"benchmark": "packing, LLM", "figure": "real/computed LLM places x1000", "value": llm["packed"] * 1000,
         "unit": "", "baseline": others_llm, "ratio": llm["packed"] / llm["bucketing"], "goal": ">= 0.95"},
    ])
    return 0


if __name__ == "__main__":
    sys.exit(main())
