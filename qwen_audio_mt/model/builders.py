"""Build an AudioLM from a ModelConfig: random tiny default, or real local checkpoints.

- Encoder: random, or a local Whisper `.pt` (the format `whisper.load_model(path)` reads),
  loaded with `weights_only=True`; its `ln_post` seeds the adapter's layer norm.
- LLM: any transformers AutoModelForCausalLM from a local folder (offline: HF_HUB_OFFLINE=1,
  local_files_only), or from a config (the tiny default: a small Qwen2). Embedding rows are
  resized to the tokenizer, rounded up to a multiple of `pad_vocab_to`.
- Trainable flags per part; `new_token_rows` lets the rows added for the tag tokens train while
  the LLM is frozen (Qwen-Audio pretraining) by masking the old rows' gradients.
- `lora.r > 0`: LoRA through peft on the LLM, after the flags (lora.py: what trains then).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from ..errors import ConfigError
from ..tokenizer import Tokenizer, TokenizerSpec
from .adapter import AudioAdapter
from .audio_lm import AudioLM
from .encoder import EncoderConfig, WhisperEncoder, load_whisper_checkpoint
from .lora import LoRAConfig, apply_lora

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class LLMConfig:
    path: str | None = None             # local folder of a transformers checkpoint
    model_type: str = "qwen2"           # with `config`: the architecture to build at random
    config: dict | None = None          # e.g. {hidden_size: 256, num_hidden_layers: 4, ...}
    trust_remote_code: bool = False     # a checkpoint folder that ships its own modeling code
    dtype: str = "float32"

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ConfigError(f"model.llm.dtype={self.dtype!r}: allowed are {', '.join(DTYPES)}")
        check_llm_shape(self.config or {})


def check_llm_shape(conf: dict) -> None:
    """Attention heads divide the width, and query heads are a multiple of key/value heads (GQA)."""
    width, heads = conf.get("hidden_size"), conf.get("num_attention_heads")
    kv = conf.get("num_key_value_heads")
    key = "model.llm.config"
    if width and heads and width % heads:
        raise ConfigError(f"{key}.hidden_size={width} is not divisible by {key}.num_attention_heads={heads}")
    if heads and kv and heads % kv:
        raise ConfigError(f"{key}.num_attention_heads={heads} is not a multiple of {key}.num_key_value_heads={kv}")


@dataclass(frozen=True)
class Trainable:
    encoder: bool = True
    adapter: bool = True
    llm: bool = True
    new_token_rows: bool = True         # tag-token rows train even where the LLM is frozen


@dataclass(frozen=True)
class ReleasedConfig:
    """Weights to start from: a released checkpoint folder in another layout (model/interop.py)."""
    format: str | None = None   # "qwen2-audio" (transformers' Qwen2Audio) | "qwen-audio" (QWen remote code)
    path: str | None = None     # a local folder: config.json + safetensors

    def __post_init__(self):
        if self.format not in (None, "qwen2-audio", "qwen-audio"):
            raise ConfigError(f"model.released.format={self.format!r}: allowed are qwen2-audio, qwen-audio")
        if bool(self.format) != bool(self.path):
            raise ConfigError("model.released needs both format and path (or neither)")


@dataclass(frozen=True)
class ModelConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    tokenizer: TokenizerSpec = field(default_factory=TokenizerSpec)
    trainable: Trainable = field(default_factory=Trainable)
    gradient_checkpointing: bool = False
    pad_vocab_to: int = 64
    lora: LoRAConfig = field(default_factory=LoRAConfig)  # r=0: off
    released: ReleasedConfig = field(default_factory=ReleasedConfig)  # start from a released checkpoint


def _round_up(n: int, k: int) -> int:
    return -(-n // k) * k


def build_llm(cfg: LLMConfig, n_vocab: int, pad_to: int) -> tuple[nn.Module, int]:
    """(model, rows that existed before resizing: 0 for a random model)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub
    from transformers import AutoConfig, AutoModelForCausalLM
    dtype = DTYPES[cfg.dtype]
    if cfg.path:
        llm = AutoModelForCausalLM.from_pretrained(cfg.path, dtype=dtype, local_files_only=True,
                                                   trust_remote_code=cfg.trust_remote_code)
        old = llm.get_input_embeddings().num_embeddings
    else:
        saved = (cfg.config or {}).get("vocab_size", 0)  # a saved or released size that holds our ids stays
        rows = saved if saved >= n_vocab else _round_up(n_vocab, pad_to)
        conf = AutoConfig.for_model(cfg.model_type, **{**(cfg.config or {}), "vocab_size": rows})
        llm = AutoModelForCausalLM.from_config(conf, dtype=dtype)
        old = 0
    if llm.get_input_embeddings().num_embeddings < n_vocab:
        llm.resize_token_embeddings(n_vocab, pad_to_multiple_of=pad_to)
    return llm, old


