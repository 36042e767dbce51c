"""Qwen2-Audio folders (transformers' `Qwen2AudioForConditionalGeneration`) in and out of AudioLM;
the key map, the traps and what compat means are in interop.py's docstring."""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import torch

from ..tokenizer import Tokenizer
from .interop import (InteropError, bos_eos_ids, check_shapes, encoder_pairs, hub_keys, materialize_buffers,
                      offline, read_config, read_tensors, special_ids, warn_declared)

log = logging.getLogger(__name__)
_SKIP_TEXT_KEYS = ("model_type", "transformers_version", "architectures", "dtype", "torch_dtype")


def architecture(conf: dict, cfg, folder: Path):
    """`cfg` with the folder's encoder and LLM shapes (its config.json decides); where `cfg`
    declares shapes (a conf/model file's llm.config, for planning without the weights), each one
    that differs is said in a warning naming the key."""
    from .builders import LLMConfig
    missing = [k for k in ("audio_config", "text_config") if not isinstance(conf.get(k), dict)]
    if missing:
        raise InteropError(f"{folder}: config.json has no {missing[0]} (not a Qwen2-Audio folder)")
    a, t = conf["audio_config"], conf["text_config"]
    if a.get("encoder_ffn_dim", 4 * a["d_model"]) != 4 * a["d_model"]:
        raise InteropError(f"{folder}: audio_config.encoder_ffn_dim={a['encoder_ffn_dim']}; Whisper's encoder "
                           f"(ours) has 4 x d_model = {4 * a['d_model']}")
    enc = {"n_mels": a["num_mel_bins"], "n_ctx": a["max_source_positions"], "n_state": a["d_model"],
           "n_head": a["encoder_attention_heads"], "n_layer": a["encoder_layers"]}
    text = {k: v for k, v in t.items() if k not in _SKIP_TEXT_KEYS}
    text["tie_word_embeddings"] = False  # transformers never ties this class: lm_head is its own tensor
    warn_declared(cfg, enc, text, folder)
    encoder = replace(cfg.encoder, **enc, checkpoint=None, compat=cfg.encoder.compat or "qwen2-audio")
    llm = LLMConfig(path=None, model_type=t.get("model_type", "qwen2"), config=text, dtype=cfg.llm.dtype)
    return replace(cfg, encoder=encoder, llm=llm)


def our_state(theirs: dict, model_state: dict, n_layer: int, bos_eos: tuple[int, int], folder: Path) -> dict:
    """Their tensors under our names; shapes checked against our model's, naming their key."""
    pairs = encoder_pairs(n_layer)
    pairs += [(k, "language_model." + k[len("llm."):]) for k in model_state if k.startswith("llm.")]
    expected = {hf: model_state[mine] for mine, hf in pairs}
    check_shapes(expected, theirs, folder)
    state = {mine: theirs[hf] for mine, hf in pairs}
    rows = state["llm.model.embed_tokens.weight"]
    state["adapter.bos_eos.weight"] = rows[list(bos_eos)].clone()
    return state


