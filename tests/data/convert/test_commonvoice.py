"""Common Voice converter on a miniature language folder: real speech (JFK, FSDD digits) as mp3."""
from __future__ import annotations

import pytest

from convert_kit import JFK, JFK_TEXT, assert_audio, clip, index, put, put_text, quarantined, run, samples
from qwen_audio_mt.data.convert import ConvertError
from qwen_audio_mt.data.convert.commonvoice import lang_code, plan

HEAD = "client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\taccents"
DIGITS = {"0_george_0": "Zero.", "1_jackson_0": "One.", "2_lucas_0": "Two.", "3_nicolas_0": "Three.",
          "0_lucas_0": "Zero."}


def make_folder(root):
    """en/: train.tsv without a locale column (language from the folder name), dev.tsv and
    test.tsv with one; broken rows: a clip not on disk, a Portuguese row, a non-UTF-8 sentence."""
    put(root / "clips" / "common_voice_en_1.mp3", *clip(*JFK), fmt="MP3")
    for n, name in enumerate(DIGITS, 2):
        put(root / "clips" / f"common_voice_en_{n}.mp3", *clip("fsdd", f"{name}.wav"), fmt="MP3")
    train = [HEAD, f"c1\tcommon_voice_en_1.mp3\t{JFK_TEXT}\t2\t0\t\t\t",
             "c2\tcommon_voice_en_2.mp3\tZero.\t2\t0\tthirties\tmale\t",
             "c3\tcommon_voice_en_99.mp3\tNot on disk.\t2\t0\t\t\t"]
    put_text(root / "train.tsv", "\n".join(train) + "\n")
    dev = [HEAD + "\tlocale", "c4\tcommon_voice_en_3.mp3\tOne.\t2\t0\t\t\t\ten",
           "c5\tcommon_voice_en_4.mp3\tDois.\t2\t0\t\t\t\tpt"]
    put_text(root / "dev.tsv", "\n".join(dev) + "\n")
    test = (HEAD + "\tlocale\nc6\tcommon_voice_en_5.mp3\tThree.\t2\t0\t\t\t\ten\n").encode()
    test += b"c7\tcommon_voice_en_6.mp3\tZ\xe9ro.\t2\t0\t\t\t\ten\n"  # latin-1 byte: not UTF-8
    put_text(root / "test.tsv", test)
    return root


def test_commonvoice_build(tmp_path):
    src = make_folder(tmp_path / "cv-corpus-17.0-2024-03-15" / "en")
    p = plan(src)
    assert p.source["dataset"] == "Common Voice" and set(p.source["files"]) == {"train.tsv", "dev.tsv", "test.tsv"}
    idx = run(p, tmp_path / "out")
    assert idx["tasks"]["asr"]["splits"] == {"test": 1, "train": 2, "valid": 1}
    got = samples(tmp_path / "out")
    jfk = got["common_voice_en_1"]
    assert jfk["text"] == JFK_TEXT and jfk["audio_lang"] == "en" and jfk["split"] == "train"
    assert_audio(jfk, 11.0, tol=0.1)  # stereo 44.1-kHz mp3 -> 16-kHz mono
    assert got["common_voice_en_3"]["text"] == "One." and got["common_voice_en_3"]["split"] == "valid"
    assert_audio(got["common_voice_en_5"], len(clip("fsdd", "3_nicolas_0.wav")[0]) / 8000, tol=0.06)
    assert quarantined(tmp_path / "out") == {"common_voice_en_99": "missing_file", "common_voice_en_4": "bad_language",
                                             "common_voice_en_6": "bad_text_encoding"}
    assert index(tmp_path / "out")["quarantine"]["total"] == 3


def test_commonvoice_language_from_folder(tmp_path):
    src = make_folder(tmp_path / "de")
    (src / "dev.tsv").unlink()
    (src / "test.tsv").unlink()
    run(plan(src), tmp_path / "out")
    got = samples(tmp_path / "out")
    assert {m["audio_lang"] for m in got.values()} == {"de"}


def test_commonvoice_locales_and_errors(tmp_path):
    assert [lang_code(c) for c in ("en", "zh-CN", "zh-TW", "ja", "zh-HK", "pt")] == \
        ["en", "zh", "zh_tr", "ja", "zh-HK", "pt"]
    with pytest.raises(ConvertError, match="train.tsv"):
        plan(tmp_path)
    put_text(tmp_path / "train.tsv", "client_id\tpath\ttext\nc\ta.mp3\thi\n")
    with pytest.raises(ConvertError, match="clips/"):
        plan(tmp_path)
    (tmp_path / "clips").mkdir()
    with pytest.raises(ConvertError, match="missing column.*sentence"):
        plan(tmp_path)
