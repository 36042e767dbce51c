"""Qwen-Audio / Qwen-Audio-Chat folders (QWen remote code: config.json with model_type "qwen" and an
"audio" sub-dict, safetensors) in and out of AudioLM (../shared/INTEROP.md).

Key map (theirs -> ours):
    transformer.audio.{conv1,conv2,positional_embedding,blocks.i.*}  encoder.whisper.<same> (openai-whisper's names)
    transformer.audio.ln_post / proj                 adapter.ln_post / adapter.proj
    transformer.audio.audio_bos_eos_token.weight     adapter.bos_eos.weight
    transformer.wte / transformer.ln_f               llm.model.embed_tokens / llm.model.norm
    transformer.h.i.ln_1 / ln_2                      llm.model.layers.i.input_layernorm / post_attention_layernorm
    transformer.h.i.attn.c_attn.{weight,bias}        ...self_attn.{q,k,v}_proj (split in three along dim 0, q,k,v order)
    transformer.h.i.attn.c_proj.weight               ...self_attn.o_proj.weight
    transformer.h.i.mlp.w2 / w1 / c_proj             ...mlp.gate_proj / up_proj / down_proj
    lm_head.weight                                   llm.lm_head.weight
QWen computes `c_proj(w1(x) * silu(w2(x)))`: w2 is the gate (the swap is a 4e-2 logit error, tested).

Choices:
- The LLM becomes a native transformers Qwen2 (intermediate_size = QWen's // 2, one key/value head
  per query head, rms_norm_eps = layer_norm_epsilon, rope_theta = rotary_emb_base, untied). Qwen2
  always has q/k/v biases and no o_proj/MLP bias, which is QWen's c_attn bias with no_bias true
  (Qwen2 reads no attention_bias key, so none is set). QWen's dynamic NTK and logn attention act
  only past seq_length (2,048) tokens and are not reproduced; `rotary_emb.inv_freq` /
  `masked_bias` buffers some QWen checkpoints hold are recomputed, not read.
- The import turns `encoder.compat="qwen-audio"` on and says so (encoder.py: conv2 reads the
  padded frame; frames counted by floor; data/features.py cuts the mel at 2 x the after-conv
  length as QWen's audio.py does before its convs: a lone clip's numbers, tested within 1e-5).
- Vocabulary: the checkpoint's rows must hold our tokenizer's ids, and its audio_start_id must be
  our `<audio>` (qwen.tiktoken as the base puts the tags on the release's ids).
- Export writes model.safetensors (safetensors `save_file`, c_attn concatenated, lm_head its own
  tensor even when ours is tied), config.json in the release's layout with our shapes, and the
  qwen.tiktoken ranks; not the remote code files (modeling_qwen.py, audio.py, tokenizer code,
  mel_filters.npz), which come from the release. use_dynamic_ntk / use_logn_attn are written false,
  so QWen's code computes what ours does at every length. What cannot round-trip is refused.
"""
from __future__ import annotations

import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path

import torch

from ..tokenizer import Tokenizer
from .interop import (InteropError, check_shapes, materialize_buffers, offline, read_config, read_tensors,
                      warn_declared)

log = logging.getLogger(__name__)
QWEN_BASE_RANKS = 151643  # qwen.tiktoken: the ranks QWen's ids are built on
_AUDIO, _LAYER = "transformer.audio.", "transformer.h."
_LLM_LAYER = {"input_layernorm.weight": "ln_1.weight", "post_attention_layernorm.weight": "ln_2.weight",
              "self_attn.o_proj.weight": "attn.c_proj.weight", "mlp.gate_proj.weight": "mlp.w2.weight",
              "mlp.up_proj.weight": "mlp.w1.weight", "mlp.down_proj.weight": "mlp.c_proj.weight"}
_QKV = ("q_proj", "k_proj", "v_proj")
_RECOMPUTED = ("rotary_emb.inv_freq", "attn.masked_bias")  # buffers, not weights


def _need(conf: dict, key: str, folder: Path, where: str = ""):
    if key not in conf:
        raise InteropError(f"{folder}: config.json has no {where}{key} (is this a Qwen-Audio folder?)")
    return conf[key]


