"""Shared fixtures: tokenizers on both bases, the renderer, and the shared real-data root."""
from __future__ import annotations

import pytest

from qwen_audio_mt.paths import data_available, data_missing_reason, data_root
from qwen_audio_mt.render import Renderer
from qwen_audio_mt.tokenizer import Tokenizer, TokenizerSpec

QWEN_RANKS = ("qwen_audio", "qwen.tiktoken")


def need_data(*parts: str):
    """Skip (with the reason) when a file of the shared data root is missing."""
    if not data_available(*parts):
        pytest.skip(data_missing_reason(*parts))
    return data_root().joinpath(*parts)


@pytest.fixture(scope="session")
def whisper_tok() -> Tokenizer:
    return Tokenizer.from_spec(TokenizerSpec())


@pytest.fixture(scope="session")
def qwen_tok() -> Tokenizer:
    return Tokenizer.from_spec(TokenizerSpec(base=str(need_data(*QWEN_RANKS))))


@pytest.fixture(scope="session")
def renderer(whisper_tok) -> Renderer:
    return Renderer(whisper_tok)


@pytest.fixture(scope="session")
def qwen_renderer(qwen_tok) -> Renderer:
    return Renderer(qwen_tok)
