"""LibriSpeech converter on a miniature LibriSpeech tree of real LibriSpeech utterances."""
from __future__ import annotations

import pytest

from convert_kit import assert_audio, clip, put, put_text, quarantined, run, samples, splits
from qwen_audio_mt.data.convert import ConvertError
from qwen_audio_mt.data.convert.librispeech import plan, subset_split

REAL = "MISTER QUILTER IS THE APOSTLE OF THE MIDDLE CLASSES AND WE ARE GLAD TO WELCOME HIS GOSPEL"


def make_tree(root):
    """dev-clean: the real 1272-128104-0000 (+ a line whose flac is missing, + one without text);
    train-clean-100 and test-clean: the real_clips utterances (Ogg in the shared data -> FLAC)."""
    audio, sr = clip("qwen_audio", "1272-128104-0000.flac")
    chapter = root / "dev-clean" / "1272" / "128104"
    put(chapter / "1272-128104-0000.flac", audio, sr)
    put_text(chapter / "1272-128104.trans.txt",
             f"1272-128104-0000 {REAL}\n1272-128104-0001 NOT ON DISK\n1272-128104-0002\n")
    for subset, utt, text in (("train-clean-100", "198-209-0000", "FIRST TRAIN UTTERANCE"),
                              ("train-clean-100", "5703-47212-0000", "SECOND TRAIN UTTERANCE"),
                              ("test-clean", "3436-172162-0000", "THE TEST UTTERANCE")):
        spk, chap, _ = utt.split("-")
        folder = root / subset / spk / chap
        put(folder / f"{utt}.flac", *clip("real_clips", f"{utt}.ogg"))
        put_text(folder / f"{spk}-{chap}.trans.txt", f"{utt} {text}\n")
    return root


def test_librispeech_root(tmp_path):
    src = make_tree(tmp_path / "LibriSpeech")
    p = plan(src)
    assert p.source["dataset"] == "LibriSpeech" and p.label_sets == {}
    idx = run(p, tmp_path / "out")
    assert splits(idx, "asr") == {"test": 1, "train": 2, "valid": 1}
    got = samples(tmp_path / "out")
    real = got["1272-128104-0000"]
    assert real["text"] == REAL.lower() and real["split"] == "valid"
    assert real["audio_lang"] == "en" and real["source"] == "librispeech" and real["task"] == "asr"
    assert_audio(real, 5.86)
    assert got["198-209-0000"]["text"] == "first train utterance"
    assert_audio(got["3436-172162-0000"], 16.74)
    assert quarantined(tmp_path / "out") == {"1272-128104-0001": "missing_file",
                                             "1272-128104-0002": "bad_transcript_line"}
    assert idx["quarantine"]["by_reason"] == {"bad_transcript_line": 1, "missing_file": 1}


def test_librispeech_one_subset(tmp_path):
    src = make_tree(tmp_path / "LibriSpeech")
    idx = run(plan(src / "test-clean"), tmp_path / "out")
    assert idx["tasks"]["asr"]["splits"] == {"test": 1}
    assert idx["source"]["subsets"] == {"test-clean": 1}


def test_librispeech_layout_errors(tmp_path):
    assert [subset_split(n) for n in ("train-other-500", "dev-clean", "test-other", "other")] == \
        ["train", "valid", "test", None]
    with pytest.raises(ConvertError, match="no LibriSpeech subset"):
        plan(tmp_path)
    (tmp_path / "dev-clean").mkdir()
    with pytest.raises(ConvertError, match="trans.txt"):
        plan(tmp_path)
