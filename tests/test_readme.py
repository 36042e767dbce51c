"""README stays true: its generate and evaluation commands run as written (placeholders RUN and
the audio file names filled in with a tiny model and real recordings), and its task counts are
the registry's."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from conftest import need_data, tiny_model_config
from qwen_audio_mt.model.builders import build_model
from qwen_audio_mt.model.export import export
from qwen_audio_mt.paths import REPO_ROOT
from qwen_audio_mt.tasks import load_tasks

README = (REPO_ROOT / "README.md").read_text()


def commands(prefix: str) -> list[str]:
    """README console lines starting with `$ prefix`, without the prompt and trailing comments."""
    out = []
    for line in README.splitlines():
        if line.startswith(f"$ {prefix}"):
            out.append(re.sub(r"\s+#.*$", "", line[2:]).strip())
    return list(dict.fromkeys(out))  # a command shown twice runs once


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory, small_corpus):
    """A user's folder: outputs/train/RUN/{export, checkpoints/last.ckpt}, shards/embedded, and the
    recordings the README names, made from the shared real clips."""
    d = tmp_path_factory.mktemp("user")
    torch.manual_seed(0)
    cfg = tiny_model_config()
    model = build_model(cfg)
    run = d / "outputs" / "train" / "RUN"
    export(model, cfg, run / "export")
    (run / "checkpoints").mkdir()
    # what lit.AudioLMModule writes (the parts load_checkpoint reads)
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "model_config": asdict(cfg)}, run / "checkpoints" / "last.ckpt")
    (d / "shards").mkdir()
    (d / "shards" / "embedded").symlink_to(small_corpus / "embedded")
    jfk, sr = sf.read(str(need_data("real_clips", "jfk.flac")), dtype="float32")
    sf.write(d / "speech.wav", soxr.resample(jfk.mean(1), sr, 24000), 24000)
    music, msr = sf.read(str(need_data("real_clips", "Kevin_MacLeod_-_P_I_Tchaikovsky_Dance_of_the_Sugar_Plum_Fairy.ogg")),
                         dtype="float32")
    sf.write(d / "music.mp3", np.stack([music[: 20 * msr]] * 2, 1), msr, format="MP3")
    sf.write(d / "long_music.wav", music[: 96 * msr], msr)
    street, ssr = sf.read(str(need_data("real_clips", "glacier-bay-humpback.ogg")), dtype="float32")
    sf.write(d / "street.flac", street[: 12 * ssr], ssr)
    (d / "outputs" / "sft" / "RUN").mkdir(parents=True)  # a chat model where README's chat commands look
    (d / "outputs" / "sft" / "RUN" / "export").symlink_to(run / "export")
    (d / "conversation.txt").write_text("/audio speech.wav\nWhat does the person say?\n/audio music.mp3\n"
                                        "Is it the same voice as here?\n")
    return d


def run(cmd: str, cwd: Path, root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "QWEN_AUDIO_MT_ROOT": str(root), "OMP_NUM_THREADS": "1",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run(["bash", "-c", cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


GENERATE = commands("qwen-audio-mt generate")


def test_readme_shows_generate():
    assert len(GENERATE) >= 4 and any("--json" in c for c in GENERATE) and any("--prompt" in c for c in GENERATE)


@pytest.mark.parametrize("cmd", GENERATE, ids=[f"generate{i}" for i in range(len(GENERATE))])
def test_generate_command_runs_as_written(cmd, user_dir):
    res = run(cmd + " --max-new-tokens 4", user_dir, user_dir)
    assert res.returncode == 0, res.stderr[-2000:]
    files = [a for a in shlex.split(cmd) if Path(user_dir, a).suffix in (".wav", ".mp3", ".flac")]
    lines = res.stdout.strip().splitlines()
    assert len(lines) == len(files) and res.stderr.strip() == ""
    if "--json" in cmd:
        assert [json.loads(x)["audio"] for x in lines] == files
    else:
        assert [x.split("\t")[0] for x in lines] == files


def test_evaluation_commands_run_as_written(user_dir, tmp_path):
    reg = load_tasks()
    cmds = commands("make eval") + commands("python -m qwen_audio_mt.eval")
    assert len(cmds) == 2
    for cmd in cmds:
        # outputs/train/RUN is the user's folder; make runs in the checkout, as the README means
        cmd = cmd.replace("outputs/train/RUN", str(user_dir / "outputs" / "train" / "RUN"))
        res = run(cmd, REPO_ROOT, user_dir)
        assert res.returncode == 0, res.stderr[-2000:]
        rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in res.stdout.splitlines()
                if line.startswith("| ") and not line.startswith(("| task", "| ---"))}
        assert set(rows) == set(reg.names)
        for name, cells in rows.items():
            assert cells[2] == reg.get(name).metric and cells[4] != "—", name  # the metric, a baseline
    outs = sorted((user_dir / "outputs" / "eval").iterdir())
    assert len(outs) == 2
    for out in outs:  # the three report files of each
        assert set(json.loads((out / "metrics.json").read_text())["tasks"]) == set(reg.names)
        assert (out / "metrics.md").read_text().count("\n| ") == len(reg) + 2
        assert (out / "metrics.png").read_bytes()[:4] == b"\x89PNG"


def test_task_counts_are_the_registry():
    reg = load_tasks()
    m = re.search(r"the task registry: (\d+) tasks \((\d+) speech, (\d+) sound, (\d+) music\)", README)
    assert m and [int(x) for x in m.groups()] == [len(reg)] + [len(reg.by_domain(d)) for d in ("speech", "sound", "music")]


def test_error_example_runs_as_written(tmp_path):
    """'When things go wrong' shows a command and the one line it prints: both as written."""
    lines = README.split("## When things go wrong", 1)[1].splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("$ python -m qwen_audio_mt.train"))
    cmd, shown = lines[at][2:], lines[at + 1]
    out = subprocess.run([*shlex.split(cmd), f"hydra.run.dir={tmp_path}"], cwd=REPO_ROOT, capture_output=True,
                         text=True, env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
                         timeout=300)
    assert (out.returncode, out.stderr) == (2, shown + "\n")


CHAT = commands("qwen-audio-mt chat")


def test_readme_chat_commands_run_as_written(user_dir):
    assert len(CHAT) == 2
    for cmd in CHAT:
        res = run(cmd + " --max-new-tokens 4", user_dir, user_dir)  # interactive: stdin is empty, so it ends
        assert res.returncode == 0, res.stderr[-2000:]
        if "--json" in cmd:
            replies = [json.loads(x) for x in res.stdout.strip().splitlines()]
            assert [r["turn"] for r in replies] == [1, 2]
            assert [len(r["audios"]) for r in replies] == [1, 2]  # the second turn still holds Audio 1


def test_readme_chat_library_example_runs(user_dir, monkeypatch):
    block = README.split("```python\nfrom qwen_audio_mt.chat import ChatSession", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(user_dir)
    code = "from qwen_audio_mt.chat import ChatSession" + block
    code = code.replace('ChatSession.load("outputs/sft/RUN/export")',
                        'ChatSession.load("outputs/sft/RUN/export", generation=GenerationConfig(max_new_tokens=4))')
    exec(compile("from qwen_audio_mt.generate import GenerationConfig\n" + code, "README", "exec"), {})
    saved = json.loads((user_dir / "conversation.json").read_text())
    assert [m["role"] for m in saved["messages"]][-4:] == ["user", "assistant", "user", "assistant"]
    assert len(saved["audios"]) == 2


def test_readme_sft_commands_are_make_targets():
    """make sft itself takes ~10 minutes (measured in README); here: the targets and the
    shards command README names exist as written."""
    assert commands("make sft") == ["make sft", 'make sft ARGS="model.lora.r=8"']
    dry = subprocess.run(["make", "-n", "sft"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0 and "qwen_audio_mt shards chat --from shards/embedded" in dry.stdout
    assert "qwen_audio_mt.train experiment=sft" in dry.stdout


def test_readme_import_and_export_commands_run_as_written(user_dir):
    """`qwen-audio-mt import` / `export` lines, in a user's folder holding a (tiny) release and
    Qwen's ranks where README puts them (checkpoints/)."""
    from conftest import save_tiny_qwen2_audio

    from qwen_audio_mt.model.builders import LLMConfig, ModelConfig
    from qwen_audio_mt.model.encoder import EncoderConfig

    from qwen_audio_mt.tokenizer import Tokenizer, TokenizerSpec
    ranks = need_data("qwen_audio", "qwen.tiktoken")
    ckpts = user_dir / "checkpoints"
    ckpts.mkdir(exist_ok=True)
    if not (ckpts / "qwen.tiktoken").exists():
        (ckpts / "qwen.tiktoken").symlink_to(ranks)
        tok = Tokenizer.from_spec(TokenizerSpec(base=str(ranks), pattern="qwen"))
        save_tiny_qwen2_audio(ckpts / "Qwen2-Audio-7B", tok)
        from qwen_audio_mt.model.qwen_audio import save_qwen_audio  # a tiny QWen-layout release
        qwen = ModelConfig(EncoderConfig(n_state=16, n_head=2, n_layer=1), tokenizer=tok.spec, llm=LLMConfig(config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
            vocab_size=155_947, tie_word_embeddings=False)))  # QWen has no grouped-query attention
        save_qwen_audio(build_model(qwen, tok), tok, ckpts / "Qwen-Audio")
    cmds = commands("qwen-audio-mt import") + commands("qwen-audio-mt export")
    assert {c.split()[1] for c in cmds} == {"import", "export"}
    for cmd in cmds:
        res = run(cmd, user_dir, user_dir)
        assert res.returncode == 0, res.stderr[-2000:]
        out = Path(user_dir, shlex.split(cmd)[shlex.split(cmd).index("--out") + 1])
        assert (out / "config.json").exists() and (out / "model.safetensors").exists(), cmd
