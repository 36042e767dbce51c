"""Render + tokenize throughput on one core: the fast path vs the naive way, side by side.

Fast path (qwen_audio_mt.render): the prompt compiled once per (task, languages) into ids, only
free text through `encode_ordinary`, loss mask built alongside.
Naive way: build the whole string (audio span, tags, text, end) and `encode(s,
allowed_special="all")` with Qwen's ~3,500 specials; it computes no loss mask, so the baseline is
if anything flattered. Both must give identical ids (checked).
Workloads: typical ASR (5-12 s clip, 8-20-word transcript) and AQA (8 s clip, question + short
answer), 2,000 distinct samples each, qwen.tiktoken base when the shared data is present.
"""
from __future__ import annotations

import random
import sys

from common import best_of, pin_one_core, record

from qwen_audio_mt.paths import data_available, data_root
from qwen_audio_mt.render import Renderer
from qwen_audio_mt.tokenizer import Tokenizer, TokenizerSpec

WORDS = ("the quick brown fox jumps over a lazy dog while seven bells ring softly in "
         "old town square and people walk home after work under grey autumn skies").split()
N = 2000


def workloads(rng: random.Random) -> dict[str, list[dict]]:
    def sentence(lo, hi):
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))
    asr = [{"task": "asr", "audio_lang": "en", "duration": rng.uniform(5, 12), "text": sentence(8, 20)}
           for _ in range(N)]
    aqa = [{"task": "sound_aqa", "duration": 8.0, "question": sentence(5, 10) + "?",
            "answer": sentence(1, 3)} for _ in range(N)]
    return {"ASR": asr, "AQA": aqa}


def naive(renderer: Renderer, tok: Tokenizer, sample: dict) -> list[int]:
    task = renderer.registry.get(sample["task"])
    n = renderer.n_audio(sample)
    text = ("<audio>" + "[[[AUDIO:modality]]]" * n + "</audio>"
            + renderer.prompt_text(task, sample.get("audio_lang"), fields=sample)
            + str(sample[task.target.field]) + "<|endoftext|>")
    return tok.encoding.encode(text, allowed_special="all")


def main() -> int:
    pin_one_core()
    base = str(data_root() / "qwen_audio" / "qwen.tiktoken") if data_available("qwen_audio") else "whisper"
    tok = Tokenizer.from_spec(TokenizerSpec(base=base))
    renderer = Renderer(tok)
    rows = []
    for name, samples in workloads(random.Random(0)).items():
        for s in samples[:50]:
            assert renderer.render(s).ids == naive(renderer, tok, s), "fast and naive ids differ"
        fast = best_of(lambda: [renderer.render(s) for s in samples])
        slow = best_of(lambda: [naive(renderer, tok, s) for s in samples])
        rate, base_rate = N / fast, N / slow
        print(f"{name}: fast {rate:,.0f} samples/s, naive {base_rate:,.0f} samples/s, "
              f"ratio {rate / base_rate:.1f}x (base {tok.spec.base_path().name})")
        rows.append({"benchmark": f"render+tokenize {name}", "figure": "samples/s, 1 core",
                     "value": rate, "unit": "samples/s",
                     "baseline": f"naive encode(allowed_special='all'): {base_rate:,.0f}/s",
                     "ratio": rate / base_rate, "goal": ">= 50,000/s and >= 10x"})
    record("render", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
