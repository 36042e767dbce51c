"""The pools file (tags/instructions.yaml) the chat generator (chat_tasks.py) phrases from: loaded
and checked once, before any conversation is made.

    load_pools(path=None) -> Pools   families, task map, fixed pools, word tables; checked
    InstructionError                 a file that does not fit what the generator fills

Families phrase the first exchange about a sample; the other pools (follow-ups, compare, the
text-only instructions of TEXT_OPS; FIXED) have fixed paths and placeholders. A family's questions
and each text instruction need MIN_PHRASINGS distinct phrasings, follow-up and compare questions
MIN_SECONDARY.

Choices the issue left open (those of the generation itself: chat_tasks.py):
- A family's `form` (FORMS) says which placeholders each of its pools may and must use; the file
  is checked against it at load, and against the registry (every task mapped or skipped).
No torch here: generation runs in ingest workers and tests without it.
"""
from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..errors import UserError
from ..paths import tags_dir
from ..tasks import CLOSED_KINDS, load_tasks

MIN_PHRASINGS = 10   # questions per family and per text instruction (the floor)
MIN_SECONDARY = 5    # questions per follow-up and compare pool
_PUNCT = string.punctuation + "¿¡。？！，、"


class InstructionError(UserError):
    """tags/instructions.yaml (or another pools file) does not fit what the generator fills."""


@dataclass(frozen=True)
class Form:
    kinds: tuple[str, ...]      # target kinds of the tasks it phrases
    chat_kind: str              # meta["kind"] of its conversations
    pools: Mapping[str, str]    # pool -> "may use | must use" (placeholder names)


def _spec_sets(spec: str) -> tuple[frozenset, frozenset]:
    may, _, must = spec.partition("|")
    return frozenset(may.split()) | frozenset(must.split()), frozenset(must.split())


FORMS = {
    "closed": Form(CLOSED_KINDS, "closed", {"questions": "thing options", "answers": "thing | label",
                                            "why": "thing others options | label"}),
    "transcript": Form(("text",), "transcript", {"questions": "language", "answers": "language | text"}),
    "translation": Form(("text",), "open", {"questions": "source | target", "answers": "source target | text"}),
    "caption": Form(("text",), "open", {"questions": "", "answers": "| text"}),
    "qa": Form(("text",), "open", {"questions": "| question", "answers": "| answer"}),
    "number": Form(("number",), "open", {"questions": "thing", "answers": "| value"}),
    "list": Form(("words", "spans", "multilabel", "transcripts", "entities", "slots", "tag_seq"), "open",
                 {"questions": "query", "answers": "count text query | items", "none": "text query",
                  "item": "word start end label value type text n"}),
    "composite": Form(("composite",), "open", {"questions": "", "answers": "| pitch velocity instrument"}),
}
# the other pools: path in the file -> ("may use | must use", least distinct phrasings)
FIXED = {
    "follow_up.word_time.questions": ("| word", MIN_SECONDARY),
    "follow_up.word_time.answers": ("word | start end", 1),
    "follow_up.why.questions": ("", MIN_SECONDARY),
    "follow_up.duration.questions": ("", MIN_SECONDARY),
    "follow_up.duration.answers": ("| seconds", 1),
    "follow_up.domain.questions": ("", MIN_SECONDARY),
    "follow_up.domain.answers": ("| kind", 1),
    "compare.item": ("thing | n label", 1),
    "compare.same.questions": ("count | thing", MIN_SECONDARY),
    "compare.same.yes": ("thing | label", 1),
    "compare.same.no": ("thing | each", 1),
    "compare.which.questions": ("thing | label", MIN_SECONDARY),
    "compare.which.answers": ("label thing | n", 1),
    "compare.each.questions": ("thing count", MIN_SECONDARY),
    "compare.each.answers": ("thing | each", 1),
}
TEXT_OPS = {  # the text-only instructions: words -> the one right answer
    "count_words": lambda words: str(len(words)),
    "reverse_words": lambda words: " ".join(reversed(words)),
    "upper_case": lambda words: " ".join(words).upper(),
    "lower_case": lambda words: " ".join(words).lower(),
    "first_word": lambda words: words[0].strip(_PUNCT) or words[0],
    "last_word": lambda words: words[-1].strip(_PUNCT) or words[-1],
}
FIXED.update({f"text.{op}.{pool}": spec for op in TEXT_OPS
              for pool, spec in (("questions", ("| text", MIN_PHRASINGS)), ("answers", ("text | value", 1)))})


@dataclass(frozen=True)
class Pools:
    path: str
    families: Mapping[str, dict]      # name -> {"form": str, pool: tuple[str, ...]}
    tasks: Mapping[str, dict]         # task -> {"family", "thing"?}
    skip: Mapping[str, str]           # task -> reason
    fixed: Mapping[str, tuple[str, ...]]  # FIXED's pools by path ("compare.same.yes")
    transcribe_with: str              # the family that transcribes before a word-time question
    label_words: Mapping[str, str]
    domain_words: Mapping[str, str]
    numbers: tuple[str, ...]
    languages: Mapping[str, str]      # code -> name


