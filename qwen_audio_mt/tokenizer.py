"""A tiktoken Encoding = base BPE ranks + the tag tokens of tags/tokens.yaml.

- Base: whisper's bundled `multilingual.tiktoken` (offline, 50,257 ranks) by default, or any
  `.tiktoken` ranks file by path. With Qwen's `qwen.tiktoken` (151,643 ranks) the tag tokens land
  on Qwen-Audio's released ids.
- Free text is always encoded with `encode_ordinary`: a transcript that contains "<|en|>" stays
  text. Tags are looked up by name, never by id arithmetic.
- Pickles as its spec, so DataLoader workers rebuild it (cached per process) instead of copying
  150k ranks through a pipe.
"""
from __future__ import annotations

import base64
import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import tiktoken

from .errors import UserError
from .tags import TagVocab, load_vocab

# Pre-tokenisation patterns of the two bases this project knows. Choice not fixed by Qwen-Audio
# for foreign bases: a file named qwen*.tiktoken gets Qwen's pattern, anything else GPT-2's
# (whisper's); pass `pattern=` to choose.
PATTERNS = {
    "gpt2": r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
    "qwen": r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""",
}
WHISPER_BASE = "whisper"


class TokenizerError(UserError):
    """Bad tokenizer input: a missing base file, an unknown token name, a malformed ranks file."""


@dataclass(frozen=True)
class TokenizerSpec:
    base: str = WHISPER_BASE   # "whisper" or a path to a .tiktoken ranks file
    pattern: str | None = None  # "gpt2" | "qwen"; None: chosen from the base's file name
    tags: str | None = None     # tokens.yaml path; None: the repo's tags/tokens.yaml

    def base_path(self) -> Path:
        if self.base == WHISPER_BASE:
            # The asset ships inside openai-whisper (no download); found without importing
            # whisper, which would pull in torch.
            spec = importlib.util.find_spec("whisper")
            if spec is None or not spec.submodule_search_locations:
                raise TokenizerError("base 'whisper' needs openai-whisper installed")
            return Path(spec.submodule_search_locations[0]) / "assets" / "multilingual.tiktoken"
        return Path(self.base)

    def pattern_name(self) -> str:
        if self.pattern:
            if self.pattern not in PATTERNS:
                raise TokenizerError(f"unknown pattern {self.pattern!r}; known: {sorted(PATTERNS)}")
            return self.pattern
        return "qwen" if self.base_path().name.startswith("qwen") else "gpt2"


def read_ranks(path: Path) -> dict[bytes, int]:
    """Parse a .tiktoken file (base64 token, rank per line). Read here rather than through
    tiktoken.load, whose cache is keyed by path and would serve a stale copy of a changed file."""
    if not path.is_file():
        raise TokenizerError(f"base ranks file not found: {path}")
    ranks = {}
    for n, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line:
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
        except ValueError as e:
            raise TokenizerError(f"{path}:{n}: not a '<base64> <rank>' line") from e
    return ranks


class Tokenizer:
    def __init__(self, spec: TokenizerSpec = TokenizerSpec()):
        self.spec = spec
        self.vocab: TagVocab = load_vocab(spec.tags)
        ranks = read_ranks(spec.base_path())
        self.n_base = max(ranks.values()) + 1
        self.special_ids = {tok: self.n_base + i for i, tok in enumerate(self.vocab.tokens)}
        self.encoding = tiktoken.Encoding(
            name=f"qwen-audio-mt:{spec.base_path().name}",
            pat_str=PATTERNS[spec.pattern_name()],
            mergeable_ranks=ranks,
            special_tokens=self.special_ids,
        )
        self.id_to_special = {i: t for t, i in self.special_ids.items()}
        self.end_id = self.token_id(self.vocab.role("end"))

    @classmethod
    def from_spec(cls, spec: TokenizerSpec) -> "Tokenizer":
        return _cached(spec)

    def __reduce__(self):
        return (Tokenizer.from_spec, (self.spec,))

    @property
    def n_vocab(self) -> int:
        return self.n_base + len(self.special_ids)

    def token_id(self, token: str) -> int:
        """Id of a special token by its full name, e.g. '<|en|>' or '<audio>'."""
        try:
            return self.special_ids[token]
        except KeyError:
            raise TokenizerError(f"unknown special token {token!r}") from None

    def role_id(self, role: str) -> int:
        return self.special_ids[self.vocab.role(role)]

    def encode(self, text: str) -> list[int]:
        """Free text -> ids. Tag-looking text is ordinary text here, by design."""
        return self.encoding.encode_ordinary(text)

    def decode(self, ids) -> str:
        return self.encoding.decode(list(ids))

    def is_special(self, token_id: int) -> bool:
        return token_id in self.id_to_special

    def time_id(self, seconds: float) -> int:
        return self.special_ids[self.vocab.time_tag(seconds)]

    def seconds(self, token) -> float:
        """Seconds of a time token, given as id or as '<|1.23|>'; TokenizerError otherwise."""
        tok = self.id_to_special.get(token) if isinstance(token, int) else token
        if tok is None or tok not in self.vocab.groups["time"] or tok not in self.special_ids:
            raise TokenizerError(f"not a time token: {token!r}")
        return float(tok[2:-2])


@lru_cache(maxsize=4)
def _cached(spec: TokenizerSpec) -> Tokenizer:
    return Tokenizer(spec)
