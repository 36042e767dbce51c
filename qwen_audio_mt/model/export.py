"""Export folders and checkpoint loading, without Hydra.

An export folder holds everything inference needs:
    config.json          the ModelConfig (plain JSON)
    model.safetensors    the AudioLM weights (shared tensors handled by safetensors' save_model)
    tokenizer/           spec.json (base + pattern), tokens.yaml, tasks.yaml, languages.yaml,
                         and the base ranks file when it is not whisper's bundled one
`load_exported(folder)` rebuilds model, tokenizer and renderer in one call. Lightning
checkpoints carry the same ModelConfig (lit.py), so `load_checkpoint(path)` needs no Hydra
either; both load with `weights_only=True` semantics (safetensors holds only tensors).

LoRA (lora.py): `export` merges a deep copy of the model (the caller's keeps its LoRA layers and
can go on training or evaluating; peak memory is two models while it runs) and writes the config
with `lora.r=0`, so an export is a plain model that loads without peft. `load_checkpoint` of a
LoRA run rebuilds the LoRA model (the state dict has peft's key names), loads it and merges it:
it returns a plain model and its config with `lora.r=0`.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import load_model as load_weights
from safetensors.torch import save_model

from ..config import from_dict, to_dict
from ..errors import UserError
from ..paths import tags_dir
from ..render import Renderer
from ..tasks import load_tasks
from ..tokenizer import WHISPER_BASE, Tokenizer, TokenizerSpec
from .audio_lm import AudioLM
from .builders import ModelConfig, ReleasedConfig, build_model
from .lora import merge_lora

TAG_FILES = ("tokens.yaml", "tasks.yaml", "languages.yaml")


class ModelLoadError(UserError):
    """A path that is neither an export folder nor a loadable checkpoint (one line: path and why)."""


def export(model: AudioLM, cfg: ModelConfig, folder: str | Path) -> Path:
    folder = Path(folder)
    tok_dir = folder / "tokenizer"
    tok_dir.mkdir(parents=True, exist_ok=True)
    spec = cfg.tokenizer
    if spec.base != WHISPER_BASE:
        shutil.copyfile(spec.base_path(), tok_dir / spec.base_path().name)
        spec = replace(spec, base=spec.base_path().name)
    for name in TAG_FILES:
        shutil.copyfile(tags_dir() / name, tok_dir / name)
    (tok_dir / "spec.json").write_text(json.dumps({"base": spec.base, "pattern": spec.pattern_name()
                                                   if spec.base == WHISPER_BASE else spec.pattern}, indent=1))
    # weights are in the file; rebuilding must not look for the original checkpoints: a real
    # LLM is saved as its architecture (its HF config) and rebuilt from it
    llm = cfg.llm
    if llm.path or cfg.released.path:  # the architecture, not the folder it came from
        arch = {k: v for k, v in model.llm.config.to_dict().items() if k not in ("model_type", "transformers_version")}
        llm = replace(llm, path=None, model_type=model.llm.config.model_type, config=arch)
    # the model's own encoder config: an import's shapes and compat mode
    portable = replace(cfg, tokenizer=spec, encoder=replace(model.encoder.cfg, checkpoint=None), llm=llm,
                       lora=replace(cfg.lora, r=0), released=ReleasedConfig())
    if cfg.lora.r:
        model = merge_lora(copy.deepcopy(model))
    (folder / "config.json").write_text(json.dumps(to_dict(portable), indent=1))
    save_model(model, str(folder / "model.safetensors"))
    return folder


def load_exported(folder: str | Path, device: str = "cpu") -> tuple[AudioLM, Tokenizer, Renderer]:
    """Model (eval mode), tokenizer and renderer from an export folder: one call, no Hydra."""
    folder = Path(folder)
    raw = json.loads((folder / "config.json").read_text())
    tok_dir = folder / "tokenizer"
    spec = json.loads((tok_dir / "spec.json").read_text())
    base = spec["base"] if spec["base"] == WHISPER_BASE else str(tok_dir / spec["base"])
    tok = Tokenizer.from_spec(TokenizerSpec(base=base, pattern=spec.get("pattern"), tags=str(tok_dir / "tokens.yaml")))
    cfg = from_dict(ModelConfig, {**raw, "tokenizer": {"base": base, "pattern": spec.get("pattern"),
                                                         "tags": str(tok_dir / "tokens.yaml")}})
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = build_model(cfg, tok)
    load_weights(model, str(folder / "model.safetensors"), device=device)
    registry = load_tasks(str(tok_dir / "tasks.yaml"), str(tok_dir / "tokens.yaml"))
    return model.eval(), tok, Renderer(tok, registry)


def load_checkpoint(path: str | Path, device: str = "cpu") -> tuple[AudioLM, ModelConfig]:
    """An AudioLM from a Lightning checkpoint written by lit.AudioLMModule (no Hydra)."""
    ckpt = torch.load(str(path), map_location=device, weights_only=True)
    cfg = from_dict(ModelConfig, ckpt["model_config"])
    model = build_model(cfg)
    state = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    model.load_state_dict(state)
    if cfg.lora.r:  # loaded under peft's key names, then folded into plain weights
        model, cfg = merge_lora(model), replace(cfg, lora=replace(cfg.lora, r=0))
    return model.eval(), cfg


def _load(path: str | Path, device: str) -> tuple[AudioLM, ModelConfig, Renderer]:
    p = Path(path)
    if p.is_dir():
        missing = [n for n in ("config.json", "model.safetensors", "tokenizer") if not (p / n).exists()]
        if missing:
            raise ModelLoadError(f"{p}: not an export folder (no {', '.join(missing)}; a training run "
                                 "writes one to outputs/train/RUN/export)")
        model, tok, renderer = load_exported(p, device)
        raw = json.loads((p / "config.json").read_text())
        spec = {"base": tok.spec.base, "pattern": tok.spec.pattern, "tags": tok.spec.tags}
        return model, from_dict(ModelConfig, {**raw, "tokenizer": spec}), renderer
    if not p.is_file():
        raise ModelLoadError(f"{p}: no such export folder or checkpoint file")
    try:
        model, cfg = load_checkpoint(p, device)
    except Exception as e:  # torch reports truncated or foreign files in many ways
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"{p}: not a loadable checkpoint ({reason[:160]})") from None
    return model, cfg, Renderer(Tokenizer.from_spec(cfg.tokenizer))


def load_model(path: str | Path, device: str = "cpu") -> tuple[AudioLM, Renderer]:
    """(model in eval mode, renderer) from an export folder or a Lightning `.ckpt`; ModelLoadError
    names the path and the reason when it is neither."""
    model, _, renderer = _load(path, device)
    return model, renderer


def load_pretrained(path: str | Path, device: str = "cpu") -> tuple[AudioLM, ModelConfig]:
    """(plain model, its config: tokenizer paths into the export) from an export folder or a
    `.ckpt` (a LoRA run's merged), to start another stage from, e.g. chat SFT."""
    model, cfg, _ = _load(path, device)
    return model, cfg