def load_qwen2_audio(cfg, tok: Tokenizer):
    """(AudioLM with the folder's weights, its config, rows the checkpoint already had)."""
    from .builders import DTYPES, assemble
    offline()
    folder = Path(cfg.released.path)
    conf = read_config(folder)
    arch = architecture(conf, cfg, folder)
    check_ids(folder, tok)
    theirs = hub_keys(read_tensors(folder))
    rows = theirs.get("language_model.model.embed_tokens.weight")
    n_rows = rows.shape[0] if rows is not None else conf["text_config"].get("vocab_size", 0)
    if n_rows < tok.n_vocab:
        raise InteropError(f"{folder}: {n_rows:,} embedding rows; the tokenizer ({tok.spec.base_path().name} + "
                           f"tags) needs {tok.n_vocab:,}")
    arch = replace(arch, llm=replace(arch.llm, config={**arch.llm.config, "vocab_size": n_rows}))
    with torch.device("meta"):
        model, _ = assemble(arch, tok)
    meta_state = model.state_dict()
    state = our_state(theirs, meta_state, arch.encoder.n_layer, bos_eos_ids(folder), folder)
    llm_dtype = DTYPES[arch.llm.dtype]
    state = {k: v.to(llm_dtype if k.startswith("llm.") else torch.float32) for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    materialize_buffers(model)
    log.info("imported %s as %s: encoder.compat=%s (the release's numbers: conv2 reads the padded frame, "
             "frames counted as its processor does)", folder, "qwen2-audio", arch.encoder.compat)
    return model, arch, n_rows


def check_ids(folder: Path, tok: Tokenizer) -> None:
    """The folder's named tokens that ours also has must sit on the same ids (chat markers, end)."""
    for name, i in special_ids(folder).items():
        if name in tok.special_ids and tok.token_id(name) != i:
            raise InteropError(f"{folder}: token {name} is id {i} there, {tok.token_id(name)} in our tokenizer "
                               f"({tok.spec.base_path().name}): a different base vocabulary")


def hf_config(model, tok: Tokenizer):
    from transformers import Qwen2AudioConfig
    llm = model.llm.config
    if llm.model_type != "qwen2":
        raise InteropError(f"--format qwen2-audio needs a Qwen2 LLM; this model's is {llm.model_type!r}")
    enc = model.encoder.cfg
    text = {k: v for k, v in llm.to_dict().items() if k not in _SKIP_TEXT_KEYS}
    text.update(model_type="qwen2", tie_word_embeddings=False,
                vocab_size=model.llm.get_input_embeddings().num_embeddings)
    audio = dict(model_type="qwen2_audio_encoder", d_model=enc.n_state, encoder_attention_heads=enc.n_head,
                 encoder_ffn_dim=4 * enc.n_state, encoder_layers=enc.n_layer, num_mel_bins=enc.n_mels,
                 max_source_positions=enc.n_ctx)
    return Qwen2AudioConfig(audio_config=audio, text_config=text,
                            audio_token_index=tok.role_id("audio_placeholder"))


def hf_state(model, tok: Tokenizer) -> dict:
    """Our tensors under the in-memory names of Qwen2AudioForConditionalGeneration."""
    ours = model.state_dict()
    state = {"model." + hf: ours[mine] for mine, hf in encoder_pairs(model.encoder.cfg.n_layer)}
    for k, v in ours.items():
        if k.startswith("llm.model."):
            state["model.language_model." + k[len("llm.model."):]] = v
    embed = model.llm.get_input_embeddings().weight.detach().clone()
    bos, eos = model.adapter.bos_eos.weight.detach()
    embed[tok.role_id("audio_start")], embed[tok.role_id("audio_end")] = bos.to(embed.dtype), eos.to(embed.dtype)
    state["model.language_model.embed_tokens.weight"] = embed
    state["lm_head.weight"] = model.llm.get_output_embeddings().weight.detach().clone()  # untied
    return state


def save_qwen2_audio(model, tok: Tokenizer, out: str | Path, system: str) -> Path:
    """A folder `Qwen2AudioForConditionalGeneration.from_pretrained` and `AutoProcessor` load."""
    from transformers import Qwen2AudioForConditionalGeneration
    from .hf_processor import qwen2_audio_processor
    offline()
    out = Path(out)
    config = hf_config(model, tok)
    with torch.device("meta"):
        hf = Qwen2AudioForConditionalGeneration(config)
    hf.load_state_dict(hf_state(model, tok), strict=True, assign=True)
    materialize_buffers(hf)
    gen = hf.generation_config
    gen.eos_token_id = [tok.role_id("end"), tok.role_id("im_end")]
    gen.pad_token_id = tok.role_id("end")
    hf.save_pretrained(out)
    qwen2_audio_processor(tok, model.encoder.cfg.n_mels, system).save_pretrained(out)
    return out
