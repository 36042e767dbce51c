"""Chat conversations generated from task samples through the pools of tags/instructions.yaml
(loaded and checked by chat_pools.load_pools).

    single_turn(meta, rng, pools) -> ChatSpec         one question about one audio, one answer
    follow_up(meta, rng, pools)   -> ChatSpec | None  the same, then a second exchange
    compare(metas, rng, pools)    -> ChatSpec         2-3 audios of one closed task, one user turn
    text_only(texts, rng, pools)  -> [ChatSpec]       audio-free, answers computed from the text
    text_from_jsonl(path)         -> [ChatSpec]       any JSONL of {"messages": [...]}

`meta` is a shard sample's JSON (task, key, audio_lang, text_lang, the task's label fields). Every
conversation starts with the system message of tags/chat.yaml; audio sits only in user turns, as
`<audio>KEY</audio>` with the source sample's key. Same Generator seed, same conversations.

Choices the issue left open (those of the pools file itself: chat_pools.py):
- Label words: language codes by their names (languages.yaml), then `label_words:`, then
  underscores as spaces. A qa answer that is one bare label ("alarm_beep") is said the same way.
- Times are written with two decimals ("0.54 seconds"), a clip's duration with one; items as an
  English list ("a, b and c"), choices with "or".
- Follow-ups: a sample with word timings is transcribed, then asked about a word that occurs
  once (so the question has one answer); a closed answer is asked "why" (the family's templated
  rationale); a caption is asked the clip's duration or kind of audio, facts the sample holds
  (a question about its content could not be answered without guessing). Others: None.
- compare asks "which one is X" only when exactly one audio has X, else "same?" or "each".
- meta["kind"] is the first exchange's; "answer" is the last assistant message, "answers" all.
  Closed adds "label", "labels" and "label_words" (the labels' words, same order).
- text_only: words are whitespace pieces; a text of fewer than two (unsegmented Chinese) is
  skipped; first/last word lose surrounding punctuation; upper/lower case only where it changes
  the text.
No torch here: generation runs in ingest workers and tests without it.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..conversation import Conversation, ConversationError, chat_strings, user_content
from ..errors import UserError
from ..tasks import Task, load_tasks
from .chat_pools import FORMS, TEXT_OPS, Pools


class ChatSampleError(UserError):
    """A sample whose fields do not fit its task (missing field, label outside the set)."""


@dataclass(frozen=True)
class ChatSpec:
    key: str
    messages: tuple[dict, ...]    # {"role", "content"}, system first
    audio_keys: tuple[str, ...]   # source sample keys, in order of appearance
    meta: dict                    # kind, task, answer, answers (+ label, labels, label_words | text)

    def conversation(self) -> Conversation:
        return Conversation.from_json(self.messages, self.key)

    def to_json(self) -> dict:
        return {"key": self.key, "messages": list(self.messages), "audio_keys": list(self.audio_keys),
                "meta": self.meta}


# ------------------------------------------------------------------------------ phrasing

def _pick(rng: np.random.Generator, seq: Sequence):
    return seq[int(rng.integers(len(seq)))]


def _english(items: Sequence[str], conj: str = "and") -> str:
    items = list(items)
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {conj} {items[-1]}"


def _sec(x) -> str:
    return f"{float(x):.2f}"


def _number(x) -> str:
    x = float(x)
    return str(int(x)) if x.is_integer() else f"{x:g}"


def _count(n: int, pools: Pools) -> str:
    return pools.numbers[n] if n < len(pools.numbers) else str(n)


def label_words(task: Task, label, pools: Pools) -> str:
    """How `label` is said: a language by name, else label_words, else underscores as spaces."""
    label = str(label)
    if task.target.field in ("audio_lang", "text_lang"):
        return pools.languages.get(label, label)
    return pools.label_words.get(label, label.replace("_", " "))


def _field(meta: Mapping, name: str, task: Task):
    if meta.get(name) is None:
        raise ChatSampleError(f"{meta.get('key', '?')}: task {task.name} sample has no {name!r}")
    return meta[name]


def _language(meta: Mapping, slot: str, task: Task, pools: Pools) -> str:
    code = meta.get(slot) or task.defaults.get(slot) or (meta.get("audio_lang") if slot == "text_lang" else None)
    return pools.languages.get(code or "en", code or "en")


def _closed(task: Task, meta: Mapping, pools: Pools) -> tuple[str, dict]:
    label, labels = str(_field(meta, task.target.field, task)), task.closed_labels
    if label not in labels:
        raise ChatSampleError(f"{meta.get('key', '?')}: {task.target.field} {label!r} is not a label of {task.name}")
    words = [label_words(task, x, pools) for x in labels]
    return label, {"label": label, "labels": list(labels), "label_words": words}


def _word_items(raw) -> tuple[list[dict], str]:
    """Word timings ([word, start, end] or {word, start, end}) as value dicts, and the transcript."""
    words = [(w["word"], w["start"], w["end"]) if isinstance(w, Mapping) else tuple(w) for w in raw]
    items = [{"word": str(w), "start": _sec(a), "end": _sec(b)} for w, a, b in words]
    return items, " ".join(i["word"] for i in items)


def _items(task: Task, meta: Mapping, pools: Pools) -> tuple[list[dict], dict]:
    """A list-form sample: one value dict per item (in time or ontology order), plus extras."""
    t, key = task.target, meta.get("key", "?")
    raw, extra = list(_field(meta, t.field, task)), {}
    if t.kind == "words":
        items, extra["text"] = _word_items(raw)
    elif t.kind == "spans":  # [label, start, end] or [start, end] (grounding), in time order
        spans = [tuple(s) if len(s) == 3 else (None, *s) for s in
                 ((x["label"], x["start"], x["end"]) if isinstance(x, Mapping) else x for x in raw)]
        spans.sort(key=lambda s: (s[1], s[2]))
        items = [{"label": label_words(task, lab, pools) if lab is not None else "", "start": _sec(a), "end": _sec(b)}
                 for lab, a, b in spans]
    elif t.kind == "multilabel":
        items = [{"label": label_words(task, x, pools)} for x in t.labels if x in set(map(str, raw))]
    elif t.kind == "transcripts":
        items = [{"text": str(x), "n": str(i + 1)} for i, x in enumerate(raw)]
    elif t.kind == "entities":
        text = extra["text"] = str(_field(meta, t.text_field or "text", task))
        ents = sorted(tuple(e) if not isinstance(e, Mapping) else (e["start"], e["end"], e["type"]) for e in raw)
        items = [{"value": text[a:b], "type": label_words(task, ty, pools)} for a, b, ty in ents]
    elif t.kind == "slots":
        items = [{"type": label_words(task, ty, pools), "value": str(v)} for ty, v in
                 ((x["type"], x["value"]) if isinstance(x, Mapping) else x for x in raw)]
    else:  # tag_seq
        items = [{"label": str(x)} for x in raw]
    if t.kind == "entities" and any(not i["value"] for i in items):
        raise ChatSampleError(f"{key}: an entity does not fit the text")
    return items, extra


def _values(task: Task, fam: dict, meta: Mapping, rng, pools: Pools) -> tuple[dict, dict]:
    """(placeholder values, meta extras) of one sample under its family's form."""
    form, t, thing = fam["form"], task.target, pools.tasks[task.name].get("thing", "")
    if form == "closed":
        label, info = _closed(task, meta, pools)
        words = info["label_words"]
        mine = label_words(task, label, pools)
        return {"label": mine, "thing": thing, "options": _english(words, "or"),
                "others": _english([w for w in words if w != mine] or [mine], "or")}, info
    if form == "transcript":
        text = str(_field(meta, t.field, task))
        return {"text": text, "language": _language(meta, "audio_lang", task, pools)}, {"text": text}
    if form == "translation":
        return {"text": str(_field(meta, t.field, task)), "source": _language(meta, "audio_lang", task, pools),
                "target": _language(meta, "text_lang", task, pools)}, {}
    if form == "caption":
        return {"text": str(_field(meta, t.field, task))}, {}
    if form == "qa":
        answer = str(_field(meta, t.field, task))
        if answer and " " not in answer:  # a bare label ("alarm_beep") is said in words
            answer = pools.label_words.get(answer, answer.replace("_", " "))
        return {"question": str(_field(meta, "question", task)), "answer": answer}, {}
    if form == "number":
        return {"value": _number(_field(meta, t.field, task)), "thing": thing}, {}
    if form == "composite":
        vals = {}
        for part in (p for p in t.parts if "field" in p):
            v = _field(meta, part["field"], task)
            vals[part["field"]] = label_words(task, v, pools) if part.get("labels") else str(v)
        return vals, {}
    items, extra = _items(task, meta, pools)
    item = _pick(rng, fam["item"])
    vals = {"query": str(meta.get("query", "")), "count": _count(len(items), pools), **extra,
            "items": _english([item.format_map(i) for i in items]) if items else ""}
    return vals, {}


