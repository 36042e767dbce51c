"""Target renderers: a sample's raw labels -> target ids, one function per target kind.

Labels stay raw in the shards; these turn them into ids at streaming time. Free text goes
through `Tokenizer.encode` (ordinary text, never tags); structure uses tag tokens by name.
Word-timestamp targets follow Qwen-Audio's SRWT form: `<|t0|>w1<|t1|>w2<|t2|>`, one boundary
token between adjacent words, `<|sil|>` as its own segment for a gap of at least
`min_silence_s` (tags/tokens.yaml), a shorter gap collapsing to one boundary at its midpoint.
"""
from __future__ import annotations

from collections.abc import Mapping

from .errors import UserError
from .tasks import Target, Task, TaskError
from .tokenizer import Tokenizer


class TargetError(UserError):
    """A sample's labels do not fit its task's target (missing field, label outside the set, ...)."""


# What a sample whose labels do not fit its task raises (shards older than the registry, a bad
# field type): readers skip and count such a sample, never stop on it.
LABEL_ERRORS = (TargetError, TaskError, KeyError, ValueError)


def _field(sample: Mapping, name: str, task: str):
    if name not in sample or sample[name] is None:
        raise TargetError(f"task {task}: sample has no {name!r}")
    return sample[name]


def _closed(value, labels, task: str, name: str) -> str:
    value = str(value)
    if labels and value not in labels:
        raise TargetError(f"task {task}: {name} {value!r} is not one of its labels ({', '.join(labels[:8])}"
                          f"{', ...' if len(labels) > 8 else ''})")
    return value


def _number_text(value) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() else f"{value:g}"


def _triple(item, names=("word", "start", "end")):
    if isinstance(item, Mapping):
        return tuple(item.get(n) for n in names)
    return tuple(item)


def srwt_times(words, min_silence: float) -> tuple[list[float], list[str | None]]:
    """Word (text, start, end) triples -> (times, segments), segments None for silence;
    len(times) == len(segments) + 1."""
    if not words:
        return [], []
    times, segs = [], []
    first = words[0][1]
    if first >= min_silence:
        times += [0.0]
        segs.append(None)
    times.append(first)
    for i, (word, start, end) in enumerate(words):
        segs.append(word)
        if i + 1 == len(words):
            times.append(end)
            continue
        nxt = words[i + 1][1]
        if nxt - end >= min_silence:
            times += [end, nxt]  # the silence is its own segment between the two
            segs.append(None)
        else:
            times.append((end + nxt) / 2)
    return times, segs


def _words(t: Target, sample, tok: Tokenizer, task: str) -> list[int]:
    words = [_triple(w) for w in _field(sample, t.field, task)]
    if not words:
        raise TargetError(f"task {task}: sample has no words")
    prev = 0.0
    for word, start, end in words:  # words may touch but not overlap: times must not go back
        if start is None or end is None or not (prev - 1e-6 <= start <= end):
            raise TargetError(f"task {task}: word {word!r} has times {start}..{end} out of order")
        prev = end
    times, segs = srwt_times(words, tok.vocab.timestamps.min_silence_s)
    sil = tok.role_id("silence")
    ids = [tok.time_id(times[0])]
    for seg, t_end in zip(segs, times[1:]):
        ids.extend([sil] if seg is None else tok.encode(str(seg)))
        ids.append(tok.time_id(t_end))
    return ids


def _spans(t: Target, sample, tok: Tokenizer, task: str) -> list[int]:
    ids = []
    spans = []
    for item in _field(sample, t.field, task):
        label, start, end = _triple(item, ("label", "start", "end")) if (
            isinstance(item, Mapping) or len(item) == 3) else (None, *item)
        if not (0 <= start <= end):
            raise TargetError(f"task {task}: span {label!r} has times {start}..{end} out of order")
        spans.append((start, end, label))
    for start, end, label in sorted(spans, key=lambda s: (s[0], s[1], str(s[2]))):
        ids.append(tok.time_id(start))
        if label is not None:
            ids.extend(tok.encode(_closed(label, t.labels, task, "span label")))
        ids.append(tok.time_id(end))
    return ids


