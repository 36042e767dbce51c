"""A decoded conversation sample (chat_ingest.py's shards) -> an Example for training.

Every audio goes through the training front end (features.log_mel); the messages are rendered
by conversation.render_conversation (loss on assistant answers only), cut after the last whole
exchange within `LoaderConfig.max_conversation_tokens`; the audios of the dropped exchanges are
dropped too. A conversation whose first exchange alone does not fit is skipped and counted as
`conversation_too_long` (loader._examples).

Conversations are not augmented (no speed perturbation, noise or SpecAugment): their answers may
describe the audio's timing, pitch or loudness, which augmentation would make wrong.
"""
from __future__ import annotations

from ..audio import SAMPLE_RATE
from ..conversation import ChatRenderer, Conversation
from ..conversation import render_conversation
from ..tokenizer import Tokenizer
from .collate import Example
from .features import log_mel


class ChatFeaturizer:
    def __init__(self, tok: Tokenizer, n_mels: int, pad_to_30s: bool, max_tokens: int, compat: str | None = None):
        self.chat, self.n_mels, self.pad_to_30s, self.max_tokens = ChatRenderer(tok), n_mels, pad_to_30s, max_tokens
        self.compat = compat

    def __call__(self, sample: dict) -> Example:
        key = str(sample.get("key"))
        conv = Conversation.from_json(sample["messages"], key)
        clips = [log_mel(a, self.n_mels, self.pad_to_30s, self.compat) for a in sample.get("audios", ())]
        r = render_conversation(conv, self.chat, [n for *_, n in clips], self.max_tokens)
        kept = clips[: r.audios]
        seconds = 30.0 * len(kept) if self.pad_to_30s else sum(len(a) for a in sample.get("audios", ())[: r.audios]) / SAMPLE_RATE
        return Example(key, sample["task"], -1, None, sum(f for _, f, _ in kept), r.ids, r.loss_mask, -1,
                       sum(n for *_, n in kept), float(seconds), tuple((m, f) for m, f, _ in kept))
