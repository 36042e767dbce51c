"""Chat SFT end to end on a tiny model: conversation shards from the task corpus (plus the
official Qwen-Audio-Chat sample), `experiment=sft` from a pretrained export (encoder frozen,
adapter and LLM train; or LoRA), the chat evaluation of the SFT model beside the pretrained one."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import need_data
from safetensors.torch import load_file
from test_train import compose_train

from qwen_audio_mt.paths import REPO_ROOT
from qwen_audio_mt.train import train

SMALL = ["data.loader.num_workers=0", "data.loader.limits.max_batch_size=4", "data.loader.limits.pool=8",
         "trainer.max_steps=4", "trainer.val_check_interval=2", "trainer.limit_val_batches=1",
         "trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false",
         "chat_eval.max_per_family=40", "chat_eval.max_new_tokens=6", "logger=csv"]


@pytest.fixture(scope="module")
def chat_shards(small_corpus, tmp_path_factory):
    """`qwen-audio-mt shards chat` as make sft runs it, on the small corpus."""
    out = tmp_path_factory.mktemp("sft") / "chat"
    sample = need_data("qwen_audio", "sft_sample.txt")
    cmd = [sys.executable, "-m", "qwen_audio_mt", "shards", "chat", "--from", str(small_corpus / "embedded"),
           "--chatml", str(sample), "--per-task", "6", "--valid-per-task", "1", "--test-per-task", "2",
           "--text", "20", "--test-text", "4", "--out", str(out), "--max-quarantine", "0.5"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "quarantined 1 of" in done.stdout and "missing_file: 1" in done.stdout  # the sample's 3rd line
    return out


@pytest.fixture(scope="module")
def pretrained(tiny_export) -> Path:
    """What make pretrain leaves: an export folder (a tiny random model's)."""
    return tiny_export


def sft(tmp_path, chat_shards, pretrained, *overrides):
    cfg = compose_train(tmp_path / "run", "experiment=sft", f"init_from={pretrained}",
                        f"mixture.sources=[{{path: {chat_shards}}}]", *SMALL, *overrides)
    return train(cfg), tmp_path / "run"


def test_sft_trains_from_the_pretrained_export_and_scores_both(tmp_path, chat_shards, pretrained):
    summary, run = sft(tmp_path, chat_shards, pretrained)
    before = load_file(str(pretrained / "model.safetensors"))
    after = load_file(str(run / "export" / "model.safetensors"))
    enc = [k for k in before if k.startswith("encoder.")]
    llm = [k for k in before if k.startswith("llm.") and "layers" in k]
    assert enc and all(torch.equal(before[k], after[k]) for k in enc)       # frozen (stage sft)
    assert any(not torch.equal(before[k], after[k]) for k in llm)          # trained
    doc = json.loads((run / "chat_metrics.json").read_text())
    assert set(doc["models"]) == {"sft", "pretrained"}
    rows = doc["models"]["sft"]
    assert rows["chat_single/closed"]["metric"] == "accuracy"
    assert rows["chat_single/transcript"]["metric"] == "wer"
    assert rows["chat_text/text"]["metric"] == "exact_match" and rows["chat_text/text"]["n"] == 4
    assert rows.keys() == doc["models"]["pretrained"].keys()
    table = (run / "chat_metrics.md").read_text()
    assert table.splitlines()[0] == "| conversations | metric | n | sft | pretrained |"
    # the per-family training loss was logged by family name
    header = (run / "logs" / "metrics.csv").read_text().splitlines()[0]
    assert "val/loss" in header


def test_lora_sft_trains_only_adapters_and_exports_plain(tmp_path, chat_shards, pretrained):
    summary, run = sft(tmp_path, chat_shards, pretrained, "model.lora.r=4")
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert any("lora_A" in k for k in ckpt["state_dict"])
    exported = load_file(str(run / "export" / "model.safetensors"))
    assert not any("lora" in k for k in exported)       # merged: loads without peft
    before = load_file(str(pretrained / "model.safetensors"))
    assert exported.keys() == before.keys()


def test_init_from_latest_without_a_pretraining_run_is_one_line(tmp_path, chat_shards):
    out = subprocess.run([sys.executable, "-m", "qwen_audio_mt.train", "experiment=sft", f"paths.output={tmp_path}",
                          f"mixture.sources=[{{path: {chat_shards}}}]", f"hydra.run.dir={tmp_path / 'run'}"],
                         capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == (
        f"qwen_audio_mt.train: error: init_from=latest: no export under {tmp_path / 'train'} (run make pretrain "
        "first, or set init_from=PATH to an export folder or .ckpt)")
