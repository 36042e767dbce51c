"""Generation and evaluation benchmarks, measured side by side in one run.

1. Generation tokens/s: our KV-cached batched greedy loop (generate.Generator) against
   transformers' own `generate(inputs_embeds=...)` on the same model and the same left-padded
   prefixes (real test clips of the embedded corpus, one ASR prompt each), batches of 16, the
   same suppressed tokens; the greedy tokens must be identical. Goal >= 1.0x.
2. The full evaluation of the embedded test split (every clip of every task), the time it adds
   to `make pretrain`, on every core as make pretrain runs it.
3. Evaluation clips/s on the same split and cores: evaluation.evaluate_model batched (defaults:
   64 clips of a task at once, 32 generation rows and 256 likelihood rows per forward) against
   one clip at a time (chunk 1, generation batch 1; a clip's own label candidates still share a
   forward), the baselines' training labels read once for both. Goal >= 3x.
Model: the newest `outputs/train/*/export` (what make pretrain trained) when there is one, else
the tiny default at random init (which never stops early, the slowest case). 1 on one core,
2 and 3 on every core; the table says which model.
"""
from __future__ import annotations

import os
import sys
import time

import torch
import yaml
from common import ROOT, best_of, pin_one_core, record

from qwen_audio_mt.config import from_dict
from qwen_audio_mt.data.features import log_mel
from qwen_audio_mt.data.reader import read_split
from qwen_audio_mt.baselines import train_targets
from qwen_audio_mt.evaluation import EvalConfig, eval_renderer, evaluate_model
from qwen_audio_mt.generate import GenerationConfig, Generator, Request, encode_clip
from qwen_audio_mt.model.builders import ModelConfig, build_model
from qwen_audio_mt.render import Renderer

SHARDS = ROOT / "shards" / "embedded"
N_PREFIXES, BATCH, MAX_NEW = 64, 16, 32


def load() -> tuple[object, Renderer, str]:
    exports = sorted(ROOT.glob("outputs/train/*/export/config.json"), key=lambda p: p.stat().st_mtime)
    if exports:
        from qwen_audio_mt.model.export import load_model
        model, renderer = load_model(exports[-1].parent)
        print(f"model: {exports[-1].parent.relative_to(ROOT)}")
        return model, renderer, "make pretrain's trained export"
    torch.manual_seed(0)
    cfg = from_dict(ModelConfig, yaml.safe_load((ROOT / "conf" / "model" / "tiny.yaml").read_text()))
    return build_model(cfg).eval(), Renderer(), "tiny default, random init"


def prefixes(model, renderer) -> list[Request]:
    out = []
    for s in read_split([str(SHARDS)], "test", max_per_task=2):
        mel, _, n = log_mel(s["audio"], model.encoder.cfg.n_mels)
        ids = renderer.prefix({"task": "asr", "audio_lang": "en"}, n_audio=n)
        out.append(Request(ids, encode_clip(model, mel)))
        if len(out) == N_PREFIXES:
            break
    return out


def ours(gen: Generator, reqs: list[Request]) -> list[list[int]]:
    return [g.tokens for g in gen.generate(reqs)]


def theirs(gen: Generator, model, reqs: list[Request], end: int) -> list[list[int]]:
    """transformers' generate on the same batches (our sort by length, our left padding)."""
    order = sorted(range(len(reqs)), key=lambda i: len(reqs[i].ids))
    out: list = [None] * len(reqs)
    for start in range(0, len(order), BATCH):
        chunk = order[start: start + BATCH]
        embs = [gen._embed(reqs[i]) for i in chunk]
        T = max(len(e) for e in embs)
        x = embs[0].new_zeros(len(embs), T, embs[0].shape[-1])
        mask = torch.zeros(len(embs), T, dtype=torch.long)
        for j, e in enumerate(embs):
            x[j, T - len(e):], mask[j, T - len(e):] = e, 1
        with torch.no_grad():
            rows = model.llm.generate(inputs_embeds=x, attention_mask=mask, max_new_tokens=MAX_NEW, do_sample=False,
                                      eos_token_id=end, pad_token_id=end, suppress_tokens=gen.suppress.tolist())
        for i, row in zip(chunk, rows.tolist()):
            out[i] = row[: row.index(end)] if end in row else row
    return out


