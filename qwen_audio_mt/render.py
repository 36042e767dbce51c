"""render(sample) -> (ids, loss_mask): audio span, prompt tags, target, end token.

    <audio> [[[AUDIO:modality]]] x N </audio>  prompt tags (+ free text)  target  <|endoftext|>
    \\_________________ loss 0 ____________________________________/  \\_____ loss 1 _____/

N is the number of 40-ms LLM positions of the clip (audio.n_audio_positions), or 750 with
30-s padding. Fast path: for each (task, languages, timestamps) the prompt is compiled once into
id runs; per sample only free text (question, target text) goes through `encode_ordinary`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import NamedTuple

from .audio import MAX_AUDIO_POSITIONS, n_audio_positions
from .targets import TargetError, render_target, target_for
from .tasks import LANGUAGE_SLOTS, Task, TaskError, TaskRegistry, load_tasks
from .tags import Text
from .tokenizer import Tokenizer, TokenizerSpec


IGNORE = -100  # label of positions without loss (loss_mask 0; PyTorch cross-entropy's ignore_index)


class Rendered(NamedTuple):
    ids: list[int]
    loss_mask: list[int]


class Renderer:
    def __init__(self, tokenizer: Tokenizer | None = None, registry: TaskRegistry | None = None,
                 pad_to_30s: bool = False, label_sets: Mapping[str, Sequence[str]] | None = None):
        self.tok = tokenizer or Tokenizer.from_spec(TokenizerSpec())
        self.registry = registry or load_tasks()
        self.vocab = self.registry.vocab
        self.pad_to_30s = pad_to_30s  # Qwen-Audio pads every clip to 30 s (750 positions)
        self._compiled: dict[tuple, tuple] = {}
        # A dataset's own closed label set (ESC-50's 50 classes, ...) replaces the registry's
        # for that task; the registry's sets describe the embedded corpus.
        self._tasks = {name: replace(task, target=replace(task.target, labels=tuple(label_sets[name])))
                       for name, task in self.registry.tasks.items() if name in (label_sets or {})}
        t = self.tok
        self._audio = (t.role_id("audio_start"), t.role_id("audio_placeholder"), t.role_id("audio_end"))
        self._choice = t.role_id("choice")

    def task(self, name: str) -> Task:
        return self._tasks.get(name) or self.registry.get(name)

    # ------------------------------------------------------------------ prompt
    def languages(self, task: Task, audio_lang: str | None, text_lang: str | None) -> tuple:
        """Resolve the task's language placeholders (None where the template fixes them)."""
        a = t = None
        if "audio_lang" in task.placeholders:
            default = task.defaults.get("audio_lang")
            # A task's default (AQA's <|en|>, as Qwen-Audio's prompt has it) wins over a sample
            # that only says "unknown" (non-speech audio).
            a = default if default and audio_lang in (None, "unknown") else audio_lang
            if not a:
                raise TaskError(f"task {task.name}: needs an audio language")
            self.vocab.language_tag(a)
        if "text_lang" in task.placeholders:
            t = text_lang or task.defaults.get("text_lang") or (a if a and a != "unknown" else "en")
            if t == "unknown":
                raise TaskError(f"task {task.name}: text language cannot be 'unknown'")
            self.vocab.language_tag(t)
        return a, t

    def prompt_pieces(self, task: str | Task, audio_lang=None, text_lang=None, timestamps=False,
                      fields: Mapping | None = None) -> list[str]:
        """The prompt as tags (str) and free text (Text), checked against the grammar."""
        task = self.task(task) if isinstance(task, str) else task
        if timestamps and "timestamps" not in task.placeholders:
            raise TaskError(f"task {task.name}: takes no timestamps choice")
        a, t = self.languages(task, audio_lang, text_lang)
        values = {"audio_lang": a, "text_lang": t}
        out = []
        for p in task.pieces:
            if isinstance(p, Text) or not p.startswith("{"):
                out.append(p)
            elif p[1:-1] in LANGUAGE_SLOTS:
                out.append(self.vocab.language_tag(values[p[1:-1]]))
            elif p == "{timestamps}":
                out.append(self.vocab.role("timestamps" if timestamps else "no_timestamps"))
            else:
                out.extend(self._free_text(task, p[1:-1], fields))
        self.vocab.validate(out)
        return out

    def prompt_text(self, *args, **kwargs) -> str:
        return "".join(self.prompt_pieces(*args, **kwargs))

    def _free_text(self, task: Task, name: str, fields: Mapping | None) -> list[str]:
        if fields is None or fields.get(name) is None:
            return [Text("{" + name + "}")]  # shown as a slot when no sample is given
        if name == "choices":
            return [p for c in fields[name] for p in (self.vocab.role("choice"), Text(str(c)))]
        return [Text(str(fields[name]))]

    def _compile(self, task: Task, a, t, timestamps: bool) -> tuple:
        key = (task.name, a, t, timestamps)
        if key not in self._compiled:
            runs, ids = [], []
            for p in self.prompt_pieces(task, a, t, timestamps, fields=None):
                if isinstance(p, Text):
                    if p.startswith("{") and p[1:-1] in task.free_text_fields:
                        runs += [tuple(ids), p[1:-1]]
                        ids = []
                    else:
                        ids += self.tok.encode(p)
                else:
                    ids.append(self.tok.token_id(p))
            runs.append(tuple(ids))
            self._compiled[key] = tuple(runs)
        return self._compiled[key]

    # ------------------------------------------------------------------ samples
    def n_audio(self, sample: Mapping) -> int | None:
        if self.pad_to_30s:
            return MAX_AUDIO_POSITIONS
        if sample.get("n_audio_positions") is not None:
            return int(sample["n_audio_positions"])
        if sample.get("duration") is not None:
            return n_audio_positions(float(sample["duration"]))
        return None

    def audio_span(self, n_audio: int) -> list[int]:
        """<audio>, n placeholders, </audio>."""
        return [self._audio[0], *([self._audio[1]] * n_audio), self._audio[2]]

    def prefix(self, sample: Mapping, n_audio: int | None = None) -> list[int]:
        """The ids a model is given: the audio span and the prompt (what `render` puts before the
        target). `sample` needs the task, its languages and the free text its prompt takes."""
        task = self.task(sample["task"])
        a, t = self.languages(task, sample.get("audio_lang"), sample.get("text_lang"))
        n = n_audio if n_audio is not None else self.n_audio(sample)
        ids = [] if n is None else self.audio_span(n)
        for run in self._compile(task, a, t, bool(sample.get("timestamps", False))):
            if isinstance(run, tuple):
                ids.extend(run)
            else:
                ids.extend(self._field_ids(task, run, sample))
        return ids

    def render(self, sample: Mapping, n_audio: int | None = None) -> Rendered:
        task = self.task(sample["task"])
        timestamps = bool(sample.get("timestamps", False))
        ids = self.prefix(sample, n_audio)
        try:
            tgt = render_target(target_for(task, timestamps), sample, self.tok, task.name)
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, TargetError):
                raise
            raise TargetError(f"task {task.name}: bad labels in sample {sample.get('key', '')!r}: {e}") from e
        n_prompt = len(ids)
        ids.extend(tgt)
        ids.append(self.tok.end_id)
        return Rendered(ids, [0] * n_prompt + [1] * (len(tgt) + 1))

    def _field_ids(self, task: Task, name: str, sample: Mapping) -> list[int]:
        value = sample.get(name)
        if value is None:
            raise TargetError(f"task {task.name}: sample has no {name!r} (its prompt needs it)")
        if name == "choices":
            return [i for c in value for i in (self._choice, *self.tok.encode(str(c)))]
        return self.tok.encode(str(value))


def render(sample: Mapping, renderer: Renderer | None = None) -> Rendered:
    """Convenience: render with the default tokenizer (whisper base) and registry."""
    return (renderer or _default()).render(sample)


_DEFAULT: list[Renderer] = []


def _default() -> Renderer:
    if not _DEFAULT:
        _DEFAULT.append(Renderer())
    return _DEFAULT[0]