def architecture(conf: dict, cfg, folder: Path):
    """`cfg` with the folder's encoder and LLM shapes (declared ones that differ: a warning each)."""
    from .builders import LLMConfig
    a = conf.get("audio")
    if not isinstance(a, dict):
        raise InteropError(f"{folder}: config.json has no 'audio' settings (not a Qwen-Audio folder)")
    enc = {k: _need(a, k, folder, "audio.") for k in ("n_mels", "n_ctx", "n_state", "n_head", "n_layer")}
    hidden, heads = (_need(conf, k, folder) for k in ("hidden_size", "num_attention_heads"))
    if _need(a, "output_dim", folder, "audio.") != hidden:
        raise InteropError(f"{folder}: audio.output_dim={a['output_dim']} but hidden_size={hidden} "
                           "(the audio projection feeds the LLM)")
    if conf.get("kv_channels", hidden // heads) * heads != hidden:
        raise InteropError(f"{folder}: kv_channels={conf['kv_channels']} x num_attention_heads={heads} "
                           f"is not hidden_size={hidden}")
    for key, want in (("no_bias", True), ("rotary_pct", 1.0)):
        if conf.get(key, want) != want:
            raise InteropError(f"{folder}: {key}={conf[key]}; a Qwen2 LLM (ours) needs {key}={want}")
    for key in ("avg_pool", "add_audio_bos_eos_token"):
        if not a.get(key, True):
            raise InteropError(f"{folder}: audio.{key}=false; our adapter always has it")
    text = {"hidden_size": hidden, "intermediate_size": _need(conf, "intermediate_size", folder) // 2,
            "num_hidden_layers": _need(conf, "num_hidden_layers", folder), "num_attention_heads": heads,
            "num_key_value_heads": heads, "max_position_embeddings": conf.get("max_position_embeddings", 8192),
            "rms_norm_eps": conf.get("layer_norm_epsilon", 1e-6), "rope_theta": conf.get("rotary_emb_base", 10000),
            "vocab_size": _need(conf, "vocab_size", folder), "tie_word_embeddings": False}
    warn_declared(cfg, enc, text, folder)
    encoder = replace(cfg.encoder, **enc, checkpoint=None, compat=cfg.encoder.compat or "qwen-audio")
    llm = LLMConfig(path=None, model_type="qwen2", config=text, dtype=cfg.llm.dtype)
    return replace(cfg, encoder=encoder, llm=llm)


def key_pairs(ours) -> list[tuple[str, str]]:
    """(our key, QWen key) of every tensor renamed as is (not q/k/v: c_attn holds them together)."""
    pairs = [(k, _AUDIO + k[len("encoder.whisper."):]) for k in ours if k.startswith("encoder.whisper.")]
    pairs += [("adapter.ln_post.weight", _AUDIO + "ln_post.weight"), ("adapter.ln_post.bias", _AUDIO + "ln_post.bias"),
              ("adapter.proj.weight", _AUDIO + "proj.weight"), ("adapter.proj.bias", _AUDIO + "proj.bias"),
              ("adapter.bos_eos.weight", _AUDIO + "audio_bos_eos_token.weight"),
              ("llm.model.embed_tokens.weight", "transformer.wte.weight"),
              ("llm.model.norm.weight", "transformer.ln_f.weight"), ("llm.lm_head.weight", "lm_head.weight")]
    for k in ours:
        if k.startswith("llm.model.layers."):
            i, _, rest = k[len("llm.model.layers."):].partition(".")
            if rest in _LLM_LAYER:
                pairs.append((k, f"{_LAYER}{i}.{_LLM_LAYER[rest]}"))
    return pairs


def _qkv(i: int, p: str) -> tuple[list[str], str]:
    return [f"llm.model.layers.{i}.self_attn.{n}.{p}" for n in _QKV], f"{_LAYER}{i}.attn.c_attn.{p}"


def our_state(theirs: dict, model_state: dict, n_layer: int, folder: Path) -> dict:
    """Their tensors under our names; shapes checked against our model's, naming their key."""
    theirs = {k: v for k, v in theirs.items() if not k.endswith(_RECOMPUTED)}
    pairs = key_pairs(model_state)
    expected = {t: model_state[mine] for mine, t in pairs}
    for i in range(n_layer):
        for p in ("weight", "bias"):
            mine, t = _qkv(i, p)
            expected[t] = torch.cat([model_state[m] for m in mine])  # meta: shapes only
    check_shapes(expected, theirs, folder)
    state = {mine: theirs[t] for mine, t in pairs}
    for i in range(n_layer):
        for p in ("weight", "bias"):
            mine, t = _qkv(i, p)
            sizes = [model_state[m].shape[0] for m in mine]
            # clones: views of one storage would stay one tensor, which safetensors (export) refuses
            state.update(zip(mine, (x.clone() for x in theirs[t].split(sizes))))
    return state


def check_vocab(conf: dict, n_rows: int, tok: Tokenizer, folder: Path) -> None:
    """The checkpoint's rows hold our ids, and its `<audio>` id is ours (the same base vocabulary)."""
    if n_rows < tok.n_vocab:
        raise InteropError(f"{folder}: {n_rows:,} embedding rows; the tokenizer ({tok.spec.base_path().name} + "
                           f"tags) needs {tok.n_vocab:,}")
    start = conf.get("audio", {}).get("audio_start_id")
    if start != tok.role_id("audio_start"):
        raise InteropError(f"{folder}: audio.audio_start_id={start}, our <audio> is {tok.role_id('audio_start')}: "
                           f"the tokenizer base differs ({tok.spec.base_path().name}; the release needs qwen.tiktoken)")


def load_qwen_audio(cfg, tok: Tokenizer):
    """(AudioLM with the folder's weights, its config, rows the checkpoint already had)."""
    from .builders import DTYPES, assemble
    offline()
    folder = Path(cfg.released.path)
    conf = read_config(folder, "qwen")
    arch = architecture(conf, cfg, folder)
    theirs = read_tensors(folder)
    rows = theirs.get("transformer.wte.weight")
    n_rows = rows.shape[0] if rows is not None else conf["vocab_size"]
    check_vocab(conf, n_rows, tok, folder)
    arch = replace(arch, llm=replace(arch.llm, config={**arch.llm.config, "vocab_size": n_rows}))
    with torch.device("meta"):
        model, _ = assemble(arch, tok)
    state = our_state(theirs, model.state_dict(), arch.llm.config["num_hidden_layers"], folder)
    llm_dtype = DTYPES[arch.llm.dtype]
    state = {k: v.to(llm_dtype if k.startswith("llm.") else torch.float32) for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    materialize_buffers(model)
    log.info("imported %s as qwen-audio: encoder.compat=%s switched on (the release's numbers: conv2 reads the "
             "padded frame, frames counted by floor)", folder, arch.encoder.compat)
    return model, arch, n_rows


def check_exportable(model, tok: Tokenizer) -> None:
    """One line for what the QWen layout cannot hold."""
    c = model.llm.config
    why = None
    if c.model_type != "qwen2":
        why = f"needs a Qwen2 LLM; this model's is {c.model_type!r}"
    elif c.num_key_value_heads != c.num_attention_heads:
        why = (f"has no grouped-query attention: num_key_value_heads={c.num_key_value_heads}, "
               f"num_attention_heads={c.num_attention_heads}")
    elif "llm.model.embed_tokens.weight" not in (keys := model.state_dict().keys()):
        why = "needs plain LLM weights (merge LoRA first: an export folder is merged)"
    elif any(k.endswith(("o_proj.bias", "mlp.gate_proj.bias", "mlp.up_proj.bias", "mlp.down_proj.bias")) for k in keys):
        why = "has no o_proj or MLP bias (no_bias)"
    elif model.llm.get_input_embeddings().embedding_dim != c.num_attention_heads * _head_dim(c):
        why = "needs hidden_size = heads x head_dim"
    elif (getattr(c, "rope_parameters", None) or {}).get("rope_type", "default") != "default":
        why = f"has plain rotary embeddings only (rope_type={c.rope_parameters['rope_type']})"
    elif tok.n_base != QWEN_BASE_RANKS or tok.role_id("audio_end") != tok.role_id("audio_start") + 1:
        why = (f"needs QWen's ids (qwen.tiktoken, {QWEN_BASE_RANKS:,} ranks, </audio> = <audio> + 1); "
               f"this tokenizer's base is {tok.spec.base_path().name} ({tok.n_base:,} ranks)")
    if why:
        raise InteropError(f"--format qwen-audio {why}")


def _head_dim(c) -> int:
    return getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads


def their_state(model) -> dict[str, torch.Tensor]:
    """Our tensors under QWen's names, contiguous, none sharing memory (safetensors refuses that)."""
    ours = {k: v.detach() for k, v in model.state_dict().items()}
    ours["llm.lm_head.weight"] = model.llm.get_output_embeddings().weight.detach()
    state = {t: ours[mine] for mine, t in key_pairs(ours)}
    for i in range(model.llm.config.num_hidden_layers):
        for p in ("weight", "bias"):
            mine, t = _qkv(i, p)
            state[t] = torch.cat([ours[m] for m in mine])
    if state["lm_head.weight"].data_ptr() == state["transformer.wte.weight"].data_ptr():
        state["lm_head.weight"] = state["lm_head.weight"].clone()  # tied: written as a copy
    return {k: v.contiguous() for k, v in state.items()}


def qwen_config(model, tok: Tokenizer) -> dict:
    """config.json in the release's layout (its keys) with our shapes."""
    c, enc = model.llm.config, model.encoder.cfg
    dtype = str(model.llm.get_input_embeddings().weight.dtype).removeprefix("torch.")
    rope = (getattr(c, "rope_parameters", None) or {}).get("rope_theta", getattr(c, "rope_theta", 10000.0))
    audio = {"n_mels": enc.n_mels, "n_ctx": enc.n_ctx, "n_state": enc.n_state, "n_head": enc.n_head,
             "n_layer": enc.n_layer, "output_dim": c.hidden_size, "avg_pool": True, "add_audio_bos_eos_token": True,
             "audio_start_id": tok.role_id("audio_start")}
    return {"architectures": ["QWenLMHeadModel"],
            "auto_map": {"AutoConfig": "configuration_qwen.QWenConfig",
                         "AutoModelForCausalLM": "modeling_qwen.QWenLMHeadModel"},
            "attn_dropout_prob": 0.0, "bf16": dtype == "bfloat16", "fp16": dtype == "float16",
            "fp32": dtype == "float32", "emb_dropout_prob": 0.0, "intermediate_size": 2 * c.intermediate_size,
            "initializer_range": c.initializer_range, "kv_channels": _head_dim(c),
            "layer_norm_epsilon": c.rms_norm_eps, "model_type": "qwen", "hidden_size": c.hidden_size,
            "num_attention_heads": c.num_attention_heads, "num_hidden_layers": c.num_hidden_layers,
            "max_position_embeddings": c.max_position_embeddings, "no_bias": True, "onnx_safe": None,
            "rotary_emb_base": rope, "rotary_pct": 1.0, "scale_attn_weights": True, "seq_length": 2048,
            "tie_word_embeddings": False, "tokenizer_type": "QWenTokenizer", "transformers_version": "4.31.0",
            "use_cache": True, "vocab_size": model.llm.get_input_embeddings().num_embeddings,
            "use_dynamic_ntk": False, "use_logn_attn": False, "audio": audio}


def save_qwen_audio(model, tok: Tokenizer, out: str | Path) -> Path:
    """A folder in the Qwen-Audio release's layout (weights, config.json, qwen.tiktoken)."""
    from safetensors.torch import save_file
    check_exportable(model, tok)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file(their_state(model), str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(qwen_config(model, tok), indent=2) + "\n")
    base = tok.spec.base_path()
    if base.is_file():
        shutil.copyfile(base, out / "qwen.tiktoken")
    return out
