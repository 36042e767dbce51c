"""NSynth converter on nsynth-{train,test}/ folders: examples.json + 4-s 16-kHz notes cut from
real instrument recordings."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soxr

from convert_kit import TRUMPET, assert_audio, clip, put, put_text, quarantined, run, samples
from qwen_audio_mt.data.convert import ConvertError
from qwen_audio_mt.data.convert.nsynth import FAMILIES, plan

TASKS = ("music_pitch", "music_velocity", "instrument")


def note(attrs: dict, family: str, pitch: int, velocity: int) -> dict:
    return {**attrs, "pitch": pitch, "velocity": velocity, "instrument_family_str": family,
            "instrument_source_str": "acoustic", "qualities_str": ["bright"], "sample_rate": 16000}


def write_split(folder, notes: dict, audio: dict) -> None:
    put_text(folder / "examples.json", json.dumps(notes))
    for name, x in audio.items():
        put(folder / "audio" / f"{name}.wav", x, 16000, subtype="PCM_16")


def make_root(root):
    """train: a trumpet note (brass) and a note of a family NSynth lacks; test: a string note
    (a cut of the string orchestra) and a note whose wav is missing."""
    def four_s(parts, start):
        x, sr = clip(*parts, seconds=4, start=start)
        return soxr.resample(x if x.ndim == 1 else x.mean(axis=1), sr, 16000).astype(np.float32)[:64000]
    strings = ("real_clips", "Hungarian_Dance_number_5_-_Allegro_in_F_sharp_minor_(string_orchestra).ogg")
    write_split(root / "nsynth-train",
                {"brass_acoustic_046-065-075": note({"note": 1}, "brass", 65, 75),
                 "theremin_electronic_001-060-100": note({"note": 2}, "theremin", 60, 100)},
                {"brass_acoustic_046-065-075": four_s(TRUMPET, 0.5),
                 "theremin_electronic_001-060-100": four_s(TRUMPET, 1)})
    write_split(root / "nsynth-test",
                {"string_acoustic_012-054-127": note({"note": 3}, "string", 54, 127),
                 "flute_acoustic_002-077-050": note({"note": 4}, "flute", 77, 50)},
                {"string_acoustic_012-054-127": four_s(strings, 10)})
    return root


def test_nsynth_root(tmp_path):
    p = plan(make_root(tmp_path / "nsynth"))
    assert p.label_sets == {"instrument": FAMILIES} and len(FAMILIES) == 11
    idx = run(p, tmp_path / "out")
    assert idx["label_sets"] == {"instrument": FAMILIES} and idx["source"]["dataset"] == "NSynth"
    assert {t: idx["tasks"][t]["splits"] for t in TASKS} == {
        "music_pitch": {"test": 1, "train": 2}, "music_velocity": {"test": 1, "train": 2},
        "instrument": {"test": 1, "train": 1}}
    got = samples(tmp_path / "out")
    brass = "brass_acoustic_046-065-075"
    assert got[f"{brass}-music_pitch"]["pitch"] == 65 and got[f"{brass}-music_velocity"]["velocity"] == 75
    assert got[f"{brass}-instrument"]["instrument"] == "brass"
    assert got["string_acoustic_012-054-127-instrument"]["split"] == "test"
    assert got[f"{brass}-music_pitch"]["_shard"].startswith("train-music_pitch-")
    for meta in got.values():
        assert_audio(meta, 4.0, tol=0.001)
    q = quarantined(tmp_path / "out")
    assert q == {"theremin_electronic_001-060-100-instrument": "bad_label",
                 **{f"flute_acoustic_002-077-050-{t}": "missing_file" for t in TASKS}}


def test_nsynth_one_split_folder(tmp_path):
    root = make_root(tmp_path / "nsynth")
    idx = run(plan(root / "nsynth-test"), tmp_path / "out")
    assert {t: s["splits"] for t, s in idx["tasks"].items()} == {t: {"test": 1} for t in TASKS}


def test_nsynth_layout_errors(tmp_path):
    with pytest.raises(ConvertError, match="nsynth-train"):
        plan(tmp_path)
    (tmp_path / "nsynth-valid").mkdir()
    with pytest.raises(ConvertError, match="nsynth-valid/examples.json"):
        plan(tmp_path)
    put_text(tmp_path / "nsynth-valid" / "examples.json", "[1, 2]")
    with pytest.raises(ConvertError, match="note_str"):
        plan(tmp_path)


def test_nsynth_jobs_survive_a_worker_pool(tmp_path):
    """Job functions and arguments are picklable: two workers write the same shards as one."""
    from qwen_audio_mt.data.build import build
    from qwen_audio_mt.data.shards import ShardConfig
    p = plan(make_root(tmp_path / "nsynth"))
    one = run(p, tmp_path / "one")
    two = build(p.streams, tmp_path / "two", ShardConfig(workers=2), p.source, p.label_sets, progress=False)
    assert [s["sha256"] for s in two["shards"]] == [s["sha256"] for s in one["shards"]]
    assert two["quarantine"] == one["quarantine"]
