"""Qwen-Audio folders in and out (model/qwen_audio.py), on a tiny random checkpoint in the release's
layout built here without QWen's remote code: an openai-whisper AudioEncoder + proj + bos/eos and a
transformers Qwen2 renamed to QWen's keys. Reference logits are computed from those modules the way
Qwen-Audio does; the import must give them within 1e-5 on even and odd mel lengths."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F
import whisper
from conftest import need_data

from qwen_audio_mt.data.features import log_mel
from qwen_audio_mt.data.ingest import load_audio
from qwen_audio_mt.model.builders import LLMConfig, ModelConfig, ReleasedConfig, build_model
from qwen_audio_mt.model.encoder import _attend
from qwen_audio_mt.model.interop import InteropError
from qwen_audio_mt.model.qwen_audio import architecture, check_vocab, save_qwen_audio
from qwen_audio_mt.tokenizer import Tokenizer, TokenizerSpec

transformers = pytest.importorskip("transformers")
_LAYER = {"input_layernorm": "ln_1", "post_attention_layernorm": "ln_2", "self_attn.o_proj": "attn.c_proj",
          "mlp.gate_proj": "mlp.w2", "mlp.up_proj": "mlp.w1", "mlp.down_proj": "mlp.c_proj"}


def qwen_keys(audio: torch.nn.Module, proj, bos_eos, qwen2, swap_gate_up: bool = False) -> dict:
    """The reverse of the import's map, written out here on its own: QWen's names."""
    state = {f"transformer.audio.{k}": v for k, v in audio.state_dict().items()}
    state.update({"transformer.audio.proj.weight": proj.weight, "transformer.audio.proj.bias": proj.bias,
                  "transformer.audio.audio_bos_eos_token.weight": bos_eos.weight})
    sd = qwen2.state_dict()
    state.update({"transformer.wte.weight": sd["model.embed_tokens.weight"],
                  "transformer.ln_f.weight": sd["model.norm.weight"], "lm_head.weight": sd["lm_head.weight"]})
    layer = dict(_LAYER, **({"mlp.gate_proj": "mlp.w1", "mlp.up_proj": "mlp.w2"} if swap_gate_up else {}))
    for i in range(qwen2.config.num_hidden_layers):
        ours = f"model.layers.{i}."
        for mine, theirs in layer.items():
            state[f"transformer.h.{i}.{theirs}.weight"] = sd[f"{ours}{mine}.weight"]
        for p in ("weight", "bias"):
            qkv = [sd[f"{ours}self_attn.{n}_proj.{p}"] for n in "qkv"]
            state[f"transformer.h.{i}.attn.c_attn.{p}"] = torch.cat(qkv)
    return {k: v.detach().clone().contiguous() for k, v in state.items()}


def _rows(tok) -> int:
    return -(-tok.n_vocab // 64) * 64


def write_fixture(folder, tok, seed: int = 0, swap_gate_up: bool = False, **conf_changes):
    """A tiny Qwen-Audio folder; returns the modules its weights came from (the reference)."""
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModelForCausalLM
    torch.manual_seed(seed)
    audio = whisper.model.AudioEncoder(80, 1500, 16, 2, 2).eval()
    with torch.no_grad():  # non-trivial layer norms, so a map that mixes them up shows
        for p in audio.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    proj, bos_eos = torch.nn.Linear(16, 32), torch.nn.Embedding(2, 32)
    qwen2 = AutoModelForCausalLM.from_config(AutoConfig.for_model(
        "qwen2", vocab_size=_rows(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=8192, rms_norm_eps=1e-5,
        rope_theta=10000.0, tie_word_embeddings=False)).eval()
    folder.mkdir(parents=True, exist_ok=True)
    save_file(qwen_keys(audio, proj, bos_eos, qwen2, swap_gate_up), str(folder / "model.safetensors"))
    conf = json.loads(need_data("qwen_audio", "config.json").read_text())
    conf.update(hidden_size=32, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, kv_channels=8,
                vocab_size=_rows(tok), **conf_changes)
    conf["audio"].update(n_state=16, n_head=2, n_layer=2, output_dim=32)
    (folder / "config.json").write_text(json.dumps(conf))
    return audio, proj, bos_eos, qwen2


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.from_spec(TokenizerSpec(base=str(need_data("qwen_audio", "qwen.tiktoken")), pattern="qwen"))


@pytest.fixture(scope="module")
def released(tmp_path_factory, tok):
    folder = tmp_path_factory.mktemp("qwen_audio")
    return folder, write_fixture(folder, tok)


def import_cfg(folder, tok) -> ModelConfig:
    return ModelConfig(tokenizer=tok.spec, released=ReleasedConfig("qwen-audio", str(folder)))


def _clip(seconds: float):
    return load_audio(need_data("qwen_audio", "1272-128104-0000.flac"))[: round(seconds * 16_000)]


def _ids(tok, n_audio: int) -> torch.Tensor:
    return torch.tensor([[tok.token_id("<|startoftranscript|>"), tok.role_id("audio_start"),
                          *[tok.role_id("audio_placeholder")] * n_audio, tok.role_id("audio_end"),
                          *tok.encode(" a text prompt")]])


@torch.no_grad()
def reference_logits(modules, tok, clip) -> torch.Tensor:
    """Qwen-Audio's numbers, as its audio.py computes a lone clip: the mel of the clip padded to
    30 s, mel_len by floor, the mel cut to 2 x the after-conv length (AudioEncoder.forward), the
    convs, keys past the after-conv length masked, pool, ln_post, proj, [bos, ..., eos]."""
    audio, proj, bos_eos, qwen2 = modules
    mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(clip)))[None]
    after = (len(clip) // 160 - 1) // 2 + 1
    mel = mel[:, :, : 2 * after]
    x = F.gelu(audio.conv2(F.gelu(audio.conv1(mel)))).permute(0, 2, 1)
    x = x + audio.positional_embedding[: x.shape[1]]
    keep = (torch.arange(x.shape[1]) < after)[None]
    for block in audio.blocks:
        x = _attend(block, x, keep)
    x = proj(audio.ln_post(F.avg_pool1d(x.transpose(1, 2), 2, 2).transpose(1, 2)))
    n = (after - 2) // 2 + 1
    ids = _ids(tok, n)
    emb = qwen2.model.embed_tokens(ids)
    emb[0, 1:n + 3] = torch.cat([bos_eos.weight[:1], x[0, :n], bos_eos.weight[1:]])
    return qwen2(inputs_embeds=emb).logits


@torch.no_grad()
def our_logits(model, tok, clip) -> torch.Tensor:
    mel, _, n_audio = log_mel(clip, 80, compat="qwen-audio")
    return model.llm(inputs_embeds=model.embed(_ids(tok, n_audio), mel[None], torch.tensor([mel.shape[1]]))).logits


def test_import_gives_qwen_audio_logits_on_even_and_odd_lengths(released, tok, caplog):
    folder, modules = released
    with caplog.at_level("INFO", logger="qwen_audio_mt.model.qwen_audio"):
        ours = build_model(import_cfg(folder, tok)).eval()
    assert ours.encoder.cfg.compat == "qwen-audio" and "compat=qwen-audio switched on" in caplog.text
    assert ours.llm.config.model_type == "qwen2" and ours.llm.config.intermediate_size == 64
    for seconds, frames in ((1.00, 100), (1.01, 101)):
        clip = _clip(seconds)
        assert len(clip) // 160 == frames
        diff = (our_logits(ours, tok, clip) - reference_logits(modules, tok, clip)).abs().max()
        assert diff < 1e-5, (frames, float(diff))


def test_gate_and_up_swapped_change_the_logits(tmp_path, released, tok):
    """The fixture with w1/w2 exchanged (a map with gate and up mixed up) gives other numbers."""
    folder, modules = released
    write_fixture(tmp_path / "swapped", tok, swap_gate_up=True)
    swapped = build_model(import_cfg(tmp_path / "swapped", tok)).eval()
    clip = _clip(1.0)
    assert (our_logits(swapped, tok, clip) - reference_logits(modules, tok, clip)).abs().max() > 1e-3


def test_the_release_config_gives_7b_shapes_and_its_vocabulary_fits(tmp_path, tok, caplog):
    path = need_data("qwen_audio", "config.json")
    conf = json.loads(path.read_text())
    arch = architecture(conf, ModelConfig(tokenizer=tok.spec), path.parent)
    t, e = arch.llm.config, arch.encoder
    assert (t["hidden_size"], t["intermediate_size"], t["num_hidden_layers"], t["num_key_value_heads"]) == \
        (4096, 11008, 32, 32)
    assert (t["rms_norm_eps"], t["rope_theta"], t["tie_word_embeddings"], arch.llm.model_type) == \
        (1e-5, 10000, False, "qwen2")
    assert (e.n_mels, e.n_state, e.n_head, e.n_layer, e.n_ctx, e.compat) == (80, 1280, 20, 32, 1500, "qwen-audio")
    assert tok.n_vocab == 155_165 and tok.role_id("audio_start") == 155_163
    check_vocab(conf, 155_947, tok, path.parent)
    with pytest.raises(InteropError, match=r"151,936 embedding rows; .* needs 155,165$"):
        check_vocab(conf, 151_936, tok, path.parent)
    whisper_tok = Tokenizer.from_spec(TokenizerSpec())
    with pytest.raises(InteropError, match="audio_start_id=155163, our <audio> is .*the tokenizer base differs"):
        check_vocab({**conf, "vocab_size": 155_947}, 155_947, whisper_tok, path.parent)
    declared = ModelConfig(llm=LLMConfig(config={"hidden_size": 4096, "num_hidden_layers": 24}))
    with caplog.at_level("WARNING", logger="qwen_audio_mt.model.interop"):  # the folder's shapes win, said
        assert architecture(conf, declared, path.parent).llm.config["num_hidden_layers"] == 32
    assert "model.llm.config.num_hidden_layers=24, but the folder has 32" in caplog.text


def test_export_round_trips_and_refuses_what_does_not(tmp_path, released, tok):
    folder, _ = released
    ours = build_model(import_cfg(folder, tok)).eval()
    out = save_qwen_audio(ours, tok, tmp_path / "out")
    conf = json.loads((out / "config.json").read_text())
    release = json.loads(need_data("qwen_audio", "config.json").read_text())
    assert set(conf) == set(release) and set(conf["audio"]) == set(release["audio"])
    assert (conf["intermediate_size"], conf["kv_channels"], conf["audio"]["audio_start_id"]) == (128, 8, 155_163)
    assert (out / "qwen.tiktoken").read_bytes() == tok.spec.base_path().read_bytes()
    again = build_model(import_cfg(out, tok)).eval()
    a, b = ours.state_dict(), again.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    torch.manual_seed(0)
    enc = ours.encoder.cfg
    gqa = build_model(ModelConfig(enc, LLMConfig(config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                                             num_attention_heads=4, num_key_value_heads=2)),
                                  tokenizer=tok.spec))
    with pytest.raises(InteropError, match=r"^--format qwen-audio has no grouped-query attention"):
        save_qwen_audio(gqa, tok, tmp_path / "gqa")
    whisper_tok = Tokenizer.from_spec(TokenizerSpec())
    with pytest.raises(InteropError, match=r"^--format qwen-audio needs QWen's ids .*multilingual.tiktoken"):
        save_qwen_audio(ours, whisper_tok, tmp_path / "whisper")


def test_a_wrong_layout_a_missing_key_and_a_shape_fail_naming_the_key(tmp_path, released, tok):
    folder, _ = released
    qwen2_audio = tmp_path / "qwen2_audio"
    qwen2_audio.mkdir()
    (qwen2_audio / "config.json").write_text(json.dumps({"model_type": "qwen2_audio", "audio_config": {}}))
    with pytest.raises(InteropError, match="model_type is 'qwen2_audio', not 'qwen'"):
        build_model(import_cfg(qwen2_audio, tok))
    conf = json.loads((folder / "config.json").read_text())
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text(json.dumps({k: v for k, v in conf.items() if k != "audio"}))
    with pytest.raises(InteropError, match="no 'audio' settings"):
        build_model(import_cfg(bare, tok))
    from safetensors.torch import load_file, save_file
    state = load_file(str(folder / "model.safetensors"))
    missing = tmp_path / "missing"
    shutil.copytree(folder, missing)
    kept = {k: v for k, v in state.items() if k != "transformer.h.1.mlp.w2.weight"}
    save_file(kept, str(missing / "model.safetensors"))
    with pytest.raises(InteropError, match=r"tensor transformer.h.1.mlp.w2.weight is missing"):
        build_model(import_cfg(missing, tok))
    shaped = tmp_path / "shaped"
    shutil.copytree(folder, shaped)
    state["transformer.h.0.attn.c_attn.bias"] = state["transformer.h.0.attn.c_attn.bias"][:64]
    save_file(state, str(shaped / "model.safetensors"))
    with pytest.raises(InteropError, match=r"transformer.h.0.attn.c_attn.bias has shape \[64\], .* needs \[96\]"):
        build_model(import_cfg(shaped, tok))
    (shaped / "config.json").write_text(json.dumps({**conf, "audio": {**conf["audio"], "output_dim": 64}}))
    with pytest.raises(InteropError, match="audio.output_dim=64 but hidden_size=32"):
        build_model(import_cfg(shaped, tok))
