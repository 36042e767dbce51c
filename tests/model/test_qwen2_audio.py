"""Qwen2-Audio folders in and out (model/qwen2_audio.py), on tiny random checkpoints of the
release's layout built here: logits equal to transformers' within 1e-5 on even and odd clip
lengths, and greedy `generate` from Qwen2AudioProcessor inputs equal to ours."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
from conftest import need_data, save_tiny_qwen2_audio

from qwen_audio_mt.audio import n_encoder_frames, n_pooled_positions
from qwen_audio_mt.data.features import log_mel
from qwen_audio_mt.data.ingest import load_audio
from qwen_audio_mt.model.builders import LLMConfig, ModelConfig, ReleasedConfig, build_model
from qwen_audio_mt.model.encoder import EncoderConfig
from qwen_audio_mt.model.interop import InteropError
from qwen_audio_mt.tokenizer import Tokenizer, TokenizerSpec

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.from_spec(TokenizerSpec())


@pytest.fixture(scope="module")
def released(tmp_path_factory, tok):
    folder = tmp_path_factory.mktemp("qwen2_audio")
    return folder, save_tiny_qwen2_audio(folder, tok)


def import_cfg(folder) -> ModelConfig:
    return ModelConfig(released=ReleasedConfig("qwen2-audio", str(folder)))


def _features(samples: list[np.ndarray], n_mels: int):
    from transformers import WhisperFeatureExtractor
    fe = WhisperFeatureExtractor(feature_size=n_mels)
    out = fe(samples, sampling_rate=16_000, return_attention_mask=True, padding="max_length", return_tensors="pt")
    return out.input_features, out.attention_mask


def _audio(seconds: list[float]) -> list[np.ndarray]:
    audio = load_audio(need_data("qwen_audio", "1272-128104-0000.flac"))
    return [audio[: int(s * 16_000)] for s in seconds]


def _ids(tok, n_audio: int, slot: int, bos: int, eos: int) -> list[int]:
    return [tok.token_id("<|startoftranscript|>"), bos, *[slot] * n_audio, eos, *tok.encode(" a text prompt")]


def test_import_gives_the_release_logits_on_even_and_odd_lengths(released, tok):
    folder, theirs = released
    ours = build_model(import_cfg(folder)).eval()
    assert ours.encoder.cfg.compat == "qwen2-audio" and ours.encoder.cfg.n_mels == 128
    # 1.00 s -> 100 frames (even); 1.005 s -> 100.5 -> 101 frames by ceil (odd): conv2 reads padding
    audio = _audio([1.0, 1.005, 2.37])
    feats, mask = _features(audio, 128)
    for i, clip in enumerate(audio):
        mel, frames, n_audio = log_mel(clip, 128, compat="qwen2-audio")
        assert frames == int(mask[i].sum())
        assert torch.allclose(mel, feats[i][:, : mel.shape[1]], atol=2e-5)  # = WhisperFeatureExtractor
        assert mel.shape[1] == frames + 2  # the two frames of context past the clip
        slot = theirs.config.audio_token_index
        hf_ids = torch.tensor([_ids(tok, n_audio, slot, tok.token_id("<|extra_1|>"), tok.token_id("<|extra_2|>"))])
        our_ids = torch.tensor([_ids(tok, n_audio, tok.role_id("audio_placeholder"), tok.role_id("audio_start"),
                                     tok.role_id("audio_end"))])
        with torch.no_grad():
            want = theirs(input_ids=hf_ids, input_features=feats[i:i + 1], feature_attention_mask=mask[i:i + 1],
                          attention_mask=torch.ones_like(hf_ids)).logits
            emb = ours.embed(our_ids, mel[None], torch.tensor([mel.shape[1]]))
            got = ours.llm(inputs_embeds=emb).logits
        assert (got - want).abs().max() < 1e-5, (i, float((got - want).abs().max()))


def test_our_default_mode_differs_only_on_odd_lengths(released, tok):
    """Why compat exists: zeroing the conv padding changes an odd-length clip's last position."""
    folder, _ = released
    model = build_model(import_cfg(folder)).eval()
    plain = build_model(import_cfg(folder)).eval()
    from dataclasses import replace
    plain.encoder.cfg = replace(plain.encoder.cfg, compat=None)
    for seconds, same in ((1.0, True), (1.005, False)):
        mel, frames, _ = log_mel(_audio([seconds])[0], 128, compat="qwen2-audio")
        with torch.no_grad():
            a = model.audio_embeddings(mel[None], torch.tensor([mel.shape[1]]))[0]
            b = plain.audio_embeddings(mel[None], torch.tensor([frames]))[0]  # same mel, context as padding
        n = n_pooled_positions(n_encoder_frames(frames))
        assert torch.allclose(a[:, :n], b[:, :n], atol=1e-6) is same


