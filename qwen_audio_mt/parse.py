"""Output parsing: a model's generated target ids -> the sample fields they stand for.

The exact inverse of targets.py, kind by kind; `expected_fields` gives the same canonical form
straight from a sample's raw labels, so a scorer compares like with like.

Field shapes (keys: the target's field names in tags/tasks.yaml; values: plain JSON types):
  text, label {f: str} | tag {f: the label inside the tag, "en" for <|en|>, "60"} |
  number {f: int (when integral) | float} | words (SRWT) {f: [{word, start, end}]}, <|sil|> dropped |
  spans {f: [{label (None for unlabelled targets), start, end}]} in rendered order |
  multilabel {f: [str]} in label-set order (any order parses) | transcripts {f: [str]} (split on <|delim|>) |
  entities {text_field: str, f: [{start, end, type}]}, character offsets into that text |
  slots {f: [{type, value}]} | tag_seq {f: [label]} | composite {part field: str, ...}.

A parse error is an output no labels render to: a tag where text belongs or text where a tag
belongs, a structure token missing or out of order, a label outside the target's set (always
`target.labels`: a dataset's own set replaces the registry's), a number that is not one, times
going backwards. An empty output parses where labels render to one (a text, no spans).
Text between structure tokens is `tok.decode`d as is: no stripping or case folding (the
scorer's business); so two SRWT words with no time between read as one word with a space.
`parse_output` never raises on model output: it returns fields None and a one-line reason
naming the token position.

SRWT is lossy by design: times snap to the time-token step and a gap shorter than min_silence_s
becomes one boundary at its midpoint (the earlier word's end and the later one's start both move
there). `expected_fields` therefore canonicalises raw labels through the renderer's own steps
(`srwt_times`, `vocab.time_tag`): spans are sorted and quantised as rendered, labels become
str(value), multilabel follows label-set order, entities are sorted by start.
"""
from __future__ import annotations

import math
import numbers
import operator
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from .targets import _field, _number_text, _triple, render_target, srwt_times, target_for
from .tasks import Target, Task
from .tokenizer import Tokenizer

# What _number_text writes (int, or %g with an optional exponent); float() alone would take
# "nan", "inf", " 12" or "1_000".
_NUMBER = re.compile(r"-?\d+(\.\d+)?(e[+-]?\d+)?")
_ENTITY_ROLES = ("entity_value_start", "entity_value_end", "entity_type_start", "entity_type_end")


class ParseError(ValueError):
    """A generated output no labels render to; the message names the token position."""


@dataclass(frozen=True)
class Parsed:
    text: str                  # the output decoded with tags written by name
    fields: dict | None        # the sample fields it stands for; None when it does not parse
    parse_error: str | None = None


def _short(items, limit: int = 6) -> str:
    return ", ".join(items[:limit]) + (f", ... {len(items) - limit} more" if len(items) > limit else "")


def _check(value: str, labels, what: str, pos: int) -> str:
    if labels and value not in labels:
        problem = f"empty {what}" if not value else f"{what} {value!r} is not one of the labels"
        raise ParseError(f"position {pos}: {problem} ({_short(labels)})")
    return value


@lru_cache(maxsize=8)
def _time_ids(tok: Tokenizer) -> frozenset[int]:
    return frozenset(tok.token_id(t) for t in tok.vocab.groups["time"])


@lru_cache(maxsize=64)
def _tag_labels(fmt: str, labels: tuple[str, ...]) -> dict[str, str]:
    return {fmt.format(x): x for x in labels}


def _hole(fmt: str, tag: str | None) -> str | None:
    """What fills the {} of `fmt` in `tag` (a format part without a label set)."""
    pre, _, post = fmt.partition("{}")
    if tag and len(tag) > len(pre) + len(post) and tag.startswith(pre) and tag.endswith(post):
        return tag[len(pre):len(tag) - len(post)]
    return None


