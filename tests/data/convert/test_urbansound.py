"""UrbanSound8K converter on metadata/UrbanSound8K.csv + audio/fold{n}/ of real recordings."""
from __future__ import annotations

import pytest

from convert_kit import DRUMS, JFK, PIBBLE, assert_audio, clip, put, put_text, quarantined, run, samples
from qwen_audio_mt.data.convert import ConvertError
from qwen_audio_mt.data.convert.urbansound import plan

HEAD = "slice_file_name,fsID,start,end,salience,fold,classID,class\n"


def make_folder(root):
    """Folds 1, 9, 10 with real clips (the dataset's 24-bit stereo wavs kept as such for one);
    broken: a 50-ms slice (too short), an empty class, a slice not on disk."""
    put(root / "audio" / "fold1" / "100032-3-0-0.wav", *clip(*PIBBLE, seconds=4, start=5))
    put(root / "audio" / "fold9" / "14113-9-0-1.wav", *clip(*DRUMS, seconds=4))
    put(root / "audio" / "fold10" / "24074-2-0-0.wav", *clip(*JFK, seconds=3.5), subtype="PCM_24")
    put(root / "audio" / "fold1" / "7061-6-0-0.wav", *clip(*DRUMS, seconds=0.05))
    put(root / "audio" / "fold2" / "99180-9-0-7.wav", *clip(*DRUMS, seconds=4, start=8))
    put_text(root / "metadata" / "UrbanSound8K.csv", HEAD + "\n".join([
        "100032-3-0-0.wav,100032,0,4,1,1,3,dog_bark",
        "14113-9-0-1.wav,14113,0.5,4.5,1,9,9,street_music",
        "24074-2-0-0.wav,24074,1,4.5,2,10,2,children_playing",
        "7061-6-0-0.wav,7061,0,0.05,1,1,6,gun_shot",
        "99180-9-0-7.wav,99180,3,7,1,2,9,",
        "12345-1-0-0.wav,12345,0,4,1,3,1,car_horn"]) + "\n")
    return root


def test_urbansound_build(tmp_path):
    p = plan(make_folder(tmp_path / "UrbanSound8K"))
    classes = ["car_horn", "children_playing", "dog_bark", "gun_shot", "street_music"]  # by classID
    assert p.label_sets == {"sound_event": classes}
    idx = run(p, tmp_path / "out")
    assert idx["label_sets"]["sound_event"] == classes and idx["source"]["dataset"] == "UrbanSound8K"
    assert idx["tasks"]["sound_event"]["splits"] == {"test": 1, "train": 1, "valid": 1}
    got = samples(tmp_path / "out")
    assert {k: (m["label"], m["split"]) for k, m in got.items()} == {
        "100032-3-0-0": ("dog_bark", "train"), "14113-9-0-1": ("street_music", "valid"),
        "24074-2-0-0": ("children_playing", "test")}
    assert_audio(got["24074-2-0-0"], 3.5, tol=0.01)  # stereo 24-bit 44.1 kHz -> 16-kHz mono
    assert quarantined(tmp_path / "out") == {"7061-6-0-0": "too_short", "99180-9-0-7": "bad_label",
                                             "12345-1-0-0": "missing_file"}


def test_urbansound_layout_errors(tmp_path):
    with pytest.raises(ConvertError, match="UrbanSound8K.csv"):
        plan(tmp_path)
    put_text(tmp_path / "metadata" / "UrbanSound8K.csv", "slice_file_name,fsID,class\na.wav,1,dog_bark\n")
    with pytest.raises(ConvertError, match="missing column.*fold"):
        plan(tmp_path)