def _task(meta: Mapping, pools: Pools) -> tuple[Task, dict]:
    """The sample's task and its family (a skipped or unknown task is the sample's error)."""
    name = meta.get("task")
    if name not in load_tasks() or name not in pools.tasks:
        why = f"skipped in {pools.path}: {pools.skip[name]}" if name in pools.skip else "no chat family"
        raise ChatSampleError(f"{meta.get('key', '?')}: task {name!r}: {why}")
    return load_tasks().get(name), pools.families[pools.tasks[name]["family"]]


def _exchange(meta: Mapping, rng, pools: Pools) -> tuple[str, str, dict, dict]:
    """The first (question, answer) about one sample, its meta extras and placeholder values."""
    task, fam = _task(meta, pools)
    vals, info = _values(task, fam, meta, rng, pools)
    question = _pick(rng, fam["questions"]).format_map(vals)
    empty = fam["form"] == "list" and not vals["items"]
    answer = _pick(rng, fam["none" if empty else "answers"]).format_map(vals)
    return question, answer, {"kind": FORMS[fam["form"]].chat_kind, "task": task.name, **info}, vals


def _spec(key: str, turns: Sequence[tuple[str, Sequence[str], str]], info: dict) -> ChatSpec:
    """System message, then per turn (question, its audios, answer); audios numbered over the
    whole conversation."""
    msgs, keys = [{"role": "system", "content": chat_strings().system}], []
    for question, audios, answer in turns:
        msgs.append({"role": "user", "content": user_content(question, audios, first=len(keys) + 1)})
        msgs.append({"role": "assistant", "content": answer})
        keys += audios
    meta = {**info, "answer": turns[-1][2], "answers": [t[2] for t in turns]}
    return ChatSpec(key, tuple(msgs), tuple(keys), meta)


