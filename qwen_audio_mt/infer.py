"""Asking a model about audio files: decode, prompt, generate, parse, long audio by windows.

    model, renderer = load_model("outputs/train/RUN/export")          # model.export
    answers = Answerer(model, renderer).answer(["a.wav", "b.mp3"], Query("asr", audio_lang="en"))

- Audio: any file soundfile reads (wav, flac, ogg, mp3; mono or stereo; any rate), decoded,
  downmixed and resampled to 16 kHz by ingest's own code (`data.ingest.load_audio`), then the
  training front end (`data.features.log_mel`).
- Prompt: a registry task with its languages, `timestamps` and the free text its prompt takes
  (question, choices, query), rendered exactly as training renders it; or a raw prompt of tags
  (by name) and text. The audio span always comes first.
- A file that cannot be answered (missing, empty, undecodable, too long for its task) gets an
  Answer whose `error` is one line naming the file and the reason; the others are answered. A
  bad task, language or missing prompt field raises InferenceError for the whole call.
- Closed label sets generate at most their longest label and the end token.
- Long audio (longform.py): `concat` tasks answer every window in the same batched call and
  join the answers; `window` tasks with a closed label set rank the labels in every window and
  take the best mean log-probability; an open `window` task keeps the window answer with the
  best mean token log-probability.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from .audio import CHUNK_SECONDS, SAMPLE_RATE
from .data.features import log_mel
from .data.ingest import Reject, load_audio
from .errors import UserError
from .generate import GenerationConfig, Generator, Request, encode_clip
from .longform import (
    DEFAULT_OVERLAP_S,
    LongAudioError,
    check_long,
    merge_fields,
    window_starts,
)
from .parse import Parsed, parse_output
from .scoring import scorer
from .tags import TagGrammarError, Text
from .targets import TargetError, render_target, target_for
from .tasks import CLOSED_KINDS, TaskError, parse_template
from .tokenizer import TokenizerError


class InferenceError(UserError):
    """A query that cannot be asked (unknown task or language, a missing prompt field...)."""


@dataclass(frozen=True)
class Query:
    task: str | None = None          # a registry task, or None with `prompt`
    audio_lang: str | None = None
    text_lang: str | None = None
    timestamps: bool = False
    fields: dict = field(default_factory=dict)   # free text the prompt takes: question, choices, query
    prompt: str | None = None        # a raw prompt of tags and text, instead of a task


@dataclass
class Answer:
    audio: str
    task: str | None
    prompt: str = ""
    text: str = ""                   # the output, tags by name (long audio: the windows' outputs joined)
    parsed: dict | None = None       # the sample fields it stands for (parse.py); None: did not parse
    parse_error: str | None = None
    tokens: list[int] = field(default_factory=list)
    seconds: float = 0.0             # the audio's duration
    windows: list[dict] = field(default_factory=list)  # long audio: start, end, text of each window
    error: str | None = None         # the file could not be answered

    def to_json(self) -> dict:
        out = {"audio": self.audio, "task": self.task, "prompt": self.prompt, "text": self.text,
               "parsed": self.parsed, "tokens": self.tokens, "seconds": self.seconds}
        for key in ("parse_error", "error"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        if self.windows:
            out["windows"] = self.windows
        return out


@dataclass
class _Clip:
    answer: Answer
    mode: str                        # short | concat | window
    starts: list[float]              # window starts and ends, seconds
    ends: list[float]
    pieces: list[tuple[torch.Tensor, list[int]]]  # per window: LLM positions, prefix ids


class Answerer:
    def __init__(self, model, renderer, gen: GenerationConfig = GenerationConfig(),
                 overlap_s: float = DEFAULT_OVERLAP_S, pad_to_30s: bool = False, batch_rows: int = 256):
        self.model, self.renderer, self.tok = model, renderer, renderer.tok
        self.gen, self.overlap_s, self.pad_to_30s, self.batch_rows = gen, overlap_s, pad_to_30s, batch_rows
        self.n_mels, self.compat = model.encoder.cfg.n_mels, model.encoder.cfg.compat

    # ------------------------------------------------------------------ prompt
    def _sample(self, q: Query) -> dict:
        return {**q.fields, "task": q.task, "audio_lang": q.audio_lang, "text_lang": q.text_lang,
                "timestamps": q.timestamps}

    def check(self, q: Query) -> str:
        """The prompt as text; InferenceError (one line) when the query cannot be asked."""
        if (q.task is None) == (q.prompt is None):
            raise InferenceError("give a task or a raw prompt (one of them)")
        try:
            if q.prompt is not None:
                self._raw_ids(q.prompt)
                return q.prompt
            task = self.renderer.task(q.task)
            self.renderer.prefix(self._sample(q), n_audio=1)  # languages, timestamps, prompt fields
            return self.renderer.prompt_text(task, q.audio_lang, q.text_lang, q.timestamps, self._sample(q))
        except (TaskError, TargetError, TokenizerError, TagGrammarError, ValueError) as e:
            raise InferenceError(str(e)) from None

    def _raw_ids(self, prompt: str) -> list[int]:
        ids = []
        for piece in parse_template(prompt):
            if isinstance(piece, Text):
                ids += self.tok.encode(piece)
            elif piece.startswith("{"):
                raise InferenceError(f"raw prompt: {piece} is a template placeholder; write the text itself")
            else:
                ids.append(self.tok.token_id(piece))
        return ids

    def _prefix(self, q: Query, n_audio: int) -> list[int]:
        if q.prompt is not None:
            return self.renderer.audio_span(n_audio) + self._raw_ids(q.prompt)
        return self.renderer.prefix(self._sample(q), n_audio)

    # ------------------------------------------------------------------ entry point
    def answer(self, paths: list, q: Query) -> list[Answer]:
        prompt = self.check(q)
        task = self.renderer.task(q.task) if q.task else None
        answers, clips = [], []
        for path in paths:
            a = Answer(str(path), q.task, prompt)
            answers.append(a)
            try:
                audio = load_audio(path)
                a.seconds = round(len(audio) / SAMPLE_RATE, 3)
                clips.append(self._clip(a, audio, check_long(task, a.seconds), q))
            except Reject as r:
                a.error = f"{path}: {r.reason.replace('_', ' ')}" + (f" ({r.detail})" if r.detail else "")
            except LongAudioError as e:
                a.error = f"{path}: {e}"
        ranked = [c for c in clips if c.mode == "window" and task.target.kind in CLOSED_KINDS]
        self._rank(ranked, q, task)
        self._generate([c for c in clips if c not in ranked], q, task)
        return answers

    def _clip(self, a: Answer, audio: np.ndarray, mode: str, q: Query) -> _Clip:
        win = round(CHUNK_SECONDS * SAMPLE_RATE)
        starts = window_starts(len(audio), CHUNK_SECONDS, self.overlap_s) if mode != "short" else [0]
        pieces = []
        for s in starts:
            mel, _, n_audio = log_mel(audio[s: s + win], self.n_mels, self.pad_to_30s, self.compat)
            pieces.append((encode_clip(self.model, mel), self._prefix(q, n_audio)))
        ends = [min(s + win, len(audio)) / SAMPLE_RATE for s in starts]
        return _Clip(a, mode, [s / SAMPLE_RATE for s in starts], ends, pieces)

    # ------------------------------------------------------------------ generation
    def _budget(self, task) -> GenerationConfig:
        """A closed label set's answer is at most its longest label and the end token: no more
        is generated, whatever --max-new-tokens says."""
        if task is None or task.target.kind not in CLOSED_KINDS:
            return self.gen
        name = task.target.field
        longest = max(len(render_target(task.target, {name: x}, self.tok, task.name)) for x in task.target.labels)
        return replace(self.gen, max_new_tokens=min(self.gen.max_new_tokens, longest + 1))

    def _generate(self, clips: list[_Clip], q: Query, task) -> None:
        reqs = [Request(ids, pos) for c in clips for pos, ids in c.pieces]
        gens = iter(Generator(self.model, self.tok, self._budget(task)).generate(reqs))
        for c in clips:
            outs = [next(gens) for _ in c.pieces]
            parsed = [parse_output(task, g.tokens, self.tok, q.timestamps) if task else
                      Parsed(self.tok.decode(g.tokens), None) for g in outs]
            a = c.answer
            if c.mode == "window":  # an open clip-level task: the most confident window
                best = max(range(len(outs)), key=lambda i: outs[i].logprob / (len(outs[i].tokens) + 1))
                outs, parsed = [outs[best]], [parsed[best]]
            a.tokens = [t for g in outs for t in g.tokens]
            if len(parsed) == 1:
                a.text, a.parsed, a.parse_error = parsed[0].text, parsed[0].fields, parsed[0].parse_error
            else:
                self._join(a, c, parsed, target_for(task, q.timestamps))
            if c.mode != "short":
                a.windows = [{"start": s, "end": e, "text": p.text} for s, e, p in zip(c.starts, c.ends, parsed)]

    def _join(self, a: Answer, c: _Clip, parsed: list[Parsed], target) -> None:
        a.text = " ".join(p.text for p in parsed)
        good = [(p.fields, s, e) for p, s, e in zip(parsed, c.starts, c.ends) if p.fields is not None]
        bad = [f"window {s:.1f}-{e:.1f} s: {p.parse_error}" for p, s, e in zip(parsed, c.starts, c.ends)
               if p.fields is None]
        a.parsed = merge_fields(target, good, self.overlap_s) if good else None
        a.parse_error = "; ".join(bad) or None

    # ------------------------------------------------------------------ closed sets over windows
    def _rank(self, clips: list[_Clip], q: Query, task) -> None:
        """Every window scores every label; the label with the best mean log-probability wins."""
        if not clips:
            return
        target, name = task.target, task.target.field
        labels = target.labels
        reqs, conts = [], []
        for c in clips:
            for pos, ids in c.pieces:
                targets = [self.renderer.render({**self._sample(q), name: label}, n_audio=len(pos))[0][len(ids):]
                           for label in labels]
                reqs.append(Request(ids, pos))
                conts.append(targets)
        scores = iter(scorer(self.model, self.renderer, self.batch_rows).score(reqs, conts))
        for c in clips:
            lp = torch.stack([next(scores)[:, 0] for _ in c.pieces])  # [windows, labels]
            mean = lp.mean(0).tolist()
            pick = max(range(len(labels)), key=lambda j: (mean[j], -j))  # ties: the first label
            a = c.answer
            a.tokens = render_target(target, {name: labels[pick]}, self.tok, task.name)
            a.text, a.parsed = self.tok.decode(a.tokens), {name: labels[pick]}
            a.windows = [{"start": s, "end": e, "text": labels[int(row.argmax())], "logprob": round(float(row.max()), 4)}
                         for s, e, row in zip(c.starts, c.ends, lp)]
