"""Released checkpoints in and out: transformers' Qwen2-Audio layout <-> our AudioLM.

Qwen2-Audio (`Qwen2AudioForConditionalGeneration`, what vLLM and others serve) holds the same
modules as ours under other names and in the same order (../shared/INTEROP.md):
    audio_tower.{conv1,conv2}                      encoder.whisper.{conv1,conv2}
    audio_tower.embed_positions.weight             encoder.whisper.positional_embedding
    audio_tower.layers.i.self_attn.{q,k,v,out}_proj  encoder.whisper.blocks.i.attn.{query,key,value,out}
    audio_tower.layers.i.self_attn_layer_norm      ...blocks.i.attn_ln
    audio_tower.layers.i.{fc1,fc2,final_layer_norm}  ...blocks.i.{mlp.0,mlp.2,mlp_ln}
    audio_tower.layer_norm (after its avg-pool)    adapter.ln_post (after ours)
    multi_modal_projector.linear                   adapter.proj
    language_model.{model.*,lm_head}               llm.{model.*,lm_head} (a native Qwen2ForCausalLM)
    embedding rows of <|audio_bos|>/<|audio_eos|>  adapter.bos_eos (our learned vectors)
Its `<|AUDIO|>` positions (config.audio_token_index) are where our placeholder's are.

Import (`load_qwen2_audio`): reads config.json and the safetensors files (one or sharded by
`model.safetensors.index.json`) itself, so that a wrong layout, a missing shard or a shape
names the key in one line; the model is built on the meta device and the tensors assigned
(no random 7B initialisation first). The import turns `encoder.compat="qwen2-audio"` on and
says so: the release lets conv2 read a padded frame and counts frames by ceil (encoder.py).
Export (`save_qwen2_audio`): the reverse mapping into a transformers model that is then saved
with `save_pretrained`, so what is written is exactly what `from_pretrained` loads; lm_head is
written untied (transformers never ties this class); our bos/eos go into the embedding rows of
our `<audio>`/`</audio>` tokens, which the processor writes around every clip (hf_processor.py).
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from ..errors import UserError

log = logging.getLogger(__name__)
# what a Qwen2-Audio tokenizer calls the tokens around a clip (the processor's defaults)
RELEASED_BOS_EOS = ("<|audio_bos|>", "<|audio_eos|>")
_LAYER = {"attn.query": "self_attn.q_proj", "attn.key": "self_attn.k_proj", "attn.value": "self_attn.v_proj",
          "attn.out": "self_attn.out_proj", "attn_ln": "self_attn_layer_norm", "mlp.0": "fc1", "mlp.2": "fc2",
          "mlp_ln": "final_layer_norm"}


class InteropError(UserError):
    """A folder that is not the layout asked for, a missing file, or a tensor of the wrong shape."""


def encoder_pairs(n_layer: int, ours: str = "encoder.whisper.", theirs: str = "audio_tower.") -> list[tuple[str, str]]:
    """(our key, Qwen2-Audio key) of every audio-tower and adapter tensor."""
    pairs = [(f"{ours}{c}.{p}", f"{theirs}{c}.{p}") for c in ("conv1", "conv2") for p in ("weight", "bias")]
    pairs.append((f"{ours}positional_embedding", f"{theirs}embed_positions.weight"))
    for i in range(n_layer):
        for mine, hf in _LAYER.items():
            for p in ("weight", "bias"):
                if not (mine == "attn.key" and p == "bias"):  # Whisper's key projection has no bias
                    pairs.append((f"{ours}blocks.{i}.{mine}.{p}", f"{theirs}layers.{i}.{hf}.{p}"))
    for p in ("weight", "bias"):
        pairs += [(f"adapter.ln_post.{p}", f"{theirs}layer_norm.{p}"),
                  (f"adapter.proj.{p}", f"multi_modal_projector.linear.{p}")]
    return pairs


# ---------------------------------------------------------------------------------- reading
def read_config(folder: Path, model_type: str = "qwen2_audio") -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise InteropError(f"{folder}: no config.json (model.released.path must be a {model_type} checkpoint folder)")
    conf = json.loads(path.read_text())
    if conf.get("model_type") != model_type:
        raise InteropError(f"{path}: model_type is {conf.get('model_type')!r}, not {model_type!r} "
                           f"(model.released.format names the layout)")
    return conf


def read_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors checkpoint, one file or shards listed by its index."""
    from safetensors.torch import load_file
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        files = sorted(set(weight_map.values()))
    elif (folder / "model.safetensors").is_file():
        files, weight_map = ["model.safetensors"], None
    else:
        raise InteropError(f"{folder}: no model.safetensors or model.safetensors.index.json")
    state: dict[str, torch.Tensor] = {}
    for name in files:
        if not (folder / name).is_file():
            key = next(k for k, f in weight_map.items() if f == name)
            raise InteropError(f"{folder}: shard {name} is missing (it holds {key} and others)")
        state.update(load_file(str(folder / name)))
    return state


