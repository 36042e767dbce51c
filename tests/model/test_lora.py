"""LoRA through peft: the merged export computes what the LoRA model computed and loads without
peft; only LoRA weights and the special tokens' rows train in the LLM; Hydra's `model.lora.*`
keys compose and build; a target that names no layer is a one-line ConfigError."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from safetensors import safe_open

from qwen_audio_mt.config import from_dict, plain, to_dict
from qwen_audio_mt.errors import ConfigError
from qwen_audio_mt.model.builders import LLMConfig, ModelConfig, Trainable, build_model, count_parameters
from qwen_audio_mt.model.encoder import EncoderConfig
from qwen_audio_mt.model.export import export, load_checkpoint, load_exported
from qwen_audio_mt.model.lora import LoRAConfig, has_lora, merge_lora
from qwen_audio_mt.render import IGNORE

SFT = Trainable(encoder=False, adapter=True, llm=True, new_token_rows=True)


def lora_config(tie: bool = True, r: int = 4, **lora) -> ModelConfig:
    return ModelConfig(EncoderConfig(n_state=64, n_head=2, n_layer=1),
                       LLMConfig(config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                             num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=tie)),
                       trainable=SFT, lora=LoRAConfig(r=r, **lora))


def batch(model, n_text: int = 12) -> dict:
    """Two clips with their placeholders, then text, whose label is itself; the rows' specials
    (audio markers, a chat end) make the trained token rows matter."""
    g = torch.Generator().manual_seed(1)
    mel, lens = torch.randn(2, 80, 200, generator=g), torch.tensor([200, 120])
    with torch.no_grad():
        counts = model.audio_embeddings(mel, lens)[1].tolist()
    end = model.placeholder_id - 1  # a special token (a tag): one of the rows that train as tokens
    rows = [[model.audio_start_id] + [model.placeholder_id] * c + [model.audio_end_id]
            + torch.randint(0, 5000, (n_text,), generator=g).tolist() + [end] for c in counts]
    width = max(map(len, rows))
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    labels = ids.masked_fill(mask == 0, IGNORE)
    labels[:, :max(counts) + 2] = IGNORE
    return dict(input_ids=ids, attention_mask=mask, mel=mel, mel_lengths=lens, labels=labels)


def train_a_little(model, b: dict, steps: int = 3):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(steps):
        model(**b).loss.backward()
        opt.step()
        opt.zero_grad()
    return model.eval()


def logits(model, b: dict) -> torch.Tensor:
    with torch.no_grad():
        emb = model.embed(b["input_ids"], b["mel"], b["mel_lengths"])
        hidden = model.base(inputs_embeds=emb, attention_mask=b["attention_mask"]).last_hidden_state
        return model.llm.get_output_embeddings()(hidden)


@pytest.mark.parametrize("tie", [True, False])
def test_merged_export_gives_the_lora_models_logits(tmp_path, tie):
    torch.manual_seed(0)
    cfg = lora_config(tie)
    model = build_model(cfg)
    b = batch(model)
    before = logits(model.eval(), b)
    train_a_little(model, b)
    lora_logits = logits(model, b)
    assert (lora_logits - before).abs().max() > 1e-3  # the LoRA weights and token rows did change
    loaded, _, _ = load_exported(export(model, cfg, tmp_path / "export"))
    assert has_lora(model) and not has_lora(loaded)  # export merged a copy
    torch.testing.assert_close(logits(loaded, b), lora_logits, atol=1e-5, rtol=1e-5)
    head, emb = loaded.llm.get_output_embeddings().weight, loaded.llm.get_input_embeddings().weight
    assert (head is emb) == tie


def test_export_is_plain_and_loads_without_peft(tmp_path):
    torch.manual_seed(0)
    cfg = lora_config()
    folder = export(build_model(cfg), cfg, tmp_path / "export")
    assert json.loads((folder / "config.json").read_text())["lora"]["r"] == 0
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        peft_keys = [k for k in f.keys() if "lora_" in k or "base_layer" in k or "trainable_tokens" in k]
    assert not peft_keys
    code = (f"import sys; from qwen_audio_mt.model.export import load_model; load_model({str(folder)!r}); "
            "print('peft' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_lora_checkpoint_loads_merged(tmp_path):
    """A Lightning checkpoint's state dict has peft's key names: rebuilt with LoRA, loaded, merged."""
    torch.manual_seed(0)
    cfg = lora_config()
    model = build_model(cfg)
    b = batch(model)
    train_a_little(model, b)
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "model_config": to_dict(cfg)}, tmp_path / "last.ckpt")
    loaded, loaded_cfg = load_checkpoint(tmp_path / "last.ckpt")
    assert loaded_cfg.lora.r == 0 and not has_lora(loaded)
    torch.testing.assert_close(logits(loaded, b), logits(model, b), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("stage", [SFT, Trainable(encoder=True, adapter=True, llm=False, new_token_rows=True),
                                   Trainable(encoder=False, adapter=False, llm=True, new_token_rows=False)])
def test_only_lora_and_documented_extras_train(stage):
    model = build_model(replace(lora_config(), trainable=stage))
    llm = {n for n, p in model.llm.named_parameters() if p.requires_grad}
    assert llm and all("lora_" in n or "trainable_tokens_delta" in n for n in llm)
    assert any("trainable_tokens_delta" in n for n in llm) == stage.new_token_rows
    assert all(p.requires_grad == stage.encoder for p in model.encoder.parameters())
    assert all(p.requires_grad == stage.adapter for p in model.adapter.parameters())
    full = build_model(replace(lora_config(r=0), trainable=stage))
    assert count_parameters(model)["trainable"] < count_parameters(full)["trainable"]


def test_merge_without_lora_is_a_no_op():
    model = build_model(lora_config(r=0))
    assert merge_lora(model) is model and not has_lora(model)


def test_hydra_override_composes_and_builds(tmp_path):
    from hydra import compose, initialize_config_dir
    from qwen_audio_mt.train import CONF_DIR
    shrink = ["model.encoder.n_state=64", "model.encoder.n_head=2", "model.encoder.n_layer=1",
              "model.llm.config.hidden_size=64", "model.llm.config.intermediate_size=128",
              "model.llm.config.num_hidden_layers=1", "model.llm.config.num_attention_heads=2",
              "model.llm.config.num_key_value_heads=1"]
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"run_dir={tmp_path}", "stage=sft", "model.lora.r=4", "model.lora.alpha=8",
                                          "model.lora.dropout=0.1", "model.lora.target_modules=[q_proj,v_proj]",
                                          *shrink])
    mcfg = from_dict(ModelConfig, plain(cfg.model), "model")
    assert mcfg.lora == LoRAConfig(r=4, alpha=8, dropout=0.1, target_modules=("q_proj", "v_proj"))
    names = {n for n, p in build_model(mcfg).llm.named_parameters() if p.requires_grad and "lora_" in n}
    assert names and all(".q_proj." in n or ".v_proj." in n for n in names)


def test_bad_target_module_is_one_line_config_error():
    with pytest.raises(ConfigError, match="'q_prj'") as e:
        build_model(lora_config(target_modules=("q_proj", "q_prj")))
    assert "\n" not in str(e.value) and "q_proj" in str(e.value).split("linear layers:")[1]


@pytest.mark.parametrize("key, value", [("r", -1), ("alpha", 0), ("dropout", 1.0), ("target_modules", ())])
def test_bad_lora_values_name_the_key(key, value):
    with pytest.raises(ConfigError, match=f"model.lora.{key}"):
        from_dict(ModelConfig, {"lora": {"r": 4, key: value}}, "model")
