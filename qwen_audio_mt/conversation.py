"""Conversations in Qwen-Audio-Chat's ChatML: parsed, built, rendered with an assistant-only loss.

    <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n
    <|im_start|>user\\nAudio 1:<audio>a.flac</audio>\\nwhat does the person say?<|im_end|>\\n
    <|im_start|>assistant\\nThe person says: "..."<|im_end|>

`render_conversation(conv, tok, n_audio) -> (ids, loss_mask)` (nanochat's shape) writes each
message as Qwen-Audio-Chat does (qwen_generation_utils.make_context, finetune.py):
`<|im_start|>` + encode(role) + encode("\\n") + content + `<|im_end|>`, messages joined by
encode("\\n"); the content's text pieces go through the BPE, each `<audio>REF</audio>` becomes
`<audio>` + one placeholder per audio position + `</audio>` (the REF is never tokenized).

Loss (choices the released scripts do not make the same way): 1 on an assistant turn's content
and its `<|im_end|>`; 0 on the system and user turns, on role headers (`<|im_start|>assistant\\n`),
on audio spans and on the newlines between messages. (Qwen's finetune.py also trains the
`<|im_start|>`/`<|im_end|>` of user turns; here only the assistant's answer and its stop are
learned.)

Too long for the window: training cuts after the last whole (user, assistant) exchange that fits,
never mid-turn (`ConversationTooLong` when the first exchange alone does not fit: the caller
skips and counts it); a chat prompt drops whole exchanges, oldest first (`render_prompt`).

No torch here: the tokenizer, tags and this module stay importable without it.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from .errors import UserError
from .paths import tags_dir
from .tokenizer import Tokenizer

ROLES = ("system", "user", "assistant")
_AUDIO = re.compile(r"<audio>(.*?)</audio>", re.DOTALL)
_IM_START, _IM_END = "<|im_start|>", "<|im_end|>"


class ConversationError(UserError):
    """A conversation that does not parse or does not alternate user and assistant turns."""


class ConversationTooLong(ConversationError):
    """Its first exchange alone does not fit the token window."""


@dataclass(frozen=True)
class Message:
    role: str       # system | user | assistant
    content: str    # text; audio inline as <audio>REF</audio>


@dataclass(frozen=True)
class Conversation:
    messages: tuple[Message, ...]
    key: str = ""

    def audios(self) -> list[str]:
        """The audio references, in order of appearance (Audio 1, Audio 2, ...)."""
        return [ref for m in self.messages for ref in _AUDIO.findall(m.content)]

    def with_audios(self, refs: Sequence[str]) -> "Conversation":
        """The same conversation with its audio references replaced, in order, by `refs`."""
        it = iter(refs)
        msgs = tuple(Message(m.role, _AUDIO.sub(lambda _: f"<audio>{next(it)}</audio>", m.content))
                     for m in self.messages)
        return Conversation(msgs, self.key)

    def to_json(self) -> list[dict]:
        return [{"role": m.role, "content": m.content} for m in self.messages]

    @classmethod
    def from_json(cls, messages: Sequence[dict], key: str = "") -> "Conversation":
        try:
            conv = cls(tuple(Message(str(m["role"]), str(m["content"])) for m in messages), key)
        except (KeyError, TypeError) as e:
            raise ConversationError(f"{key or 'conversation'}: a message needs 'role' and 'content' ({e})") from None
        check(conv)
        return conv


@dataclass(frozen=True)
class ChatStrings:
    system: str          # default system message
    audio_label: str     # "Audio {n}:" before each <audio>


@lru_cache(maxsize=4)
def chat_strings(path: str | None = None) -> ChatStrings:
    spec = yaml.safe_load(Path(path or tags_dir() / "chat.yaml").read_text(encoding="utf-8"))
    return ChatStrings(spec["system"], spec["audio_label"])


def user_content(text: str, audios: Sequence[str] = (), first: int = 1, strings: ChatStrings | None = None) -> str:
    """A user turn as Qwen-Audio-Chat's from_list_format writes it: "Audio N:<audio>REF</audio>\\n"
    per audio (numbered from `first` over the conversation), then the text."""
    s = strings or chat_strings()
    head = "".join(f"{s.audio_label.format(n=first + i)}<audio>{ref}</audio>\n" for i, ref in enumerate(audios))
    return head + text


def check(conv: Conversation, complete: bool = True) -> None:
    """An optional system message, then user and assistant alternating from a user turn; with
    `complete`, ending with an assistant turn (what training needs)."""
    msgs = list(conv.messages)
    name = conv.key or "conversation"
    for m in msgs:
        if m.role not in ROLES:
            raise ConversationError(f"{name}: unknown role {m.role!r} (one of {', '.join(ROLES)})")
        if m.role != "user" and _AUDIO.search(m.content):
            raise ConversationError(f"{name}: an audio in the {m.role} turn (only user turns carry audio)")
    if msgs and msgs[0].role == "system":
        msgs = msgs[1:]
    if not msgs:
        raise ConversationError(f"{name}: no user turn")
    for i, m in enumerate(msgs):
        want = "user" if i % 2 == 0 else "assistant"
        if m.role != want:
            raise ConversationError(f"{name}: turn {i + 1} is {m.role!r}, expected {want!r} "
                                    "(user and assistant alternate, from a user turn)")
    if complete and msgs[-1].role != "assistant":
        raise ConversationError(f"{name}: ends with a user turn (nothing to learn from)")


def parse_chatml(text: str, key: str = "") -> Conversation:
    """One conversation in ChatML. Accepts what Qwen-Audio-Chat's own sample file holds: newlines
    written as the two characters backslash-n (one conversation per line), no newline between
    `<|im_end|>` and the next `<|im_start|>`, and a last turn without its `<|im_end|>`."""
    text = text.strip().replace("\\n", "\n")
    if not text.startswith(_IM_START):
        raise ConversationError(f"{key or 'conversation'}: does not start with {_IM_START}")
    messages = []
    for n, chunk in enumerate(text.split(_IM_START)[1:], 1):
        body, ended, rest = chunk.partition(_IM_END)
        if rest.strip():
            raise ConversationError(f"{key or 'conversation'}: text between turns after turn {n}: {rest.strip()[:40]!r}")
        role, nl, content = body.partition("\n")
        if not nl:
            raise ConversationError(f"{key or 'conversation'}: turn {n} has no role line")
        messages.append(Message(role.strip(), content))
    conv = Conversation(tuple(messages), key)
    check(conv)
    return conv


def to_chatml(conv: Conversation) -> str:
    return "\n".join(f"{_IM_START}{m.role}\n{m.content}{_IM_END}" for m in conv.messages)


@dataclass(frozen=True)
class RenderedChat:
    ids: list[int]
    loss_mask: list[int]
    messages: int        # messages kept (after a cut)
    first_audio: int     # the kept messages hold audios first_audio .. first_audio + audios - 1
    audios: int


class ChatRenderer:
    """Ids of messages; built once per tokenizer (the frame's ids are looked up by name)."""

    def __init__(self, tok: Tokenizer):
        self.tok = tok
        self.start, self.end = tok.role_id("im_start"), tok.role_id("im_end")
        self.nl = tok.encode("\n")
        self.headers = {r: [self.start, *tok.encode(r), *self.nl] for r in ROLES}

    def content(self, text: str, n_audio: Sequence[int]) -> list[int]:
        """Text pieces through the BPE, each <audio>REF</audio> as an audio span of n positions."""
        ids, pieces = [], _AUDIO.split(text)
        for i, piece in enumerate(pieces):
            if i % 2 == 0:
                ids += self.tok.encode(piece) if piece else []
            else:
                ids += [self.tok.role_id("audio_start"), *[self.tok.role_id("audio_placeholder")] * n_audio[i // 2],
                        self.tok.role_id("audio_end")]
        return ids

    def message(self, m: Message, n_audio: Sequence[int]) -> tuple[list[int], list[int]]:
        body = self.content(m.content, n_audio)
        head = self.headers[m.role]
        learn = 1 if m.role == "assistant" else 0
        return [*head, *body, self.end], [0] * len(head) + [learn] * (len(body) + 1)


def _groups(conv: Conversation) -> list[list[Message]]:
    """[system?], then [user, assistant] exchanges (a trailing lone user turn is its own group)."""
    msgs = list(conv.messages)
    groups = [[msgs.pop(0)]] if msgs and msgs[0].role == "system" else []
    while msgs:
        groups.append(msgs[:2])
        msgs = msgs[2:]
    return groups


def _audio_count(group: list[Message]) -> int:
    return sum(len(_AUDIO.findall(m.content)) for m in group)


def _render_groups(r: ChatRenderer, groups: list[list[Message]], n_audio: Sequence[int]) -> list[tuple[list, list]]:
    """Per group: (ids, mask), each message after the first preceded by the newline between
    messages. `n_audio`: the lengths of the audios these groups hold, in order."""
    out, used, first = [], 0, True
    for group in groups:
        ids, mask = [], []
        for m in group:
            if not first:
                ids, mask = ids + r.nl, mask + [0] * len(r.nl)
            k = len(_AUDIO.findall(m.content))
            mi, mm = r.message(m, n_audio[used: used + k])
            ids, mask, used, first = ids + mi, mask + mm, used + k, False
        out.append((ids, mask))
    return out


def _need(conv: Conversation, n_audio: Sequence[int]) -> None:
    if len(n_audio) != len(conv.audios()):
        raise ConversationError(f"{conv.key or 'conversation'}: {len(conv.audios())} audios but "
                                f"{len(n_audio)} audio lengths given")


def _renderer(tok: Tokenizer | ChatRenderer) -> ChatRenderer:
    return tok if isinstance(tok, ChatRenderer) else ChatRenderer(tok)


def render_conversation(conv: Conversation, tok: Tokenizer | ChatRenderer, n_audio: Sequence[int] = (),
                        max_tokens: int | None = None) -> RenderedChat:
    """(ids, loss_mask) of a whole conversation; cut after the last exchange within `max_tokens`."""
    _need(conv, n_audio)
    groups = _groups(conv)
    ids, mask, kept, audios = [], [], 0, 0
    for group, (gi, gm) in zip(groups, _render_groups(_renderer(tok), groups, n_audio)):
        if max_tokens is not None and len(ids) + len(gi) > max_tokens:
            break
        ids, mask, kept, audios = ids + gi, mask + gm, kept + len(group), audios + _audio_count(group)
    if not any(mask):
        raise ConversationTooLong(f"{conv.key or 'conversation'}: its first exchange alone does not fit "
                                  f"the {max_tokens}-token window")
    return RenderedChat(ids, mask, kept, 0, audios)


def render_prompt(conv: Conversation, tok: Tokenizer | ChatRenderer, n_audio: Sequence[int] = (),
                  max_tokens: int | None = None) -> RenderedChat:
    """The model input to answer `conv`'s last (user) turn: the messages, then
    `\\n<|im_start|>assistant\\n`. Whole earlier exchanges are dropped, oldest first, until it fits
    `max_tokens` (the system message and the last user turn always stay)."""
    _need(conv, n_audio)
    check(conv, complete=False)
    name = conv.key or "conversation"
    if conv.messages[-1].role != "user":
        raise ConversationError(f"{name}: a prompt ends with a user turn")
    r = _renderer(tok)
    groups = _groups(conv)
    system = [groups.pop(0)] if groups[0][0].role == "system" else []
    tail = [*r.nl, *r.headers["assistant"]]
    for drop in range(len(groups)):
        kept = system + groups[drop:]
        first = sum(_audio_count(g) for g in groups[:drop])
        ids = [i for gi, _ in _render_groups(r, kept, n_audio[first:]) for i in gi] + tail
        if max_tokens is None or len(ids) <= max_tokens:
            return RenderedChat(ids, [0] * len(ids), sum(map(len, kept)), first, len(n_audio) - first)
    raise ConversationTooLong(f"{name}: the last user turn alone needs {len(ids)} tokens > {max_tokens}")