class _Cursor:
    """Reads ids left to right, a run of text ids or one tag at a time."""

    def __init__(self, ids: list[int], tok: Tokenizer):
        self.ids, self.tok, self.pos = ids, tok, 0

    def done(self) -> bool:
        return self.pos >= len(self.ids)

    def tag(self) -> str | None:
        """The tag at the cursor; None at text or the end."""
        return None if self.done() else self.tok.id_to_special.get(self.ids[self.pos])

    def at_text(self) -> bool:
        return not self.done() and self.tag() is None

    def _run_end(self) -> int:
        end = self.pos
        while end < len(self.ids) and not self.tok.is_special(self.ids[end]):
            end += 1
        return end

    def fail(self, expected: str):
        if self.done():
            found = "the end of the output"
        else:
            found = self.tag() or f"text {self.tok.decode(self.ids[self.pos:self._run_end()])[:40]!r}"
        raise ParseError(f"position {self.pos}: found {found}, expected {expected}")

    def text(self) -> str:
        """The text run at the cursor ('' at a tag or the end)."""
        end = self._run_end()
        out, self.pos = self.tok.decode(self.ids[self.pos:end]), end
        return out

    def label(self, labels, what: str) -> str:
        """The text run at the cursor, one of `labels` when there are any."""
        pos = self.pos
        return _check(self.text(), labels, what, pos)

    def end(self, expected: str) -> None:
        if not self.done():
            self.fail(expected)

    def plain(self, expected: str = "text") -> str:
        """The whole rest as text: a tag in it is an error."""
        out = self.text()
        self.end(expected)
        return out

    def take(self, tag: str, expected: str | None = None) -> None:
        if self.tag() != tag:
            self.fail(expected or tag)
        self.pos += 1

    def time(self, expected: str) -> float:
        if self.done() or self.ids[self.pos] not in _time_ids(self.tok):
            self.fail(expected)
        self.pos += 1
        return self.tok.seconds(self.ids[self.pos - 1])

    def tag_label(self, fmt: str, labels: tuple[str, ...]) -> str:
        label = _tag_labels(fmt, labels).get(self.tag()) if labels else _hole(fmt, self.tag())
        if label is None:
            self.fail(f"one of the tags {_short([fmt.format(x) for x in labels])}" if labels
                      else f"a tag {fmt}")
        self.pos += 1
        return label


def _number(text: str) -> int | float:
    value = float(text) if _NUMBER.fullmatch(text) else math.nan
    if not math.isfinite(value):
        raise ParseError(f"position 0: {text!r} is not a number")
    return int(value) if value.is_integer() else value


def _p_words(t: Target, c: _Cursor) -> dict:
    sil = c.tok.vocab.role("silence")
    times, segs = [c.time("a time token (SRWT starts with one)")], []
    while not c.done():
        if c.tag() == sil:
            c.pos += 1
            segs.append(None)
        elif c.at_text():
            segs.append(c.text())
        else:
            c.fail(f"a word or {sil}" + (" (empty segment)" if c.ids[c.pos] in _time_ids(c.tok) else ""))
        what = sil if segs[-1] is None else repr(segs[-1])
        twice = " (two segments in a row)" if c.at_text() or c.tag() == sil else ""
        times.append(c.time(f"a time token after {what}{twice}"))
        if times[-1] < times[-2]:
            raise ParseError(f"position {c.pos - 1}: time {times[-1]:.2f} goes back from {times[-2]:.2f}")
    return {t.field: [{"word": w, "start": a, "end": b}
                      for w, a, b in zip(segs, times, times[1:]) if w is not None]}


def _p_spans(t: Target, c: _Cursor) -> dict:
    spans = []
    while not c.done():
        start, label = c.time("the start time of a span"), None
        if c.at_text():
            label = c.label(t.labels, "span label")
        elif t.labels:  # a labelled target's spans all carry a label
            c.fail(f"a span label ({_short(t.labels)})")
        end = c.time(f"the end time of span {label!r}" if label is not None else "the end time of the span")
        if end < start:
            raise ParseError(f"position {c.pos - 1}: span {label!r} ends at {end:.2f}, before it starts "
                             f"at {start:.2f}")
        spans.append({"label": label, "start": start, "end": end})
    return {t.field: spans}


