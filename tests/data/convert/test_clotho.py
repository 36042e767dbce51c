"""Clotho converter on the three caption CSVs and split audio folders of real recordings."""
from __future__ import annotations

import csv
import io

import pytest

from convert_kit import DRUMS, PIBBLE, ROBIN, TRUMPET, assert_audio, clip, put, put_text, quarantined, run, samples
from qwen_audio_mt.data.convert import ConvertError
from qwen_audio_mt.data.convert.clotho import plan
from qwen_audio_mt.data.ingest import sanitize_key

COLS = ["file_name"] + [f"caption_{i}" for i in range(1, 6)]
ROBIN_CAPS = ["A bird whistles a single clear call.", "A robin, close by, chirps once.",
              "One short birdsong in the open air.", "A small bird sings, then silence.",
              "A songbird gives a quick whistle."]


def csv_text(rows):
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLS)
    w.writerows(rows)
    return buf.getvalue()


def make_folder(root):
    """development: two files with Clotho-style names (spaces, commas); validation: one;
    evaluation: one present, one absent from the audio folder."""
    put(root / "development" / "Robin single 13.wav", *clip(*ROBIN))
    put(root / "development" / "Robin_single_13.wav", *clip(*TRUMPET))  # sanitises to the same stem
    put(root / "validation" / "pibble, howling.wav", *clip(*PIBBLE, seconds=15))
    put(root / "evaluation" / "drum and bass.wav", *clip(*DRUMS, seconds=20))
    put_text(root / "clotho_captions_development.csv", csv_text(
        [["Robin single 13.wav", *ROBIN_CAPS], ["Robin_single_13.wav", "A trumpet plays.", *["x"] * 4]]))
    put_text(root / "clotho_captions_validation.csv", csv_text([["pibble, howling.wav", "A dog howls.", *["y"] * 4]]))
    put_text(root / "clotho_captions_evaluation.csv", csv_text(
        [["drum and bass.wav", "Fast drums and bass.", *["z"] * 4], ["gone.wav", *["w"] * 5]]))
    return root


def test_clotho_build(tmp_path):
    p = plan(make_folder(tmp_path / "clotho"))
    assert p.source["dataset"] == "Clotho"
    idx = run(p, tmp_path / "out")
    assert idx["tasks"]["caption_clotho"]["splits"] == {"test": 1, "train": 2, "valid": 1}
    got = samples(tmp_path / "out")
    assert all(sanitize_key(k) == k for k in got)
    robin = [m for m in got.values() if m["caption"] == ROBIN_CAPS[0]]
    assert len(robin) == 1 and robin[0]["captions"] == ROBIN_CAPS and robin[0]["split"] == "train"
    assert robin[0]["key"] != "Robin_single_13"  # the name with spaces does not collide
    assert got["Robin_single_13"]["caption"] == "A trumpet plays."
    assert_audio(robin[0], 2.7)
    pibble = [m for m in got.values() if m["split"] == "valid"][0]
    assert pibble["caption"] == "A dog howls." and len(pibble["captions"]) == 5
    assert_audio(pibble, 15.0)
    assert quarantined(tmp_path / "out") == {"gone": "missing_file"}


def test_clotho_layout_errors(tmp_path):
    with pytest.raises(ConvertError, match="clotho_captions_development.csv"):
        plan(tmp_path)
    put_text(tmp_path / "clotho_captions_evaluation.csv", "file_name,caption\na.wav,x\n")
    with pytest.raises(ConvertError, match="missing column.*caption_1"):
        plan(tmp_path)
