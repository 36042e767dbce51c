"""LoRA on the LLM through peft (`model.lora.r > 0`), merged into plain weights for export.

Choices the issue left open:
- peft's `inject_adapter_in_model` rewrites `model.llm` in place: it stays the transformers
  model (not a PeftModel), so `AudioLM.base`, the input/output embeddings and the optimiser's
  grouping in lit.py work unchanged. Its state-dict keys take peft's names
  (`...q_proj.base_layer.weight`, `...q_proj.lora_A.default.weight`), which is why a LoRA
  checkpoint is loaded into a LoRA model and merged afterwards (export.load_checkpoint).
- r > 0 means the LLM trains through LoRA, whatever `trainable.llm` says: every base weight of
  the LLM is frozen. The encoder and the adapter keep their `Trainable` flags (stage sft: the
  adapter trains, the encoder does not).
- `trainable.new_token_rows`: the rows of the tokenizer's special tokens (ids n_base..n_vocab:
  the tag tokens, `<|im_start|>`, `<|im_end|>`) train through peft's trainable tokens, on the
  input embeddings and the LM head (one shared copy when they are tied). The chat tokens never
  occur in pretraining, and a frozen `<|im_end|>` row could not learn to stop a reply. Only those
  rows are parameters, not the whole matrix, so AdamW's decay never touches the base rows.
- lora_B starts at zero (peft's default): a fresh LoRA model computes what its base computes.
- Targets are module names (the last part of a dotted name) of nn.Linear layers of the LLM; the
  LM head is never a target (its special rows train as tokens instead).
- peft is imported only when a LoRA model is built or merged: an export loads without it.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..errors import ConfigError
from .audio_lm import AudioLM

# Qwen2's attention and MLP projections (also Llama's and Mistral's names)
QWEN2_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_TRAINABLE = ("lora_", "trainable_tokens_delta")  # peft's parameter names that train


@dataclass(frozen=True)
class LoRAConfig:
    r: int = 0                          # rank; 0: no LoRA (the LLM trains per `trainable.llm`)
    alpha: float = 16.0                 # the update is scaled by alpha / r
    dropout: float = 0.05               # on the LoRA branch's input, training only
    target_modules: tuple[str, ...] = QWEN2_TARGETS

    def __post_init__(self):
        if self.r < 0:
            raise ConfigError(f"model.lora.r={self.r}: a rank >= 1, or 0 for no LoRA")
        if self.alpha <= 0:
            raise ConfigError(f"model.lora.alpha={self.alpha}: must be > 0")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"model.lora.dropout={self.dropout}: allowed is 0 <= dropout < 1")
        if self.r and not self.target_modules:
            raise ConfigError("model.lora.target_modules is empty: name the LLM's linear layers to adapt, "
                              f"e.g. {','.join(QWEN2_TARGETS)}")


def _module_name(root: nn.Module, module: nn.Module) -> str:
    return next(name for name, m in root.named_modules() if m is module)


def check_targets(llm: nn.Module, targets: tuple[str, ...]) -> None:
    """Every target names at least one nn.Linear of the LLM (peft only fails when none match)."""
    head = llm.get_output_embeddings()
    names = {n.rsplit(".", 1)[-1] for n, m in llm.named_modules() if isinstance(m, nn.Linear) and m is not head}
    missing = [t for t in targets if t not in names]
    if missing:
        raise ConfigError(f"model.lora.target_modules: {', '.join(map(repr, missing))} names no linear layer of "
                          f"the LLM ({type(llm).__name__}); its linear layers: {', '.join(sorted(names))}")


def apply_lora(model: AudioLM, cfg: LoRAConfig, token_rows: range | None = None) -> AudioLM:
    """Inject LoRA into `model.llm` in place (see the module docstring) and freeze the LLM's base
    weights; `token_rows`: embedding rows that train too (None: none). Returns `model`."""
    if not cfg.r:
        return model
    check_targets(model.llm, cfg.target_modules)
    from peft import LoraConfig, inject_adapter_in_model
    llm = model.llm
    rows = None
    if token_rows is not None and len(token_rows):
        emb, head = llm.get_input_embeddings(), llm.get_output_embeddings()
        rows = {_module_name(llm, emb): list(token_rows)}
        if head.weight is not emb.weight:  # tied: peft ties the head to the embeddings' rows itself
            rows[_module_name(llm, head)] = list(token_rows)
    conf = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                      target_modules=list(cfg.target_modules), trainable_token_indices=rows)
    inject_adapter_in_model(conf, llm)
    for name, p in llm.named_parameters():  # explicit, whatever peft or apply_trainable left
        p.requires_grad_(any(key in name for key in _TRAINABLE))
    return model


def has_lora(model: AudioLM) -> bool:
    return any(any(key in name for key in _TRAINABLE) for name, _ in model.llm.named_parameters())


def merge_lora(model: AudioLM) -> AudioLM:
    """Fold the LoRA updates and the trained token rows into the LLM's weights and remove peft's
    modules, in place: `model.llm` is a plain transformers model again (tied embeddings stay
    tied). A model without LoRA is returned as is."""
    if not has_lora(model):
        return model
    from peft.tuners.tuners_utils import BaseTunerLayer

    def unwrap(module: nn.Module) -> nn.Module | None:
        if hasattr(module, "unload_and_optionally_merge_module"):  # trainable tokens' wrapper
            return module.unload_and_optionally_merge_module(merge=True, safe_merge=False, adapter_names=None)
        if isinstance(module, BaseTunerLayer):
            module.merge()
            return module.get_base_layer()
        return None

    def walk(parent: nn.Module) -> None:  # top-down: a wrapper goes before what it wraps
        for name, child in list(parent.named_children()):
            plain = unwrap(child)
            if plain is None:
                walk(child)
            else:
                setattr(parent, name, plain)

    walk(model.llm)
    if hasattr(model.llm, "peft_config"):
        del model.llm.peft_config
    return model