def assemble(cfg: ModelConfig, tok: Tokenizer) -> tuple[AudioLM, int]:
    """The AudioLM of `cfg`'s shapes (weights: a Whisper checkpoint and an LLM folder where the
    config names them, else random), and the rows its LLM's embedding had before resizing.
    Works under `torch.device("meta")` when nothing is loaded (the released-checkpoint imports)."""
    enc_cfg, enc_state = cfg.encoder, None
    if cfg.encoder.checkpoint:
        enc_cfg, enc_state = load_whisper_checkpoint(cfg.encoder.checkpoint)
        enc_cfg = replace(enc_cfg, compat=cfg.encoder.compat)
        if enc_cfg.n_mels != cfg.encoder.n_mels:  # the loader computes features from the config's n_mels
            raise ConfigError(f"model.encoder.n_mels={cfg.encoder.n_mels} but {cfg.encoder.checkpoint} was trained "
                              f"on {enc_cfg.n_mels} mel bins: set model.encoder.n_mels={enc_cfg.n_mels}")
    encoder = WhisperEncoder(enc_cfg)
    if enc_state is not None:
        encoder.whisper.load_state_dict(enc_state)
    llm, old_rows = build_llm(cfg.llm, tok.n_vocab, cfg.pad_vocab_to)
    adapter = AudioAdapter(enc_cfg.n_state, llm.get_input_embeddings().embedding_dim)
    adapter.ln_post.load_state_dict(encoder.whisper.ln_post.state_dict())
    encoder.whisper.ln_post = nn.Identity()  # lives in the adapter now; no unused parameters for DDP
    ids = {role: tok.role_id(role) for role in ("audio_placeholder", "audio_start", "audio_end")}
    return AudioLM(encoder, adapter, llm, ids), old_rows


def build_model(cfg: ModelConfig, tokenizer: Tokenizer | None = None, state: Mapping | None = None) -> AudioLM:
    """The model of `cfg`; `state`: plain (LoRA-free) weights to start from, e.g. a pretraining
    run's for chat SFT, loaded before LoRA wraps the LLM (so its key names are the plain ones).
    With `cfg.released`, the weights of a released checkpoint (model/interop.py)."""
    tok = tokenizer or Tokenizer.from_spec(cfg.tokenizer)
    if cfg.released.path:
        model, old_rows = load_released(cfg, tok)
    else:
        model, old_rows = assemble(cfg, tok)
    model.encoder.gradient_checkpointing = cfg.gradient_checkpointing
    if cfg.gradient_checkpointing:
        model.llm.gradient_checkpointing_enable()
    # The checkpoint's rows that hold tokens of its own: Qwen's padding rows past its specials are
    # where the tag tokens land (from [[[AUDIO:modality]]] on), and those must train.
    apply_trainable(model, cfg.trainable, min(old_rows, tok.role_id("audio_placeholder")))
    if state is not None:
        model.load_state_dict(state)
    # under LoRA the special tokens' rows (tags, chat markers) are the new ones, whatever the checkpoint
    return apply_lora(model, cfg.lora, range(tok.n_base, tok.n_vocab) if cfg.trainable.new_token_rows else None)


def load_released(cfg: ModelConfig, tok: Tokenizer) -> tuple[AudioLM, int]:
    """A released checkpoint's weights in our model (the folder's shapes; see interop.py)."""
    if cfg.released.format == "qwen2-audio":
        from .qwen2_audio import load_qwen2_audio
        model, _, rows = load_qwen2_audio(cfg, tok)
    else:
        from .qwen_audio import load_qwen_audio
        model, _, rows = load_qwen_audio(cfg, tok)
    return model, rows


def apply_trainable(model: AudioLM, t: Trainable, old_rows: int) -> None:
    model.encoder.requires_grad_(t.encoder)
    model.adapter.requires_grad_(t.adapter)
    model.llm.requires_grad_(t.llm)
    if t.llm or not t.new_token_rows:
        return
    rows = {id(w): w for w in (model.llm.get_input_embeddings().weight, model.llm.get_output_embeddings().weight)}
    for weight in rows.values():  # tied embeddings are one tensor: one hook
        weight.requires_grad_(True)
        weight.register_hook(lambda g, n=old_rows: torch.cat([torch.zeros_like(g[:n]), g[n:]]))


def count_parameters(model: nn.Module) -> dict[str, int]:
    parts = {"encoder": model.encoder, "adapter": model.adapter, "llm": model.llm}
    out = {name: sum(p.numel() for p in m.parameters()) for name, m in parts.items()}
    out["trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return out
