"""`qwen-audio-mt plan`: counts equal the built models', Qwen2-Audio-7B's equal its architecture's
formula, and the memory lines follow the strategy (module docstring of qwen_audio_mt/plan.py)."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from qwen_audio_mt import plan
from qwen_audio_mt.cli import main
from qwen_audio_mt.paths import REPO_ROOT
from qwen_audio_mt.model.builders import Trainable, build_model, count_parameters
from qwen_audio_mt.model.lora import LoRAConfig
from qwen_audio_mt.tags import load_vocab
from qwen_audio_mt.tokenizer import Tokenizer, TokenizerSpec

GIB = 2 ** 30
N_TAGS = len(load_vocab(None).tokens)  # the rows the tag vocabulary adds to any base
README = (REPO_ROOT / "README.md").read_text().split("## Memory planning: qwen-audio-mt plan", 1)[-1]


@pytest.fixture(scope="module", autouse=True)
def built_once():
    """A meta Qwen2-Audio-7B takes seconds to build: each config's shape is built once here."""
    cache, real = {}, plan.shape
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plan, "shape", lambda cfg: cache.get(repr(cfg)) or cache.setdefault(repr(cfg), real(cfg)))
        yield


def built_counts(cfg) -> dict:
    model = build_model(cfg)
    return {**count_parameters(model), "all": sum(p.numel() for p in model.parameters())}


@pytest.fixture(scope="module")
def tiny():
    return plan.compose("tiny", "all", "cpu")[0]


@pytest.fixture(scope="module")
def qwen7b():
    """Qwen2-Audio-7B, stage pretrain: config, meta-built shape, ddp/fsdp/deepspeed strategies."""
    cfg, ddp, limits = plan.compose("qwen2_audio_7b", "pretrain", "ddp")
    sh, notes = plan.shape(cfg)
    strategies = {t: plan.strategy(plan.compose("qwen2_audio_7b", "pretrain", t)[1]) for t in ("fsdp", "deepspeed")}
    return cfg, sh, {"ddp": plan.strategy(ddp), **strategies}, limits, ddp["precision"]


def test_tiny_counts_are_the_built_model(tiny):
    sh, notes = plan.shape(tiny)
    real = built_counts(tiny)
    assert {p: sh.params[p] for p in plan.PARTS} == {p: real[p] for p in plan.PARTS}
    assert sum(sh.params.values()) == real["all"] == sum(sh.trainable.values()) == sum(sh.grads.values())
    assert notes == []


def test_frozen_llm_trains_only_the_tag_rows(tiny):
    """Stage pretrain: what holds gradients is what build_model leaves requires_grad (whole
    embedding matrix, tied here); what learns is the tag rows only."""
    cfg = replace(tiny, trainable=plan.compose("tiny", "pretrain", "cpu")[0].trainable)
    assert cfg.trainable == Trainable(encoder=True, adapter=True, llm=False, new_token_rows=True)
    sh, _ = plan.shape(cfg)
    tok = Tokenizer.from_spec(tiny.tokenizer)
    assert sum(sh.grads.values()) == built_counts(cfg)["trainable"]
    assert sh.trainable["llm"] == (tok.n_vocab - tok.n_base) * sh.hidden == N_TAGS * 192
    everything, _ = plan.shape(tiny)
    assert sum(sh.trainable.values()) < sum(everything.trainable.values())
    assert sum(sh.grads.values()) < sum(everything.grads.values())


def test_lora_counts_are_peft_trainable_params(tiny):
    cfg = replace(tiny, lora=LoRAConfig(r=8), trainable=Trainable(encoder=False, adapter=True, llm=True))
    sh, _ = plan.shape(cfg)
    assert sum(sh.trainable.values()) == sum(sh.grads.values()) == built_counts(cfg)["trainable"]
    # r x (in + out) for q,k,v,o (192->192, 192->96 kv) and the MLP (192<->512), 2 layers, + tag rows
    per_layer = 8 * ((192 + 192) * 2 + (192 + 96) * 2 + (192 + 512) * 3)
    assert sh.trainable["llm"] == 2 * per_layer + N_TAGS * 192


