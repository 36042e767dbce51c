"""The tag vocabulary and its grammar, loaded from tags/tokens.yaml.

The YAML is the single source of the special tokens and their order (which fixes the ids);
this module only expands runs, looks tokens up by role, and checks tag sequences.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from .errors import UserError
from .paths import tags_dir


class TagGrammarError(UserError):
    """A tag sequence out of the prompt order; the message names position, tag and expectation."""


class Text(str):
    """Free text inside a prompt (a question, a choice, a grounding query): never a tag."""


@dataclass(frozen=True)
class Slot:
    name: str
    tokens: frozenset[str]
    required: bool = False   # may not be skipped (a sequence may still stop before it)
    repeat: bool = False     # may take several tags in a row
    requires: str | None = None  # only after this slot was filled


@dataclass(frozen=True)
class TimestampSpec:
    step_s: float
    min_silence_s: float
    max_s: float


@dataclass(frozen=True)
class TagVocab:
    tokens: tuple[str, ...]                  # every special token, in id order
    groups: dict[str, tuple[str, ...]]       # group name -> its tokens
    roles: dict[str, str]                    # role name -> token
    grammar: tuple[Slot, ...]
    timestamps: TimestampSpec
    source: str

    def group(self, name: str) -> tuple[str, ...]:
        return self.groups[name]

    def role(self, name: str) -> str:
        return self.roles[name]

    @property
    def languages(self) -> tuple[str, ...]:
        """Language codes, e.g. 'unknown', 'en', 'zh_tr'."""
        return tuple(t[2:-2] for t in self.groups["language"])

    def language_tag(self, code: str) -> str:
        tag = f"<|{code}|>"
        if tag not in self.groups["language"]:
            raise ValueError(f"unknown language {code!r}; known: {', '.join(self.languages)}")
        return tag

    def time_tag(self, seconds: float) -> str:
        """The time token nearest to `seconds` (clipped to 0 .. max_s)."""
        centis = round(min(max(seconds, 0.0), self.timestamps.max_s) / self.timestamps.step_s)
        return f"<|{centis * self.timestamps.step_s:.2f}|>"

    def validate(self, pieces) -> None:
        """Check tags (str) and free text (Text) against the grammar; raise TagGrammarError."""
        slot_i, filled, last = 0, set(), None
        for pos, piece in enumerate(pieces):
            if isinstance(piece, Text):
                if last is None or last.name != "output_instruction":
                    raise TagGrammarError(
                        f"position {pos}: found free text {str(piece)!r}, "
                        "expected free text only after an output instruction")
                continue
            j = self._match(piece, slot_i, filled)
            if j is None:
                raise TagGrammarError(
                    f"position {pos}: found {piece}, expected {self._expected(slot_i, filled)}")
            last = self.grammar[j]
            filled.add(last.name)
            slot_i = j if last.repeat else j + 1

    def _match(self, tag: str, start: int, filled: set) -> int | None:
        for j in range(start, len(self.grammar)):
            slot = self.grammar[j]
            if tag in slot.tokens and (slot.requires is None or slot.requires in filled):
                return j
            if slot.required and slot.name not in filled:
                return None
        return None

    def _expected(self, start: int, filled: set) -> str:
        names = []
        for slot in self.grammar[start:]:
            if slot.requires is None or slot.requires in filled:
                names.append(f"{slot.name} ({_short(slot.tokens, self.tokens)})")
            if slot.required and slot.name not in filled:
                break
        return " or ".join(names) if names else "the end of the tag sequence"


def _short(tokens: frozenset[str], order: tuple[str, ...], limit: int = 6) -> str:
    ordered = [t for t in order if t in tokens]
    more = f", ... {len(ordered) - limit} more" if len(ordered) > limit else ""
    return ", ".join(ordered[:limit]) + more


def _expand(item) -> list[str]:
    if isinstance(item, str):
        return [item]
    start, stop = item["range"]
    scale = item.get("scale", 1)
    return [item["format"].format(i * scale if scale != 1 else i) for i in range(start, stop)]


@lru_cache(maxsize=8)
def load_vocab(path: str | Path | None = None) -> TagVocab:
    path = Path(path) if path else tags_dir() / "tokens.yaml"
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    groups = {g["name"]: tuple(t for item in g["tokens"] for t in _expand(item))
              for g in spec["groups"]}
    tokens = tuple(t for g in groups.values() for t in g)
    dupes = sorted({t for t in tokens if tokens.count(t) > 1}) if len(set(tokens)) != len(tokens) else []
    if dupes:
        raise ValueError(f"{path}: duplicate tag tokens {dupes[:5]}")
    roles = dict(spec["roles"])
    for role, tok in roles.items():
        if tok not in set(tokens):
            raise ValueError(f"{path}: role {role!r} names {tok!r}, which is not a token")
    grammar = tuple(_slot(s, groups) for s in spec["grammar"])
    ts = spec["timestamps"]
    return TagVocab(tokens, groups, roles, grammar,
                    TimestampSpec(float(ts["step_s"]), float(ts["min_silence_s"]), float(ts["max_s"])),
                    str(path))


def _slot(s: dict, groups: dict) -> Slot:
    toks = set(s.get("tokens", ()))
    for g in s.get("groups", ()):
        toks.update(groups[g])
    toks -= set(s.get("exclude", ()))
    return Slot(s["slot"], frozenset(toks), bool(s.get("required")), bool(s.get("repeat")),
                s.get("requires"))
