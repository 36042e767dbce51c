"""A transformers tokenizer and Qwen2AudioProcessor that carry our ids, for an exported folder.

- Tokenizer: the base BPE ranks converted by transformers' own TikTokenConverter (byte-level BPE
  with the same pre-tokenisation pattern), then our special tokens added in id order, so every
  tag lands on the id our tiktoken Encoding gives it; checked token by token after building.
- Feature extractor: WhisperFeatureExtractor with our mel bins, 30-s windows, 16 kHz.
- Processor: `audio_token` = our placeholder, `audio_bos_token`/`audio_eos_token` = our
  `<audio>`/`</audio>`; chat template = Qwen2-Audio's shape with those tokens and the system turn
  of our chat data (conversation.py): `Audio N: <audio>[[[AUDIO:modality]]]</audio>\n` per clip.
"""
from __future__ import annotations

from ..tokenizer import PATTERNS, Tokenizer
from .interop import InteropError

_CHAT_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n{{ system }}<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}{% if 'audio' in content or 'audio_url' in content %}"
    "{% set audio_count.value = audio_count.value + 1 %}Audio {{ audio_count.value }}: {{ bos }}{{ slot }}{{ eos }}\n"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def chat_template(tok: Tokenizer, system: str) -> str:
    names = {"bos": tok.vocab.role("audio_start"), "slot": tok.vocab.role("audio_placeholder"),
             "eos": tok.vocab.role("audio_end"), "system": system}
    out = _CHAT_TEMPLATE
    for key, value in names.items():
        out = out.replace("{{ %s }}" % key, value)
    return out


def hf_tokenizer(tok: Tokenizer):
    """A PreTrainedTokenizerFast giving our ids for text and for every special token."""
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter
    from tokenizers import AddedToken
    converter = TikTokenConverter(vocab_file=str(tok.spec.base_path()), pattern=PATTERNS[tok.spec.pattern_name()])
    backend = converter.converted()
    if backend.get_vocab_size() != tok.n_base:
        raise InteropError(f"{tok.spec.base_path()}: its ranks are not 0..{tok.n_base - 1} without gaps, so a "
                           "transformers tokenizer cannot carry the same ids")
    backend.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in tok.vocab.tokens])
    end = tok.vocab.role("end")
    hf = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=end, pad_token=end)
    wrong = [t for t in tok.vocab.tokens if hf.convert_tokens_to_ids(t) != tok.token_id(t)]
    if wrong:
        raise InteropError(f"token {wrong[0]} got id {hf.convert_tokens_to_ids(wrong[0])} in the transformers "
                           f"tokenizer, {tok.token_id(wrong[0])} in ours")
    return hf


def qwen2_audio_processor(tok: Tokenizer, n_mels: int, system: str):
    from transformers import Qwen2AudioProcessor, WhisperFeatureExtractor
    features = WhisperFeatureExtractor(feature_size=n_mels, sampling_rate=16_000, hop_length=160, chunk_length=30,
                                       n_fft=400, padding_value=0.0, return_attention_mask=True)
    return Qwen2AudioProcessor(feature_extractor=features, tokenizer=hf_tokenizer(tok),
                               chat_template=chat_template(tok, system),
                               audio_token=tok.vocab.role("audio_placeholder"),
                               audio_bos_token=tok.vocab.role("audio_start"), audio_eos_token=tok.vocab.role("audio_end"))