# ------------------------------------------------------------------------------ conversations

def single_turn(meta: Mapping, rng: np.random.Generator, pools: Pools) -> ChatSpec:
    question, answer, info, _ = _exchange(meta, rng, pools)
    return _spec(f"{meta['key']}-chat", [(question, [meta["key"]], answer)], info)


def _word_follow_up(meta: Mapping, rng, pools: Pools) -> ChatSpec | None:
    task, _ = _task(meta, pools)
    words, text = _word_items(meta["words"])
    once = [w for w in words if sum(v["word"] == w["word"] for v in words) == 1]
    if not once:
        return None
    fam, fx = pools.families[pools.transcribe_with], pools.fixed
    vals = {"text": text, "language": _language(meta, "audio_lang", task, pools)}
    first = (_pick(rng, fam["questions"]).format_map(vals), [meta["key"]],
             _pick(rng, fam["answers"]).format_map(vals))
    word = _pick(rng, once)
    second = (_pick(rng, fx["follow_up.word_time.questions"]).format_map(word), [],
              _pick(rng, fx["follow_up.word_time.answers"]).format_map(word))
    info = {"kind": "transcript", "task": task.name, "text": text, "word": word}
    return _spec(f"{meta['key']}-followup", [first, second], info)


def follow_up(meta: Mapping, rng: np.random.Generator, pools: Pools) -> ChatSpec | None:
    """Two exchanges on one audio (see the module notes), or None when the task has none."""
    if meta.get("words"):
        return _word_follow_up(meta, rng, pools)
    task, fam = _task(meta, pools)
    if fam["form"] not in ("closed", "caption"):
        return None
    question, answer, info, vals = _exchange(meta, rng, pools)
    fx = pools.fixed
    if fam["form"] == "closed":
        second = (_pick(rng, fx["follow_up.why.questions"]), [], _pick(rng, fam["why"]).format_map(vals))
    else:
        which = _pick(rng, ("duration", "domain"))
        vals = {"seconds": f"{float(_field(meta, 'duration', task)):.1f}", "kind": pools.domain_words[task.domain]}
        second = (_pick(rng, fx[f"follow_up.{which}.questions"]), [],
                  _pick(rng, fx[f"follow_up.{which}.answers"]).format_map(vals))
    return _spec(f"{meta['key']}-followup", [(question, [meta["key"]], answer), second], info)


