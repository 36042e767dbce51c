"""Scoring a chat model on held-out conversations (the SFT mixture's test split), beside another
model asked the same questions (the pretrained one it started from): what SFT changed.

Each conversation is asked its last user turn, with the reference history before it (the
earlier assistant turns are the data's, not the model's), and the reply is scored by what the
conversation is (its `kind`, chat_tasks.py):
- a single-turn question with a closed answer: label accuracy, the label the reply names
  (chat_tasks.label_in: longest label words first, whole words) against the true one;
- a single-turn transcription: WER of the reply's quoted text (the whole reply when it quotes
  nothing) against the transcript, whisper's normaliser, corpus-level;
- anything else (follow-ups, comparisons, text instructions, captions, the official sample):
  exact match of the reply and the reference answer after normalisation.
Rows are (shard family, kind), e.g. `chat_single/closed`, with n and the value for each model.
"""
from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .chat import reply_batch
from .conversation import Conversation
from .data.chat_tasks import label_in
from .data.mixture import MixtureConfig, components
from .data.skips import SkipCounter
from .data.stream import eval_samples
from .generate import GenerationConfig
from .text_metrics import edit_ops, normalize, text_units

_QUOTED = re.compile(r'"([^"]+)"|“([^”]+)”')


@dataclass(frozen=True)
class ChatEvalConfig:
    split: str = "test"
    max_per_family: int | None = 200   # conversations per shard family (None: all)
    max_new_tokens: int = 96
    batch_size: int = 16


def held_out(mixture: MixtureConfig, cfg: ChatEvalConfig) -> list[dict]:
    """The split's conversations (decoded, audio included); of a family with more than
    max_per_family, that many spread evenly over it (its shards hold the tasks in turn, so
    the first N would be the first tasks only)."""
    out, skipped = [], SkipCounter()
    for comp in components(mixture, cfg.split):
        found = [s for s in eval_samples(comp, 0, 1, skipped) if "messages" in s]
        k = cfg.max_per_family
        out += found if k is None or len(found) <= k else [found[round(i * len(found) / k)] for i in range(k)]
    return out


def question(sample: dict) -> tuple[Conversation, list, str]:
    """(the conversation up to its last user turn, the audios that part holds, the reference answer)."""
    conv = Conversation.from_json(sample["messages"], str(sample.get("key", "")))
    asked = Conversation(conv.messages[:-1], conv.key)
    return asked, list(sample.get("audios", ()))[: len(asked.audios())], conv.messages[-1].content


def _row(sample: dict) -> tuple[str, str]:
    kind = sample.get("kind", "open")
    single = sample["task"] == "chat_single"
    return f"{sample['task']}/{kind}", ("accuracy" if single and kind == "closed" else
                                        "wer" if single and kind == "transcript" else "exact_match")


def _quoted(reply: str) -> str:
    found = [a or b for a, b in _QUOTED.findall(reply)]
    return max(found, key=len) if found else reply


def score(samples: Sequence[dict], replies: Sequence[str]) -> dict[str, dict]:
    """{row: {metric, value, n}} for replies to `samples` (see the module docs)."""
    rows: dict[str, dict] = {}
    for s, reply in zip(samples, replies, strict=True):
        name, metric = _row(s)
        r = rows.setdefault(name, {"metric": metric, "n": 0, "hits": 0, "errors": 0, "units": 0})
        r["n"] += 1
        lang = s.get("text_lang") or s.get("audio_lang")
        lang = lang if lang and lang != "unknown" else "en"
        if metric == "accuracy":
            r["hits"] += label_in(reply, s) == s.get("label")
        elif metric == "wer":
            ops = edit_ops(text_units(s.get("text", ""), lang), text_units(_quoted(reply), lang))
            r["errors"], r["units"] = r["errors"] + ops.errors, r["units"] + ops.ref_units
        else:
            r["hits"] += normalize(reply, lang) == normalize(question(s)[2], lang)
    return {name: {"metric": r["metric"], "n": r["n"],
                   "value": (r["errors"] / max(r["units"], 1)) if r["metric"] == "wer" else r["hits"] / r["n"]}
            for name, r in sorted(rows.items())}


def ask(model, tok, samples: Sequence[dict], cfg: ChatEvalConfig) -> list[str]:
    convs, audios = zip(*[question(s)[:2] for s in samples]) if samples else ((), ())
    gen = GenerationConfig(max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size)
    return reply_batch(model, tok, list(convs), list(audios), gen)


def table(models: dict[str, dict[str, dict]]) -> str:
    """Markdown: one row per (family, kind), a column per model."""
    names = list(models)
    rows = sorted({r for m in models.values() for r in m})
    lines = ["| conversations | metric | n | " + " | ".join(names) + " |",
             "|---|---|---:|" + "---:|" * len(names)]
    for r in rows:
        first = next(m[r] for m in models.values() if r in m)
        cells = [f"{models[n][r]['value']:.3f}" if r in models[n] else "-" for n in names]
        lines.append(f"| {r} | {first['metric']} | {first['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def evaluate_chat(models: dict[str, tuple], mixture: MixtureConfig, cfg: ChatEvalConfig,
                  out: Path | None = None) -> dict:
    """Score each of {name: (model, tokenizer)} on the same held-out conversations; writes
    chat_metrics.json and chat_metrics.md to `out`."""
    samples = held_out(mixture, cfg)
    result = {name: score(samples, ask(m, tok, samples, cfg)) for name, (m, tok) in models.items()}
    doc = {"split": cfg.split, "conversations": len(samples), "models": result}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "chat_metrics.json").write_text(json.dumps(doc, indent=1))
        (out / "chat_metrics.md").write_text(table(result) + "\n")
    return doc
