"""The task registry, loaded from tags/tasks.yaml and validated against the tag vocabulary.

A task is data: its prompt template (Qwen-Audio tags plus placeholders), its target kind and the
metric that scores it. Loading fails with a message naming the task for an unknown tag, a
template out of grammar order, a missing or unknown metric, a duplicate name or a bad label set.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from .errors import UserError
from .paths import tags_dir
from .tags import TagVocab, Text, load_vocab

DOMAINS = ("speech", "sound", "music")
METRICS = ("wer", "cer", "bleu", "cider", "accuracy", "f1", "timestamp_shift")
TARGET_KINDS = ("text", "label", "tag", "number", "words", "spans", "multilabel", "transcripts",
                "entities", "slots", "tag_seq", "composite")
LANGUAGE_SLOTS = ("audio_lang", "text_lang")
LONG_AUDIO = ("reject", "window", "concat")
CONCAT_KINDS = ("text", "words", "spans", "tag_seq")
CLOSED_KINDS = ("label", "tag")  # one label of a closed set: ranked by likelihood, chance / majority baselines  # targets whose windows' answers can be joined
# <|...|>, <audio>, </audio>, or {placeholder}; everything between is literal free text.
_PIECE = re.compile(r"(<\|[^<>|]+\|>|</?audio>|\{[a-z_]+\})")


class TaskError(UserError):
    """A bad task definition, or a name that is not in the registry."""


@dataclass(frozen=True)
class Target:
    kind: str
    field: str | None = None        # the sample's label field
    labels: tuple[str, ...] = ()    # closed label set (label, tag, multilabel, spans, ...)
    format: str | None = None       # label -> tag token, e.g. "<|midi_pitch_{}|>"
    text_field: str | None = None   # entities: the transcript the offsets index
    parts: tuple[dict, ...] = ()    # composite: [{tag: ...} | {field, format?, labels?}]


@dataclass(frozen=True)
class Task:
    name: str
    domain: str
    family: str
    description: str
    prompt: str                     # the template as written
    pieces: tuple[str, ...]         # parsed: tags, {placeholders}, Text
    target: Target
    metric: str
    defaults: dict = field(default_factory=dict)
    long_audio: str = "reject"      # reject | window (clip-level labels) | concat (answers joined); see longform.py
    speed_perturbation: bool = True  # False where labels depend on pitch/tempo
    gain_perturbation: bool = True   # False where labels depend on the level (data/augment.py)

    @property
    def placeholders(self) -> tuple[str, ...]:
        return tuple(p[1:-1] for p in self.pieces if _is_placeholder(p))

    @property
    def free_text_fields(self) -> tuple[str, ...]:
        return tuple(p for p in self.placeholders if p not in LANGUAGE_SLOTS + ("timestamps",))

    @property
    def closed_labels(self) -> tuple[str, ...]:
        return self.target.labels


def _is_placeholder(piece: str) -> bool:
    return not isinstance(piece, Text) and piece.startswith("{")


def parse_template(template: str) -> tuple[str, ...]:
    out = []
    for part in _PIECE.split(template):
        if not part:
            continue
        out.append(part if _PIECE.fullmatch(part) else Text(part))
    return tuple(out)


class TaskRegistry:
    def __init__(self, tasks: list[Task], vocab: TagVocab, source: str = ""):
        self.vocab = vocab
        self.source = source
        self.tasks = {t.name: t for t in tasks}
        self.names = tuple(self.tasks)
        self.index = {name: i for i, name in enumerate(self.names)}  # task id for per-task loss

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self):
        return iter(self.tasks.values())

    def __contains__(self, name: str) -> bool:
        return name in self.tasks

    def get(self, name: str) -> Task:
        if name not in self.tasks:
            close = difflib.get_close_matches(name, self.names, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise TaskError(f"unknown task {name!r}{hint}")
        return self.tasks[name]

    @property
    def windowable(self) -> frozenset[str]:
        return frozenset(t.name for t in self.tasks.values() if t.long_audio == "window")

    def by_domain(self, domain: str) -> list[Task]:
        return [t for t in self.tasks.values() if t.domain == domain]


@lru_cache(maxsize=8)
def load_tasks(path: str | Path | None = None, tokens_path: str | None = None) -> TaskRegistry:
    path = Path(path) if path else tags_dir() / "tasks.yaml"
    vocab = load_vocab(tokens_path)
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    tasks, seen = [], set()
    for i, raw in enumerate(spec.get("tasks") or []):
        name = raw.get("name") or f"#{i}"
        if name in seen:
            raise TaskError(f"{path}: task {name!r}: duplicate task name")
        seen.add(name)
        try:
            tasks.append(_build(raw, vocab))
        except (KeyError, TypeError, ValueError) as e:
            msg = e.args[0] if isinstance(e, (TaskError, ValueError)) and e.args else repr(e)
            raise TaskError(f"{path}: task {name!r}: {msg}") from None
    return TaskRegistry(tasks, vocab, str(path))


def _build(raw: dict, vocab: TagVocab) -> Task:
    for key in ("name", "domain", "prompt", "target"):
        if key not in raw:
            raise TaskError(f"missing {key!r}")
    if raw.get("metric") not in METRICS:
        raise TaskError(f"metric {raw.get('metric')!r} is missing or unknown; one of {', '.join(METRICS)}")
    if raw["domain"] not in DOMAINS:
        raise TaskError(f"domain {raw['domain']!r} is not one of {', '.join(DOMAINS)}")
    target = _target(raw["target"], vocab)
    defaults = dict(raw.get("defaults") or {})
    for slot, code in defaults.items():
        if slot not in LANGUAGE_SLOTS:
            raise TaskError(f"unknown default {slot!r}")
        vocab.language_tag(code)
    pieces = parse_template(raw["prompt"])
    _check_template(pieces, target, vocab)
    long_audio = raw.get("long_audio", "reject")
    if long_audio not in LONG_AUDIO:
        raise TaskError(f"long_audio {long_audio!r} is not one of {', '.join(LONG_AUDIO)}")
    if long_audio == "concat" and target.kind not in CONCAT_KINDS:
        raise TaskError(f"long_audio 'concat' cannot join {target.kind!r} targets; only {', '.join(CONCAT_KINDS)}")
    return Task(raw["name"], raw["domain"], raw.get("family", raw["name"]),
                raw.get("description", ""), raw["prompt"], pieces, target, raw["metric"], defaults,
                long_audio, bool(raw.get("speed_perturbation", True)), bool(raw.get("gain_perturbation", True)))


def _labels(raw: dict) -> tuple[str, ...]:
    if "label_range" in raw:
        lo, hi = raw["label_range"]
        return tuple(str(i) for i in range(lo, hi))
    labels = raw.get("labels") or ()
    bad = [x for x in labels if not isinstance(x, str)]
    if bad:
        raise TaskError(f"labels must be strings (quote them in YAML): {bad}")
    if len(set(labels)) != len(labels):
        raise TaskError("duplicate labels")
    return tuple(labels)


def _target(raw: dict, vocab: TagVocab) -> Target:
    kind = raw.get("kind")
    if kind not in TARGET_KINDS:
        raise TaskError(f"target kind {kind!r} is not one of {', '.join(TARGET_KINDS)}")
    target = Target(kind, raw.get("field"), _labels(raw), raw.get("format"), raw.get("text_field"),
                    tuple(raw.get("parts") or ()))
    if kind != "composite" and not target.field:
        raise TaskError(f"target kind {kind!r} needs a 'field'")
    if kind in ("label", "tag", "multilabel") and not target.labels:
        raise TaskError(f"target kind {kind!r} needs 'labels' or 'label_range'")
    if kind in ("tag", "tag_seq"):
        _check_tags([target.format.format(x) for x in target.labels], vocab)
    for part in target.parts:
        if "tag" in part:
            _check_tags([part["tag"]], vocab)
        elif part.get("format"):
            _check_tags([part["format"].format(0)], vocab)
    return target


def _check_tags(tags, vocab: TagVocab) -> None:
    known = set(vocab.tokens)
    bad = [t for t in tags if t not in known]
    if bad:
        raise TaskError(f"unknown tag {bad[0]} in target")


def _check_template(pieces, target: Target, vocab: TagVocab) -> None:
    """Instantiate placeholders with representative values and run the grammar."""
    known = set(vocab.tokens)
    probe = []
    for p in pieces:
        if isinstance(p, Text):
            probe.append(p)
        elif p in ("{audio_lang}", "{text_lang}"):
            probe.append("<|en|>")
        elif p == "{timestamps}":
            probe.append(vocab.role("no_timestamps"))
        elif p.startswith("{"):
            probe.append(Text("free text"))
        elif p not in known:
            raise TaskError(f"unknown tag {p} in prompt")
        else:
            probe.append(p)
    vocab.validate(probe)
    if target.kind == "tag" and target.format == "<|{}|>":
        for label in target.labels:  # a tag target continues the prompt: check the whole
            vocab.validate(probe + [target.format.format(label)])