def compare(metas: Sequence[Mapping], rng: np.random.Generator, pools: Pools) -> ChatSpec:
    """Two or three samples of one closed task in one user turn: "which one is X" (when exactly
    one audio has X), "are they the same", or "what is each"."""
    metas, tasks = list(metas), sorted({str(m.get("task")) for m in metas})
    if not 2 <= len(metas) <= 3 or len(tasks) != 1:
        raise ChatSampleError(f"compare needs two or three samples of one task, got {len(metas)} of {tasks}")
    task, fam = _task(metas[0], pools)
    if fam["form"] != "closed":
        raise ChatSampleError(f"compare needs a closed task, not {task.name}")
    labels = [_closed(task, m, pools)[0] for m in metas]
    words = [label_words(task, x, pools) for x in labels]
    fx, thing = pools.fixed, pools.tasks[task.name]["thing"]
    item = _pick(rng, fx["compare.item"])
    vals = {"thing": thing, "count": _count(len(metas), pools),
            "each": _english([item.format(n=i + 1, label=w, thing=thing) for i, w in enumerate(words)])}
    unique = [i for i, x in enumerate(labels) if labels.count(x) == 1]
    mode = _pick(rng, ("same", "each", "which") if unique else ("same", "each"))
    if mode == "which":
        n = _pick(rng, unique)
        vals.update(label=words[n], n=str(n + 1))
        answers = fx["compare.which.answers"]
    elif mode == "same":
        vals["label"] = words[0]
        answers = fx["compare.same.yes" if len(set(labels)) == 1 else "compare.same.no"]
    else:
        answers = fx["compare.each.answers"]
    question = _pick(rng, fx[f"compare.{mode}.questions"]).format_map(vals)
    info = {"kind": "open", "task": task.name, "mode": mode, "labels_each": labels}
    return _spec("compare-" + "-".join(m["key"] for m in metas),
                 [(question, [m["key"] for m in metas], _pick(rng, answers).format_map(vals))], info)


def text_only(texts: Iterable[str], rng: np.random.Generator, pools: Pools) -> list[ChatSpec]:
    """One text instruction per distinct sentence of two or more words, the instruction drawn
    from those that change something (no upper case for Korean), its answer computed."""
    out, seen = [], set()
    for text in texts:
        words = str(text).split()
        if len(words) < 2 or text in seen or "<|" in text:
            continue
        seen.add(text)
        ops = [op for op in sorted(TEXT_OPS) if not op.endswith("_case") or TEXT_OPS[op](words) != " ".join(words)]
        op = _pick(rng, ops)
        value = TEXT_OPS[op](words)
        question = _pick(rng, pools.fixed[f"text.{op}.questions"]).format_map({"text": text})
        answer = _pick(rng, pools.fixed[f"text.{op}.answers"]).format_map({"value": value, "text": text})
        key = f"text-{op}-{hashlib.sha1(text.encode('utf-8')).hexdigest()[:12]}"
        out.append(_spec(key, [(question, [], answer)], {"kind": "text", "task": f"text_{op}", "value": value}))
    return out


def corpus_texts(metas: Iterable[Mapping]) -> list[str]:
    """The distinct sentences of samples (transcripts and captions), in order, for text_only."""
    texts = (m.get(name) for m in metas for name in ("text", "caption"))
    return list(dict.fromkeys(t.strip() for t in texts if isinstance(t, str) and t.strip()))


def text_from_jsonl(path: str | Path) -> list[ChatSpec]:
    """Conversations of a JSONL of {"messages": [...], "key"?}; the system message of chat.yaml
    is added where a conversation has none. A bad line raises a one-line error naming it."""
    path, out = Path(path), []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        key = f"{path.stem}-{n:06d}"
        try:
            obj = json.loads(line)
            msgs = [dict(m) for m in obj["messages"]]
            key = str(obj.get("key") or key)
            if not msgs or msgs[0].get("role") != "system":
                msgs.insert(0, {"role": "system", "content": chat_strings().system})
            conv = Conversation.from_json(msgs, key)
        except (ValueError, KeyError, TypeError, ConversationError) as e:
            raise ChatSampleError(f"{path}:{n}: {' '.join(str(e).split())}") from None
        answer = conv.messages[-1].content
        out.append(ChatSpec(key, tuple(conv.to_json()), tuple(conv.audios()),
                            {"kind": "text", "task": "text", "answer": answer,
                             "answers": [m.content for m in conv.messages if m.role == "assistant"]}))
    return out


def label_in(reply: str, meta: Mapping) -> str | None:
    """The closed label a reply names (longest label words first, whole words), or None: how an
    evaluator reads a closed answer back ("major seventh" is not "major")."""
    text = reply.lower()
    for words, label in sorted(zip(meta["label_words"], meta["labels"]), key=lambda p: -len(p[0])):
        if re.search(rf"(?<![\w/]){re.escape(words.lower())}(?![\w/])", text):
            return label
    return None
