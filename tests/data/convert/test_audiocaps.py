"""AudioCaps converter on the three CSVs and audio/{split}/{youtube_id}.wav of real recordings."""
from __future__ import annotations

import pytest

from convert_kit import (DRUMS, PIBBLE, ROBIN, TRUMPET, WHALE, assert_audio, clip, put, put_text, quarantined, run,
                         samples)
from qwen_audio_mt.data.convert import ConvertError
from qwen_audio_mt.data.convert.audiocaps import plan

HEAD = "audiocap_id,youtube_id,start_time,caption\n"
VAL_CAPTIONS = ["A whale sings in deep water", "Low moaning whale song", "A humpback whale calls",
                "Whale song echoes underwater", "A large animal moans slowly"]


def make_folder(root):
    """train: 3 clips (one in audio/ directly, the accepted fallback); val: one clip with five
    caption rows (out of id order); test: one clip with audio, one never downloaded."""
    put(root / "audio" / "train" / "-0Gj8-vB1q4.wav", *clip(*ROBIN))
    put(root / "audio" / "train" / "Ab12Cd34Ef5.wav", *clip(*TRUMPET))
    put(root / "audio" / "xY_9zz8-Q0o.wav", *clip(*PIBBLE, seconds=10))
    put(root / "audio" / "val" / "whale000001.wav", *clip(*WHALE, seconds=10, start=20))
    put(root / "audio" / "test" / "drums000001.wav", *clip(*DRUMS, seconds=10))
    put_text(root / "train.csv", HEAD + '91139,-0Gj8-vB1q4,30,A bird chirps once\n'
             '58146,Ab12Cd34Ef5,0,"A trumpet plays a jazzy, bluesy phrase"\n58147,xY_9zz8-Q0o,10,A dog howls\n')
    rows = [f"{100 + i},whale000001,20,{c}\n" for i, c in enumerate(VAL_CAPTIONS)]
    put_text(root / "val.csv", HEAD + "".join(rows[1:] + rows[:1]))
    put_text(root / "test.csv", HEAD + "200,drums000001,0,Drums and bass play fast\n201,missing0001,0,Rain falls\n")
    return root


def test_audiocaps_build(tmp_path):
    p = plan(make_folder(tmp_path / "audiocaps"))
    assert p.source["dataset"] == "AudioCaps" and sorted(p.source["files"]) == ["test.csv", "train.csv", "val.csv"]
    idx = run(p, tmp_path / "out")
    assert idx["tasks"]["caption_audiocaps"]["splits"] == {"test": 1, "train": 3, "valid": 1}
    got = samples(tmp_path / "out")
    assert got["-0Gj8-vB1q4"]["caption"] == "A bird chirps once"
    assert got["Ab12Cd34Ef5"]["caption"] == "A trumpet plays a jazzy, bluesy phrase"
    assert_audio(got["-0Gj8-vB1q4"], 2.7)
    assert_audio(got["xY_9zz8-Q0o"], 10.0)  # found at the audio/{youtube_id}.wav fallback
    whale = got["whale000001"]
    assert whale["split"] == "valid" and whale["captions"] == VAL_CAPTIONS and whale["caption"] == VAL_CAPTIONS[0]
    assert whale["task"] == "caption_audiocaps" and whale["source"] == "audiocaps"
    assert quarantined(tmp_path / "out") == {"missing0001": "missing_file"}


def test_audiocaps_csvs_in_dataset_folder(tmp_path):
    root = make_folder(tmp_path / "audiocaps")
    (root / "dataset").mkdir()
    for name in ("train.csv", "val.csv", "test.csv"):
        (root / name).rename(root / "dataset" / name)
    assert run(plan(root), tmp_path / "out")["tasks"]["caption_audiocaps"]["samples"] == 5


def test_audiocaps_layout_errors(tmp_path):
    with pytest.raises(ConvertError, match="train.csv"):
        plan(tmp_path)
    put_text(tmp_path / "val.csv", "audiocap_id,ytid,start_time,caption\n1,a,0,x\n")
    with pytest.raises(ConvertError, match="val.csv: missing column.*youtube_id"):
        plan(tmp_path)