def bench_generation(model, renderer, what: str) -> dict:
    reqs = prefixes(model, renderer)
    gen = Generator(model, renderer.tok, GenerationConfig(max_new_tokens=MAX_NEW, batch_size=BATCH))
    a, b = ours(gen, reqs), theirs(gen, model, reqs, renderer.tok.end_id)
    if a != b:
        raise SystemExit(f"greedy tokens differ from transformers' generate on {sum(x != y for x, y in zip(a, b))} "
                         f"of {len(a)} prefixes")
    tokens = sum(len(x) for x in a)
    t_ours = best_of(lambda: ours(gen, reqs))
    t_hf = best_of(lambda: theirs(gen, model, reqs, renderer.tok.end_id))
    print(f"generation: {tokens} tokens, ours {tokens / t_ours:.0f} tok/s, transformers {tokens / t_hf:.0f} tok/s, "
          f"ratio {t_hf / t_ours:.2f}x (identical tokens)")
    return {"benchmark": "greedy generation", "figure": f"tokens/s, batch {BATCH}, 1 core, {what}",
            "value": tokens / t_ours, "unit": "tokens/s", "baseline": f"transformers generate(inputs_embeds): "
            f"{tokens / t_hf:,.0f} tokens/s, same tokens", "ratio": t_hf / t_ours, "goal": ">= 1.0x"}


def bench_eval(model, renderer, what: str) -> list[dict]:
    """The whole test split, every core (as make pretrain runs it): the full evaluation's time,
    then batched against one clip at a time with the baselines' training labels read once."""
    src = [str(SHARDS)]
    t0 = time.perf_counter()
    out = evaluate_model(model, renderer, src, EvalConfig(progress=False))
    full = time.perf_counter() - t0
    clips = sum(m["n"] for m in out["tasks"].values())
    print(f"full test evaluation: {clips} clips, {len(out['tasks'])} tasks in {full:.0f} s on {os.cpu_count()} cores")
    base = train_targets(eval_renderer(renderer, src, False), src, "train")
    batched, single = EvalConfig(progress=False), EvalConfig(progress=False, chunk=1, batch_size=1)
    t_b = best_of(lambda: evaluate_model(model, renderer, src, batched, base), repeats=2)
    t_s = best_of(lambda: evaluate_model(model, renderer, src, single, base), repeats=1)
    print(f"evaluation: {clips} clips, batched {clips / t_b:.1f} clips/s, one at a time {clips / t_s:.1f} clips/s, "
          f"ratio {t_s / t_b:.2f}x")
    cores = f"{os.cpu_count()} cores"
    return [{"benchmark": "evaluation, every metric", "figure": f"clips/s, test split, {cores}, {what}",
             "value": clips / t_b, "unit": "clips/s", "baseline": f"one clip at a time: {clips / t_s:.1f} clips/s",
             "ratio": t_s / t_b, "goal": ">= 3x"},
            {"benchmark": "make pretrain's evaluation", "figure": f"seconds, {clips} test clips, {cores}, {what}",
             "value": full, "unit": "s", "baseline": "none (time added to make pretrain)", "ratio": 1.0,
             "goal": "<= ~120 s"}]


def main() -> int:
    if not (SHARDS / "index.json").exists():
        print(f"no embedded shards at {SHARDS}: run `make shards` first", file=sys.stderr)
        return 1
    model, renderer, what = load()
    torch.set_num_threads(os.cpu_count() or 1)
    evaluation = bench_eval(model, renderer, what)
    pin_one_core()
    torch.set_num_threads(1)
    record("generate", [bench_generation(model, renderer, what), *evaluation])
    return 0


if __name__ == "__main__":
    sys.exit(main())