def _p_multilabel(t: Target, c: _Cursor) -> dict:
    text = c.plain("text (labels joined by ', ')")
    items = {_check(x, t.labels, "label", 0) for x in (text.split(", ") if text else [])}
    # A set: any order or repetition parses, given back in label-set order as rendered.
    return {t.field: [x for x in t.labels if x in items]}


def _p_transcripts(t: Target, c: _Cursor) -> dict:
    texts = [c.text()] if not c.done() else []
    while not c.done():
        c.take(c.tok.vocab.role("delim"), "text or <|delim|>")
        texts.append(c.text())
    return {t.field: texts}


def _p_entities(t: Target, c: _Cursor) -> dict:
    vs, ve, ts, te = map(c.tok.vocab.role, _ENTITY_ROLES)
    text, entities = c.text(), []
    while not c.done():
        c.take(vs, f"text or {vs}")
        value = c.text()
        if not value:
            c.fail(f"the entity's text after {vs}")
        c.take(ve, f"{ve} after entity {value!r}")
        c.take(ts, f"{ts} after {ve}")
        etype = c.label(t.labels, "entity type")
        c.take(te, f"{te} after entity type {etype!r}")
        entities.append({"start": len(text), "end": len(text) + len(value), "type": etype})
        text += value + c.text()
    return {t.text_field or "text": text, t.field: entities}


def _p_slots(t: Target, c: _Cursor) -> dict:
    vs, ve, ts, te = map(c.tok.vocab.role, _ENTITY_ROLES)
    slots = []
    while not c.done():
        c.take(ts, f"{ts} (a slot starts with its type)")
        stype = c.label(t.labels, "slot type")
        c.take(te, f"{te} after slot type {stype!r}")
        c.take(vs, f"{vs} after {te}")
        value = c.text()
        c.take(ve, f"{ve} after slot value {value!r}")
        slots.append({"type": stype, "value": value})
    return {t.field: slots}


def _p_composite(t: Target, c: _Cursor) -> dict:
    out = {}
    for part in t.parts:
        labels = tuple(part.get("labels") or ())
        if "tag" in part:
            c.take(part["tag"])
        elif part.get("format"):
            out[part["field"]] = c.tag_label(part["format"], labels)
        else:
            out[part["field"]] = c.label(labels, part["field"])
    return out


def _p_tag_seq(t: Target, c: _Cursor) -> dict:
    labels = []
    while not c.done():
        labels.append(c.tag_label(t.format, t.labels))
    return {t.field: labels}


PARSERS = {
    "text": lambda t, c: {t.field: c.plain()},
    "label": lambda t, c: {t.field: _check(c.plain("text (one of the labels)"), t.labels, "label", 0)},
    "tag": lambda t, c: {t.field: c.tag_label(t.format, t.labels)},
    "number": lambda t, c: {t.field: _number(c.plain("a number"))},
    "words": _p_words,
    "spans": _p_spans,
    "multilabel": _p_multilabel,
    "transcripts": _p_transcripts,
    "entities": _p_entities,
    "slots": _p_slots,
    "tag_seq": _p_tag_seq,
    "composite": _p_composite,
}


def _ids(ids: Sequence[int], tok: Tokenizer) -> list[int]:
    try:
        out = [operator.index(i) for i in ids]  # numpy and torch integers too
    except TypeError:
        raise ParseError("the output is not a sequence of integer ids") from None
    for pos, i in enumerate(out):
        if not 0 <= i < tok.n_vocab:
            raise ParseError(f"position {pos}: id {i} is not in the vocabulary (0..{tok.n_vocab - 1})")
    return out


def _decode_valid(ids, tok: Tokenizer) -> str:
    """Bad ids shown as far as they decode."""
    try:
        return tok.decode([int(i) for i in ids if isinstance(i, numbers.Integral) and 0 <= i < tok.n_vocab])
    except TypeError:  # not even a sequence
        return ""


def parse_target(target: Target, ids: Sequence[int], tok: Tokenizer) -> dict:
    """Target ids (no end token) -> fields; ParseError with a one-line reason."""
    c = _Cursor(_ids(ids, tok), tok)
    fields = PARSERS[target.kind](target, c)
    c.end("the end of the output")  # after one tag, the last composite part, ...
    return fields


