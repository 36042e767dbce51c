"""ESC-50 converter on meta/esc50.csv + audio/*.wav of real 5-s recordings."""
from __future__ import annotations

import numpy as np
import pytest

from convert_kit import DRUMS, PIBBLE, ROBIN, WHALE, assert_audio, clip, index, put, put_text, quarantined, run, samples
from qwen_audio_mt.data.convert import ConvertError
from qwen_audio_mt.data.convert.esc50 import plan

HEAD = "filename,fold,target,category,esc10,src_file,take\n"


def make_folder(root):
    """Folds 1, 2, 4 and 5 with real clips; broken: a file not on disk, fold 7, an empty category."""
    for name, parts, start in (("1-100032-A-0", PIBBLE, 5), ("2-100648-A-14", ROBIN, 0),
                               ("4-181286-A-10", DRUMS, 0), ("5-200334-A-14", WHALE, 30),
                               ("3-123456-A-0", PIBBLE, 20), ("1-555555-A-14", ROBIN, 0)):
        audio, sr = clip(*parts, seconds=5, start=start)
        audio = np.pad(audio, (0, 5 * sr - len(audio)))  # ESC-50 pads short events with silence to 5 s
        put(root / "audio" / f"{name}.wav", audio, sr)
    put_text(root / "meta" / "esc50.csv", HEAD + "\n".join([
        "1-100032-A-0.wav,1,0,dog,True,100032,A",
        "2-100648-A-14.wav,2,14,chirping_birds,False,100648,A",
        "4-181286-A-10.wav,4,10,rain,True,181286,A",
        "5-200334-A-14.wav,5,14,chirping_birds,False,200334,A",
        "5-999999-A-10.wav,5,10,rain,True,999999,A",       # audio missing
        "3-123456-A-0.wav,7,0,dog,True,123456,A",          # fold out of range
        "1-555555-A-14.wav,1,,,False,555555,A"]) + "\n")   # no category
    return root


def test_esc50_build(tmp_path):
    p = plan(make_folder(tmp_path / "ESC-50-master"))
    assert p.label_sets == {"sound_event": ["dog", "rain", "chirping_birds"]}  # by class index
    idx = run(p, tmp_path / "out")
    assert idx["label_sets"] == {"sound_event": ["dog", "rain", "chirping_birds"]}
    assert idx["source"]["dataset"] == "ESC-50"
    assert idx["tasks"]["sound_event"]["splits"] == {"test": 1, "train": 2, "valid": 1}
    got = samples(tmp_path / "out")
    assert {k: (m["label"], m["split"]) for k, m in got.items()} == {
        "1-100032-A-0": ("dog", "train"), "2-100648-A-14": ("chirping_birds", "train"),
        "4-181286-A-10": ("rain", "valid"), "5-200334-A-14": ("chirping_birds", "test")}
    for meta in got.values():
        assert_audio(meta, 5.0, tol=0.01)
        assert meta["audio_lang"] == "unknown"
    assert quarantined(tmp_path / "out") == {"5-999999-A-10": "missing_file", "3-123456-A-0": "bad_fold",
                                             "1-555555-A-14": "bad_label"}


def test_esc50_layout_errors(tmp_path):
    with pytest.raises(ConvertError, match="meta/esc50.csv"):
        plan(tmp_path)
    put_text(tmp_path / "meta" / "esc50.csv", "filename,fold,target\n1-1-A-0.wav,1,0\n")
    with pytest.raises(ConvertError, match="missing column.*category"):
        plan(tmp_path)


def test_esc50_through_the_cli(tmp_path, capsys):
    from qwen_audio_mt.cli import main
    from qwen_audio_mt.data.convert import MODULES, formats
    assert set(formats()) == set(MODULES)  # every converter module imports and registers
    src, out = make_folder(tmp_path / "ESC-50-master"), tmp_path / "out"
    args = ["shards", "build", "--format", "esc50", "--src", str(src), "--out", str(out), "--workers", "1"]
    assert main(args + ["--max-quarantine", "0.5"]) == 0
    printed = capsys.readouterr().out
    assert "4 samples" in printed and "quarantined 3 of 7 inputs" in printed and "bad_fold: 1" in printed
    assert index(out)["tasks"]["sound_event"]["samples"] == 4
    assert main(args) == 1  # the default 5% limit: 3 of 7 rejected fails the (resumed) build
    capsys.readouterr()


def test_esc50_cli_layout_error(tmp_path, capsys):
    from qwen_audio_mt.cli import main
    (tmp_path / "src").mkdir()
    code = main(["shards", "build", "--format", "esc50", "--src", str(tmp_path / "src"), "--out", str(tmp_path / "out"),
                 "--workers", "1"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("qwen-audio-mt: error: missing ") and "meta/esc50.csv" in err
    assert not (tmp_path / "out").exists()