# ------------------------------------------------------------------------------ loading

def _placeholders(s: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(s) if name is not None}


def _templates(where: str, raw, spec: str, least: int) -> tuple[str, ...]:
    allowed, required = _spec_sets(spec)
    if not isinstance(raw, list) or not all(isinstance(s, str) and s.strip() for s in raw):
        raise InstructionError(f"{where}: a list of non-empty strings is needed")
    if len(set(raw)) < least:
        raise InstructionError(f"{where}: {len(set(raw))} distinct phrasings, at least {least} needed")
    for s in raw:
        try:
            names = _placeholders(s)
        except ValueError as e:
            raise InstructionError(f"{where}: {s!r} does not parse ({e})") from None
        if names - allowed:
            raise InstructionError(f"{where}: unknown placeholder {{{sorted(names - allowed)[0]}}} in {s!r} "
                                   f"(allowed: {', '.join(sorted(allowed)) or 'none'})")
        if required - names:
            raise InstructionError(f"{where}: {s!r} lacks {{{sorted(required - names)[0]}}}")
    return tuple(raw)


def _get(spec: Mapping, path: str, where: str):
    node, keys = spec, path.split(".")
    for i, k in enumerate(keys):
        if not isinstance(node, Mapping) or k not in node:
            raise InstructionError(f"{where}: missing key {'.'.join(keys[:i + 1])}")
        node = node[k]
    return node


def _families(spec: Mapping, where: str) -> dict:
    out = {}
    for name, fam in (_get(spec, "families", where) or {}).items():
        form = FORMS.get(fam.get("form") if isinstance(fam, Mapping) else None)
        if form is None:
            raise InstructionError(f"{where}: families.{name}.form must be one of {', '.join(FORMS)}")
        extra = set(fam) - set(form.pools) - {"form"}
        if extra:
            raise InstructionError(f"{where}: families.{name}.{sorted(extra)[0]}: not a pool of form {fam['form']}")
        out[name] = {"form": fam["form"]}
        for pool, pspec in form.pools.items():
            key = f"families.{name}.{pool}"
            out[name][pool] = _templates(f"{where}: {key}", _get(spec, key, where), pspec,
                                         MIN_PHRASINGS if pool == "questions" else 1)
    return out


def _check_tasks(tasks: Mapping, skip: Mapping, families: Mapping, where: str) -> None:
    """Every registry task maps to a family whose form phrases its target kind, or is skipped."""
    for task in load_tasks():
        name, entry = task.name, tasks.get(task.name)
        if name in skip:
            continue
        if not isinstance(entry, Mapping) or entry.get("family") not in families:
            raise InstructionError(f"{where}: tasks.{name}: needs a family of families (or an entry in skip)")
        fam = families[entry["family"]]
        if task.target.kind not in FORMS[fam["form"]].kinds:
            raise InstructionError(f"{where}: tasks.{name}: form {fam['form']} cannot phrase a "
                                   f"{task.target.kind} target")
        if fam["form"] in ("closed", "number") and not entry.get("thing"):
            raise InstructionError(f"{where}: tasks.{name}.thing: a closed or number task names what is asked")
        for free in task.free_text_fields:  # the sample's own question or query must be asked
            if any(free not in _placeholders(q) for q in fam["questions"]):
                raise InstructionError(f"{where}: families.{entry['family']}.questions: every phrasing needs "
                                       f"{{{free}}} (task {name})")
    unknown = sorted(set(tasks) - set(load_tasks().names))
    if unknown:
        raise InstructionError(f"{where}: tasks.{unknown[0]}: not a task of the registry")


def load_pools(path: str | Path | None = None) -> Pools:
    """The pools file (default tags/instructions.yaml), checked: placeholders, phrasing counts,
    every registry task covered. A bad file raises InstructionError naming the file and key."""
    path = Path(path) if path else tags_dir() / "instructions.yaml"
    where = str(path)
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise InstructionError(f"{where}: cannot read ({' '.join(str(e).split())})") from None
    if not isinstance(spec, Mapping) or spec.get("version") != 1:
        raise InstructionError(f"{where}: version: 1 expected")
    families = _families(spec, where)
    tasks, skip = dict(_get(spec, "tasks", where) or {}), dict(spec.get("skip") or {})
    _check_tasks(tasks, skip, families, where)
    fixed = {key: _templates(f"{where}: {key}", _get(spec, key, where), pspec, least)
             for key, (pspec, least) in FIXED.items()}
    first = spec["follow_up"].get("transcribe_with")
    if families.get(first, {}).get("form") != "transcript":
        raise InstructionError(f"{where}: follow_up.transcribe_with: a family of form transcript is needed")
    langs = yaml.safe_load((tags_dir() / "languages.yaml").read_text(encoding="utf-8"))["languages"]
    return Pools(where, families, tasks, skip, fixed, first, dict(spec.get("label_words") or {}),
                 dict(_get(spec, "domain_words", where)), tuple(_get(spec, "numbers", where)),
                 {x["code"]: x["name"] for x in langs})