def test_qwen2_audio_7b_counts_follow_the_architecture(qwen7b):
    cfg, sh, *_ = qwen7b
    V, h, L, i = 156_032, 4096, 32, 11_008
    kv = 32 * (h // 32)  # num_key_value_heads x head_dim
    layer = h * h + h + 2 * (h * kv + kv) + h * h + 3 * h * i + 2 * h  # q,k,v (biased), o, MLP, 2 RMSNorms
    llm = 2 * V * h + L * layer + h  # untied embeddings and head, final norm
    d, n_mels = 1280, 128
    encoder = (n_mels * d * 3 + d) + (d * d * 3 + d) + 32 * (12 * d * d + 12 * d)  # convs, blocks (ln_post moved)
    adapter = 2 * d + d * h + h + 2 * h  # ln_post, proj, bos/eos
    assert sh.params == {"encoder": encoder, "adapter": adapter, "llm": llm}
    assert (encoder, llm) == (635_046_400, 7_754_878_976)
    assert 8.3e9 < sum(sh.params.values()) < 8.5e9
    assert sh.layer_params == layer and sh.layers == L and sh.vocab == V
    assert sh.trainable["llm"] == N_TAGS * h * 2 and sh.grads["llm"] == 2 * V * h  # stage pretrain


def test_fsdp_shards_what_ddp_replicates(qwen7b):
    cfg, sh, strategies, limits, precision = qwen7b
    run = (precision, 8, limits["max_tokens"], limits["max_audio_seconds"], cfg.gradient_checkpointing)
    ddp, fsdp, ds = (plan.memory(sh, strategies[t], *run) for t in ("ddp", "fsdp", "deepspeed"))
    assert fsdp["weights"] == pytest.approx(ddp["weights"] / 8)
    assert fsdp["optimizer"] == pytest.approx(ddp["optimizer"] / 8)
    assert fsdp["gradients"] == pytest.approx(ddp["gradients"] / 2 / 8)  # ddp: + its bucket copy
    grads = sh.grads["encoder"] * 4 + sh.grads["adapter"] * 4 + sh.grads["llm"] * 2  # fp32 encoder, bf16 LLM
    assert ddp["optimizer"] == 2 * grads and ddp["gradients"] == 2 * grads
    # one FSDP unit per block (conf/trainer/fsdp.yaml's auto_wrap_policy): gathered in bf16 with its
    # gradients, what computes is one LLM layer + everything outside the LLM's layers
    total = sum(sh.params.values())
    unit = total - (sh.layers - 1) * sh.layer_params
    assert strategies["fsdp"].wrapped and unit < total / 3  # embeddings, head, encoder stay in the root unit
    assert fsdp["gathered"] == pytest.approx(unit * 2 + sum(sh.grads.values()) * unit / total * 2)
    # ZeRO 2: bf16 weights everywhere, grads and fp32 master + moments sharded
    assert ds["weights"] == sum(sh.params.values()) * 2
    assert ds["optimizer"] == sum(sh.grads.values()) * 12 / 8 and ds["gradients"] == sum(sh.grads.values()) * 2 / 8
    for m in (ddp, fsdp, ds):  # gradient checkpointing: layer inputs + one layer; logits of the text positions
        assert m["activations_llm"] == 32 * 8192 * 2 * 4096 + 8192 * 34 * 4096
        assert m["activations_encoder"] == 32 * 6000 * 2 * 1280 + 6000 * 34 * 1280
        assert m["logits"] == (8192 - 120 * 25) * 156_032 * 10


def test_deepspeed_stage_3_and_offload():
    ds3 = plan.strategy({"strategy": {"_target_": "lightning.pytorch.strategies.DeepSpeedStrategy", "stage": 3,
                                      "offload_optimizer": True}})
    assert ds3.shard == {"weights", "grads", "optimizer"} and ds3.offload
    assert plan.strategy({"strategy": "auto"}).name == "single"


def test_activations_without_checkpointing_scale_with_layers(qwen7b):
    cfg, sh, strategies, limits, precision = qwen7b
    m = plan.memory(sh, strategies["ddp"], precision, 8, 4096, 60.0, False)
    assert m["activations_llm"] == 32 * 4096 * 34 * 4096 and m["activations_encoder"] == 32 * 3000 * 34 * 1280


def test_cli_json(capsys, tiny):
    assert main(["plan", "--model", "tiny", "--stage", "all", "--trainer", "cpu", "--tokens", "1024", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    real = built_counts(tiny)
    assert d["params"]["total"] == {"total": real["all"], "trainable": real["all"], "with_grads": real["all"]}
    assert d["gpus"] == 1 and d["tokens"] == 1024 and d["audio_seconds"] == 120.0
    assert d["memory_gib"]["weights"] == pytest.approx(real["all"] * 4 / GIB)  # 32-true: fp32 weights
    assert d["memory_gib"]["optimizer"] == pytest.approx(real["all"] * 8 / GIB)
    assert d["fits"] and d["verdict"].startswith("fits") and d["assumptions"]


def test_cli_7b_table_and_verdict(capsys):
    assert main(["plan", "--model", "qwen2_audio_7b", "--stage", "all", "--trainer", "ddp"]) == 0
    out = capsys.readouterr().out
    assert "llm           7.75B      7.75B       7.75B" in out and "total         8.40B" in out
    assert "verdict: does not fit: 95.5 > 80 GiB" in out and "model.lora.r=8" in out
    # compute: ~6 x LLM params (without the embeddings) x tokens dominates a 7B step (8,192 tokens)
    tflop = float(out.split("compute: ")[1].split(" model TFLOP")[0].replace(",", ""))
    body = 7.75e9 - 2 * 156_032 * 4096
    assert 6 * body * 8192 / 1e12 < tflop < 1.4 * 6 * body * 8192 / 1e12


def test_export_folder(tiny_export):
    d = plan.plan(str(tiny_export), "pretrain", "fsdp", gpus=4)
    from qwen_audio_mt.model.export import load_pretrained
    model, _ = load_pretrained(tiny_export)
    assert d["params"]["total"]["total"] == sum(p.numel() for p in model.parameters())
    assert d["gpus"] == 4 and d["params"]["encoder"]["with_grads"] == d["params"]["encoder"]["total"]
    assert d["params"]["llm"]["trainable"] == N_TAGS * 64  # the export's tied 64-wide embeddings


def test_missing_tokenizer_counts_rows_from_the_config(tiny, tmp_path):
    """No ranks file: rows are the LLM config's (here transformers' Qwen2 default), its last
    N_TAGS rows the tag tokens."""
    from transformers import Qwen2Config
    cfg = replace(tiny, tokenizer=TokenizerSpec(base=str(tmp_path / "qwen.tiktoken"), pattern="qwen"),
                  trainable=Trainable(llm=False))
    sh, notes = plan.shape(cfg)
    assert sh.vocab == Qwen2Config().vocab_size
    assert sh.trainable["llm"] == N_TAGS * 192 and sh.grads["llm"] == sh.vocab * 192  # tied
    assert any(str(tmp_path / "qwen.tiktoken") in n for n in notes)


def test_no_architecture_is_one_line_exit_2(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("QWEN_AUDIO_MT_CHECKPOINTS", str(tmp_path))
    assert main(["plan", "--model", "whisper_small_qwen2_0.5b", "--trainer", "fsdp"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"model.llm.path={tmp_path}/Qwen2-0.5B not found" in err
    assert "model.llm.config is null" in err
    assert main(["plan", "--model", "no_such_model"]) == 2
    assert "no_such_model" in capsys.readouterr().err
    assert main(["plan", "--model", str(tmp_path / "export")]) == 2  # a path: an export folder, or nothing
    assert f"--model {tmp_path / 'export'}: no config.json there" in capsys.readouterr().err


def test_readme_plan_commands_and_table(capsys):
    """README's commands run as written (the first through the installed console script), and
    its table holds the figures they print."""
    cmds = [line[2:] for line in README.splitlines() if line.startswith("$ qwen-audio-mt plan")]
    rows = {(c[1].strip(), c[2].strip()): [x.strip() for x in c[3:11]]
            for c in (line.split("|") for line in README.splitlines() if line.startswith(("| pretrain", "| all")))}
    assert len(cmds) == len(rows) == 6
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    res = subprocess.run(["bash", "-c", cmds[0]], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stderr == "" and "verdict: fits" in res.stdout, res.stderr[-2000:]
    for cmd in cmds:
        argv = shlex.split(cmd)
        assert argv[0] == "qwen-audio-mt" and main(argv[1:] + ["--json"]) == 0
        d = json.loads(capsys.readouterr().out)
        m = {k: f"{v:.1f}" for k, v in d["memory_gib"].items()}
        shown = [m["weights"], m["gradients"], m["optimizer"], m["gathered"],
                 f"{m['activations_llm']} + {m['activations_encoder']}", m["logits"], m["total"]]
        row = rows[(d["stage"], d["trainer"])]
        assert row[:7] == shown, cmd
        assert row[7].startswith("fits" if d["fits"] else "does not fit"), cmd
