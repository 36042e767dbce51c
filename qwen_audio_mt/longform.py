"""Long audio by sliding windows: cut a clip over 30 s into 30-s windows, merge the answers.

What a task does with a long clip is data (`long_audio` in tags/tasks.yaml):
- `concat` (transcription-like: ASR, translation, word timestamps, timed events, melody): each
  window is answered on its own, word and span times are offset by the window's start, and the
  answers are joined. Where two windows overlap, timed items (words, spans) are cut at the
  middle of the overlap (an item belongs to the window whose half its start falls in); untimed
  words are de-duplicated at word level: the longest run of words (case and punctuation
  ignored; at least two words) shared by the end of one window and the start of the next is kept once, and what
  either window says past that run inside the overlap is dropped (a word cut by a window edge).
- `window` (clip-level labels: language, speaker, scene, instrument...): every window is
  scored and the scores are combined (closed sets: the label with the highest mean
  log-probability over windows).
- `reject`: a long clip is refused with one line naming the task and the duration.

Windows: `window_s` long (30 s, Whisper's context), consecutive starts `window_s - overlap_s`
apart, the last window ending at the clip's end (it starts at `duration - window_s`, so it is
a full window and may overlap its neighbour by more than `overlap_s`).
"""
from __future__ import annotations

import math
import re
from difflib import SequenceMatcher

from .audio import CHUNK_SECONDS, SAMPLE_RATE
from .errors import UserError

DEFAULT_OVERLAP_S = 2.0   # a couple of words of shared context at every window edge
WORDS_PER_SECOND = 4      # fast speech; sizes the search for a shared run at a window edge
MIN_SHARED = 2            # a shared run of one word ("the") is as likely chance as overlap
_NORM = re.compile(r"[^\w']+")


class LongAudioError(UserError):
    """A clip too long for its task (names the task and the duration)."""


def window_starts(n_samples: int, window_s: float = CHUNK_SECONDS, overlap_s: float = DEFAULT_OVERLAP_S) -> list[int]:
    """Start sample of every window; a clip that fits in one window has the one start 0."""
    win, hop = round(window_s * SAMPLE_RATE), round((window_s - overlap_s) * SAMPLE_RATE)
    if not 0 <= overlap_s < window_s:
        raise LongAudioError(f"overlap {overlap_s} s must be >= 0 and shorter than the {window_s} s window")
    if n_samples <= win:
        return [0]
    starts = list(range(0, n_samples - win, hop))
    last = n_samples - win
    return starts + [last] if last > starts[-1] else starts


def check_long(task, seconds: float, window_s: float = CHUNK_SECONDS) -> str:
    """The task's long-audio mode for a clip of `seconds`: 'short', 'concat' or 'window'."""
    if seconds <= window_s:
        return "short"
    mode = getattr(task, "long_audio", "reject") if task is not None else "reject"
    if mode == "reject":
        name = f"task {task.name}" if task is not None else "a raw prompt"
        raise LongAudioError(f"{name} cannot take {seconds:.1f} s of audio: at most {window_s:g} s "
                             f"(its long_audio is 'reject' in tags/tasks.yaml; cut the audio first)")
    return mode


# ---------------------------------------------------------------------- merging
def _cuts(starts: list[float], ends: list[float]) -> list[tuple[float, float]]:
    """(from, to) of absolute time each window owns: overlaps are split at their middle."""
    mids = [(s + e) / 2 for s, e in zip(starts[1:], ends[:-1])]
    return list(zip([-math.inf] + mids, mids + [math.inf]))


def merge_timed(per_window: list[list[dict]], starts: list[float], ends: list[float]) -> list[dict]:
    """Words or spans ({..., start, end} in window time) -> one list in clip time."""
    out = []
    for items, offset, (lo, hi) in zip(per_window, starts, _cuts(starts, ends)):
        for item in items:
            moved = {**item, "start": round(item["start"] + offset, 2), "end": round(item["end"] + offset, 2)}
            if lo <= moved["start"] < hi:
                out.append(moved)
    return out


def _norm(word: str) -> str:
    return _NORM.sub("", word.lower())


def merge_sequences(per_window: list[list[str]], overlap_s: float = DEFAULT_OVERLAP_S) -> list[str]:
    """Words (or tokens) of consecutive windows -> one sequence, the overlap said once."""
    out: list[str] = []
    span = max(4, math.ceil(overlap_s * WORDS_PER_SECOND) + 2)
    for words in per_window:
        tail, head = out[-span:], words[:span]
        m = SequenceMatcher(None, [_norm(w) for w in tail], [_norm(w) for w in head], autojunk=False)
        match = m.find_longest_match(0, len(tail), 0, len(head))
        if out and match.size >= MIN_SHARED:
            del out[len(out) - len(tail) + match.a + match.size:]
            out += words[match.b + match.size:]
        else:
            out += words
    return out


def merge_text(texts: list[str], overlap_s: float = DEFAULT_OVERLAP_S) -> str:
    return " ".join(merge_sequences([t.split() for t in texts], overlap_s))


def merge_fields(target, windows: list[tuple[dict, float, float]], overlap_s: float = DEFAULT_OVERLAP_S) -> dict:
    """Parsed fields of consecutive windows ((fields, start s, end s), in order) -> one answer
    in clip time, by target kind (tasks.CONCAT_KINDS)."""
    name = target.field
    values = [w[name] for w, _, _ in windows]
    starts, ends = [s for _, s, _ in windows], [e for _, _, e in windows]
    if target.kind == "text":
        return {name: merge_text(values, overlap_s)}
    if target.kind == "tag_seq":
        return {name: merge_sequences(values, overlap_s)}
    if target.kind in ("words", "spans"):
        return {name: merge_timed(values, starts, ends)}
    raise LongAudioError(f"target kind {target.kind!r} cannot be joined across windows")
