"""Audio-FLAN converter on instruction JSONL files with audio beside them (real recordings)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from convert_kit import JFK, ROBIN, TRUMPET, assert_audio, clip, put, put_text, quarantined, run, samples
from qwen_audio_mt.data.convert import ConvertError
from qwen_audio_mt.data.convert.audioflan import plan
from qwen_audio_mt.data.convert.common import file_split
from qwen_audio_mt.data.convert.common import file_key

FID = file_key("speech/train")


def line(domain, audio, instruction, output, inp="", **extra):
    return json.dumps({"instruction": instruction, "input": inp, "output": output, "audio_path": audio,
                       "task_type": {"major": ["Understanding"], "minor": [domain]}, "domain": domain,
                       **extra}, ensure_ascii=False)


def make_folder(root):
    """speech/train.jsonl (speech + music + sound lines, then broken ones) and
    sound/understanding_test.jsonl (split from the name), audio relative to each file."""
    put(root / "speech" / "audio" / "jfk.flac", *clip(*JFK))
    put(root / "speech" / "audio" / "trumpet.ogg", *clip(*TRUMPET))
    put(root / "sound" / "wav" / "robin.wav", *clip(*ROBIN))
    put_text(root / "speech" / "train.jsonl", "\n".join([
        line("speech", "audio/jfk.flac", "Transcribe the speech.", "And so my fellow Americans...", uuid="u-1"),
        line("music", "audio/trumpet.ogg", "Which instrument plays?", "A trumpet.", inp="Answer in two words."),
        line("audio", "audio/jfk.flac", "Is there a bird?", "No.", split=["dev"]),
        "{not json",
        line("speech", "audio/absent.wav", "Transcribe.", "x"),
        line("video", "audio/jfk.flac", "What is shown?", "x"),
        json.dumps({"instruction": "Sing a song.", "output": "<audio>", "domain": "music"}),
        ""]))
    put_text(root / "sound" / "understanding_test.jsonl", line("sound", "wav/robin.wav", "What animal?", "A bird."))
    return root


def test_audioflan_build(tmp_path):
    p = plan(make_folder(tmp_path / "flan"))
    assert p.source["dataset"] == "Audio-FLAN"
    idx = run(p, tmp_path / "out")
    assert {t: s["splits"] for t, s in idx["tasks"].items()} == {
        "music_instruction": {"train": 1}, "sound_instruction": {"test": 1, "valid": 1},
        "speech_instruction": {"train": 1}}
    got = samples(tmp_path / "out")
    speech = got["u-1"]
    assert speech["question"] == "Transcribe the speech." and speech["answer"] == "And so my fellow Americans..."
    assert speech["task"] == "speech_instruction" and speech["audio_lang"] == "unknown"
    assert speech["task_type"] == {"major": ["Understanding"], "minor": ["speech"]}
    assert_audio(speech, 11.0)
    music = got[f"{FID}-2"]  # no uuid: {file}-{line}, the file's relative path made tar-safe
    assert music["question"] == "Which instrument plays?\nAnswer in two words." and music["answer"] == "A trumpet."
    assert_audio(music, 5.33)
    assert got[f"{FID}-3"]["split"] == "valid" and got[f"{FID}-3"]["task"] == "sound_instruction"
    robin = next(m for m in got.values() if m["split"] == "test")
    assert robin["task"] == "sound_instruction" and robin["answer"] == "A bird."
    assert quarantined(tmp_path / "out") == {f"{FID}-4": "bad_manifest_line", f"{FID}-5": "missing_file",
                                             f"{FID}-6": "bad_task", f"{FID}-7": "bad_manifest_line"}


def test_audioflan_single_file_and_splits(tmp_path):
    root = make_folder(tmp_path / "flan")
    idx = run(plan(root / "sound" / "understanding_test.jsonl"), tmp_path / "out")
    assert idx["tasks"]["sound_instruction"]["splits"] == {"test": 1}
    names = ("a/train.jsonl", "x_dev.jsonl", "test/x.jsonl", "validation/a.jsonl", "train_dev/a.jsonl", "a.jsonl")
    assert [file_split(Path(p)) for p in names] == ["train", "valid", "test", "valid", "train", "train"]
    with pytest.raises(ConvertError, match="no .jsonl"):
        plan(tmp_path / "empty")
