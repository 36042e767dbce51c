"""`qwen-audio-mt generate` on recordings a user has: a 24 kHz wav, a 48 kHz stereo mp3, a 96-s
music wav (windowed), long speech (windows joined), bad files beside good ones, exit codes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from conftest import need_data
from qwen_audio_mt.cli import main

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def model_dir(tiny_export):
    return tiny_export


def _real(name: str) -> tuple[np.ndarray, int]:
    audio, sr = sf.read(str(need_data("real_clips", name)), dtype="float32")
    return audio, sr


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Real recordings in the formats users bring, made from the shared clips."""
    d = tmp_path_factory.mktemp("audio")
    jfk, sr = _real("jfk.flac")                                 # stereo 44.1 kHz speech
    sf.write(d / "jfk_24k.wav", soxr.resample(jfk.mean(1), sr, 24000), 24000)
    sf.write(d / "jfk_48k_stereo.mp3", soxr.resample(jfk, sr, 48000), 48000, format="MP3")
    music, msr = _real("Kevin_MacLeod_-_P_I_Tchaikovsky_Dance_of_the_Sugar_Plum_Fairy.ogg")
    sf.write(d / "music_96s.wav", music[: 96 * msr], msr)
    speech = [_real(n) for n in ("198-209-0000.ogg", "3436-172162-0000.ogg", "5703-47212-0000.ogg")]
    long = np.concatenate([a for a, _ in speech * 3])              # ~136 s of real read speech at 22.05 kHz
    sf.write(d / "speech_long.flac", long, speech[0][1])
    (d / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt " + os.urandom(3000))
    (d / "empty.wav").write_bytes(b"")
    return d


def run_cli(capsys, *argv):
    code = main(["generate", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_formats_and_a_bad_file_in_one_call(capsys, model_dir, files):
    paths = [files / "jfk_24k.wav", files / "corrupt.wav", files / "jfk_48k_stereo.mp3", files / "nothere.wav",
             files / "empty.wav"]
    code, out, err = run_cli(capsys, "--model", model_dir, "--task", "asr", "--audio-lang", "en", "--max-new-tokens", 6,
                             "--json", "--audio", *paths)
    assert code == 2
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["audio"] for r in rows] == [str(p) for p in paths]
    good = [rows[0], rows[2]]
    for r in good:
        assert {"audio", "task", "prompt", "text", "parsed", "tokens", "seconds"} <= set(r) and "error" not in r
        assert r["task"] == "asr" and r["prompt"] == "<|startoftranscript|><|en|><|transcribe|><|en|><|notimestamps|><|wo_itn|>"
        assert r["seconds"] == pytest.approx(11.0, abs=0.05) and 1 <= len(r["tokens"]) <= 6
    # the same recording through two formats and rates reaches the model as nearly the same 16 kHz audio
    assert good[0]["tokens"][:2] == good[1]["tokens"][:2]
    lines = err.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("qwen-audio-mt: error: ") for line in lines)
    assert "corrupt.wav: undecodable" in lines[0] and "nothere.wav: missing file" in lines[1]
    assert "empty.wav: empty file" in lines[2]


def test_windowed_music_and_joined_speech(capsys, model_dir, files):
    code, out, err = run_cli(capsys, "--model", model_dir, "--task", "instrument", "--json",
                             "--audio", files / "music_96s.wav")
    assert code == 0, err
    (r,) = map(json.loads, out.splitlines())
    assert r["seconds"] == pytest.approx(96.0, abs=0.01)
    assert [w["start"] for w in r["windows"]] == [0.0, 28.0, 56.0, 66.0]
    labels = ("flute", "organ", "clarinet", "strings", "guitar", "electric_piano", "brass", "mallet")
    assert r["parsed"]["instrument"] in labels and r["text"] == r["parsed"]["instrument"]
    assert all(w["text"] in labels for w in r["windows"])
    code, out, err = run_cli(capsys, "--model", model_dir, "--task", "asr", "--audio-lang", "en", "--max-new-tokens", 4,
                             "--json", "--audio", files / "speech_long.flac")
    assert code == 0, err
    (r,) = map(json.loads, out.splitlines())
    assert r["seconds"] > 90 and len(r["windows"]) == 5 and r["windows"][-1]["end"] == pytest.approx(r["seconds"], abs=0.01)
    assert len(r["tokens"]) <= 4 * 5


def test_long_audio_refused_by_a_task_that_cannot_window(capsys, model_dir, files):
    code, out, err = run_cli(capsys, "--model", model_dir, "--task", "caption_clotho", "--audio", files / "music_96s.wav",
                             files / "jfk_24k.wav", "--max-new-tokens", 3)
    assert code == 2
    (line,) = err.strip().splitlines()
    assert "music_96s.wav" in line and "caption_clotho" in line and "96.0 s" in line
    assert out.count("\n") == 1 and "jfk_24k.wav" in out  # the short file is still answered


@pytest.mark.parametrize("argv, expect", [
    (["--task", "asrr"], "unknown task 'asrr'; did you mean asr"),
    (["--task", "asr", "--audio-lang", "xx"], "unknown language 'xx'"),
    (["--task", "speech_qa", "--audio-lang", "en"], "'question'"),
    (["--task", "caption_clotho", "--timestamps"], "takes no timestamps"),
    (["--prompt", "<|startoftranscript|><|nope|>"], "unknown special token '<|nope|>'"),
    (["--task", "asr", "--beam", "0"], "generation.beam_size=0"),
])
def test_bad_queries_exit_2_with_one_line(capsys, model_dir, files, argv, expect):
    code, out, err = run_cli(capsys, "--model", model_dir, *argv, "--audio", files / "jfk_24k.wav")
    assert code == 2 and out == ""
    (line,) = err.strip().splitlines()
    assert expect in line


def test_not_a_model_folder(capsys, tmp_path, files):
    code, out, err = run_cli(capsys, "--model", tmp_path, "--task", "asr", "--audio", files / "jfk_24k.wav")
    assert code == 2 and str(tmp_path) in err and "not an export folder" in err and len(err.strip().splitlines()) == 1
    bad = tmp_path / "last.ckpt"
    bad.write_bytes(b"PK\x03\x04 not really a checkpoint")
    code, out, err = run_cli(capsys, "--model", bad, "--task", "asr", "--audio", files / "jfk_24k.wav")
    assert code == 2 and "last.ckpt: not a loadable checkpoint" in err and len(err.strip().splitlines()) == 1


def test_raw_prompt_and_fields(capsys, model_dir, files):
    code, out, _ = run_cli(capsys, "--model", model_dir, "--prompt",
                           "<|startofanalysis|><|en|><|question|>What is said?<|answer|>", "--max-new-tokens", 3,
                           "--json", "--audio", files / "jfk_24k.wav")
    (r,) = map(json.loads, out.splitlines())
    assert code == 0 and r["task"] is None and r["parsed"] is None and len(r["tokens"]) <= 3
    code, out, _ = run_cli(capsys, "--model", model_dir, "--task", "speech_qa", "--audio-lang", "en",
                           "--question", "Who speaks?", "--max-new-tokens", 3, "--json", "--audio", files / "jfk_24k.wav")
    (r,) = map(json.loads, out.splitlines())
    assert code == 0 and r["prompt"] == "<|startofanalysis|><|en|><|question|>Who speaks?<|answer|>"


def test_console_script_as_a_user_runs_it(model_dir, files, tmp_path):
    """The installed entry point, from another folder, plain text output."""
    exe = Path(sys.executable).with_name("qwen-audio-mt")
    res = subprocess.run([str(exe), "generate", "--model", str(model_dir), "--task", "language_id",
                          "--audio", str(files / "jfk_48k_stereo.mp3"), str(files / "corrupt.wav")],
                         capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 2
    assert res.stdout.startswith(f"{files / 'jfk_48k_stereo.mp3'}\t") and res.stdout.count("\n") == 1
    assert res.stderr.count("\n") == 1 and "corrupt.wav: undecodable" in res.stderr


def test_closed_tasks_generate_at_most_their_longest_label(capsys, model_dir, files):
    code, out, _ = run_cli(capsys, "--model", model_dir, "--task", "language_id", "--max-new-tokens", 50, "--json",
                           "--audio", files / "jfk_24k.wav")
    (r,) = map(json.loads, out.splitlines())
    assert code == 0 and 1 <= len(r["tokens"]) <= 2  # <|xx|> and the end token at most