def test_export_loads_in_transformers_and_generates_our_tokens(tmp_path, tok):
    """Ours (a tiny random model, compat on) -> export -> transformers' model + processor."""
    from dataclasses import replace
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    from qwen_audio_mt.generate import GenerationConfig, Generator, Request, encode_clip
    from qwen_audio_mt.model.qwen2_audio import save_qwen2_audio
    torch.manual_seed(1)
    cfg = ModelConfig(EncoderConfig(n_mels=80, n_state=32, n_head=2, n_layer=1, compat="qwen2-audio"),
                      LLMConfig(config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                            num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)))
    ours = build_model(cfg, tok).eval()
    out = save_qwen2_audio(ours, tok, tmp_path / "hf", system="You are a helpful assistant.")
    hf, info = Qwen2AudioForConditionalGeneration.from_pretrained(out, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    processor = AutoProcessor.from_pretrained(out)
    audio = _audio([1.73])[0]
    prompt = "<|startoftranscript|><|en|><|transcribe|><|en|><|notimestamps|>"
    text = f"{tok.vocab.role('audio_start')}{tok.vocab.role('audio_placeholder')}{tok.vocab.role('audio_end')}{prompt}"
    inputs = processor(text=text, audio=[audio], sampling_rate=16_000, return_tensors="pt")
    mel, frames, n_audio = log_mel(audio, 80, compat="qwen2-audio")
    assert int((inputs["input_ids"] == tok.role_id("audio_placeholder")).sum()) == n_audio
    with torch.no_grad():
        theirs = hf.generate(**inputs, max_new_tokens=12, do_sample=False, eos_token_id=tok.end_id,
                             pad_token_id=tok.end_id)[0, inputs["input_ids"].shape[1]:].tolist()
    prefix = inputs["input_ids"][0].tolist()
    mine = Generator(ours, tok, GenerationConfig(max_new_tokens=12)).generate([Request(prefix, encode_clip(ours, mel))])
    assert mine[0].tokens == theirs[: len(mine[0].tokens)] and len(mine[0].tokens) >= 1
    assert theirs[len(mine[0].tokens):] in ([], [tok.end_id] * (len(theirs) - len(mine[0].tokens)))


def test_a_wrong_folder_a_missing_shard_and_a_shape_fail_in_one_line(tmp_path, released, tok):
    folder, _ = released
    with pytest.raises(InteropError, match="no config.json"):
        build_model(import_cfg(tmp_path))
    wrong = tmp_path / "wrong"
    shutil.copytree(folder, wrong)
    conf = json.loads((wrong / "config.json").read_text())
    (wrong / "config.json").write_text(json.dumps({**conf, "model_type": "whisper"}))
    with pytest.raises(InteropError, match="model_type is 'whisper', not 'qwen2_audio'"):
        build_model(import_cfg(wrong))
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    shutil.copy(folder / "config.json", sharded)
    shutil.copy(folder / "tokenizer_config.json", sharded)
    (sharded / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"audio_tower.conv1.weight": "model-00001-of-00002.safetensors",
                        "lm_head.weight": "model-00002-of-00002.safetensors"}}))
    shutil.copy(folder / "model.safetensors", sharded / "model-00001-of-00002.safetensors")
    with pytest.raises(InteropError, match="shard model-00002-of-00002.safetensors is missing"):
        build_model(import_cfg(sharded))
    shaped = tmp_path / "shaped"
    shutil.copytree(folder, shaped)
    conf["audio_config"]["encoder_layers"] = 1  # the weights hold 2 layers
    (shaped / "config.json").write_text(json.dumps(conf))
    with pytest.raises(InteropError, match="unexpected tensor audio_tower.layers.1"):
        build_model(import_cfg(shaped))


def test_import_and_export_verbs_round_trip(tmp_path, released, tok):
    """`qwen-audio-mt import` -> our export folder (loads without the release) -> `export`."""
    from qwen_audio_mt.cli import main
    from qwen_audio_mt.model.export import load_model
    folder, _ = released
    ours = tmp_path / "ours"
    assert main(["import", "--format", "qwen2-audio", "--path", str(folder), "--out", str(ours)]) == 0
    model, renderer = load_model(ours)
    direct = build_model(import_cfg(folder)).eval()
    assert model.encoder.cfg.compat == "qwen2-audio"
    got, want = model.state_dict(), direct.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)
    hf = tmp_path / "hf"
    assert main(["export", "--model", str(ours), "--format", "qwen2-audio", "--out", str(hf)]) == 0
    again = build_model(import_cfg(hf)).eval().state_dict()
    assert all(torch.equal(again[k], want[k]) for k in want if not k.startswith("llm.model.embed_tokens"))


def test_an_export_answers_a_recording_in_a_fresh_transformers_process(tmp_path, tiny_export):
    """What a serving stack does with `export --format qwen2-audio`: transformers alone (no
    qwen_audio_mt import) loads the folder and its processor and generates for a real clip."""
    import subprocess
    import sys

    from qwen_audio_mt.cli import main
    out = tmp_path / "hf"
    assert main(["export", "--model", str(tiny_export), "--format", "qwen2-audio", "--out", str(out)]) == 0
    clip = need_data("real_clips", "198-209-0000.ogg")
    script = f"""
import json, soundfile, soxr, numpy as np, torch
from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration
model = Qwen2AudioForConditionalGeneration.from_pretrained({str(out)!r}).eval()
processor = AutoProcessor.from_pretrained({str(out)!r})
audio, rate = soundfile.read({str(clip)!r}, dtype="float32")
audio = soxr.resample(audio.mean(axis=1) if audio.ndim > 1 else audio, rate, 16000)
conv = [{{"role": "user", "content": [{{"type": "audio", "audio_url": "x"}}, {{"type": "text", "text": "What is said?"}}]}}]
text = processor.apply_chat_template(conv, add_generation_prompt=True, tokenize=False)
inputs = processor(text=text, audio=[audio], sampling_rate=16000, return_tensors="pt")
ids = model.generate(**inputs, max_new_tokens=5, do_sample=False)[0, inputs["input_ids"].shape[1]:]
print(json.dumps({{"text": text, "new": ids.tolist()}}))
"""
    env = {k: v for k, v in os.environ.items()} | {"HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert "Audio 1: <audio>[[[AUDIO:modality]]]</audio>\nWhat is said?<|im_end|>" in result["text"]
    assert 1 <= len(result["new"]) <= 5