def hub_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys as `save_pretrained` writes them (audio_tower., language_model.model., ...), also from
    a state dict saved with the in-memory names (model.audio_tower., lm_head.)."""
    out = {}
    for k, v in state.items():
        if k.startswith("model.language_model."):
            k = "language_model.model." + k[len("model.language_model."):]
        elif k.startswith("model."):
            k = k[len("model."):]
        elif k == "lm_head.weight":
            k = "language_model.lm_head.weight"
        out[k] = v
    return out


def special_ids(folder: Path) -> dict[str, int]:
    """Token name -> id of the folder's added tokens (tokenizer_config.json, else tokenizer.json)."""
    conf = folder / "tokenizer_config.json"
    if conf.is_file():
        decoder = json.loads(conf.read_text()).get("added_tokens_decoder", {})
        found = {t["content"]: int(i) for i, t in decoder.items()}
        if found:
            return found
    full = folder / "tokenizer.json"
    if full.is_file():
        return {t["content"]: int(t["id"]) for t in json.loads(full.read_text()).get("added_tokens", [])}
    return {}


def bos_eos_ids(folder: Path) -> tuple[int, int]:
    """Ids of the tokens the processor writes around a clip, named by its config."""
    names = RELEASED_BOS_EOS
    for file in ("processor_config.json", "preprocessor_config.json"):
        if (folder / file).is_file():
            conf = json.loads((folder / file).read_text())
            names = (conf.get("audio_bos_token", names[0]), conf.get("audio_eos_token", names[1]))
    ids = special_ids(folder)
    missing = [n for n in names if n not in ids]
    if missing:
        raise InteropError(f"{folder}: no token {missing[0]} in its tokenizer files (tokenizer_config.json): "
                           "its embedding row is the learned audio start/end vector")
    return ids[names[0]], ids[names[1]]


def check_shapes(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], folder: Path) -> None:
    """Every key there, none extra, every shape as the architecture says: one line naming the key."""
    missing = [k for k in expected if k not in state]
    if missing:
        raise InteropError(f"{folder}: tensor {missing[0]} is missing ({len(missing)} missing in all; "
                           "is this the layout model.released.format names?)")
    extra = sorted(set(state) - set(expected))
    if extra:
        raise InteropError(f"{folder}: unexpected tensor {extra[0]} ({len(extra)} in all): the config's "
                           "architecture does not match the weights")
    for k, v in expected.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise InteropError(f"{folder}: {k} has shape {list(state[k].shape)}, the architecture needs "
                               f"{list(v.shape)} (config.json and the weights disagree)")


def materialize_buffers(module: torch.nn.Module) -> None:
    """Buffers a state dict does not hold (rotary inv_freq) are rebuilt on the CPU after a
    meta-device build: a fresh module of the same class from the model's config."""
    for name, child in list(module.named_modules()):
        if any(b.is_meta for b in child.buffers(recurse=False)) and hasattr(child, "config"):
            parent = module.get_submodule(name.rpartition(".")[0]) if "." in name else module
            with torch.device("cpu"):
                setattr(parent, name.rpartition(".")[2], type(child)(config=child.config))
    left = [n for n, b in module.named_buffers() if b.is_meta]
    if left:
        raise InteropError(f"buffer {left[0]} has no value after loading (not in the checkpoint)")


def warn_declared(cfg, enc: dict, text: dict, folder: Path) -> None:
    """Where `cfg` declares shapes (a conf/model file's llm.config, there for planning without the
    weights), each that differs from the folder's is said in a warning naming the key: the
    folder's are used."""
    if not cfg.llm.config:
        return
    declared = {f"model.encoder.{k}": (getattr(cfg.encoder, k), v) for k, v in enc.items()}
    declared.update({f"model.llm.config.{k}": (v, text[k]) for k, v in cfg.llm.config.items() if k in text})
    for key, (said, found) in declared.items():
        if said != found:
            log.warning("%s: %s=%s, but the folder has %s: the folder's shapes are used", folder, key, said, found)


def offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub
