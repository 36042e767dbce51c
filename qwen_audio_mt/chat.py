"""Talking to a chat model: `ChatSession` (multi-turn, multi-audio) and `replies` / `reply_batch`
(many conversations at once, for the SFT evaluation). Both run the same code.

    from qwen_audio_mt.chat import ChatSession
    chat = ChatSession.load("outputs/sft/RUN/export")
    chat.ask("What does the speaker say?", audio=["a.flac"])
    chat.ask("And in this one?", audio=["b.mp3"])   # "Audio 2:", the first audio is still there
    chat.save("conversation.json")

A user turn is written as Qwen-Audio-Chat writes it (conversation.user_content): one
"Audio N:<audio>REF</audio>\\n" per attached audio, numbered over the conversation, then the text.
The prompt is `render_prompt`'s: ChatML up to "\\n<|im_start|>assistant\\n".

Choices the issue left open:
- Audio: any file soundfile reads, decoded, downmixed and resampled to 16 kHz by ingest's own
  code (`data.ingest.load_audio`), or a 16-kHz mono array; then the training front end
  (`data.features.log_mel`, not padded to 30 s unless the renderer is).
- Long audio (> 30 s): cut into consecutive 30-s windows without overlap (the last one shorter),
  each window its own `<audio>` span, all under the one "Audio N:" label. Every span then looks
  like a clip the model trained on, and the model hears each second once; inference's overlapping
  windows exist to merge separate answers, which a chat does not do. A tail too short for one
  LLM position (< 40 ms) is dropped. (SFT data holding long audio should write it the same way.)
- History window (`max_tokens`, default 6144, Qwen's make_context `max_window_size`): bounds the
  prompt, not prompt + reply; it is lowered to the LLM's max_position_embeddings minus
  max_new_tokens when that is smaller (the tiny default: 2,048 - 512), and None means that bound. Whole earlier exchanges are dropped, oldest first; the system
  message and the new user turn always stay (a turn that alone does not fit raises
  ConversationTooLong). Only the audios the kept messages hold are encoded (once per session:
  a clip's positions are cached) and spliced, in order.
- Stops: `<|im_end|>` and `<|endoftext|>` are always among the stop tokens (added to any
  GenerationConfig given); a reply also ends at `max_new_tokens` (default 512).
- The reply is the decoded tokens, stripped of surrounding whitespace (Qwen's chat does the
  same); that text is what joins the history (re-tokenized next turn, as in Qwen-Audio-Chat).
- Errors: an audio that cannot be read raises ChatAudioError (one line: the file and the
  reason) before anything changes, as does any error of `ask`: the session is as it was.
- `system=None` takes the default system message (tags/chat.yaml); `system=""` writes none.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from .audio import CHUNK_SECONDS, SAMPLE_RATE
from .conversation import (
    ChatRenderer,
    Conversation,
    ConversationError,
    ConversationTooLong,
    Message,
    chat_strings,
    render_prompt,
    user_content,
)
from .data.features import log_mel
from .data.ingest import Reject, load_audio
from .errors import UserError
from .generate import GenerationConfig, Generator, Request, encode_clips

STOP = ("<|im_end|>", "<|endoftext|>")
DEFAULT_WINDOW = 6144          # prompt tokens kept (Qwen's make_context max_window_size)
DEFAULT_MAX_NEW_TOKENS = 512
_AUDIO = re.compile(r"<audio>(.*?)</audio>", re.DOTALL)
_WINDOW = CHUNK_SECONDS * SAMPLE_RATE


class ChatError(UserError):
    """A question that cannot be asked (names what is wrong, on one line)."""


class ChatAudioError(ChatError):
    """An audio that cannot be attached: names the file and the reason."""


@dataclass
class Clip:
    """One attached audio: its 30-s windows' log-mels and LLM position counts; the windows'
    positions are encoded the first time a prompt holds them, then kept."""
    ref: str                               # what the user turn writes between <audio> and </audio>
    seconds: float
    mels: list[torch.Tensor]
    sizes: list[int]                       # LLM positions per window
    positions: list[torch.Tensor | None] = field(default_factory=list)

    def __post_init__(self):
        self.positions = self.positions or [None] * len(self.mels)


def make_clip(audio, n_mels: int, pad_to_30s: bool = False, ref: str | None = None,
              compat: str | None = None) -> Clip:
    """A Clip from a path (any format, any rate) or a 16-kHz mono array; ChatAudioError otherwise."""
    if isinstance(audio, (str, os.PathLike)):
        ref = str(audio) if ref is None else ref
        try:
            audio = load_audio(audio)
        except Reject as r:
            detail = f" ({r.detail})" if r.detail and r.detail != str(audio) else ""
            raise ChatAudioError(f"{ref}: {r.reason.replace('_', ' ')}{detail}") from None
    ref = "array" if ref is None else ref
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ChatAudioError(f"{ref}: an audio array must be 16-kHz mono samples [n], not shape {audio.shape}")
    mels, sizes = [], []
    for start in range(0, len(audio), _WINDOW):
        mel, _, n = log_mel(audio[start: start + _WINDOW], n_mels, pad_to_30s, compat)
        if n:  # a tail under one position (40 ms) says nothing
            mels.append(mel)
            sizes.append(n)
    if not mels:
        raise ChatAudioError(f"{ref}: too short ({len(audio) / SAMPLE_RATE:.3f} s; at least 0.04 s)")
    return Clip(ref, round(len(audio) / SAMPLE_RATE, 3), mels, sizes)


def chat_generation(gen: GenerationConfig | None = None) -> GenerationConfig:
    """`gen` (default: greedy, 512 new tokens) with the chat stops added."""
    gen = gen or GenerationConfig(max_new_tokens=DEFAULT_MAX_NEW_TOKENS)
    return replace(gen, stop=tuple(dict.fromkeys((*gen.stop, *STOP))))


def chat_renderer(tok) -> ChatRenderer:
    """A ChatRenderer from a Tokenizer, a task Renderer (its .tok) or a ChatRenderer."""
    if isinstance(tok, ChatRenderer):
        return tok
    return ChatRenderer(getattr(tok, "tok", tok))


@dataclass
class Reply:
    text: str
    tokens: list[int]              # generated, without the stop token
    ids: list[int]                 # the prompt's ids (audio spans as placeholders)
    audio: torch.Tensor | None     # the positions spliced into the prompt's placeholders, in order
    audios: list[int]              # indices (0-based, in the conversation) of the audios it holds
    messages: int                  # messages of the conversation the prompt kept
    finished: bool                 # ended at a stop token (False: max_new_tokens)


def _expand(conv: Conversation, clips: Sequence[Clip]) -> tuple[Conversation, list[int]]:
    """Each audio's span repeated once per window (same REF), and every window's size in order."""
    if len(conv.audios()) != len(clips):
        raise ChatError(f"{conv.key or 'conversation'}: {len(conv.audios())} audios in the text but "
                        f"{len(clips)} given")
    it = iter(clips)

    def spans(m: re.Match) -> str:
        return f"<audio>{m.group(1)}</audio>" * len(next(it).sizes)
    msgs = tuple(Message(m.role, _AUDIO.sub(spans, m.content)) for m in conv.messages)
    return Conversation(msgs, conv.key), [n for c in clips for n in c.sizes]


def _prompt(r: ChatRenderer, conv: Conversation, clips: Sequence[Clip], max_tokens: int | None):
    """(rendered prompt, indices of the kept clips). Exchanges drop whole, so the kept windows
    are the windows of a suffix of the clips."""
    wide, sizes = _expand(conv, clips)
    rendered = render_prompt(wide, r, sizes, max_tokens)
    first, kept = 0, []
    for i, c in enumerate(clips):
        if first >= rendered.first_audio:
            kept.append(i)
        first += len(c.sizes)
    return rendered, kept


def _encode(model, clips: Sequence[Clip]) -> None:
    """Encode every window of these clips not encoded yet, in one batched call."""
    todo = [(c, w) for c in clips for w, p in enumerate(c.positions) if p is None]
    if todo:
        for (c, w), pos in zip(todo, encode_clips(model, [c.mels[w] for c, w in todo])):
            c.positions[w] = pos


def replies(model, tok, conversations: Sequence[Conversation], clips: Sequence[Sequence[Clip]],
            generation: GenerationConfig | None = None, max_tokens: int | None = None) -> list[Reply]:
    """The assistant's next reply to each conversation (each ends with a user turn; `clips[i]`
    are conversation i's audios in order). One batched, KV-cached generation over all of them."""
    r = chat_renderer(tok)
    prompts = [_prompt(r, conv, cs, max_tokens) for conv, cs in zip(conversations, clips, strict=True)]
    _encode(model, [cs[i] for cs, (_, kept) in zip(clips, prompts) for i in kept])
    requests = []
    for cs, (rendered, kept) in zip(clips, prompts):
        pos = [p for i in kept for p in cs[i].positions]
        requests.append(Request(rendered.ids, torch.cat(pos) if pos else None))
    gens = Generator(model, r.tok, chat_generation(generation)).generate(requests)
    return [Reply(r.tok.decode(g.tokens).strip(), list(g.tokens), req.ids, req.audio, kept, rendered.messages,
                  g.finished) for g, req, (rendered, kept) in zip(gens, requests, prompts)]


def reply_batch(model, tok, conversations: Sequence[Conversation], audios: Sequence[Sequence],
                generation: GenerationConfig | None = None, max_tokens: int | None = None,
                pad_to_30s: bool = False) -> list[str]:
    """Reply texts for conversations ending with a user turn; `audios[i]`: conversation i's
    audios in order of appearance, as 16-kHz mono arrays (or paths, or Clips)."""
    n_mels = model.encoder.cfg.n_mels
    clips = []
    for conv, aa in zip(conversations, audios, strict=True):
        refs = conv.audios()
        if len(refs) != len(aa):
            raise ChatError(f"{conv.key or 'conversation'}: {len(refs)} audios in the text but {len(aa)} given")
        clips.append([a if isinstance(a, Clip) else make_clip(a, n_mels, pad_to_30s, ref, model.encoder.cfg.compat) for a, ref in zip(aa, refs)])
    return [rep.text for rep in replies(model, tok, conversations, clips, generation, max_tokens)]


class ChatSession:
    """A conversation with a model: `ask` a question (with audio), get the reply; the history
    keeps both. See the module docstring for the choices made."""

    def __init__(self, model, renderer, system: str | None = None, max_tokens: int | None = DEFAULT_WINDOW,
                 generation: GenerationConfig | None = None, pad_to_30s: bool | None = None):
        """`renderer`: a task Renderer (load_model's), a Tokenizer or a ChatRenderer;
        `pad_to_30s`: None follows the renderer (Qwen-Audio's fixed 30-s clips when it pads)."""
        self.model, self.renderer = model, chat_renderer(renderer)
        self.system = chat_strings().system if system is None else system
        self.generation = chat_generation(generation)
        # prompt + reply within the positions the LLM was built for (the tiny default: 2,048)
        room = getattr(model.llm.config, "max_position_embeddings", None)
        room = room - self.generation.max_new_tokens if room else None
        self.max_tokens = room if max_tokens is None or (room and room < max_tokens) else max_tokens
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ChatError(f"max_new_tokens={self.generation.max_new_tokens} leaves no room for a prompt in "
                            f"the model's {room + self.generation.max_new_tokens} positions")
        self.pad_to_30s = bool(getattr(renderer, "pad_to_30s", False)) if pad_to_30s is None else pad_to_30s
        self.last: Reply | None = None
        self.reset()

    @classmethod
    def load(cls, model_dir, device: str = "cpu", **kw) -> "ChatSession":
        """A session on an export folder or a Lightning .ckpt (offline: HF_HUB_OFFLINE=1)."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from .model.export import load_model
        model, renderer = load_model(model_dir, device)
        return cls(model, renderer, **kw)

    def reset(self) -> None:
        """Forget the conversation (the system message stays); audio numbering restarts at 1."""
        self._messages: list[Message] = []
        self._clips: list[Clip] = []
        self.last = None

    @property
    def history(self) -> Conversation:
        """The whole conversation so far (the system message first), not only the window."""
        head = (Message("system", self.system),) if self.system else ()
        return Conversation(head + tuple(self._messages))

    @property
    def audios(self) -> list[Clip]:
        return list(self._clips)

    def clip(self, audio, ref: str | None = None) -> Clip:
        """Decode and window one audio (a path or a 16-kHz array) for a later `ask`."""
        return make_clip(audio, self.model.encoder.cfg.n_mels, self.pad_to_30s, ref, self.model.encoder.cfg.compat)

    def ask(self, text: str, audio: Sequence = ()) -> str:
        """The reply to `text` with `audio` (paths, 16-kHz arrays or Clips) attached to this turn
        as the next "Audio N:". On any error the session is unchanged."""
        if isinstance(audio, (str, os.PathLike, np.ndarray, Clip)):
            audio = [audio]
        audio = audio or ()
        if "<audio>" in text or "</audio>" in text:
            raise ChatError("the question contains <audio>: attach audio with audio=[...] (CLI: /audio PATH)")
        clips = [a if isinstance(a, Clip) else self.clip(a) for a in audio]
        user = Message("user", user_content(text, [c.ref for c in clips], len(self._clips) + 1))
        conv = Conversation(self.history.messages + (user,), key="chat")
        try:
            rep = replies(self.model, self.renderer, [conv], [self._clips + clips], self.generation,
                          self.max_tokens)[0]
        except ConversationTooLong as e:
            raise ConversationTooLong(f"{e} (a larger window: ChatSession(max_tokens=...), chat --window)") from None
        self._messages += [user, Message("assistant", rep.text)]
        self._clips += clips
        self.last = rep
        return rep.text

    def dropped(self) -> int:
        """Earlier exchanges the last prompt left out of its window."""
        if self.last is None:
            return 0
        return (len(self.history.messages) - 1 - self.last.messages) // 2

    def save(self, path) -> Path:
        """JSON: {"messages": [{"role", "content"}...] (audio paths inline as <audio>PATH</audio>),
        "audios": [{"ref", "seconds", "windows"}...]}: the same `messages` shape SFT data reads."""
        path = Path(path)
        out = {"messages": self.history.to_json(),
               "audios": [{"ref": c.ref, "seconds": c.seconds, "windows": len(c.sizes)} for c in self._clips]}
        try:
            path.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        except OSError as e:
            raise ChatError(f"{path}: cannot write the conversation ({e.strerror or e})") from None
        return path


__all__ = ["ChatSession", "ChatError", "ChatAudioError", "Clip", "Reply", "make_clip", "replies", "reply_batch",
           "ConversationError", "ConversationTooLong", "DEFAULT_WINDOW", "STOP"]
