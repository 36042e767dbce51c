import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from qwen_audio_mt.cli import main

from conftest import QWEN_RANKS, need_data

VENV_BIN = Path(sys.executable).parent


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_tasks_json(capsys):
    code, out, _ = run(capsys, "tasks", "--json")
    rows = json.loads(out)
    assert code == 0 and len(rows) >= 35
    assert all({"name", "domain", "metric", "prompt", "long_audio"} <= set(r) for r in rows)
    assert min(Counter(r["domain"] for r in rows).values()) >= 8
    modes = {r["name"]: r["long_audio"] for r in rows}
    assert (modes["asr"], modes["acoustic_scene"], modes["caption_clotho"]) == ("concat", "window", "reject")


def test_tokens_with_qwen_base(capsys):
    base = need_data(*QWEN_RANKS)
    code, out, _ = run(capsys, "tokens", "--base", str(base), "--json")
    d = json.loads(out)
    assert code == 0 and d["n_vocab"] == 155165
    expected = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|startoftranscript|>": 151852,
                "<|0.00|>": 151871, "<|30.00|>": 154871, "<audio>": 155163, "</audio>": 155164}
    assert {k: d["ids"][k] for k in expected} == expected
    assert len(d["ids"]) == 3522


def test_render_asr_prompt(capsys):
    code, out, _ = run(capsys, "render", "--task", "asr", "--audio-lang", "en", "--text-lang", "en", "--json")
    d = json.loads(out)
    assert code == 0
    assert d["prompt"].endswith("<|startoftranscript|><|en|><|transcribe|><|en|><|notimestamps|><|wo_itn|>")
    assert d["ids"] == [50257 + i for i in (209, 216, 212, 216, 225)] + [d["ids"][-1]]
    code, out, _ = run(capsys, "render", "--task", "asr", "--audio-lang", "fr", "--timestamps", "--json")
    assert json.loads(out)["prompt"] == "<|startoftranscript|><|fr|><|transcribe|><|fr|><|timestamps|><|wo_itn|>"


@pytest.mark.parametrize("argv, bad", [
    (["render", "--task", "nosuch"], "'nosuch'"),
    (["render", "--task", "asr", "--audio-lang", "xx"], "'xx'"),
    (["render", "--task", "asr", "--audio-lang", "en", "--text-lang", "klingon"], "'klingon'"),
    (["tokens", "--base", "/no/such/ranks.tiktoken", "--json"], "/no/such/ranks.tiktoken"),
    (["render", "--task", "caption_clotho", "--timestamps"], "caption_clotho"),
    (["frobnicate"], "'frobnicate'"),
])
def test_bad_arguments_exit_2_with_one_line(capsys, argv, bad):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and bad in err and "Traceback" not in err


def test_console_script_and_module_entry_points():
    for cmd in ([str(VENV_BIN / "qwen-audio-mt")], [sys.executable, "-m", "qwen_audio_mt"]):
        done = subprocess.run(cmd + ["render", "--task", "nosuch"], capture_output=True, text=True)
        assert done.returncode == 2 and "unknown task 'nosuch'" in done.stderr
        assert "Traceback" not in done.stderr
    done = subprocess.run([str(VENV_BIN / "qwen-audio-mt"), "tasks"], capture_output=True, text=True)
    assert done.returncode == 0 and "tasks:" in done.stdout.splitlines()[-1]