def _entities(t: Target, sample, tok: Tokenizer, task: str) -> list[int]:
    text = str(_field(sample, t.text_field or "text", task))
    r = tok.role_id
    ids, pos = [], 0
    for start, end, etype in sorted(tuple(e) if not isinstance(e, Mapping) else
                                    (e["start"], e["end"], e["type"]) for e in _field(sample, t.field, task)):
        if not (pos <= start < end <= len(text)):
            raise TargetError(f"task {task}: entity {etype!r} at {start}..{end} does not fit the text")
        ids += tok.encode(text[pos:start]) + [r("entity_value_start")] + tok.encode(text[start:end])
        ids += [r("entity_value_end"), r("entity_type_start")]
        ids += tok.encode(_closed(etype, t.labels, task, "entity type")) + [r("entity_type_end")]
        pos = end
    return ids + tok.encode(text[pos:])


def _slots(t: Target, sample, tok: Tokenizer, task: str) -> list[int]:
    r = tok.role_id
    ids = []
    for item in _field(sample, t.field, task):
        stype, value = (item["type"], item["value"]) if isinstance(item, Mapping) else item
        ids += [r("entity_type_start")] + tok.encode(_closed(stype, t.labels, task, "slot type"))
        ids += [r("entity_type_end"), r("entity_value_start")] + tok.encode(str(value))
        ids.append(r("entity_value_end"))
    return ids


def _composite(t: Target, sample, tok: Tokenizer, task: str) -> list[int]:
    ids = []
    for part in t.parts:
        if "tag" in part:
            ids.append(tok.token_id(part["tag"]))
            continue
        value = _closed(_field(sample, part["field"], task), tuple(part.get("labels") or ()), task,
                        part["field"])
        ids += [tok.token_id(part["format"].format(value))] if part.get("format") else tok.encode(value)
    return ids


def _tag_of(t: Target, value, tok: Tokenizer, task: str) -> int:
    label = _closed(value, t.labels, task, t.field)
    return tok.token_id(t.format.format(label))


RENDERERS = {
    "text": lambda t, s, tok, task: tok.encode(str(_field(s, t.field, task))),
    "label": lambda t, s, tok, task: tok.encode(_closed(_field(s, t.field, task), t.labels, task, t.field)),
    "tag": lambda t, s, tok, task: [_tag_of(t, _field(s, t.field, task), tok, task)],
    "number": lambda t, s, tok, task: tok.encode(_number_text(_field(s, t.field, task))),
    "words": _words,
    "spans": _spans,
    "multilabel": lambda t, s, tok, task: tok.encode(", ".join(
        x for x in t.labels if x in {_closed(v, t.labels, task, "label") for v in _field(s, t.field, task)})),
    "transcripts": lambda t, s, tok, task: _join([tok.encode(str(x)) for x in _field(s, t.field, task)],
                                                 tok.role_id("delim")),
    "entities": _entities,
    "slots": _slots,
    "tag_seq": lambda t, s, tok, task: [_tag_of(t, v, tok, task) for v in _field(s, t.field, task)],
    "composite": _composite,
}


def _join(parts: list[list[int]], sep: int) -> list[int]:
    out = []
    for i, p in enumerate(parts):
        out += ([sep] if i else []) + p
    return out


def target_for(task: Task, timestamps: bool = False) -> Target:
    """The target a sample of `task` renders (and a model's output parses) as: a timestamped
    transcript is the SRWT word form."""
    if timestamps and task.target.kind == "text":
        return Target("words", "words")
    return task.target


def render_target(target: Target, sample: Mapping, tok: Tokenizer, task: str) -> list[int]:
    return RENDERERS[target.kind](target, sample, tok, task)