def parse_output(task: Task, ids: Sequence[int], tok: Tokenizer, timestamps: bool = False) -> Parsed:
    """A generated output -> Parsed; never raises on bad output (fields None, parse_error why)."""
    try:
        ids = _ids(ids, tok)
    except ParseError as e:
        return Parsed(_decode_valid(ids, tok), None, str(e))
    if ids and ids[-1] in (tok.end_id, tok.role_id("im_end")):
        ids = ids[:-1]
    try:
        fields, error = parse_target(target_for(task, timestamps), ids, tok), None
    except ParseError as e:
        fields, error = None, str(e)
    return Parsed(tok.decode(ids), fields, error)


# ---------------------------------------------------------------------- canonical sample fields
def _q(tok: Tokenizer, seconds: float) -> float:
    return tok.seconds(tok.vocab.time_tag(seconds))  # the time the renderer's token stands for


def _c_words(t: Target, s: Mapping, tok: Tokenizer, task: str) -> dict:
    words = [_triple(w) for w in _field(s, t.field, task)]
    times, segs = srwt_times(words, tok.vocab.timestamps.min_silence_s)
    q = [_q(tok, x) for x in times]
    return {t.field: [{"word": str(w), "start": a, "end": b}
                      for w, a, b in zip(segs, q, q[1:]) if w is not None]}


def _c_spans(t: Target, s: Mapping, tok: Tokenizer, task: str) -> dict:
    spans = [_triple(x, ("label", "start", "end")) if isinstance(x, Mapping) or len(x) == 3 else (None, *x)
             for x in _field(s, t.field, task)]
    spans.sort(key=lambda x: (x[1], x[2], str(x[0])))  # as _spans in targets.py sorts them
    return {t.field: [{"label": None if lab is None else str(lab), "start": _q(tok, a), "end": _q(tok, b)}
                      for lab, a, b in spans]}


def _c_entities(t: Target, s: Mapping, tok: Tokenizer, task: str) -> dict:
    name = t.text_field or "text"
    ents = sorted(tuple(e) if not isinstance(e, Mapping) else (e["start"], e["end"], e["type"])
                  for e in _field(s, t.field, task))
    return {name: str(s[name]), t.field: [{"start": int(a), "end": int(b), "type": str(e)}
                                          for a, b, e in ents]}


def _c_slots(t: Target, s: Mapping, tok: Tokenizer, task: str) -> dict:
    pairs = ((x["type"], x["value"]) if isinstance(x, Mapping) else x for x in _field(s, t.field, task))
    return {t.field: [{"type": str(a), "value": str(b)} for a, b in pairs]}


def _c_transcripts(t: Target, s: Mapping, tok: Tokenizer, task: str) -> dict:
    texts = [str(x) for x in _field(s, t.field, task)]
    return {t.field: [] if texts == [""] else texts}  # [""] renders to nothing, as [] does


CANONICAL = {
    "text": lambda t, s, tok, task: {t.field: str(_field(s, t.field, task))},
    "number": lambda t, s, tok, task: {t.field: _number(_number_text(_field(s, t.field, task)))},
    "words": _c_words,
    "spans": _c_spans,
    "multilabel": lambda t, s, tok, task: {t.field: [
        x for x in t.labels if x in {str(v) for v in _field(s, t.field, task)}]},
    "transcripts": _c_transcripts,
    "entities": _c_entities,
    "slots": _c_slots,
    "tag_seq": lambda t, s, tok, task: {t.field: [str(v) for v in _field(s, t.field, task)]},
    "composite": lambda t, s, tok, task: {p["field"]: str(_field(s, p["field"], task))
                                          for p in t.parts if "field" in p},
}
CANONICAL["label"] = CANONICAL["tag"] = CANONICAL["text"]


def expected_fields(task: Task, sample: Mapping, tok: Tokenizer, timestamps: bool = False) -> dict:
    """A sample's labels in the form parse_output gives for its rendered target. Raises
    TargetError exactly where rendering would (labels outside the set, times out of order)."""
    target = target_for(task, timestamps)
    render_target(target, sample, tok, task.name)
    return CANONICAL[target.kind](target, sample, tok, task.name)
